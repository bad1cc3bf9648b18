"""Items, datasets, split files, few-shot sampling and base/novel class splits.

Every dataset of the toolkit (CLIP benchmark, FGVC, text tasks) is a :class:`DatasetBase` holding
three lists of :class:`Datum`. Vision items carry ``impath`` (absolute); text items carry ``text``
(and ``text_b`` for pairs).

Split files use CoOp's format, ``{"train": [[relpath, label, classname], ...], "val": ..., "test": ...}``,
with paths relative to the dataset's image folder, so the published ``split_zhou_*.json`` files
read unchanged and a moved data root keeps working.

Few-shot sampling is Dassl's ``generate_fewshot_dataset`` as CoOp/MaPLe call it for a ``--seed``
(:func:`sample_fewshot`): the same images for the same seed and split file. Splits are cached as
``<dataset_dir>/split_fewshot/mmprompt_shot_{K}-seed_{S}.json`` (relative paths; an mmprompt name,
so CoOp never meets a file it cannot read). CoOp's own ``shot_{K}-seed_{S}.pkl`` caches are read
when present, through an unpickler that builds nothing but Dassl's ``Datum`` fields (a cache file
can never run code), with their absolute paths rebased onto the dataset folder. The pickles of
lists that mmprompt wrote under CoOp's name before it sampled as Dassl are refused with a message
saying to delete them: their picks differ from Dassl's and CoOp cannot read them.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import re
import sys
import tempfile
import warnings
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence

from ..errors import MMPromptError
from ..utils.files import open_regular

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

    # val is the test set and few-shot sampling leaves it whole (CoOp's ImageNet).
    val_is_test = False

    def __init__(
        self,
        train_x: Sequence[Datum],
        val: Sequence[Datum] = (),
        test: Sequence[Datum] = (),
        classnames: Optional[Sequence[str]] = None,
        name: str = "",
        dataset_dir: str = "",
        image_dir: str = "",
    ):
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
        return (
            f"{self.name}({self.num_classes} classes, train {len(self.train_x)}, "
            f"val {len(self.val)}, test {len(self.test)})"
        )


def classnames_from_items(items: Iterable[Datum]) -> List[str]:
    """Class names indexed by label; labels must run from 0 without gaps."""
    names: Dict[int, str] = {}
    clashes = []
    for item in items:
        first = names.setdefault(item.label, item.classname)
        if first != item.classname and len(clashes) < 3 and (item.label, first, item.classname) not in clashes:
            clashes.append((item.label, first, item.classname))
    if not names:
        return []
    if clashes:  # which name a model is given would depend on the order of the items
        raise DataError(
            "A label has two class names: "
            + "; ".join(f"label {lab} is {a!r} and {b!r}" for lab, a, b in clashes)
            + ". Fix the split file (every item of a label names the same class)."
        )
    labels = sorted(names)
    if labels[0] < 0:
        raise DataError(
            f"Labels must run from 0 to n-1; got the negative label {labels[0]} (class {names[labels[0]]!r})."
        )
    if labels != list(range(len(labels))):
        missing = sorted(set(range(labels[-1] + 1)) - set(labels))
        raise DataError(f"Labels must run from 0 to n-1 without gaps; missing labels {missing[:10]}")
    classnames = [names[i] for i in labels]
    repeated = sorted({n for n in classnames if classnames.count(n) > 1})
    if repeated:  # CoOp's ImageNet list has two "crane"s: allowed, but a CLIP model cannot tell them apart
        warnings.warn(
            f"{len(repeated)} class name(s) belong to more than one label ({', '.join(map(repr, repeated[:5]))}); "
            "a model that reads class names (CLIP prompts) sees those classes as one."
        )
    return classnames


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
    return [[os.path.relpath(d.impath, path_prefix).replace(os.sep, "/"), int(d.label), d.classname] for d in items]


def check_inside(relpath: str, source: str) -> None:
    """A split entry's image path must stay inside the image folder it is relative to: an absolute
    path or one climbing out with ``..`` would read files the user never named (no published
    split has one)."""
    if os.path.isabs(relpath) or os.path.normpath(relpath).split(os.sep)[0] == os.pardir:
        raise DataError(
            f"{source}: the image path {relpath!r} points outside the dataset's image folder; split "
            f"files hold paths relative to it. Fix the entry or regenerate the file with the prep script."
        )


def _from_rows(rows, path_prefix: str, source: str) -> List[Datum]:
    items = []
    for row in rows:
        if not (
            isinstance(row, (list, tuple))
            and len(row) == 3
            and isinstance(row[0], str)
            and isinstance(row[1], int)
            and not isinstance(row[1], bool)
            and isinstance(row[2], str)
        ):
            raise DataError(f"{source}: every entry must be [relative_path, label, classname]; got {row!r}")
        relpath, label, classname = row
        check_inside(relpath, source)
        items.append(Datum(impath=os.path.join(path_prefix, relpath), label=label, classname=classname))
    return items


def write_split_json(
    path: str, train: Sequence[Datum], val: Sequence[Datum], test: Sequence[Datum], path_prefix: str
) -> None:
    """Write a CoOp split file; image paths are stored relative to ``path_prefix``."""
    split = {
        "train": _to_rows(train, path_prefix),
        "val": _to_rows(val, path_prefix),
        "test": _to_rows(test, path_prefix),
    }
    _atomic_write(path, json.dumps(split, indent=1).encode())


def read_split_json(path: str, path_prefix: str):
    """Read a CoOp split file -> (train, val, test) lists of :class:`Datum` with absolute paths."""
    try:
        with open_regular(path, encoding="utf-8") as f:
            split = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"Split file {path} is not valid JSON ({e}). Delete it to regenerate it "
            f"with the prep script, or restore the published file."
        ) from None
    except OSError as e:
        raise DataError(f"Split file {path} cannot be read: {e.strerror}.") from None
    if not isinstance(split, dict) or not all(k in split for k in SPLITS):
        raise DataError(f"Split file {path} must be a JSON object with keys {list(SPLITS)}")
    splits = tuple(_from_rows(split[k], path_prefix, f"{path} [{k}]") for k in SPLITS)
    try:  # labels and names as one file states them, so the message can name the file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # repeated names warn once, when the dataset is built
            classnames_from_items(item for items in splits for item in items)
    except DataError as e:
        raise DataError(f"Split file {path}: {e}") from None
    return splits


# ------------------------------------------------------------------ few-shot sampling


def group_by_label(items: Iterable[Datum]) -> Dict[int, List[Datum]]:
    """Items per label; labels in the order they first appear, items in list order."""
    groups: Dict[int, List[Datum]] = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    return dict(groups)


def generate_fewshot_dataset(
    data: Sequence[Datum], num_shots: int, rng: random.Random, split: str = "train"
) -> List[Datum]:
    """Dassl's ``generate_fewshot_dataset`` on one list, drawing from ``rng``.

    Classes are visited in the order their label first appears in ``data`` and each gives
    ``rng.sample(items, num_shots)``; a class with fewer items is kept whole (no item repeated,
    Dassl's default ``repeat=False``), with a warning, since that "K-shot" class then trains on
    fewer shots. ``num_shots`` < 1 returns ``data`` unchanged and draws nothing.
    """
    if num_shots < 1:
        return list(data)
    out: List[Datum] = []
    short = []
    for label, items in group_by_label(data).items():
        if len(items) >= num_shots:
            out.extend(rng.sample(items, num_shots))
        else:
            out.extend(items)
            short.append(f"{label} '{items[0].classname}' ({len(items)})")
    if short:
        warnings.warn(
            f"{num_shots}-shot sampling of the {split} split: {len(short)} class(es) have fewer "
            f"items and are kept whole, as Dassl does: {', '.join(short[:5])}"
            f"{' ...' if len(short) > 5 else ''}"
        )
    return out


def fewshot_val_shots(num_shots: int) -> int:
    """CoOp's rule: validation gets min(K, 4) items per class."""
    return min(num_shots, 4)


def sample_fewshot(train: Sequence[Datum], val: Sequence[Datum], num_shots: int, seed: int, val_is_test: bool = False):
    """(train, val) few-shot lists picked as a CoOp/MaPLe run with ``--seed seed`` picks them.

    Dassl's ``train.py`` seeds the global ``random`` with the seed (``set_random_seed``) and
    nothing draws from it before the dataset is built when its split file exists; the dataset
    then samples train with K shots and val with min(K, 4) from that one stream, in that order.
    ``random.Random(seed)`` is the same stream. (A CoOp run that first *generates* its split
    file draws the split from the stream too, so its first run picks differently from every
    later one; mmprompt always picks as the later runs do.) With ``val_is_test`` (CoOp's
    ImageNet) only train is sampled and val is returned as it is.
    """
    rng = random.Random(seed)
    train = generate_fewshot_dataset(train, num_shots, rng, "train")
    if val_is_test or not val:
        return train, list(val)
    return train, generate_fewshot_dataset(val, fewshot_val_shots(num_shots), rng, "val")


# The few-shot cache. mmprompt writes JSON (relative paths) under a name of its own, so CoOp,
# which reads split_fewshot/shot_K-seed_S.pkl as pickled Datum objects, never meets a file it
# cannot read; CoOp's own pickles are read (never executed) through _DasslDatumUnpickler.

FEWSHOT_CACHE_VERSION = 2  # 1 was the pickle of lists mmprompt wrote under CoOp's name, before it sampled as Dassl


def fewshot_cache_path(dataset_dir: str, num_shots: int, seed: int) -> str:
    """mmprompt's cache of the K-shot split for a seed."""
    return os.path.join(dataset_dir, "split_fewshot", f"mmprompt_shot_{num_shots}-seed_{seed}.json")


def coop_fewshot_cache_path(dataset_dir: str, num_shots: int, seed: int) -> str:
    """The cache CoOp/MaPLe write (pickled Dassl ``Datum`` objects)."""
    return os.path.join(dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.pkl")


DASSL_DATUM = ("dassl.data.datasets.base_dataset", "Datum")  # where the pickles say Datum lives
_DATUM_FIELDS = {"_impath": str, "_label": int, "_domain": int, "_classname": str}  # Dassl's Datum.__init__


class _PickledDatum:
    """What a Dassl ``Datum`` becomes while unpickling: its four fields and nothing else."""

    __slots__ = ("fields",)

    def __setstate__(self, state):
        if not (isinstance(state, dict) and set(state) <= set(_DATUM_FIELDS) and {"_impath", "_label"} <= set(state)):
            raise pickle.UnpicklingError(
                f"a Datum must hold {sorted(_DATUM_FIELDS)}; got "
                f"{sorted(state) if isinstance(state, dict) else type(state).__name__}"
            )
        for key, value in state.items():
            kind = _DATUM_FIELDS[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise pickle.UnpicklingError(f"Datum.{key} must be a {kind.__name__}; got {type(value).__name__}")
        self.fields = dict(state)


class _DasslDatumUnpickler(pickle.Unpickler):
    """Builtins (dicts, lists, strings, numbers) and Dassl's ``Datum`` as :class:`_PickledDatum`.

    Every other global, including the ``copyreg`` helpers that old pickle protocols need, is
    refused, so a cache file cannot construct or call anything.
    """

    def find_class(self, module, name):
        if (module, name) == DASSL_DATUM:
            return _PickledDatum
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids")


# What a hostile or damaged pickle raises while being loaded with the unpickler above.
_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
    MemoryError,
)


def _path_index(items: Sequence[Datum], path_prefix: str) -> Dict[str, Datum]:
    return {os.path.relpath(d.impath, path_prefix).replace(os.sep, "/"): d for d in items}


def _rebase(impath: str, index: Dict[str, Datum]) -> Optional[Datum]:
    """The item whose path relative to the image folder is the longest tail of ``impath``.

    CoOp stores absolute paths of the machine that wrote the cache; the tail below the
    dataset's image folder is the part that names the image (the split file's relpath).
    """
    parts = [p for p in re.split(r"[\\/]+", impath) if p]
    for start in range(len(parts)):
        found = index.get("/".join(parts[start:]))
        if found is not None:
            return found
    return None


def load_dassl_pickle(path: str, what: str, remedy: str):
    """A CoOp/Dassl pickle (a dict of lists of ``Datum``) loaded with :class:`_DasslDatumUnpickler`;
    ``what`` names the file and ``remedy`` says what to do in the error when it cannot be read."""
    with open_regular(path) as f:
        raw = f.read()
    try:
        data = _DasslDatumUnpickler(io.BytesIO(raw)).load()
    except _UNPICKLE_ERRORS as e:
        raise DataError(
            f"{what} {path} is not a CoOp/Dassl cache mmprompt can read ({e}); only pickled "
            f"Dassl Datum objects are accepted. {remedy}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), list):
        raise DataError(f"{what} {path} is not CoOp's format (a dict with a 'train' list of Datum). {remedy}")
    return data


def rebase_dassl_items(entries, items: Sequence[Datum], path_prefix: str, what: str) -> List[Datum]:
    """The items of ``items`` that pickled Datum ``entries`` name, in the entries' order.

    Each pickled absolute ``impath`` is matched by its longest tail that is a path of ``items``
    relative to ``path_prefix``, and must carry the same label; anything else raises, naming
    ``what`` (the file and split the entries came from).
    """
    if not isinstance(entries, list) or not all(
        isinstance(e, _PickledDatum) and hasattr(e, "fields") for e in entries
    ):  # a Datum created but never given its fields
        raise DataError(f"{what} must be a list of Dassl Datum objects.")
    index = _path_index(items, path_prefix)
    out = []
    for entry in entries:
        impath, label = entry.fields["_impath"], entry.fields["_label"]
        item = _rebase(impath, index)
        if item is None or item.label != label:
            raise DataError(
                f"{what} lists {impath} (label {label}), which is not an item under {path_prefix}"
                f"{'' if item is None else f' with that label (it has {item.label})'}."
            )
        out.append(item)
    return out


def read_coop_fewshot_cache(path: str, dataset: "DatasetBase"):
    """(train, val) from CoOp's ``shot_K-seed_S.pkl``, as items of ``dataset``'s own splits.

    Each pickled ``impath`` is rebased onto the dataset's image folder and must name an item of
    the same split with the same label: a cache written for another split file is refused. A
    cache without "val" (CoOp's ImageNet) gives ``dataset.val``.
    """
    resample = "Delete it and the split will be sampled again (as Dassl samples it)."
    cache = load_dassl_pickle(path, "Few-shot cache", resample)
    entries = cache["train"] + (cache.get("val") if isinstance(cache.get("val"), list) else [])
    if entries and all(isinstance(e, list) for e in entries):
        raise DataError(
            f"Few-shot cache {path} was written by an older mmprompt under CoOp's file name; its "
            f"picks differ from Dassl's for the same seed and CoOp cannot read it. Delete it; "
            f"mmprompt now samples as Dassl does and caches under mmprompt_shot_K-seed_S.json."
        )
    out = []
    for split, items in (("train", dataset.train_x), ("val", dataset.val)):
        if split not in cache:
            out.append(list(items))
            continue
        where = f"Few-shot cache {path} [{split}]"
        try:
            out.append(rebase_dassl_items(cache[split], items, dataset.image_dir, where))
        except DataError as e:
            raise DataError(
                f"{e} The cache was written for another {split} split of {dataset.name} than its "
                f"split file's. Delete {path} or restore that split file."
            ) from None
    return tuple(out)


def _load_cache(path: str, dataset: "DatasetBase", num_shots: int, seed: int):
    try:
        with open_regular(path, encoding="utf-8") as f:
            cache = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"Few-shot cache {path} is not valid JSON ({e}); delete it and it will be regenerated."
        ) from None
    if not (
        isinstance(cache, dict)
        and cache.get("version") == FEWSHOT_CACHE_VERSION
        and cache.get("num_shots") == num_shots
        and cache.get("seed") == seed
        and isinstance(cache.get("train"), list)
        and isinstance(cache.get("val"), list)
    ):
        raise DataError(
            f"Few-shot cache {path} is not an mmprompt {num_shots}-shot seed-{seed} cache of "
            f"version {FEWSHOT_CACHE_VERSION}; delete it and it will be regenerated."
        )
    train = _from_rows(cache["train"], dataset.image_dir, path)
    val = _from_rows(cache["val"], dataset.image_dir, path) if not cache.get("val_is_test") else list(dataset.val)
    for split, picked, items in (("train", train, dataset.train_x), ("val", val, dataset.val)):
        known = {(d.impath, d.label) for d in items}
        stale = [d for d in picked if (d.impath, d.label) not in known]
        if stale:
            raise DataError(
                f"Few-shot cache {path} lists {stale[0].impath} (label {stale[0].label}), which the "
                f"current {split} split does not hold (the split file changed since it was "
                f"written). Delete {path} and it will be regenerated."
            )
    return train, val


def apply_fewshot(dataset: DatasetBase, num_shots: int, seed: int, use_cache: bool = True) -> DatasetBase:
    """Replace train/val by the K-shot picks of a CoOp/MaPLe run with this seed (:func:`sample_fewshot`).

    With a cache (datasets with files, ``use_cache``), in this order: CoOp's own
    ``split_fewshot/shot_K-seed_S.pkl`` when present (the user's CoOp runs trained on it), then
    mmprompt's ``split_fewshot/mmprompt_shot_K-seed_S.json``, else sample and write the latter
    (paths relative to ``image_dir``, so it survives moving the data root). A dataset whose
    ``val_is_test`` is set (CoOp's ImageNet) keeps val = test.
    """
    if num_shots <= 0:
        return dataset
    val_is_test = getattr(dataset, "val_is_test", False)
    cacheable = use_cache and dataset.dataset_dir and dataset.image_dir and all(d.impath for d in dataset.train_x)
    coop_cache = coop_fewshot_cache_path(dataset.dataset_dir, num_shots, seed) if cacheable else ""
    cache = fewshot_cache_path(dataset.dataset_dir, num_shots, seed) if cacheable else ""
    if coop_cache and os.path.exists(coop_cache):
        train, val = read_coop_fewshot_cache(coop_cache, dataset)
    elif cache and os.path.exists(cache):
        train, val = _load_cache(cache, dataset, num_shots, seed)
    else:
        train, val = sample_fewshot(dataset.train_x, dataset.val, num_shots, seed, val_is_test)
        if cache:
            payload = {
                "version": FEWSHOT_CACHE_VERSION,
                "num_shots": num_shots,
                "seed": seed,
                "val_is_test": bool(val_is_test),
                "train": _to_rows(train, dataset.image_dir),
                "val": [] if val_is_test else _to_rows(val, dataset.image_dir),
            }
            try:
                _atomic_write(cache, json.dumps(payload, indent=1).encode())
            except OSError as e:  # a read-only dataset folder: the split is recomputed next time, same seed
                print(
                    f"warning: cannot write the few-shot cache {cache} ({e.strerror}); continuing without it.",
                    file=sys.stderr,
                )
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
    labels = {d.label for s in splits for d in s}
    kept = _selected_labels(labels, subsample.lower())
    if not kept:
        raise DataError(
            f"DATASET.SUBSAMPLE_CLASSES {subsample}: the dataset {dataset.name} has {len(labels)} class(es), "
            f"so the {subsample} half is empty; base-to-new needs at least 2 classes."
        )
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
        with open_regular(path) as f, Image.open(f) as im:
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
