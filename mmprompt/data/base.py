"""Items, datasets, split files, few-shot sampling and base/novel class splits.

Every dataset of the toolkit (CLIP benchmark, FGVC, text tasks) is a :class:`DatasetBase` holding
three lists of :class:`Datum`. Vision items carry ``impath`` (absolute); text items carry ``text``
(and ``text_b`` for pairs).

Split files use CoOp's format, ``{"train": [[relpath, label, classname], ...], "val": ..., "test": ...}``,
with paths relative to the dataset's image folder, so the published ``split_zhou_*.json`` files
read unchanged and a moved data root keeps working.

Few-shot splits are cached as ``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.pkl`` (CoOp's name).
The pickle holds only builtins (a dict of lists of ``[relpath, label, classname]``) and is read
with an unpickler that refuses every class, so a cache file can never run code; CoOp's own cache
files (pickled ``Datum`` objects) are refused with a message saying to delete them.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence

from ..errors import MMPromptError

SPLITS = ("train", "val", "test")


class DatasetMissingError(MMPromptError):
    """A dataset folder, file or split that is not where the reader looks for it."""

    def __init__(self, dataset: str, folder: str, missing: Iterable[str], prep_command: str = ""):
        self.dataset, self.folder, self.missing = dataset, folder, list(missing)
        what = ", ".join(self.missing)
        how = f" Prepare it with: {prep_command}" if prep_command else ""
        super().__init__(f"{dataset}: looked in {folder} and did not find {what}.{how}")


class DataError(MMPromptError):
    """Data that exists but cannot be used as asked (too few items for the shots, an empty class...)."""


@dataclass(frozen=True)
class Datum:
    """One example: an image path or a text (and optional second text), with its label."""

    label: int
    classname: str = ""
    impath: str = ""  # absolute path of the image; "" for text items
    text: Optional[str] = None
    text_b: Optional[str] = None  # second sentence of pair tasks
    domain: int = 0  # source domain index (multi-domain datasets); 0 otherwise


class DatasetBase:
    """Three splits of :class:`Datum` plus the class names.

    ``dataset_dir`` is the dataset's folder (few-shot splits are cached below it); ``image_dir``
    is the folder image paths are stored relative to. Both are "" for datasets that have no files
    (text tasks from ``datasets``), which are then sampled without a cache.
    """

    def __init__(self, train_x: Sequence[Datum], val: Sequence[Datum] = (), test: Sequence[Datum] = (),
                 classnames: Optional[Sequence[str]] = None, name: str = "",
                 dataset_dir: str = "", image_dir: str = ""):
        self.train_x, self.val, self.test = list(train_x), list(val), list(test)
        self.name = name or type(self).__name__
        self.dataset_dir, self.image_dir = dataset_dir, image_dir
        if classnames is None:
            classnames = classnames_from_items(self.train_x + self.val + self.test)
        self.classnames = list(classnames)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def lab2cname(self) -> Dict[int, str]:
        return dict(enumerate(self.classnames))

    def splits(self) -> Dict[str, List[Datum]]:
        return {"train": self.train_x, "val": self.val, "test": self.test}

    def __repr__(self):
        return (f"{self.name}({self.num_classes} classes, train {len(self.train_x)}, "
                f"val {len(self.val)}, test {len(self.test)})")


def classnames_from_items(items: Iterable[Datum]) -> List[str]:
    """Class names indexed by label; labels must run from 0 without gaps."""
    names: Dict[int, str] = {}
    for item in items:
        names.setdefault(item.label, item.classname)
    if not names:
        return []
    labels = sorted(names)
    if labels != list(range(len(labels))):
        missing = sorted(set(range(labels[-1] + 1)) - set(labels))
        raise DataError(f"Labels must run from 0 to n-1 without gaps; missing labels {missing[:10]}")
    return [names[i] for i in labels]


# ------------------------------------------------------------------ split files (CoOp json)

def _atomic_write(path: str, data: bytes) -> None:
    """Write to a temp file beside ``path`` and rename, so a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _to_rows(items: Sequence[Datum], path_prefix: str) -> List[list]:
    return [[os.path.relpath(d.impath, path_prefix).replace(os.sep, "/"), int(d.label), d.classname]
            for d in items]


def _from_rows(rows, path_prefix: str, source: str) -> List[Datum]:
    items = []
    for row in rows:
        if not (isinstance(row, (list, tuple)) and len(row) == 3 and isinstance(row[0], str)
                and isinstance(row[1], int) and isinstance(row[2], str)):
            raise DataError(f"{source}: every entry must be [relative_path, label, classname]; got {row!r}")
        relpath, label, classname = row
        items.append(Datum(impath=os.path.join(path_prefix, relpath), label=label, classname=classname))
    return items


def write_split_json(path: str, train: Sequence[Datum], val: Sequence[Datum], test: Sequence[Datum],
                     path_prefix: str) -> None:
    """Write a CoOp split file; image paths are stored relative to ``path_prefix``."""
    split = {"train": _to_rows(train, path_prefix), "val": _to_rows(val, path_prefix),
             "test": _to_rows(test, path_prefix)}
    _atomic_write(path, json.dumps(split, indent=1).encode())


def read_split_json(path: str, path_prefix: str):
    """Read a CoOp split file -> (train, val, test) lists of :class:`Datum` with absolute paths."""
    try:
        with open(path, encoding="utf-8") as f:
            split = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"Split file {path} is not valid JSON ({e}). Delete it to regenerate it "
                        f"with the prep script, or restore the published file.") from None
    except OSError as e:
        raise DataError(f"Split file {path} cannot be read: {e.strerror}.") from None
    if not isinstance(split, dict) or not all(k in split for k in SPLITS):
        raise DataError(f"Split file {path} must be a JSON object with keys {list(SPLITS)}")
    return tuple(_from_rows(split[k], path_prefix, f"{path} [{k}]") for k in SPLITS)


# ------------------------------------------------------------------ few-shot sampling

def group_by_label(items: Iterable[Datum]) -> Dict[int, List[Datum]]:
    groups: Dict[int, List[Datum]] = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    return dict(groups)


def generate_fewshot(data: Sequence[Datum], num_shots: int, seed: int, split: str = "train") -> List[Datum]:
    """``num_shots`` items per class drawn with ``random.Random(seed)``; classes in label order.

    A class with fewer than ``num_shots`` items is an error (CoOp silently keeps the whole class,
    which makes a "K-shot" result quietly use fewer shots).
    """
    if num_shots <= 0:
        return list(data)
    rng = random.Random(seed)
    out: List[Datum] = []
    for label, items in sorted(group_by_label(data).items()):
        if len(items) < num_shots:
            raise DataError(f"{num_shots}-shot sampling of the {split} split: class {label} "
                            f"'{items[0].classname}' has only {len(items)} items. Lower "
                            f"DATASET.NUM_SHOTS to at most {len(items)}.")
        out.extend(rng.sample(items, num_shots))
    return out


def fewshot_val_shots(num_shots: int) -> int:
    """CoOp's rule: validation gets min(K, 4) items per class."""
    return min(num_shots, 4)


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cache(path: str, path_prefix: str):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        cache = _BuiltinsOnlyUnpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"Few-shot cache {path} is not an mmprompt cache ({e}); it may be CoOp's, "
                        f"which pickles Python objects. Delete it and it will be regenerated.") from None
    if not isinstance(cache, dict) or "train" not in cache or "val" not in cache:
        raise DataError(f"Few-shot cache {path} lacks 'train'/'val'; delete it to regenerate it.")
    return (_from_rows(cache["train"], path_prefix, path), _from_rows(cache["val"], path_prefix, path))


def fewshot_cache_path(dataset_dir: str, num_shots: int, seed: int) -> str:
    return os.path.join(dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.pkl")


def apply_fewshot(dataset: DatasetBase, num_shots: int, seed: int, use_cache: bool = True) -> DatasetBase:
    """Replace train/val by K-shot subsets (val gets min(K, 4)), read from or written to the cache.

    The cache is used when the dataset has files (``image_dir``); it stores paths relative to
    ``image_dir`` so it survives moving the data root.
    """
    if num_shots <= 0:
        return dataset
    cache = fewshot_cache_path(dataset.dataset_dir, num_shots, seed) if dataset.dataset_dir else ""
    cacheable = use_cache and cache and dataset.image_dir and all(d.impath for d in dataset.train_x)
    if cacheable and os.path.isfile(cache):
        train, val = _load_cache(cache, dataset.image_dir)
        known = {(d.impath, d.label) for d in dataset.train_x + dataset.val}
        if any((d.impath, d.label) not in known for d in train + val):
            raise DataError(f"Few-shot cache {cache} lists items that the dataset's current train/val "
                            f"splits do not hold (the split file changed since it was written). Delete "
                            f"{os.path.dirname(cache)} and it will be regenerated.")
    else:
        train = generate_fewshot(dataset.train_x, num_shots, seed, "train")
        val = generate_fewshot(dataset.val, fewshot_val_shots(num_shots), seed, "val") if dataset.val else []
        if cacheable:
            payload = {"train": _to_rows(train, dataset.image_dir), "val": _to_rows(val, dataset.image_dir)}
            try:
                _atomic_write(cache, pickle.dumps(payload, protocol=4))
            except OSError as e:  # a read-only dataset folder: the split is recomputed next time, same seed
                print(f"warning: cannot write the few-shot cache {cache} ({e.strerror}); continuing without it.",
                      file=sys.stderr)
    return _with_splits(dataset, train, val, dataset.test, dataset.classnames)


# ------------------------------------------------------------------ base / novel classes

def subsample_classes(*splits: Sequence[Datum], subsample: str = "all"):
    """Keep the base or new half of the classes and relabel from 0 (CoOp's base-to-novel rule).

    Labels are taken from all splits together and sorted; base = the first ceil(n/2), new = the
    rest. Returns the filtered splits in the same order.
    """
    subsample = subsample.lower()
    if subsample not in ("all", "base", "new"):
        raise DataError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new; got {subsample!r}")
    if subsample == "all":
        return tuple(list(s) for s in splits)
    selected = _selected_labels({d.label for s in splits for d in s}, subsample)
    relabel = {old: new for new, old in enumerate(selected)}
    return tuple([replace(d, label=relabel[d.label]) for d in s if d.label in relabel] for s in splits)


def apply_subsample(dataset: DatasetBase, subsample: str) -> DatasetBase:
    if subsample.lower() == "all":
        return dataset
    splits = (dataset.train_x, dataset.val, dataset.test)
    kept = _selected_labels({d.label for s in splits for d in s}, subsample.lower())
    train, val, test = subsample_classes(*splits, subsample=subsample)
    return _with_splits(dataset, train, val, test, [dataset.classnames[i] for i in kept])


def _selected_labels(labels, subsample: str) -> List[int]:
    labels = sorted(labels)
    half = math.ceil(len(labels) / 2)
    return labels[:half] if subsample == "base" else labels[half:]


def _with_splits(dataset: DatasetBase, train, val, test, classnames) -> DatasetBase:
    new = object.__new__(type(dataset))
    new.__dict__.update(dataset.__dict__)
    new.train_x, new.val, new.test, new.classnames = list(train), list(val), list(test), list(classnames)
    return new


def is_decodable(path: str) -> bool:
    """PIL recognises the file as an image and its structure checks out; a JPEG that does not end
    with its end-of-image marker (truncated, which ``verify`` does not see) is decoded in full to
    decide. Decompression bombs (PIL's pixel limit) count as undecodable."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if fmt == "JPEG":
            with open(path, "rb") as f:
                f.seek(max(os.path.getsize(path) - 64, 0))
                complete = b"\xff\xd9" in f.read()
            if not complete:
                with Image.open(path) as im:
                    im.load()
        return True
    except Exception:  # PIL raises many types for a bad file; each means "leave it out"
        return False
