"""Fashion-MNIST (Xiao et al. 2017) in VPT's FGVC layout, from the Debian package's idx files.

Debian's ``dataset-fashion-mnist`` installs the four official files (``train-images-idx3-ubyte.gz``
and the others, 60,000 train / 10,000 test images of 28 x 28 grey pixels, 10 classes) under
:data:`DEBIAN_DIR`. ``datasets_prep/prepare_fashion_mnist.py`` turns them into the layout the
FGVC reader reads (:class:`~mmprompt.data.fgvc.FGVCDataset`): PNG files under
``$DATASET.ROOT/fashion-mnist/images/{train,test}/``, ``{train,val,test}.json`` (image path ->
class id 0..9) and ``classnames.json``. Registered as ``fashion_mnist``.

Images stay one grey channel on disk; the loader's ``convert("RGB")`` copies it into the three
channels an RGB backbone expects.
"""

from __future__ import annotations

import gzip
import os
from typing import Tuple

import numpy as np

from ..registry import DATASETS
from .base import DataError
from .fgvc import FGVCDataset, FGVCInfo

NAME = "fashion_mnist"
INFO = FGVCInfo(NAME, "Fashion-MNIST", "fashion-mnist", "images", 10)
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# the official file names, each read plain or gzipped
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# label id -> name, as the dataset's README lists them
CLASSNAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "idx data") -> np.ndarray:
    """An idx file's array: magic ``0 0 type ndim``, ``ndim`` big-endian uint32 sizes, then the
    values in row-major order (LeCun's MNIST format, which Fashion-MNIST keeps)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source} is not an idx file (its first bytes are {data[:4]!r}).")
    dtype, ndim = _IDX_TYPES.get(data[2]), data[3]
    if dtype is None or ndim == 0:
        raise DataError(f"{source}: unknown idx element type 0x{data[2]:02x} or no dimensions.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is cut short inside its header.")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    if len(data) != header + count * itemsize:
        raise DataError(
            f"{source}: the header promises {shape} values ({header + count * itemsize} bytes) but the "
            f"file has {len(data)} bytes; the file is truncated or not this format."
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def read_idx_file(folder: str, stem: str) -> np.ndarray:
    """``folder/stem`` or ``folder/stem.gz``, parsed."""
    for path, opener in ((os.path.join(folder, stem + ".gz"), gzip.open), (os.path.join(folder, stem), open)):
        if os.path.isfile(path):
            try:
                with opener(path, "rb") as f:
                    return parse_idx(f.read(), path)
            except (OSError, EOFError) as e:  # a damaged gzip stream
                raise DataError(f"{path} cannot be read ({e}); reinstall {DEBIAN_PACKAGE}.") from None
    raise DataError(
        f"Neither {stem}.gz nor {stem} is in {folder}. Fashion-MNIST comes with the Debian package "
        f"{DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}, files in {DEBIAN_DIR}), or pass "
        f"--src to a folder holding the four official idx files."
    )


def read_split(folder: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) uint8) of ``train`` or ``test``."""
    images_stem, labels_stem = FILES[split]
    images, labels = read_idx_file(folder, images_stem), read_idx_file(folder, labels_stem)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{folder}: {split} images {images.shape} and labels {labels.shape} do not pair up "
            f"(expected (N, H, W) and (N,))."
        )
    if labels.size and int(labels.max()) >= len(CLASSNAMES):
        raise DataError(
            f"{folder}: {split} labels go up to {int(labels.max())}; Fashion-MNIST has {len(CLASSNAMES)} classes."
        )
    return images, labels


def prep_command(root: str) -> str:
    return f"python datasets_prep/prepare_fashion_mnist.py --root {root or 'DATA'}"


@DATASETS.register(NAME)
def build_fashion_mnist(cfg) -> FGVCDataset:
    """Fashion-MNIST in the FGVC layout (see mmprompt.data.fashion_mnist)."""
    return FGVCDataset(cfg, NAME, info=INFO, prep=prep_command(cfg.DATASET.ROOT))
