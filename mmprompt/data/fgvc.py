"""The five FGVC datasets of VPT, in VPT's layout: ``{train,val,test}.json`` per dataset.

Each json maps an image path (relative to the dataset's image folder) to a class id from 0, as
VPT's ``JSONDataset`` reads it. ``datasets_prep/prepare_fgvc.py`` writes them from the official
train/test lists (and ``classnames.json``, a list of readable names by class id, which VPT's
layout lacks; without it the names are the ids). Split files a user already has (e.g. VPT's
own) are read as they are.

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
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..registry import DATASETS
from .base import DataError, DatasetBase, DatasetMissingError, Datum

SPLIT_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}
CLASSNAMES_FILE = "classnames.json"


@dataclass(frozen=True)
class FGVCInfo:
    name: str  # registry name
    title: str  # the dataset's own name
    folder: str  # folder under DATASET.ROOT
    image_subdir: str  # folder (inside ``folder``) that json paths are relative to; "" = the folder itself
    num_classes: int  # classes of the official release


FGVC_DATASETS: Dict[str, FGVCInfo] = {i.name: i for i in [
    FGVCInfo("cub", "CUB-200-2011", "CUB_200_2011", "images", 200),
    FGVCInfo("nabirds", "NABirds", "nabirds", "images", 555),
    FGVCInfo("flowers", "Oxford Flowers 102", "OxfordFlower", "", 102),
    FGVCInfo("dogs", "Stanford Dogs", "Stanford-dogs", "Images", 120),
    FGVCInfo("cars", "Stanford Cars", "Stanford-cars", "", 196),
]}


def prep_command(root: str, name: str) -> str:
    return f"python datasets_prep/prepare_fgvc.py --root {root or 'DATA'} --dataset {name}"


def dataset_paths(root: str, info: FGVCInfo):
    """(dataset folder, image folder) of ``info`` under ``root``."""
    dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(root)), info.folder)
    return dataset_dir, os.path.join(dataset_dir, info.image_subdir) if info.image_subdir else dataset_dir


def read_vpt_json(path: str) -> Dict[str, int]:
    """A VPT split file: {relative image path: class id}."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); delete it and run the prep script again.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must map image paths to class ids; got a {type(data).__name__}.")
    for rel, label in data.items():
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise DataError(f"{path}: class id of {rel!r} must be an integer >= 0; got {label!r}.")
    return data


def read_classnames(dataset_dir: str) -> Optional[List[str]]:
    path = os.path.join(dataset_dir, CLASSNAMES_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            names = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); delete it or restore it.") from None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DataError(f"{path} must be a JSON list of class names by class id.")
    return names


class FGVCDataset(DatasetBase):
    """Reader of one FGVC dataset's VPT split files."""

    def __init__(self, cfg, name: str):
        info = FGVC_DATASETS[name]
        root = cfg.DATASET.ROOT
        dataset_dir, image_dir = dataset_paths(root, info)
        missing = [f for f in SPLIT_FILES.values() if not os.path.isfile(os.path.join(dataset_dir, f))]
        if missing:
            raise DatasetMissingError(name, dataset_dir, missing, prep_command(root, name))
        splits = {s: read_vpt_json(os.path.join(dataset_dir, f)) for s, f in SPLIT_FILES.items()}
        labels = sorted({y for split in splits.values() for y in split.values()})
        classnames = read_classnames(dataset_dir)
        num_classes = len(classnames) if classnames is not None else (labels[-1] + 1 if labels else 0)
        if classnames is None:
            classnames = [str(i) for i in range(num_classes)]
        if labels and labels[-1] >= num_classes:
            raise DataError(f"{name}: class id {labels[-1]} in {dataset_dir} but {CLASSNAMES_FILE} names only "
                            f"{num_classes} classes. Run the prep script again.")
        empty = sorted(set(range(num_classes)) - set(splits["train"].values()))
        if empty:
            raise DataError(f"{name}: class(es) {', '.join(f'{i} {classnames[i]!r}' for i in empty[:5])} have no "
                            f"training image in {os.path.join(dataset_dir, SPLIT_FILES['train'])}.")
        items = {s: [Datum(impath=os.path.join(image_dir, rel), label=y, classname=classnames[y])
                     for rel, y in sorted(split.items())] for s, split in splits.items()}
        absent = [d.impath for split in items.values() for d in split if not os.path.isfile(d.impath)]
        if absent:
            listed = sum(len(v) for v in items.values())
            raise DatasetMissingError(name, image_dir, [f"{len(absent)} of the {listed} images its split files "
                                                        f"list (first: {absent[0]})"], prep_command(root, name))
        train = items["train"] + (items["val"] if cfg.DATASET.FGVC.TRAINVAL else [])
        super().__init__(train, items["val"], items["test"], classnames=classnames, name=name,
                         dataset_dir=dataset_dir, image_dir=image_dir)


def _register(name: str):
    def build(cfg) -> FGVCDataset:
        return FGVCDataset(cfg, name)
    build.__name__ = f"build_{name}"
    build.__doc__ = f"{FGVC_DATASETS[name].title} in VPT's layout (see mmprompt.data.fgvc)."
    DATASETS.register(name, build)


for _name in FGVC_DATASETS:
    _register(_name)
