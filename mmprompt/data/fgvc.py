"""The five FGVC datasets of VPT, in VPT's layout: ``{train,val,test}.json`` per dataset.

Each json maps an image path (relative to the dataset's image folder) to a class id, and is read
as VPT's ``JSONDataset`` reads it: ids as the owners number them (CUB "001".."200" strings,
NABirds' non-contiguous ids, Flowers / Dogs / Cars from 1, or the prep's ids from 0) map through
``sorted(set(ids))`` to labels 0..n-1, over all splits together (see :func:`vpt_label_map` for
the one place this differs from VPT's per-file mapping). VPT's own split files (as published for
the paper) are read as they are; ``datasets_prep/prepare_fgvc.py`` writes them from the official
downloads, with ``classnames.json`` (readable names by label, which VPT's layout lacks; without
it CUB's and Dogs' names come from their image folders, NABirds', Flowers' and Cars' from the
owners' files in the folder when there, else they are the ids).

=========  ==========================  ===============  =======
name       folder under DATASET.ROOT   images relative  classes
=========  ==========================  ===============  =======
cub        CUB_200_2011                images/          200
nabirds    nabirds                     images/          555
flowers    OxfordFlower                the folder       102
dogs       Stanford-dogs               Images/          120
cars       Stanford-cars               the folder       196
=========  ==========================  ===============  =======

``DATASET.FGVC.TRAINVAL`` trains on train + val (VPT's final runs, after choosing
hyperparameters on val). Few-shot splits are cached under the dataset folder like the CLIP
datasets'.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

from ..registry import DATASETS
from ..utils.files import open_regular
from .base import DataError, DatasetBase, DatasetMissingError, Datum, check_inside

SPLIT_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}
ClassId = Union[int, str]  # as a VPT split file numbers classes: CUB "001".."200", the others integers
CLASSNAMES_FILE = "classnames.json"


@dataclass(frozen=True)
class FGVCInfo:
    name: str  # registry name
    title: str  # the dataset's own name
    folder: str  # folder under DATASET.ROOT
    image_subdir: str  # folder (inside ``folder``) that json paths are relative to; "" = the folder itself
    num_classes: int  # classes of the official release


FGVC_DATASETS: Dict[str, FGVCInfo] = {
    i.name: i
    for i in [
        FGVCInfo("cub", "CUB-200-2011", "CUB_200_2011", "images", 200),
        FGVCInfo("nabirds", "NABirds", "nabirds", "images", 555),
        FGVCInfo("flowers", "Oxford Flowers 102", "OxfordFlower", "", 102),
        FGVCInfo("dogs", "Stanford Dogs", "Stanford-dogs", "Images", 120),
        FGVCInfo("cars", "Stanford Cars", "Stanford-cars", "", 196),
    ]
}


def prep_command(root: str, name: str) -> str:
    return f"python datasets_prep/prepare_fgvc.py --root {root or 'DATA'} --dataset {name}"


def dataset_paths(root: str, info: FGVCInfo):
    """(dataset folder, image folder) of ``info`` under ``root``."""
    dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(root)), info.folder)
    return dataset_dir, os.path.join(dataset_dir, info.image_subdir) if info.image_subdir else dataset_dir


def read_vpt_json(path: str) -> Dict[str, ClassId]:
    """A VPT split file: {relative image path: class id}, ids as the file has them (int or str)."""
    try:
        with open_regular(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); delete it and run the prep script again.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must map image paths to class ids; got a {type(data).__name__}.")
    for rel, label in data.items():
        check_inside(rel, path)
        if isinstance(label, bool) or not isinstance(label, (int, str)) or label == "":
            raise DataError(f"{path}: class id of {rel!r} must be an integer or a string (CUB's '001'); got {label!r}.")
    return data


def vpt_label_map(splits: Dict[str, Dict[str, ClassId]], where: str) -> Dict[ClassId, int]:
    """``sorted(set(ids))`` -> 0..n-1 over every split together.

    VPT's ``JSONDataset`` sorts the ids of the one split file it reads. That is this mapping
    whenever each split holds every id (train and test of all five VPT sets do), but NABirds'
    val.json lacks two of the 555 ids, so VPT's own val labels shift by one or two after each
    missing id; mapping over all splits keeps one label per class everywhere.
    """
    ids = {y for split in splits.values() for y in split.values()}
    if len({type(y) for y in ids}) > 1:
        raise DataError(
            f"{where}: class ids mix integers and strings ({sorted(map(repr, ids))[:4]}...); "
            f"VPT's sorting needs one kind. Rewrite the split files with one kind of id."
        )
    return {y: i for i, y in enumerate(sorted(ids))}


def read_classnames(dataset_dir: str) -> Optional[List[str]]:
    path = os.path.join(dataset_dir, CLASSNAMES_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open_regular(path, encoding="utf-8") as f:
            names = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); delete it or restore it.") from None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DataError(f"{path} must be a JSON list of class names by class id.")
    return names


def _name_from_folder(rel: str, name: str) -> Optional[str]:
    """CUB's '001.Black_footed_Albatross/...' and Dogs' 'n02085620-Chihuahua/...' name their class."""
    folder = rel.replace("\\", "/").split("/")[0]
    if name == "cub" and re.match(r"^\d+\.", folder):
        return re.sub(r"^\d+\.", "", folder).replace("_", " ")
    if name == "dogs" and re.match(r"^n\d+-", folder):
        return folder.split("-", 1)[1].replace("_", " ")
    return None


def _owner_names(name: str, dataset_dir: str) -> Dict[str, str]:
    """{str(class id): name} from the owners' files a VPT user's folder holds beside the split
    files: NABirds' classes.txt, CoOp's cat_to_name.json for Flowers, Cars' class_names (ids from 1)."""
    if name == "nabirds" and os.path.isfile(os.path.join(dataset_dir, "classes.txt")):
        with open_regular(os.path.join(dataset_dir, "classes.txt"), encoding="utf-8") as f:
            pairs = [line.strip().split(" ", 1) for line in f if line.strip()]
        return {cid: cname for cid, cname in (p for p in pairs if len(p) == 2)}
    if name == "flowers" and os.path.isfile(os.path.join(dataset_dir, "cat_to_name.json")):
        with open_regular(os.path.join(dataset_dir, "cat_to_name.json"), encoding="utf-8") as f:
            names = json.load(f)
        return {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}
    for mat in ("devkit/cars_meta.mat", "cars_annos.mat") if name == "cars" else ():
        if os.path.isfile(os.path.join(dataset_dir, mat)):
            from scipy.io import loadmat

            names = loadmat(os.path.join(dataset_dir, mat)).get("class_names")
            if names is not None:
                return {str(i): str(n.ravel()[0]) for i, n in enumerate(names.ravel(), start=1)}
    return {}


def names_from_vpt_files(
    name: str, dataset_dir: str, splits: Dict[str, Dict[str, ClassId]], label_of: Dict[ClassId, int]
) -> List[str]:
    """Class names for VPT's own split files, which carry none: CUB's and Dogs' image folders name
    their classes; NABirds, Flowers and Cars take them from the owners' files when the folder has
    them (:func:`_owner_names`); any other class is named by its id as VPT numbers it."""
    owners = _owner_names(name, dataset_dir)
    names = {label_of[y]: owners.get(str(y), str(y)) for y in label_of}
    seen = set()
    for split in splits.values():
        for rel, y in split.items():
            if label_of[y] in seen:
                continue
            folder_name = _name_from_folder(rel, name)
            if folder_name is not None:
                names[label_of[y]] = folder_name
                seen.add(label_of[y])
    return [names[i] for i in range(len(names))]


class FGVCDataset(DatasetBase):
    """Reader of one FGVC dataset's VPT split files, with VPT's label mapping (:func:`vpt_label_map`).

    Items keep the order of the json files, as VPT reads them. Class names come from
    ``classnames.json`` (written by the prep, one name per mapped label) when present, else
    from :func:`names_from_vpt_files`.
    """

    def __init__(self, cfg, name: str, info: Optional[FGVCInfo] = None, prep: str = ""):
        """``info`` / ``prep``: another dataset in the same layout (e.g. Fashion-MNIST, see
        :mod:`mmprompt.data.fashion_mnist`) and the command that prepares it; default the five
        VPT datasets and ``prepare_fgvc.py``."""
        info = info or FGVC_DATASETS[name]
        root = cfg.DATASET.ROOT
        prep = prep or prep_command(root, name)
        dataset_dir, image_dir = dataset_paths(root, info)
        missing = [f for f in SPLIT_FILES.values() if not os.path.exists(os.path.join(dataset_dir, f))]
        if missing:
            raise DatasetMissingError(name, dataset_dir, missing, prep)
        splits = {s: read_vpt_json(os.path.join(dataset_dir, f)) for s, f in SPLIT_FILES.items()}
        label_of = vpt_label_map(splits, dataset_dir)
        classnames = read_classnames(dataset_dir)
        if classnames is None:
            classnames = names_from_vpt_files(name, dataset_dir, splits, label_of)
        elif len(classnames) != len(label_of):
            raise DataError(
                f"{name}: the split files in {dataset_dir} hold {len(label_of)} class ids but "
                f"{CLASSNAMES_FILE} names {len(classnames)} classes. Delete {CLASSNAMES_FILE} (names "
                f"then come from the split files) or run the prep script again."
            )
        missing_train = sorted(set(label_of) - set(splits["train"].values()))
        if missing_train:
            raise DataError(
                f"{name}: class(es) {', '.join(f'{y!r} {classnames[label_of[y]]!r}' for y in missing_train[:5])} "
                f"have no training image in {os.path.join(dataset_dir, SPLIT_FILES['train'])}."
            )
        items = {
            s: [
                Datum(impath=os.path.join(image_dir, rel), label=label_of[y], classname=classnames[label_of[y]])
                for rel, y in split.items()
            ]
            for s, split in splits.items()
        }
        absent = [d.impath for split in items.values() for d in split if not os.path.isfile(d.impath)]
        if absent:
            listed = sum(len(v) for v in items.values())
            raise DatasetMissingError(
                name,
                image_dir,
                [f"{len(absent)} of the {listed} images its split files list (first: {absent[0]})"],
                prep,
            )
        train = items["train"] + (items["val"] if cfg.DATASET.FGVC.TRAINVAL else [])
        super().__init__(
            train,
            items["val"],
            items["test"],
            classnames=classnames,
            name=name,
            dataset_dir=dataset_dir,
            image_dir=image_dir,
        )


def _register(name: str):
    def build(cfg) -> FGVCDataset:
        return FGVCDataset(cfg, name)

    build.__name__ = f"build_{name}"
    build.__doc__ = f"{FGVC_DATASETS[name].title} in VPT's layout (see mmprompt.data.fgvc)."
    DATASETS.register(name, build)


for _name in FGVC_DATASETS:
    _register(_name)
