"""Turn the official FGVC downloads into VPT's layout: ``{train,val,test}.json`` per dataset.

    python datasets_prep/prepare_fgvc.py --root $DATA --dataset cub [--download]
    python datasets_prep/prepare_fgvc.py --root $DATA --dataset all

Put the official files in ``$DATA/<folder>/`` or ``$DATA/`` (archives, or already extracted):

==========  ===============  ==============================================================
dataset     folder           official files
==========  ===============  ==============================================================
cub         CUB_200_2011     CUB_200_2011.tgz (images/, images.txt, image_class_labels.txt,
                             train_test_split.txt, classes.txt)
nabirds     nabirds          nabirds.tar.gz (same files; 555 leaf classes, renumbered 0..554
                             in the order of their official ids); needs a sign-up
flowers     OxfordFlower     102flowers.tgz (jpg/), imagelabels.mat, setid.mat (official
                             train/val/test); cat_to_name.json (CoOp's) for names, optional
dogs        Stanford-dogs    images.tar (Images/), lists.tar (train_list.mat, test_list.mat)
cars        Stanford-cars    cars_train.tgz, cars_test.tgz, car_devkit.tgz (devkit/),
                             cars_test_annos_withlabels.mat; or car_ims.tgz, cars_annos.mat
==========  ===============  ==============================================================

Splits: the official train and test lists, in the official order; Flowers' official val. The
others have no val, so ``--val-carve vpt`` (the default) moves ceil(``--val-percent`` %, default
10, VPT's share) of all training images to val, stratified by class as VPT's published splits
are (their per-class sizes on CUB 5394/600, NABirds 21536/2393, Dogs 10800/1200 and Cars
7329/815 follow this rule exactly; see ``carve_val``); ``--val-carve per_class`` takes the
share of each class instead, rounded half up and at least one for a class with two or more.
Which images go to val is drawn with ``random.Random(--seed)``: VPT did not publish the script
or seed behind its files, so put VPT's own json files in place to train on its exact split
(they are read as they are). Class ids start at 0 in the order of the official ids.

Stanford Cars comes in two releases, both accepted: the devkit one (cars_train/, cars_test/,
devkit/, cars_test_annos_withlabels.mat) and the all-images one VPT's instructions point to
(car_ims/ with all 16,185 images and cars_annos.mat, whose ``test`` flag gives the same 8,144 /
8,041 partition); split paths are relative to the folder, as VPT's ``CarsDataset`` reads them.
VPT-format files a user already has are read with whatever paths they list (the redistributed
VPT split lists ``cars_train/cars_train/00001.jpg``, a mirror's doubled folders).

Archives are extracted safely (all or nothing, no member may escape the folder). Images named
by the lists must all exist (else the image folder is half-extracted: an error); images PIL
cannot recognise are left out with a warning and counted in the summary; a class left without
training images is an error. The split files are written only when everything checked out,
all together; split files already there are kept (e.g. VPT's own) unless ``--overwrite``.
``--download`` fetches CUB, Flowers and Dogs from the owners' hosts (no checksums are published;
the lists above are checked instead); NABirds and Cars must be fetched by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import tempfile
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ...data.base import is_decodable
from ...data.fgvc import CLASSNAMES_FILE, FGVC_DATASETS, SPLIT_FILES, FGVCDataset, dataset_paths
from ._common import (
    PrepError,
    Source,
    find_first,
    obtain,
    prepare_each,
    print_summary,
    read_text,
    require,
    require_listed_files,
)
from ._common import download as fetch_url

Items = List[Tuple[str, int]]  # (path relative to the image folder, class id from 0)

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
DOGS_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs"
NABIRDS_HOW = (
    "NABirds needs a sign-up: accept the terms at https://dl.allaboutbirds.org/nabirds, download "
    "nabirds.tar.gz and put it in the data root."
)
CARS_HOW = (
    "The owners' host (ai.stanford.edu) no longer serves Stanford Cars; get cars_train.tgz, cars_test.tgz, "
    "car_devkit.tgz and cars_test_annos_withlabels.mat (or car_ims.tgz and cars_annos.mat, the all-images "
    "release) from a mirror you trust."
)


@dataclass
class RawSplits:
    train: Items  # official train list (train + val when there is no official val)
    test: Items
    classnames: List[str]
    val: Optional[Items] = None  # official val (Flowers)


# ------------------------------------------------------------------ reading the official lists


def _pairs(path: str) -> List[Tuple[str, str]]:
    """Lines of 'key value' (value may contain spaces), skipping blanks."""
    out = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(" ", 1)
        if len(parts) != 2:
            raise PrepError(f"{path}:{n}: expected 'id value', got {line!r}")
        out.append((parts[0], parts[1].strip()))
    return out


def _loadmat(path: str):
    from scipy.io import loadmat

    try:
        return loadmat(path)
    except (ValueError, TypeError, OSError) as e:
        raise PrepError(f"{path} is not a readable .mat file ({e}); download it again.") from None


def _unwrap(x):
    """The scalar inside MATLAB's nested cells/arrays as scipy loads them."""
    import numpy as np

    while isinstance(x, np.ndarray):
        if x.size == 0:
            raise PrepError("empty entry in a .mat annotation file")
        x = x.ravel()[0]
    return x


def _image_list_dataset(
    dataset_dir: str, name: str, classname: Callable[[str], str], leaf_classes_only: bool
) -> RawSplits:
    """CUB and NABirds: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt."""
    files = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
    require(name, dataset_dir, files + ("images",), "Extract the official archive there.")
    paths = dict(_pairs(os.path.join(dataset_dir, "images.txt")))
    labels = dict(_pairs(os.path.join(dataset_dir, "image_class_labels.txt")))
    is_train = dict(_pairs(os.path.join(dataset_dir, "train_test_split.txt")))
    classes = dict(_pairs(os.path.join(dataset_dir, "classes.txt")))
    for other, fname in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
        lacking = [i for i in paths if i not in other]
        if lacking:
            raise PrepError(
                f"{name}: {fname} has no entry for image id {lacking[0]} of images.txt "
                f"({len(lacking)} missing); the annotation files do not belong together."
            )
    if leaf_classes_only:  # NABirds lists every node of its taxonomy; images use the 555 leaves
        ids = sorted({labels[i] for i in paths}, key=int)
    else:
        ids = sorted(classes, key=int)
        if [int(i) for i in ids] != list(range(1, len(ids) + 1)):
            raise PrepError(f"{name}: classes.txt ids must run 1..n; got {ids[:5]}...")
    unknown = sorted({labels[i] for i in paths} - set(classes), key=int)
    if unknown:
        raise PrepError(f"{name}: image_class_labels.txt uses class id {unknown[0]}, which classes.txt lacks.")
    index = {cid: k for k, cid in enumerate(ids)}
    train: Items = []
    test: Items = []
    for image_id, rel in paths.items():
        flag = is_train[image_id]
        if flag not in ("0", "1"):
            raise PrepError(f"{name}: train_test_split.txt flag of image {image_id} is {flag!r}, not 0 or 1.")
        (train if flag == "1" else test).append((rel, index[labels[image_id]]))
    return RawSplits(train, test, [classname(classes[cid]) for cid in ids])


def read_cub(dataset_dir: str) -> RawSplits:
    # "001.Black_footed_Albatross" -> "Black footed Albatross"
    return _image_list_dataset(
        dataset_dir, "cub", lambda s: re.sub(r"^\d+\.", "", s).replace("_", " "), leaf_classes_only=False
    )


def read_nabirds(dataset_dir: str) -> RawSplits:
    return _image_list_dataset(dataset_dir, "nabirds", lambda s: s, leaf_classes_only=True)


def read_flowers(dataset_dir: str) -> RawSplits:
    require(
        "flowers",
        dataset_dir,
        ("jpg", "imagelabels.mat", "setid.mat"),
        "Put 102flowers.tgz, imagelabels.mat and setid.mat there (or run with --download).",
    )
    labels = [int(y) for y in _loadmat(os.path.join(dataset_dir, "imagelabels.mat"))["labels"].ravel()]
    setid = _loadmat(os.path.join(dataset_dir, "setid.mat"))
    num_classes = max(labels)
    if sorted(set(labels)) != list(range(1, num_classes + 1)):
        raise PrepError(f"flowers: imagelabels.mat labels must cover 1..{num_classes}.")

    def items(key: str) -> Items:
        ids = [int(i) for i in setid[key].ravel()]
        bad = [i for i in ids if not 1 <= i <= len(labels)]
        if bad:
            raise PrepError(f"flowers: setid.mat '{key}' names image {bad[0]}, but imagelabels.mat has {len(labels)}.")
        return [(f"jpg/image_{i:05d}.jpg", labels[i - 1] - 1) for i in ids]

    names_path = os.path.join(dataset_dir, "cat_to_name.json")
    if os.path.isfile(names_path):
        try:
            cat_to_name = json.loads(read_text(names_path))
        except ValueError as e:
            raise PrepError(f"{names_path} is not valid JSON ({e}).") from None
        if not isinstance(cat_to_name, dict):
            raise PrepError(f"{names_path} must map class numbers to names, got {type(cat_to_name).__name__}.")
        classnames = [cat_to_name.get(str(k), str(k)) for k in range(1, num_classes + 1)]
    else:
        classnames = [f"flower {k}" for k in range(1, num_classes + 1)]
    # the release calls its lists trnid / valid / tstid
    return RawSplits(items("trnid"), items("tstid"), classnames, val=items("valid"))


def read_dogs(dataset_dir: str) -> RawSplits:
    require(
        "dogs",
        dataset_dir,
        ("Images", "train_list.mat", "test_list.mat"),
        "Extract images.tar and lists.tar there (or run with --download).",
    )
    folder_of: Dict[int, str] = {}

    def items(fname: str) -> Items:
        mat = _loadmat(os.path.join(dataset_dir, fname))
        files, labels = mat["file_list"], mat["labels"]
        if len(files) != len(labels):
            raise PrepError(f"dogs: {fname} lists {len(files)} files but {len(labels)} labels.")
        out = []
        for f, y in zip(files, labels):
            rel, label = str(_unwrap(f)), int(_unwrap(y)) - 1
            folder = rel.split("/")[0]
            if folder_of.setdefault(label, folder) != folder:
                raise PrepError(f"dogs: {fname} gives label {label + 1} to both {folder_of[label]} and {folder}.")
            out.append((rel, label))
        return out

    train, test = items("train_list.mat"), items("test_list.mat")
    if sorted(folder_of) != list(range(len(folder_of))):
        raise PrepError("dogs: labels of train_list.mat/test_list.mat must run 1..n without gaps.")
    # "n02085620-Chihuahua" -> "Chihuahua", "n02085782-Japanese_spaniel" -> "Japanese spaniel"
    classnames = [folder_of[k].split("-", 1)[-1].replace("_", " ") for k in range(len(folder_of))]
    return RawSplits(train, test, classnames)


def _cars_class_names(mat, path: str) -> List[str]:
    if "class_names" not in mat:
        raise PrepError(f"cars: {path} has no class_names; it is not the Stanford Cars file.")
    return [str(_unwrap(c)) for c in mat["class_names"].ravel()]


def read_cars_all_images(dataset_dir: str) -> RawSplits:
    """The all-images release: car_ims/ (all 16,185 images) and cars_annos.mat, whose annotations
    give relative_im_path, class (1..196) and test (0/1), and whose class_names name the classes."""
    path = os.path.join(dataset_dir, "cars_annos.mat")
    mat = _loadmat(path)
    classnames = _cars_class_names(mat, path)
    train: Items = []
    test: Items = []
    for a in mat["annotations"].ravel():
        label = int(_unwrap(a["class"])) - 1
        if not 0 <= label < len(classnames):
            raise PrepError(f"cars: {path} uses class {label + 1}; its class_names has {len(classnames)} classes.")
        flag = int(_unwrap(a["test"]))
        if flag not in (0, 1):
            raise PrepError(f"cars: {path} gives {_unwrap(a['relative_im_path'])} the test flag {flag}, not 0 or 1.")
        (test if flag else train).append((str(_unwrap(a["relative_im_path"])), label))
    return RawSplits(train, test, classnames)


def read_cars(dataset_dir: str) -> RawSplits:
    if os.path.isdir(os.path.join(dataset_dir, "car_ims")) and os.path.isfile(
        os.path.join(dataset_dir, "cars_annos.mat")
    ):
        return read_cars_all_images(dataset_dir)
    require(
        "cars",
        dataset_dir,
        ("cars_train", "cars_test", "devkit/cars_train_annos.mat", "devkit/cars_meta.mat"),
        "Extract cars_train.tgz, cars_test.tgz and car_devkit.tgz there (or car_ims.tgz and put "
        "cars_annos.mat beside it: the all-images release).",
    )
    test_annos = find_first(dataset_dir, ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat"))
    if test_annos is None:
        raise PrepError(
            f"cars: {dataset_dir} lacks cars_test_annos_withlabels.mat (the devkit's cars_test_annos.mat "
            f"has no labels). {CARS_HOW}"
        )
    meta = os.path.join(dataset_dir, "devkit", "cars_meta.mat")
    classnames = _cars_class_names(_loadmat(meta), meta)

    def items(path: str, folder: str) -> Items:
        out = []
        for a in _loadmat(path)["annotations"].ravel():
            label = int(_unwrap(a["class"])) - 1
            if not 0 <= label < len(classnames):
                raise PrepError(f"cars: {path} uses class {label + 1}; cars_meta.mat has {len(classnames)} classes.")
            out.append((f"{folder}/{_unwrap(a['fname'])}", label))
        return out

    return RawSplits(
        items(os.path.join(dataset_dir, "devkit", "cars_train_annos.mat"), "cars_train"),
        items(test_annos, "cars_test"),
        classnames,
    )


READERS: Dict[str, Callable[[str], RawSplits]] = {
    "cub": read_cub,
    "nabirds": read_nabirds,
    "flowers": read_flowers,
    "dogs": read_dogs,
    "cars": read_cars,
}


# ------------------------------------------------------------------ getting the official files in place


@dataclass(frozen=True)
class Part:
    wanted: str  # folder or file that must exist in the dataset folder
    source: Optional[Source] = None  # archive that provides it; None for a file published as is
    url: str = ""  # download URL of a file published as is
    how: str = ""


PARTS: Dict[str, List[Part]] = {
    "cub": [Part("images", Source(("CUB_200_2011.tgz", "CUB_200_2011.tar.gz"), strip="CUB_200_2011", url=CUB_URL))],
    "nabirds": [
        Part("images", Source(("nabirds.tar.gz", "nabirds.tgz", "nabirds.tar"), strip="nabirds", how=NABIRDS_HOW))
    ],
    "flowers": [
        Part("jpg", Source(("102flowers.tgz",), url=f"{FLOWERS_URL}/102flowers.tgz")),
        Part("imagelabels.mat", url=f"{FLOWERS_URL}/imagelabels.mat"),
        Part("setid.mat", url=f"{FLOWERS_URL}/setid.mat"),
    ],
    "dogs": [
        Part("Images", Source(("images.tar",), url=f"{DOGS_URL}/images.tar")),
        Part("train_list.mat", Source(("lists.tar",), url=f"{DOGS_URL}/lists.tar")),
    ],
    "cars": [
        Part("cars_train", Source(("cars_train.tgz",), how=CARS_HOW)),
        Part("cars_test", Source(("cars_test.tgz",), how=CARS_HOW)),
        Part("devkit", Source(("car_devkit.tgz",), how=CARS_HOW)),
        Part("cars_test_annos_withlabels.mat", how=CARS_HOW),
    ],
}
# Stanford Cars as one folder of all images with one annotation file (the all-images release).
CARS_ALL_IMAGES_PARTS = [
    Part("car_ims", Source(("car_ims.tgz", "car_ims.tar.gz"), how=CARS_HOW)),
    Part("cars_annos.mat", how=CARS_HOW),
]


def parts_of(name: str, dataset_dir: str, search: Sequence[str]) -> List[Part]:
    """The parts to put in place; for Cars, whichever of its two releases is at hand."""
    if name == "cars" and all(_found(p, dataset_dir, search) for p in CARS_ALL_IMAGES_PARTS):
        return CARS_ALL_IMAGES_PARTS
    return PARTS[name]


def _found(part: Part, dataset_dir: str, search: Sequence[str]) -> bool:
    if os.path.exists(os.path.join(dataset_dir, part.wanted)):
        return True
    names = part.source.archives if part.source else (part.wanted,)
    return any(find_first(d, names) for d in search)


def obtain_parts(name: str, root: str, dataset_dir: str, download: bool) -> None:
    """Check every part is at hand (so nothing is extracted when one is missing), then put each in place."""
    search = [dataset_dir, root]
    parts = parts_of(name, dataset_dir, search)
    missing, hows = [], []
    for part in parts:
        url = part.source.url if part.source else part.url
        if _found(part, dataset_dir, search) or (download and url):
            continue
        what = " or ".join(part.source.archives) if part.source else part.wanted
        missing.append(part.wanted if what == part.wanted else f"{part.wanted} ({what})")
        how = (part.source.how if part.source else part.how) or (
            f"Download {what} from {url}" + ("." if download else " (or run with --download).")
        )
        if how not in hows:
            hows.append(how)
    if missing:
        raise PrepError(
            f"{name}: {dataset_dir} lacks {', '.join(missing)}. {' '.join(hows)} Put the official "
            f"files in {dataset_dir} or {root}. Nothing was extracted or written."
        )
    for part in parts:
        if part.source is not None:
            obtain(name, dataset_dir, part.wanted, part.source, [root], allow_download=download)
            continue
        target = os.path.join(dataset_dir, part.wanted)
        if os.path.exists(target):
            continue
        elsewhere = find_first(root, (part.wanted,))
        os.makedirs(dataset_dir, exist_ok=True)
        if elsewhere:
            shutil.copyfile(elsewhere, target)
        else:
            fetch_url(part.url, target)


# ------------------------------------------------------------------ splits

VAL_CARVES = ("vpt", "per_class")


def stratified_train_counts(counts: Dict[int, int], n_train: int, rng: random.Random) -> Dict[int, int]:
    """Training images per class when ``n_train`` of all are kept, proportionally to ``counts``.

    Largest remainder: each class gets floor(count * n_train / total), and the images still
    missing go one each to the classes with the largest remainders, ties drawn with ``rng``.
    That is the allocation of a stratified shuffle split (scikit-learn's
    ``StratifiedShuffleSplit`` / ``train_test_split(stratify=...)``), which the per-class sizes
    of VPT's published splits follow exactly.
    """
    total = sum(counts.values())
    kept = {c: n * n_train // total for c, n in counts.items()}
    remainders: Dict[int, List[int]] = defaultdict(list)
    for c, n in counts.items():
        remainders[n * n_train % total].append(c)  # remainder of count * n_train / total, times total
    missing = n_train - sum(kept.values())
    for remainder in sorted(remainders, reverse=True):
        if missing <= 0:
            break
        tied = remainders[remainder]
        chosen = tied if len(tied) <= missing else rng.sample(tied, missing)
        for c in chosen:
            kept[c] += 1
        missing -= len(chosen)
    return kept


def carve_val(train: Items, val_percent: int, seed: int, rule: str = "vpt") -> Tuple[Items, Items]:
    """Move part of the official train list to val (datasets without an official val).

    ``vpt`` (VPT's published splits): ceil(val_percent % of all training images) to val,
    stratified by :func:`stratified_train_counts`; on CUB, NABirds, Dogs and Cars this gives
    VPT's per-class sizes exactly (Cars: 24 of 27 classes tied on the remainder keep the extra
    image; which 24 is drawn). A class of four images can then get no val image (NABirds).
    ``per_class`` (mmprompt's earlier rule): val_percent % of each class, rounded half up, at
    least one for a class of two or more, so every class is validated.
    Which images go to val is drawn with ``random.Random(seed)``; VPT's published images came from
    a script and seed that were not released and cannot be reproduced. Both lists keep the
    official order.
    """
    if rule not in VAL_CARVES:
        raise PrepError(f"--val-carve must be one of {', '.join(VAL_CARVES)}; got {rule!r}")
    by_class: Dict[int, List[str]] = defaultdict(list)
    for rel, label in train:
        by_class[label].append(rel)
    rng = random.Random(seed)
    if rule == "vpt":
        total = len(train)
        n_val_total = -(-total * val_percent // 100)  # ceil, as a stratified split sizes its test part
        kept = stratified_train_counts({c: len(p) for c, p in by_class.items()}, total - n_val_total, rng)
        n_val = {c: len(by_class[c]) - kept[c] for c in by_class}
    else:
        n_val = {}
        for c, paths in by_class.items():
            n = (len(paths) * val_percent + 50) // 100
            n_val[c] = min(max(n, 1), len(paths) - 1) if len(paths) >= 2 else 0
    to_val = set()
    for c in sorted(by_class):
        to_val.update(rng.sample(by_class[c], n_val[c]))
    return ([(rel, y) for rel, y in train if rel not in to_val], [(rel, y) for rel, y in train if rel in to_val])


def build_splits(name: str, raw: RawSplits, image_dir: str, val_percent: int, seed: int, val_carve: str = "vpt"):
    """(splits {train, val, test: Items}, skipped image paths), after every check."""
    listed = raw.train + raw.test + (raw.val or [])
    require_listed_files(name, image_dir, [rel for rel, _ in listed], "the official lists")
    skipped = sorted({rel for rel, _ in listed if not is_decodable(os.path.join(image_dir, rel))})
    if skipped:
        warnings.warn(
            f"{name}: leaving {len(skipped)} undecodable image(s) out of the splits: {', '.join(skipped[:5])}"
        )
    bad = set(skipped)
    keep = lambda items: [(rel, y) for rel, y in items if rel not in bad]  # noqa: E731
    train, test = keep(raw.train), keep(raw.test)
    if raw.val is not None:
        splits = {"train": train, "val": keep(raw.val), "test": test}
    else:
        tr, va = carve_val(train, val_percent, seed, val_carve)
        splits = {"train": tr, "val": va, "test": test}
    present = {y for _, y in splits["train"]}
    empty = [f"{k} {c!r}" for k, c in enumerate(raw.classnames) if k not in present]
    if empty:
        raise PrepError(
            f"{name}: class(es) {', '.join(empty[:5])} have no usable training image in {image_dir}. "
            f"Re-extract the dataset; no split file was written."
        )
    return splits, skipped


def write_all_or_nothing(dataset_dir: str, contents: Dict[str, object]) -> None:
    """Write every file to a temporary name first, then rename them all into place."""
    staged = []
    try:
        for fname, data in contents.items():
            fd, tmp = tempfile.mkstemp(dir=dataset_dir, prefix=f".{fname}-")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            staged.append((tmp, os.path.join(dataset_dir, fname)))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)


def prepare(
    root: str,
    name: str,
    download: bool = False,
    val_percent: int = 10,
    seed: int = 0,
    overwrite: bool = False,
    out=None,
    val_carve: str = "vpt",
) -> FGVCDataset:
    """Arrange one dataset, write its split files, print and return its summary (the reader)."""
    from ...config import get_cfg

    info = FGVC_DATASETS[name]
    dataset_dir, image_dir = dataset_paths(root, info)
    have_splits = all(os.path.isfile(os.path.join(dataset_dir, f)) for f in SPLIT_FILES.values())
    skipped: List[str] = []
    if overwrite or not have_splits:
        obtain_parts(name, root, dataset_dir, download)
        raw = READERS[name](dataset_dir)
        splits, skipped = build_splits(name, raw, image_dir, val_percent, seed, val_carve)
        contents: Dict[str, object] = {SPLIT_FILES[s]: dict(items) for s, items in splits.items()}
        contents[CLASSNAMES_FILE] = raw.classnames
        write_all_or_nothing(dataset_dir, contents)
    cfg = get_cfg()
    cfg.DATASET.ROOT = root
    dataset = FGVCDataset(cfg, name)
    counts = {"train": len(dataset.train_x), "val": len(dataset.val), "test": len(dataset.test)}
    print_summary(name, dataset_dir, counts, dataset.num_classes, skipped, out=out)
    if dataset.num_classes != info.num_classes:
        print(f"  note: the official {info.title} has {info.num_classes} classes", file=out)
    if have_splits and not overwrite:
        print("  kept the split files already there (--overwrite regenerates them)", file=out)
    return dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder that holds (or will hold) every dataset ($DATA)")
    parser.add_argument("--dataset", required=True, choices=sorted(FGVC_DATASETS) + ["all"])
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch missing files from the owners' hosts where they allow it (CUB, Flowers, Dogs)",
    )
    parser.add_argument(
        "--val-percent",
        type=int,
        default=10,
        help="share of each class's training images moved to val where there is no official val",
    )
    parser.add_argument(
        "--val-carve",
        choices=VAL_CARVES,
        default="vpt",
        help="vpt: ceil(val-percent %%) of all training images, stratified as VPT's published "
        "splits are; per_class: val-percent %% of each class rounded half up, at least one",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of that val draw")
    parser.add_argument("--overwrite", action="store_true", help="regenerate split files that already exist")
    args = parser.parse_args(argv)
    if not 0 < args.val_percent < 100:
        raise PrepError(f"--val-percent must be between 1 and 99; got {args.val_percent}")
    root = os.path.abspath(os.path.expanduser(args.root))
    if os.path.exists(root) and not os.path.isdir(root):
        raise PrepError(f"--root {root} is a file, not a folder.")
    if not os.path.isdir(root):
        raise PrepError(
            f"--root {root} does not exist. Create it and put the official downloads in it (or run with --download)."
        )
    names = sorted(FGVC_DATASETS) if args.dataset == "all" else [args.dataset]
    return prepare_each(
        names,
        lambda name: prepare(
            root, name, args.download, args.val_percent, args.seed, args.overwrite, val_carve=args.val_carve
        ),
    )


if __name__ == "__main__":
    from ...utils.cli import run_cli

    run_cli(main)
