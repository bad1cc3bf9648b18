"""The 11 datasets of the CLIP benchmark and the ImageNet variants, in CoOp's folder layout.

Each reader looks under ``DATASET.ROOT`` for the folder CoOp uses and reads its split file
``split_zhou_<Name>.json`` when present (the published files, or one the user wrote, are used as
they are). When absent, the split is generated from the raw files with CoOp's rules and written
there, so every later run (and every machine sharing the folder) reads the same split:

* official train/test lists where CoOp uses them (OxfordPets, StanfordCars, FGVCAircraft incl.
  its official val, SUN397 partition 01, UCF101 split 01), val carved from train with p=0.2;
* otherwise 50% / 20% / 30% per class (Caltech101, OxfordFlowers, Food101, DTD, EuroSAT), as
  CoOp does even where the owners publish lists (Flowers' setid.mat, Food-101's meta, DTD's
  labels): CoOp's published numbers were measured on such splits.

Generation is CoOp's procedure: items in the order the owners' files list them, classes in the
order their label first appears, and one ``random.Random(SPLIT_SEED)`` stream (``SPLIT_SEED`` = 1)
shuffling each class in turn. That reproduces CoOp's published ``split_zhou_*.json`` exactly for
OxfordPets, StanfordCars, OxfordFlowers and UCF101 (checked row for row against the published
files, with the owners' lists rebuilt from them; see ``datasets_prep/CLIP_DATASETS.md``).
Caltech101, DTD, EuroSAT and Food101 cannot be reproduced by anyone: CoOp shuffled each class's
``os.listdir`` order, which is the order of the authors' filesystem, not of the data; mmprompt
shuffles the sorted listing instead, so its split is at least the same on every machine (a
published file put in place is used as it is). SUN397 and FGVCAircraft follow the same rules
(FGVCAircraft draws nothing); no published file of theirs was at hand to check against.

Images PIL cannot recognise are left out of a generated split with a warning (and listed in
``skipped_images``): official archives occasionally contain a broken file, and one bad file
should not block a dataset of 100k. A class left without images is an error.

ImageNet and its variants have no split file in CoOp's layout: their folders are the split.
"""

from __future__ import annotations

import json
import os
import random
import re
import warnings
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from ..registry import DATASETS
from ..utils.files import open_regular
from .base import (
    DataError,
    DatasetBase,
    DatasetMissingError,
    Datum,
    group_by_label,
    is_decodable,
    load_dassl_pickle,
    read_split_json,
    rebase_dassl_items,
    write_split_json,
)

SPLIT_SEED = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH_RENAMED = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAMED = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


def prep_command(root: str, name: str) -> str:
    return f"python datasets_prep/prepare_clip_datasets.py --root {root} --dataset {name}"


def dataset_root(cfg) -> str:
    return os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))


def list_images(folder: str) -> List[str]:
    """Image files (not hidden) directly in ``folder``, sorted."""
    return sorted(
        f
        for f in os.listdir(folder)
        if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )


def list_folders(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if not f.startswith(".") and os.path.isdir(os.path.join(folder, f)))


# ------------------------------------------------------------------ CoOp's split rules


def split_per_class(groups: Dict[int, List[Datum]], rng: random.Random, p_train: float = 0.5, p_val: float = 0.2):
    """CoOp's ``read_and_split_data`` (and Flowers' ``read_data``): per class, in the order of
    ``groups``, shuffle the items as given with ``rng`` (one stream across classes), then
    round(n*p_train) to train, round(n*p_val) to val, the rest to test."""
    train, val, test = [], [], []
    for label, group in groups.items():
        items = list(group)
        rng.shuffle(items)
        n = len(items)
        n_train, n_val = round(n * p_train), round(n * p_val)
        if min(n_train, n_val, n - n_train - n_val) < 1:
            raise DataError(
                f"Class {label} '{items[0].classname}' has {n} image(s), too few for a "
                f"{p_train:.0%}/{p_val:.0%}/rest split (each part needs one); add images or "
                f"remove the class folder ({os.path.dirname(items[0].impath)})."
            )
        train += items[:n_train]
        val += items[n_train : n_train + n_val]
        test += items[n_train + n_val :]
    return train, val, test


def split_trainval(trainval: Sequence[Datum], rng: random.Random, p_val: float = 0.2):
    """CoOp's ``OxfordPets.split_trainval``: per class, in the order labels first appear in
    ``trainval``, shuffle the class's items (in list order) with ``rng``; the first
    round(n*p_val) go to val, the rest to train."""
    train, val = [], []
    for label, group in group_by_label(trainval).items():
        items = list(group)
        n_val = round(len(items) * p_val)
        if n_val < 1 or n_val >= len(items):
            raise DataError(
                f"Class {label} '{items[0].classname}' has {len(items)} train image(s); "
                f"carving a validation set needs at least 3."
            )
        rng.shuffle(items)
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def read_class_folders(image_dir: str, ignored: Sequence[str] = (), renamed: Optional[Dict[str, str]] = None):
    """{label: items} from one folder per class, labels by sorted folder name."""
    renamed = renamed or {}
    folders = [f for f in list_folders(image_dir) if f not in ignored]
    groups: Dict[int, List[Datum]] = {}
    for label, folder in enumerate(folders):
        names = list_images(os.path.join(image_dir, folder))
        if not names:
            raise DataError(
                f"Class folder {os.path.join(image_dir, folder)} holds no images. Remove it "
                f"or extract the dataset again."
            )
        classname = renamed.get(folder, folder)
        groups[label] = [
            Datum(impath=os.path.join(image_dir, folder, n), label=label, classname=classname) for n in names
        ]
    if not groups:
        raise DataError(f"{image_dir} holds no class folders.")
    return groups


def _read_lines(path: str) -> List[str]:
    with open_regular(path) as f:
        raw = f.read().splitlines()
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}, line {number}: not UTF-8 text. Is it the official file?") from None
        if text.strip() and not text.startswith("#"):
            lines.append(text.strip())
    return lines


def _loadmat(path: str):
    from scipy.io import loadmat

    return loadmat(path)


# ------------------------------------------------------------------ readers with split files


class SplitFileDataset(DatasetBase):
    """A CoOp dataset with a ``split_zhou_*.json``: read it, or generate it from the raw files."""

    registry_name = ""
    folder = ""  # dataset folder under DATASET.ROOT
    split_prefix = ""  # folder (inside ``folder``) that split paths are relative to
    split_file = ""
    required: Tuple[str, ...] = ()  # raw files/folders (inside ``folder``) needed to generate the split

    def __init__(self, cfg):
        root = dataset_root(cfg)
        dataset_dir = os.path.join(root, self.folder)
        prefix = os.path.join(dataset_dir, self.split_prefix) if self.split_prefix else dataset_dir
        split_path = os.path.join(dataset_dir, self.split_file)
        self.skipped_images: List[str] = []
        if os.path.exists(split_path):  # a fifo or folder there is refused by the reader, not regenerated over
            train, val, test = read_split_json(split_path, prefix)
            self._check_listed_files(train + val + test, split_path, prep_command(root, self.registry_name))
            classnames = None
        else:
            missing = [p for p in self.required if not os.path.exists(os.path.join(dataset_dir, p))]
            if not os.path.isdir(dataset_dir) or missing:
                raise DatasetMissingError(
                    self.registry_name,
                    dataset_dir,
                    [
                        self.split_file
                        + " (or the raw files to generate it: "
                        + ", ".join(missing or [self.folder])
                        + ")"
                    ],
                    prep_command(root, self.registry_name),
                )
            train, val, test, classnames = self._generate_checked(dataset_dir)
            write_split_json(split_path, train, val, test, prefix)
        super().__init__(
            train, val, test, classnames=classnames, name=self.registry_name, dataset_dir=dataset_dir, image_dir=prefix
        )

    def generate(self, dataset_dir: str):
        """(train, val, test, classnames) from the raw files, with CoOp's rules."""
        raise NotImplementedError

    def _generate_checked(self, dataset_dir: str):
        train, val, test, classnames = self.generate(dataset_dir)
        listed = train + val + test
        missing = [d.impath for d in listed if not os.path.isfile(d.impath)]
        if missing:
            raise DatasetMissingError(
                self.registry_name,
                dataset_dir,
                [
                    f"{len(missing)} of the {len(listed)} images its annotation lists name (first: "
                    f"{os.path.relpath(missing[0], dataset_dir)}); the image folder looks half-extracted: "
                    f"delete it and run the prep again"
                ],
                prep_command(os.path.dirname(dataset_dir), self.registry_name),
            )
        splits = []
        for items in (train, val, test):
            kept = []
            for d in items:
                if is_decodable(d.impath):
                    kept.append(d)
                else:
                    self.skipped_images.append(os.path.relpath(d.impath, dataset_dir))
            splits.append(kept)
        if self.skipped_images:
            warnings.warn(
                f"{self.registry_name}: left {len(self.skipped_images)} undecodable image(s) out "
                f"of the split: {', '.join(self.skipped_images[:5])}"
            )
        present = {d.label for d in splits[0]}
        empty = [f"{i} '{c}'" for i, c in enumerate(classnames) if i not in present]
        if empty:
            raise DataError(
                f"{self.registry_name}: class(es) {', '.join(empty[:5])} have no usable training "
                f"image under {dataset_dir}; re-extract the dataset. No split file was written."
            )
        return (*splits, classnames)

    def _check_listed_files(self, items: Sequence[Datum], split_path: str, command: str) -> None:
        missing = [d.impath for d in items if not os.path.isfile(d.impath)]
        if missing:
            raise DatasetMissingError(
                self.registry_name,
                os.path.dirname(split_path),
                [
                    f"{len(missing)} of the {len(items)} images listed in {os.path.basename(split_path)} "
                    f"(first: {missing[0]})"
                ],
                command,
            )


def _classnames_of(groups: Dict[int, List[Datum]]) -> List[str]:
    return [groups[label][0].classname for label in sorted(groups)]


class ClassFolderDataset(SplitFileDataset):
    """One folder of images per class under ``split_prefix`` and no official split: CoOp's
    per-class 50/20/30 split with a fixed seed (Caltech101, Food101, DTD, EuroSAT)."""

    ignored: Sequence[str] = ()  # class folders that are not classes
    renamed: Optional[Dict[str, str]] = None  # folder name -> the readable class name CoOp uses

    def generate(self, dataset_dir):
        groups = read_class_folders(os.path.join(dataset_dir, self.split_prefix), self.ignored, self.renamed)
        return (*split_per_class(groups, random.Random(SPLIT_SEED)), _classnames_of(groups))


@DATASETS.register("caltech101")
class Caltech101(ClassFolderDataset):
    registry_name, folder, split_prefix = "caltech101", "caltech-101", "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    required = ("101_ObjectCategories",)
    ignored, renamed = CALTECH_IGNORED, CALTECH_RENAMED


@DATASETS.register("oxford_pets")
class OxfordPets(SplitFileDataset):
    registry_name, folder, split_prefix = "oxford_pets", "oxford_pets", "images"
    split_file = "split_zhou_OxfordPets.json"
    required = ("images", "annotations/trainval.txt", "annotations/test.txt")

    def _read(self, dataset_dir, list_name):
        items = []
        for line in _read_lines(os.path.join(dataset_dir, "annotations", list_name)):
            imname, class_id = line.split()[:2]
            breed = "_".join(imname.split("_")[:-1]).lower()
            items.append(
                Datum(
                    impath=os.path.join(dataset_dir, "images", imname + ".jpg"),
                    label=int(class_id) - 1,
                    classname=breed,
                )
            )
        return items

    def generate(self, dataset_dir):
        trainval, test = self._read(dataset_dir, "trainval.txt"), self._read(dataset_dir, "test.txt")
        train, val = split_trainval(trainval, random.Random(SPLIT_SEED))
        return train, val, test, _names_by_label(trainval + test)


def _names_by_label(items: Sequence[Datum]) -> List[str]:
    names: Dict[int, str] = {}
    for d in items:
        names.setdefault(d.label, d.classname)
    if sorted(names) != list(range(len(names))):
        raise DataError(f"Annotation labels must run from 1 to n without gaps; got {sorted(names)[:10]}...")
    return [names[i] for i in range(len(names))]


@DATASETS.register("stanford_cars")
class StanfordCars(SplitFileDataset):
    registry_name, folder, split_prefix = "stanford_cars", "stanford_cars", ""
    split_file = "split_zhou_StanfordCars.json"
    required = (
        "cars_train",
        "cars_test",
        "devkit/cars_train_annos.mat",
        "devkit/cars_meta.mat",
        "cars_test_annos_withlabels.mat",
    )

    @staticmethod
    def readable_name(raw: str) -> str:
        """'Tesla Model S Sedan 2012' -> '2012 Tesla Model S Sedan' (CoOp's rule: year first)."""
        words = raw.split(" ")
        return " ".join([words[-1]] + words[:-1])

    def _read(self, dataset_dir, image_folder, anno_file, classnames):
        annos = _loadmat(os.path.join(dataset_dir, anno_file))["annotations"][0]
        items = []
        for a in annos:
            label = int(a["class"][0, 0]) - 1
            items.append(
                Datum(
                    impath=os.path.join(dataset_dir, image_folder, str(a["fname"][0])),
                    label=label,
                    classname=classnames[label],
                )
            )
        return items

    def generate(self, dataset_dir):
        meta = _loadmat(os.path.join(dataset_dir, "devkit", "cars_meta.mat"))["class_names"][0]
        classnames = [self.readable_name(str(m[0])) for m in meta]
        trainval = self._read(dataset_dir, "cars_train", "devkit/cars_train_annos.mat", classnames)
        test = self._read(dataset_dir, "cars_test", "cars_test_annos_withlabels.mat", classnames)
        train, val = split_trainval(trainval, random.Random(SPLIT_SEED))
        return train, val, test, classnames


@DATASETS.register("oxford_flowers")
class OxfordFlowers(SplitFileDataset):
    registry_name, folder, split_prefix = "oxford_flowers", "oxford_flowers", "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    required = ("jpg", "imagelabels.mat", "cat_to_name.json")

    def generate(self, dataset_dir):
        labels = _loadmat(os.path.join(dataset_dir, "imagelabels.mat"))["labels"][0]
        try:
            with open_regular(os.path.join(dataset_dir, "cat_to_name.json"), encoding="utf-8") as f:
                cat_to_name = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(
                f"oxford_flowers: {os.path.join(dataset_dir, 'cat_to_name.json')} is not valid JSON "
                f"({e}); get CoOp's copy again."
            ) from None
        if not isinstance(cat_to_name, dict):
            raise DataError("oxford_flowers: cat_to_name.json must map labels '1'..'102' to names.")
        missing = sorted({int(y) for y in labels} - {int(k) for k in cat_to_name})
        if missing:
            raise DataError(f"oxford_flowers: cat_to_name.json has no name for label(s) {missing[:10]}")
        groups: Dict[int, List[Datum]] = defaultdict(list)  # classes in first-appearance order, as CoOp
        for i, y in enumerate(labels):  # image_00001.jpg has the first label
            label = int(y) - 1
            groups[label].append(
                Datum(
                    impath=os.path.join(dataset_dir, "jpg", f"image_{i + 1:05d}.jpg"),
                    label=label,
                    classname=cat_to_name[str(int(y))],
                )
            )
        return (*split_per_class(groups, random.Random(SPLIT_SEED)), _classnames_of(groups))


@DATASETS.register("food101")
class Food101(ClassFolderDataset):
    registry_name, folder, split_prefix = "food101", "food-101", "images"
    split_file = "split_zhou_Food101.json"
    required = ("images",)


@DATASETS.register("dtd")
class DescribableTextures(ClassFolderDataset):
    registry_name, folder, split_prefix = "dtd", "dtd", "images"
    split_file = "split_zhou_DescribableTextures.json"
    required = ("images",)


@DATASETS.register("eurosat")
class EuroSAT(ClassFolderDataset):
    registry_name, folder, split_prefix = "eurosat", "eurosat", "2750"
    split_file = "split_zhou_EuroSAT.json"
    required = ("2750",)
    renamed = EUROSAT_RENAMED


@DATASETS.register("fgvc_aircraft")
class FGVCAircraft(SplitFileDataset):
    registry_name, folder, split_prefix = "fgvc_aircraft", "fgvc_aircraft", "images"
    split_file = "split_zhou_FGVCAircraft.json"
    required = (
        "images",
        "variants.txt",
        "images_variant_train.txt",
        "images_variant_val.txt",
        "images_variant_test.txt",
    )

    def generate(self, dataset_dir):
        classnames = _read_lines(os.path.join(dataset_dir, "variants.txt"))  # file order, as CoOp
        label_of = {c: i for i, c in enumerate(classnames)}
        splits = []
        for part in ("train", "val", "test"):
            items = []
            for line in _read_lines(os.path.join(dataset_dir, f"images_variant_{part}.txt")):
                image_id, variant = line.split(" ", 1)
                if variant not in label_of:
                    raise DataError(
                        f"fgvc_aircraft: images_variant_{part}.txt names variant {variant!r}, "
                        f"which variants.txt does not list."
                    )
                items.append(
                    Datum(
                        impath=os.path.join(dataset_dir, "images", image_id + ".jpg"),
                        label=label_of[variant],
                        classname=variant,
                    )
                )
            splits.append(items)
        return (*splits, classnames)


@DATASETS.register("sun397")
class SUN397(SplitFileDataset):
    registry_name, folder, split_prefix = "sun397", "sun397", "SUN397"
    split_file = "split_zhou_SUN397.json"
    required = ("SUN397", "ClassName.txt", "Training_01.txt", "Testing_01.txt")

    @staticmethod
    def readable_name(category: str) -> str:
        """'/b/bakery/shop' -> 'shop bakery' (CoOp: drop the letter, qualifier first)."""
        return " ".join(category.strip("/").split("/")[1:][::-1])

    def generate(self, dataset_dir):
        categories = [c[1:] for c in _read_lines(os.path.join(dataset_dir, "ClassName.txt"))]
        label_of = {c: i for i, c in enumerate(categories)}
        classnames = [self.readable_name(c) for c in categories]

        def read(list_name):
            items = []
            for line in _read_lines(os.path.join(dataset_dir, list_name)):
                relpath = line[1:]
                category = os.path.dirname(relpath)
                if category not in label_of:
                    raise DataError(f"sun397: {list_name} lists {line}, whose class is not in ClassName.txt")
                label = label_of[category]
                items.append(
                    Datum(impath=os.path.join(dataset_dir, "SUN397", relpath), label=label, classname=classnames[label])
                )
            return items

        trainval, test = read("Training_01.txt"), read("Testing_01.txt")
        train, val = split_trainval(trainval, random.Random(SPLIT_SEED))
        return train, val, test, classnames


def ucf_folder_name(action: str) -> str:
    """'ApplyEyeMakeup' -> 'Apply_Eye_Makeup' (CoOp's mid-frame folders and class names)."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASETS.register("ucf101")
class UCF101(SplitFileDataset):
    registry_name, folder, split_prefix = "ucf101", "ucf101", "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    required = (
        "UCF-101-midframes",
        "ucfTrainTestlist/classInd.txt",
        "ucfTrainTestlist/trainlist01.txt",
        "ucfTrainTestlist/testlist01.txt",
    )

    def generate(self, dataset_dir):
        label_of, classnames = {}, {}
        for line in _read_lines(os.path.join(dataset_dir, "ucfTrainTestlist", "classInd.txt")):
            index, action = line.split()
            label_of[action] = int(index) - 1
            classnames[int(index) - 1] = ucf_folder_name(action)

        def read(list_name):
            items = []
            for line in _read_lines(os.path.join(dataset_dir, "ucfTrainTestlist", list_name)):
                action, video = line.split()[0].split("/")
                folder = ucf_folder_name(action)
                items.append(
                    Datum(
                        impath=os.path.join(
                            dataset_dir, self.split_prefix, folder, os.path.splitext(video)[0] + ".jpg"
                        ),
                        label=label_of[action],
                        classname=folder,
                    )
                )
            return items

        trainval, test = read("trainlist01.txt"), read("testlist01.txt")
        train, val = split_trainval(trainval, random.Random(SPLIT_SEED))
        return train, val, test, [classnames[i] for i in range(len(classnames))]


# ------------------------------------------------------------------ ImageNet and its variants


def _library_file(package: str, relpath: str) -> str:
    """A data file shipped inside an installed package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"The ImageNet class table comes from the installed {package} package, which is missing.")
    return os.path.join(list(spec.submodule_search_locations)[0], relpath)


def imagenet_classnames_table() -> List[Tuple[str, str]]:
    """(wnid, CLIP's readable name) for the 1000 ImageNet classes, in label order.

    The wnids come from timm's ImageNet metadata and the names from open_clip's zero-shot
    metadata (the cleaned names of the CLIP paper, which CoOp's classnames.txt also holds).
    Both files ship inside the installed libraries; they are read as data (literal_eval of the
    tuple), without importing the libraries, which takes many seconds.
    """
    import ast

    with open(_library_file("timm", "data/_info/imagenet_synsets.txt")) as f:
        wnids = [line.strip() for line in f if line.strip()]
    with open(_library_file("open_clip", "zero_shot_metadata.py")) as f:
        tree = ast.parse(f.read())
    names = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "IMAGENET_CLASSNAMES" for t in node.targets)
    )
    if len(wnids) != 1000 or len(names) != 1000:
        raise DataError(
            f"Expected 1000 ImageNet wnids and names in timm/open_clip; found {len(wnids)} and {len(names)}."
        )
    return list(zip(wnids, names))


def read_classnames_txt(path: str) -> Dict[str, str]:
    """CoOp's classnames.txt: 'n01440764 tench' per line -> {wnid: name}, in file order."""
    names = {}
    for line in _read_lines(path):
        wnid, _, name = line.partition(" ")
        names[wnid] = name.strip()
    return names


class ImageNetFamily(DatasetBase):
    registry_name = ""
    folder = ""
    image_subdir = ""

    def _locate(self, cfg, needed: Sequence[str]):
        root = dataset_root(cfg)
        dataset_dir = os.path.join(root, self.folder)
        missing = [p for p in needed if not os.path.exists(os.path.join(dataset_dir, p))]
        if missing:
            raise DatasetMissingError(self.registry_name, dataset_dir, missing, prep_command(root, self.registry_name))
        return root, dataset_dir, read_classnames_txt(os.path.join(dataset_dir, "classnames.txt"))

    @staticmethod
    def _read_wnid_folders(folder: str, names: Dict[str, str], source: str) -> List[Datum]:
        items = []
        for label, wnid in enumerate(list_folders(folder)):
            if wnid not in names:
                raise DataError(f"{folder}/{wnid} is not a class of {source}; remove it or replace {source}.")
            files = list_images(os.path.join(folder, wnid))
            if not files:
                raise DataError(f"Class folder {os.path.join(folder, wnid)} holds no images; extract it again.")
            items += [Datum(impath=os.path.join(folder, wnid, f), label=label, classname=names[wnid]) for f in files]
        if not items:
            raise DataError(f"{folder} holds no class folders.")
        return items


@DATASETS.register("imagenet")
class ImageNet(ImageNetFamily):
    """CoOp's ImageNet: images/train and images/val with one folder per wnid; val is also the test set.

    Item order matters to few-shot sampling, and CoOp listed each class folder with
    ``os.listdir`` (the order of the filesystem), then saved the lists as ``preprocessed.pkl``.
    When that file is in the folder it gives the order (read as pickled Datum only, see
    :func:`mmprompt.data.base.load_dassl_pickle`), so K-shot picks equal the user's CoOp runs' for
    every seed; without it the sorted listing is used.
    """

    registry_name, folder = "imagenet", "imagenet"
    val_is_test = True  # CoOp samples K shots of train only and validates on the full val = test
    item_lists = "preprocessed.pkl"  # CoOp's pickled {"train": [Datum], "test": [Datum]}

    def __init__(self, cfg):
        _, dataset_dir, names = self._locate(cfg, ("classnames.txt", "images/train", "images/val"))
        image_dir = os.path.join(dataset_dir, "images")
        source = os.path.join(dataset_dir, "classnames.txt")
        train = self._read_wnid_folders(os.path.join(image_dir, "train"), names, source)
        test = self._read_wnid_folders(os.path.join(image_dir, "val"), names, source)
        if {d.classname for d in train} != {d.classname for d in test}:
            raise DataError(
                f"imagenet: images/train and images/val hold different classes in {image_dir}; "
                f"one of them is incompletely extracted."
            )
        lists = os.path.join(dataset_dir, self.item_lists)
        if os.path.isfile(lists):
            remedy = (
                "Delete it to use the sorted folder listing instead (CoOp's order is recorded only in "
                "that file, so few-shot picks then differ from CoOp's)."
            )
            data = load_dassl_pickle(lists, "ImageNet item list", remedy)
            if not isinstance(data.get("test"), list):
                raise DataError(f"ImageNet item list {lists} has no 'test' list. {remedy}")
            try:
                train = rebase_dassl_items(data["train"], train, image_dir, f"ImageNet item list {lists} [train]")
                test = rebase_dassl_items(data["test"], test, image_dir, f"ImageNet item list {lists} [test]")
            except DataError as e:
                raise DataError(f"{e} {remedy}") from None
        super().__init__(train, test, test, name=self.registry_name, dataset_dir=dataset_dir, image_dir=image_dir)


class ImageNetVariant(ImageNetFamily):
    """Test-only ImageNet variants: every image is in ``test`` (and in ``train_x``, as in CoOp)."""

    def __init__(self, cfg):
        _, dataset_dir, names = self._locate(cfg, ("classnames.txt", self.image_subdir))
        image_dir = os.path.join(dataset_dir, self.image_subdir)
        items, classnames = self.read(image_dir, names, os.path.join(dataset_dir, "classnames.txt"))
        super().__init__(
            items,
            [],
            items,
            classnames=classnames,
            name=self.registry_name,
            dataset_dir=dataset_dir,
            image_dir=image_dir,
        )

    def read(self, image_dir, names, source):
        items = self._read_wnid_folders(image_dir, names, source)
        return items, None


@DATASETS.register("imagenet_sketch")
class ImageNetSketch(ImageNetVariant):
    registry_name, folder, image_subdir = "imagenet_sketch", "imagenet-sketch", "images"


@DATASETS.register("imagenet_a")
class ImageNetA(ImageNetVariant):
    """200 of the 1000 classes; labels index the sorted wnid folders present (CoOp's rule)."""

    registry_name, folder, image_subdir = "imagenet_a", "imagenet-adversarial", "imagenet-a"


@DATASETS.register("imagenet_r")
class ImageNetR(ImageNetVariant):
    """200 of the 1000 classes; labels index the sorted wnid folders present (CoOp's rule)."""

    registry_name, folder, image_subdir = "imagenet_r", "imagenet-rendition", "imagenet-r"


@DATASETS.register("imagenet_v2")
class ImageNetV2(ImageNetVariant):
    """Folders '0'..'999' hold the images of ImageNet label 0..999 (all 1000 classes)."""

    registry_name, folder, image_subdir = "imagenet_v2", "imagenetv2", "imagenetv2-matched-frequency-format-val"

    def read(self, image_dir, names, source):
        classnames = list(names.values())
        folders = {f for f in list_folders(image_dir)}
        expected = {str(i) for i in range(len(classnames))}
        if folders != expected:
            missing = sorted(expected - folders, key=int)
            raise DataError(
                f"imagenet_v2: {image_dir} must hold folders 0..{len(classnames) - 1}; "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                f"{sorted(folders - expected)[:5]}. Extract the archive again."
            )
        items = []
        for label in range(len(classnames)):
            folder = os.path.join(image_dir, str(label))
            items += [
                Datum(impath=os.path.join(folder, f), label=label, classname=classnames[label])
                for f in list_images(folder)
            ]
        return items, classnames
