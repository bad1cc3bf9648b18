"""Fashion-MNIST's idx files -> VPT's FGVC layout (PNG images, ``{train,val,test}.json``).

    apt-get install dataset-fashion-mnist        # the idx files, in /usr/share/datasets/fashion-mnist
    python datasets_prep/prepare_fashion_mnist.py --root $DATA [--val-per-class 100] [--test-per-class 0]

Writes ``$DATA/fashion-mnist/``: ``images/train/NNNNN.png`` and ``images/test/NNNNN.png``
(28 x 28, one grey channel, named by the image's index in the official file), ``train.json``,
``val.json`` and ``test.json`` (path relative to ``images/`` -> class id 0..9, the official
label), and ``classnames.json``; the dataset is then ``DATASET.NAME fashion_mnist``.

Splits: the official test set is the test split (``--test-per-class N`` keeps the first N of each
class in file order, a fixed balanced subset for CPU-sized evaluation; 0 keeps all 10,000). The
official training set has no val, so ``--val-per-class`` images of each class (default 100) are
drawn into val with ``random.Random(--seed)``; the rest are train, in file order. Only the
images the split files list are written. Split files already there are kept unless
``--overwrite``; they are written together, only once every image is on disk.
"""

from __future__ import annotations

import argparse
import os
import random
from typing import Dict, List, Tuple

from ...config import get_cfg
from ...data import fashion_mnist as fm
from ...data.fgvc import CLASSNAMES_FILE, SPLIT_FILES, FGVCDataset, dataset_paths
from ._common import PrepError, print_summary
from .prepare_fgvc import write_all_or_nothing

Items = List[Tuple[str, int]]  # (path relative to images/, class id)


def carve_val(labels, per_class: int, seed: int) -> Tuple[List[int], List[int]]:
    """(train indices, val indices), both in file order: ``per_class`` of each class to val."""
    rng = random.Random(seed)
    by_class: Dict[int, List[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    val = set()
    for y in sorted(by_class):
        if per_class >= len(by_class[y]):
            raise PrepError(
                f"--val-per-class {per_class} would leave class {y} ({fm.CLASSNAMES[y]}) with no "
                f"training image (it has {len(by_class[y])})."
            )
        val.update(rng.sample(by_class[y], per_class))
    return [i for i in range(len(labels)) if i not in val], sorted(val)


def first_per_class(labels, per_class: int) -> List[int]:
    """Indices of the first ``per_class`` images of each class, in file order (all when 0)."""
    if per_class <= 0:
        return list(range(len(labels)))
    seen: Dict[int, int] = {}
    keep = []
    for i, y in enumerate(labels):
        if seen.get(int(y), 0) < per_class:
            seen[int(y)] = seen.get(int(y), 0) + 1
            keep.append(i)
    return keep


def write_images(images, indices, folder: str, split: str) -> Dict[int, str]:
    """PNG files for ``indices``; returns index -> path relative to the image folder."""
    from PIL import Image

    os.makedirs(os.path.join(folder, split), exist_ok=True)
    width = max(5, len(str(len(images) - 1)))
    paths = {}
    for i in indices:
        rel = f"{split}/{i:0{width}d}.png"
        target = os.path.join(folder, rel)
        if not os.path.isfile(target):
            Image.fromarray(images[i], mode="L").save(target)
        paths[i] = rel
    return paths


def prepare(
    root: str,
    src: str = fm.DEBIAN_DIR,
    val_per_class: int = 100,
    test_per_class: int = 0,
    seed: int = 0,
    overwrite: bool = False,
    out=None,
) -> FGVCDataset:
    dataset_dir, image_dir = dataset_paths(root, fm.INFO)
    have_splits = all(os.path.isfile(os.path.join(dataset_dir, f)) for f in SPLIT_FILES.values())
    if overwrite or not have_splits:
        if not os.path.isdir(src):
            raise PrepError(
                f"{src} does not exist. Fashion-MNIST's idx files come with the Debian package "
                f"{fm.DEBIAN_PACKAGE}: apt-get install {fm.DEBIAN_PACKAGE} (or --src a folder with the "
                f"four official files)."
            )
        train_images, train_labels = fm.read_split(src, "train")
        test_images, test_labels = fm.read_split(src, "test")
        train_idx, val_idx = carve_val(train_labels, val_per_class, seed)
        test_idx = first_per_class(test_labels, test_per_class)
        os.makedirs(image_dir, exist_ok=True)
        train_paths = write_images(train_images, train_idx + val_idx, image_dir, "train")
        test_paths = write_images(test_images, test_idx, image_dir, "test")
        contents = {
            SPLIT_FILES["train"]: {train_paths[i]: int(train_labels[i]) for i in train_idx},
            SPLIT_FILES["val"]: {train_paths[i]: int(train_labels[i]) for i in val_idx},
            SPLIT_FILES["test"]: {test_paths[i]: int(test_labels[i]) for i in test_idx},
            CLASSNAMES_FILE: list(fm.CLASSNAMES),
        }
        write_all_or_nothing(dataset_dir, contents)
    cfg = get_cfg()
    cfg.DATASET.ROOT = root
    dataset = FGVCDataset(cfg, fm.NAME, info=fm.INFO, prep=fm.prep_command(root))
    print_summary(
        fm.NAME,
        dataset_dir,
        {"train": len(dataset.train_x), "val": len(dataset.val), "test": len(dataset.test)},
        dataset.num_classes,
        out=out,
    )
    if have_splits and not overwrite:
        print("  kept the split files already there (--overwrite regenerates them)", file=out)
    return dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder that holds the datasets ($DATA); created if missing")
    parser.add_argument("--src", default=fm.DEBIAN_DIR, help=f"folder of the idx files (default {fm.DEBIAN_DIR})")
    parser.add_argument("--val-per-class", type=int, default=100, help="training images per class moved to val")
    parser.add_argument(
        "--test-per-class",
        type=int,
        default=0,
        help="keep the first N test images of each class (0 = the whole 10,000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the val draw")
    parser.add_argument("--overwrite", action="store_true", help="regenerate split files that already exist")
    args = parser.parse_args(argv)
    if args.val_per_class < 1 or args.test_per_class < 0:
        raise PrepError("--val-per-class must be at least 1 and --test-per-class at least 0.")
    root = os.path.abspath(os.path.expanduser(args.root))
    if os.path.exists(root) and not os.path.isdir(root):
        raise PrepError(f"--root {root} is a file, not a folder.")
    os.makedirs(root, exist_ok=True)
    prepare(root, args.src, args.val_per_class, args.test_per_class, args.seed, args.overwrite)
    return 0


if __name__ == "__main__":
    from ...utils.cli import run_cli

    run_cli(main)
