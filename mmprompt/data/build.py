"""Datasets, transforms and loaders from a config.

* :func:`build_dataset` looks ``DATASET.NAME`` up in the DATASETS registry (entries are callables
  ``fn(cfg) -> DatasetBase`` returning every item), then applies ``DATASET.NUM_SHOTS`` few-shot
  sampling (cached, see :mod:`mmprompt.data.base`) and ``DATASET.SUBSAMPLE_CLASSES``, in CoOp's order.
* :func:`build_test_dataset` reads another dataset in full for cross-dataset or domain
  generalisation evaluation.
* :func:`build_transform`: CoOp's train augmentation (random resized crop + flip) and test
  resize + center crop; ``INPUT.PIXEL_MEAN/STD`` empty means the backbone's own normalisation,
  taken from the library's metadata without downloading anything.
* :func:`build_loader`: batches are dicts, ``{"image", "label"}`` or ``{"text", "label"}``
  (+ ``"text_b"`` for pair tasks).

Corrupt images: the prep scripts skip images PIL cannot decode (with a warning and a count in
their summary), so a prepared split only lists readable files. An image that still fails to
decode at load time (changed on disk after prep, or in a split file given by the user) stops the
run with an error naming the file: silently dropping it would change the evaluation set.
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError
from ..registry import DATASETS
from .base import DataError, DatasetBase, Datum, apply_fewshot, apply_subsample

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_dataset(cfg, name: Optional[str] = None, num_shots: Optional[int] = None,
                  subsample: Optional[str] = None) -> DatasetBase:
    """The dataset named by the config (or ``name``), after few-shot sampling and class subsampling."""
    name = name or cfg.DATASET.NAME
    if not name:
        raise ConfigError(f"DATASET.NAME is empty; set it to one of: {', '.join(DATASETS.names())}")
    if not cfg.DATASET.ROOT:
        raise ConfigError("DATASET.ROOT is empty; set it (or --root) to the folder holding the datasets.")
    dataset = DATASETS.get(name)(cfg)
    num_shots = cfg.DATASET.NUM_SHOTS if num_shots is None else num_shots
    if num_shots > 0:
        seed = cfg.DATASET.FEWSHOT_SEED if cfg.DATASET.FEWSHOT_SEED >= 0 else cfg.SEED
        use_cache = cfg.DATASET.CACHE_FEWSHOT and seed >= 0
        if seed < 0:
            seed = random.randrange(2**31)
        dataset = apply_fewshot(dataset, num_shots, seed, use_cache=use_cache)
    return apply_subsample(dataset, cfg.DATASET.SUBSAMPLE_CLASSES if subsample is None else subsample)


def build_test_dataset(cfg, name: str) -> DatasetBase:
    """Dataset ``name`` with every item and class, for evaluation after training on another one."""
    return build_dataset(cfg, name=name, num_shots=-1, subsample="all")


# ------------------------------------------------------------------ transforms

def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode
    modes = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
             "nearest": InterpolationMode.NEAREST}
    if name not in modes:
        raise ConfigError(f"INPUT.INTERPOLATION must be one of {sorted(modes)}; got {name!r}")
    return modes[name]


def _timm_mean_std(arch: str):
    import timm.models
    name = timm.models.get_deprecated_models().get(arch) or arch
    pretrained = timm.models.get_pretrained_cfg(name)
    if pretrained is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(pretrained.mean), tuple(pretrained.std)


def _open_clip_mean_std(arch: str, tag: str):
    if tag and not ("/" in tag or "\\" in tag or tag.endswith((".pt", ".bin", ".safetensors"))):
        import open_clip
        pretrained = open_clip.get_pretrained_cfg(arch, tag)
        if pretrained.get("mean") and pretrained.get("std"):
            return tuple(pretrained["mean"]), tuple(pretrained["std"])
    return CLIP_MEAN, CLIP_STD


def normalization(cfg):
    """(mean, std): the config's when given, otherwise the backbone's own."""
    mean, std = list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)
    auto = lambda v: not v or v == ["auto"]  # noqa: E731
    if auto(mean) != auto(std):
        raise ConfigError("Set both INPUT.PIXEL_MEAN and INPUT.PIXEL_STD, or neither (auto).")
    if not auto(mean):
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"INPUT.PIXEL_MEAN/STD need 3 values each; got {mean} and {std}")
        return tuple(mean), tuple(std)
    backbone = cfg.MODEL.BACKBONE
    if backbone.NAME == "open_clip":
        return _open_clip_mean_std(backbone.ARCH, backbone.PRETRAINED)
    if backbone.NAME.startswith("timm"):
        return _timm_mean_std(backbone.ARCH)
    return IMAGENET_MEAN, IMAGENET_STD


TRAIN_TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")


def build_transform(cfg, is_train: bool):
    from torchvision import transforms as T
    size = tuple(cfg.INPUT.SIZE)
    if len(size) != 2:
        raise ConfigError(f"INPUT.SIZE must be (height, width); got {cfg.INPUT.SIZE}")
    interp = _interpolation(cfg.INPUT.INTERPOLATION)
    mean, std = normalization(cfg)
    names = list(cfg.INPUT.TRANSFORMS)
    unknown = [n for n in names if n not in TRAIN_TRANSFORMS]
    if unknown:
        raise ConfigError(f"INPUT.TRANSFORMS: unknown {unknown}; choose from {list(TRAIN_TRANSFORMS)}")
    steps = []
    if is_train and "random_resized_crop" in names:
        steps.append(T.RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp))
    else:
        steps += [T.Resize(round(max(size) * cfg.INPUT.TEST_RESIZE_RATIO), interpolation=interp),
                  T.CenterCrop(size)]
    if is_train and "random_flip" in names:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    if not is_train or "normalize" in names:
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


# ------------------------------------------------------------------ loaders

def load_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"Image {path} is listed in the split but does not exist. Check DATASET.ROOT "
                        f"or rerun the prep script for this dataset.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"Image {path} cannot be decoded ({e}). Replace the file, or rerun the prep "
                        f"script, which leaves undecodable images out of the split.") from None


class DatumDataset(torch.utils.data.Dataset):
    """Items of a split as dicts: ``{"image", "label"}`` or ``{"text", "label"[, "text_b"]}``."""

    def __init__(self, items: Sequence[Datum], transform=None):
        self.items, self.transform = list(items), transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        if item.text is not None:
            out = {"text": item.text, "label": item.label}
            if item.text_b is not None:
                out["text_b"] = item.text_b
            # Task metadata (MultiRC question groups, ReCoRD candidates, STS-B's exact score)
            # rides along for the evaluators; it never overrides the fields models read.
            for key, value in (getattr(item, "meta", None) or {}).items():
                out.setdefault(key, value)
            return out
        image = load_image(item.impath)
        return {"image": self.transform(image) if self.transform else image, "label": item.label}


def build_loader(cfg, data: Sequence[Datum], is_train: bool, transform=None):
    """A DataLoader over ``data`` (a split's list of Datum), shuffled and augmented when training."""
    if not data:
        raise DataError("Cannot build a data loader over an empty split.")
    is_text = data[0].text is not None
    if transform is None and not is_text:
        transform = build_transform(cfg, is_train)
    batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE if is_train else cfg.DATALOADER.TEST.BATCH_SIZE
    generator = None
    if is_train and cfg.SEED >= 0:
        generator = torch.Generator().manual_seed(cfg.SEED)
    workers = cfg.DATALOADER.NUM_WORKERS
    return torch.utils.data.DataLoader(
        DatumDataset(data, transform), batch_size=batch_size, shuffle=is_train,
        num_workers=workers, generator=generator,
        drop_last=is_train and len(data) >= batch_size,  # CoOp: no ragged last train batch
        pin_memory=cfg.DATALOADER.PIN_MEMORY and cfg.USE_CUDA and torch.cuda.is_available(),
        persistent_workers=False)
