"""Datasets, transforms and loaders from a config.

* :func:`build_dataset` looks ``DATASET.NAME`` up in the DATASETS registry (entries are callables
  ``fn(cfg) -> DatasetBase`` returning every item; Dassl's names such as ``OxfordPets`` are read as
  mmprompt's, see :data:`mmprompt.config.dassl_compat.DASSL_DATASET_NAMES`), then applies ``DATASET.NUM_SHOTS`` few-shot
  sampling (cached, see :mod:`mmprompt.data.base`) and ``DATASET.SUBSAMPLE_CLASSES``, in CoOp's order.
* :func:`build_test_dataset` reads another dataset in full for cross-dataset or domain
  generalisation evaluation.
* :func:`build_transform`: Dassl's transform names and semantics (CoOp's random resized crop +
  flip, VPT's resize + random crop) and test resize + center crop, on :func:`resolve_preprocess`:
  ``INPUT`` keys left unset (size, interpolation, mean/std, test resize) follow the backbone's
  own preprocess configuration, read from the library's metadata without downloading anything.
* :func:`load_image`: Dassl's ``convert("RGB")``, with 16-bit images scaled instead of clipped.
* :func:`build_loader`: batches are dicts, ``{"image", "label"}`` or ``{"text", "label"}``
  (+ ``"text_b"`` for pair tasks).

Corrupt images: the prep scripts skip images PIL cannot decode (with a warning and a count in
their summary), so a prepared split only lists readable files. An image that still fails to
decode at load time (changed on disk after prep, or in a split file given by the user) stops the
run with an error naming the file: silently dropping it would change the evaluation set.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..config.dassl_compat import canonical_dataset_name
from ..errors import ConfigError
from ..registry import DATASETS
from ..utils.extras import require
from ..utils.files import open_regular
from .base import DataError, DatasetBase, Datum, apply_fewshot, apply_subsample

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_dataset(
    cfg, name: Optional[str] = None, num_shots: Optional[int] = None, subsample: Optional[str] = None
) -> DatasetBase:
    """The dataset named by the config (or ``name``), after few-shot sampling and class subsampling."""
    name = name or cfg.DATASET.NAME
    if not name:
        raise ConfigError(f"DATASET.NAME is empty; set it to one of: {', '.join(DATASETS.names())}")
    if not cfg.DATASET.ROOT:
        raise ConfigError("DATASET.ROOT is empty; set it (or --root) to the folder holding the datasets.")
    dataset = DATASETS.get(canonical_dataset_name(name))(cfg)
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


@dataclass(frozen=True)
class Preprocess:
    """What the images of a run go through, resolved from ``INPUT.*`` and the backbone's own
    preprocess configuration (``INPUT`` keys left unset follow the backbone)."""

    size: Tuple[int, int]  # (height, width) the model gets
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    interpolation: str  # bilinear, bicubic, nearest
    resize_size: int  # shorter edge before the test center crop (and the train 'resize' step)
    resize_mode: str  # shortest (keep the aspect ratio) or squash (both sides to resize_size)


_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_RESIZE_MODES = ("shortest", "squash")


def _is_weights_file(tag: str) -> bool:
    return (
        "/" in tag
        or "\\" in tag
        or tag.startswith(".")
        or tag.lower().endswith((".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt"))
    )


def _open_clip_preprocess(backbone) -> dict:
    """open_clip's own choice, as ``create_model`` makes it without building anything: its
    PreprocessCfg defaults, the model config's ``preprocess_cfg``, the pretrained tag's values,
    and the image tower's ``image_size`` (or ``force_image_size``)."""
    open_clip = require("open_clip", "CLIP preprocessing")
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    from ..backbones.open_clip import resolve_open_clip_arch

    name = resolve_open_clip_arch(backbone.ARCH)
    model_cfg = open_clip.get_model_config(name) or {}
    cfg = merge_preprocess_dict(PreprocessCfg(), model_cfg.get("preprocess_cfg", {}))
    tag = str(backbone.PRETRAINED or "").strip()
    if tag and not _is_weights_file(tag):
        cfg = merge_preprocess_dict(cfg, open_clip.get_pretrained_cfg(name, tag) or {})
    size = (
        dict(backbone.KWARGS).get("force_image_size")
        or model_cfg.get("vision_cfg", {}).get("image_size")
        or cfg["size"]
    )
    return {
        "size": size,
        "mean": cfg["mean"],
        "std": cfg["std"],
        "interpolation": cfg["interpolation"],
        "resize_mode": cfg["resize_mode"],
        "crop_pct": 1.0,
    }


def _timm_preprocess(backbone) -> dict:
    """timm's pretrained_cfg of the architecture and tag (the default tag for random weights or
    a local file): input size (or KWARGS img_size), mean/std, interpolation, crop_pct, crop_mode."""
    timm = require("timm", "timm preprocessing")
    from timm.models import get_pretrained_cfg

    from ..backbones.timm_vit import resolve_timm_name

    name = resolve_timm_name(backbone.ARCH)
    tag = str(backbone.PRETRAINED or "").strip()
    if tag and not _is_weights_file(tag) and timm.list_pretrained(f"{name.split('.', 1)[0]}.{tag}"):
        name = f"{name.split('.', 1)[0]}.{tag}"
    pretrained = get_pretrained_cfg(name)
    if pretrained is None:
        return {}
    size = dict(backbone.KWARGS).get("img_size") or tuple(pretrained.input_size[1:])
    crop_mode = getattr(pretrained, "crop_mode", "center") or "center"
    if crop_mode not in ("center", "squash"):
        raise ConfigError(
            f"timm '{name}' evaluates with crop_mode '{crop_mode}', which mmprompt does not build; "
            f"set INPUT.TEST_RESIZE_MODE (shortest or squash) and INPUT.RESIZE_SIZE."
        )
    return {
        "size": size,
        "mean": tuple(pretrained.mean),
        "std": tuple(pretrained.std),
        "interpolation": pretrained.interpolation or "bicubic",
        "resize_mode": "squash" if crop_mode == "squash" else "shortest",
        "crop_pct": pretrained.crop_pct or 1.0,
    }


def backbone_preprocess(cfg) -> dict:
    """The backbone's own preprocessing (size, mean, std, interpolation, resize_mode, crop_pct),
    read from the library's metadata without downloading or building the model. Backbones with no
    image preprocessing of their own get Dassl's defaults (224, ImageNet mean/std, bilinear)."""
    backbone = cfg.MODEL.BACKBONE
    found = {}
    if backbone.NAME == "open_clip":
        found = _open_clip_preprocess(backbone)
    elif backbone.NAME.startswith("timm"):
        found = _timm_preprocess(backbone)
    out = {
        "size": 224,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bilinear",
        "resize_mode": "shortest",
        "crop_pct": 1.0,
    }
    out.update(found)
    size = out["size"]
    out["size"] = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(v) for v in size)
    if out["interpolation"] not in _INTERPOLATIONS:  # open_clip's 'random' (train-time only) and the like
        out["interpolation"] = "bicubic"
    return out


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
    own = backbone_preprocess(cfg)
    return tuple(own["mean"]), tuple(own["std"])


def resolve_preprocess(cfg) -> Preprocess:
    """INPUT.* where set, the backbone's own preprocessing where not."""
    own = backbone_preprocess(cfg)
    size = tuple(cfg.INPUT.SIZE)
    if len(size) == 1:
        size = (size[0], size[0])
    if size and (len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)):
        raise ConfigError(
            f"INPUT.SIZE must be (height, width) in pixels, or () to follow the backbone; got {cfg.INPUT.SIZE}"
        )
    size = size or own["size"]
    interpolation = cfg.INPUT.INTERPOLATION or own["interpolation"]
    if interpolation not in _INTERPOLATIONS:
        raise ConfigError(
            f'INPUT.INTERPOLATION must be one of {list(_INTERPOLATIONS)} or "" (the backbone\'s); got {interpolation!r}'
        )
    mode = cfg.INPUT.TEST_RESIZE_MODE or own["resize_mode"]
    if mode not in _RESIZE_MODES:
        raise ConfigError(
            f'INPUT.TEST_RESIZE_MODE must be one of {list(_RESIZE_MODES)} or "" (the backbone\'s); got {mode!r}'
        )
    if cfg.INPUT.RESIZE_SIZE < 0 or cfg.INPUT.TEST_RESIZE_RATIO < 0:
        raise ConfigError(
            f"INPUT.RESIZE_SIZE ({cfg.INPUT.RESIZE_SIZE}) and INPUT.TEST_RESIZE_RATIO "
            f"({cfg.INPUT.TEST_RESIZE_RATIO}) must be > 0, or 0 to follow the backbone."
        )
    if cfg.INPUT.RESIZE_SIZE:
        resize = cfg.INPUT.RESIZE_SIZE
    elif cfg.INPUT.TEST_RESIZE_RATIO:
        resize = round(max(size) * cfg.INPUT.TEST_RESIZE_RATIO)
    else:  # timm sizes the test resize as floor(size / crop_pct); open_clip and Dassl resize to the size itself
        resize = math.floor(max(size) / own["crop_pct"])
    mean, std = normalization(cfg)
    return Preprocess(size=size, mean=mean, std=std, interpolation=interpolation, resize_size=resize, resize_mode=mode)


# Dassl's build_transform names this module implements, and the ones of Dassl it does not.
TRANSFORMS = ("random_resized_crop", "random_crop", "random_flip", "normalize", "center_crop", "resize")
DASSL_ONLY_TRANSFORMS = (
    "instance_norm",
    "random_translation",
    "cutout",
    "imagenet_policy",
    "cifar10_policy",
    "svhn_policy",
    "randaugment",
    "randaugment_fixmatch",
    "randaugment2",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
)


def _resize(pre: Preprocess, interp):
    from torchvision import transforms as T

    if pre.resize_mode == "squash":
        h, w = pre.size
        scale = pre.resize_size / max(pre.size)
        return T.Resize((round(h * scale), round(w * scale)), interpolation=interp)
    return T.Resize(pre.resize_size, interpolation=interp)


def build_transform(cfg, is_train: bool):
    """Dassl's ``build_transform`` semantics on mmprompt's resolved preprocessing.

    Train, in this order whatever the order of ``INPUT.TRANSFORMS``: ``resize`` (mmprompt / VPT:
    shorter edge to RESIZE_SIZE; it needs a crop after it), ``random_crop`` (RandomCrop(SIZE,
    padding=CROP_PADDING)), ``random_resized_crop``, ``center_crop`` (only after ``resize``; alone it
    is Dassl's test-time crop and adds no train step); with no crop, images are resized to exactly
    SIZE (Dassl); then ``random_flip``, to tensor, ``normalize`` if listed.
    Test: resize (RESIZE_SIZE, TEST_RESIZE_MODE) + center crop SIZE, to tensor, ``normalize`` if
    listed (Dassl normalises at test only when ``normalize`` is in INPUT.TRANSFORMS).
    """
    from torchvision import transforms as T

    names = list(cfg.INPUT.TRANSFORMS)
    dassl_only = [n for n in names if n in DASSL_ONLY_TRANSFORMS]
    if dassl_only:
        raise ConfigError(
            f"INPUT.TRANSFORMS: {dassl_only} are Dassl transforms mmprompt does not implement; "
            f"mmprompt has {list(TRANSFORMS)}."
        )
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ConfigError(f"INPUT.TRANSFORMS: unknown {unknown}; choose from {list(TRANSFORMS)}")
    pre = resolve_preprocess(cfg)
    interp = _interpolation(pre.interpolation)
    steps = []
    if is_train:
        crops = [n for n in ("random_crop", "random_resized_crop") if n in names]
        if "resize" in names:
            if not crops and "center_crop" not in names:
                raise ConfigError(
                    "INPUT.TRANSFORMS: 'resize' needs a crop to SIZE after it "
                    "(random_crop, random_resized_crop or center_crop)."
                )
            steps.append(_resize(pre, interp))
        elif not crops:
            steps.append(T.Resize(pre.size, interpolation=interp))  # Dassl: exactly SIZE, no crop
        if "random_crop" in names:
            steps.append(T.RandomCrop(pre.size, padding=cfg.INPUT.CROP_PADDING or None))
        if "random_resized_crop" in names:
            steps.append(T.RandomResizedCrop(pre.size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp))
        if "resize" in names and not crops:
            steps.append(T.CenterCrop(pre.size))
        if "random_flip" in names:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps += [_resize(pre, interp), T.CenterCrop(pre.size)]
    steps.append(T.ToTensor())
    if "normalize" in names:
        steps.append(T.Normalize(pre.mean, pre.std))
    return T.Compose(steps)


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return {
        "bilinear": InterpolationMode.BILINEAR,
        "bicubic": InterpolationMode.BICUBIC,
        "nearest": InterpolationMode.NEAREST,
    }[name]


def check_input_size(cfg) -> None:
    """Refuse an explicit INPUT.SIZE that the backbone cannot take, before anything is built.

    open_clip ViTs and timm ViTs (unless built with ``dynamic_img_size``) have position
    embeddings for one image size: another size dies inside the library's forward.
    """
    if not cfg.INPUT.SIZE or not (cfg.MODEL.BACKBONE.NAME == "open_clip" or cfg.MODEL.BACKBONE.NAME.startswith("timm")):
        return
    if dict(cfg.MODEL.BACKBONE.KWARGS).get("dynamic_img_size"):
        return
    own, wanted = backbone_preprocess(cfg)["size"], resolve_preprocess(cfg).size
    if own != wanted:
        raise ConfigError(
            f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} but {cfg.MODEL.BACKBONE.NAME} '{cfg.MODEL.BACKBONE.ARCH}' "
            f"takes {own[0]}x{own[1]} images. Remove INPUT.SIZE (it then follows the backbone) "
            f"or set it to ({own[0]}, {own[1]})."
        )


# ------------------------------------------------------------------ loaders

# PIL modes whose values are 16-bit intensities ("I" is what PIL gives for 16-bit PGM and older
# 16-bit PNG); convert("RGB") would clip them at 255, i.e. turn almost every pixel white.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB image as Dassl/CoOp read it (``Image.open(path).convert("RGB")``), except where that
    is wrong: 16-bit intensities are scaled to 8 bits (x 255/65535) instead of clipped.

    Like Dassl: alpha (RGBA, LA, PA, palette transparency) is dropped, keeping the stored colour;
    CMYK, YCbCr, palette and 1-bit images use PIL's conversion; 32-bit float ("F") values are
    taken as 0..255, as PIL does; EXIF orientation is not applied; a multi-frame file gives its
    first frame.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def load_image(path: str) -> Image.Image:
    try:
        with open_regular(path) as f, Image.open(f) as im:
            return to_rgb(im)
    except FileNotFoundError:
        raise DataError(
            f"Image {path} is listed in the split but does not exist. Check DATASET.ROOT "
            f"or rerun the prep script for this dataset."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"Image {path} cannot be decoded ({e}). Replace the file, or rerun the prep "
            f"script, which leaves undecodable images out of the split."
        ) from None


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
        DatumDataset(data, transform),
        batch_size=batch_size,
        shuffle=is_train,
        num_workers=workers,
        generator=generator,
        drop_last=is_train
        and cfg.DATALOADER.TRAIN_X.DROP_LAST
        and len(data) >= batch_size,  # CoOp: no ragged last train batch
        pin_memory=cfg.DATALOADER.PIN_MEMORY and cfg.USE_CUDA and torch.cuda.is_available(),
        persistent_workers=False,
    )
