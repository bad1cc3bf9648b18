"""Image pipelines side by side: Dassl's ``build_transform`` / ``read_image`` (CoOp, MaPLe) and
VPT's ``get_transforms`` against mmprompt's ``build_transform`` / ``load_image``.

Both sides get the same PIL images (odd sizes, both orientations) and the same torch RNG state
before each call, so random crops and flips are drawn alike when the same torchvision ops run in
the same order. ``logits_rel`` holds the max relative difference of the output tensors (pixels);
there are no gradients. mmprompt's side is configured from the authors' own yaml values (read
through mmprompt's Dassl translation for Dassl) or from ``configs/_base_/vpt_fgvc_input.yaml``.
"""

from __future__ import annotations

import os
import tempfile
import types
from typing import List

import numpy as np
import torch
from PIL import Image

from .common import REPO, Result, checkout_on_path, recipe, rel_diff, require_checkout

# The INPUT block of every CoOp / MaPLe trainer yaml, then Dassl transform lists they also accept.
DASSL_INPUTS = {
    "coop_maple_yaml": ["random_resized_crop", "random_flip", "normalize"],
    "no_crop": ["random_flip", "normalize"],
    "center_crop_only": ["center_crop", "normalize"],
    "no_normalize": ["random_resized_crop", "random_flip"],
    "random_crop_padded": ["random_crop", "random_flip", "normalize"],
}


def _images(seed: int) -> List[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(300, 257), (241, 333), (500, 375), (224, 224)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _package_stub(name: str, path: str) -> types.ModuleType:
    """A package whose ``__init__`` is not run (Dassl's pulls in its whole data and model stack)."""
    module = types.ModuleType(name)
    module.__path__ = [path]
    return module


def _dassl_modules(dassl_repo: str):
    import importlib

    stubs = {
        "dassl": _package_stub("dassl", os.path.join(dassl_repo, "dassl")),
        "dassl.data": _package_stub("dassl.data", os.path.join(dassl_repo, "dassl", "data")),
        "dassl.utils": _package_stub("dassl.utils", os.path.join(dassl_repo, "dassl", "utils")),
    }
    with checkout_on_path(dassl_repo, stubs=stubs, prefixes=("dassl",)):
        transforms = importlib.import_module("dassl.data.transforms.transforms")
        tools = importlib.import_module("dassl.utils.tools")
    return transforms, tools


def _compare(ours, theirs, images, seed: int, is_train: bool) -> float:
    worst = 0.0
    for i, image in enumerate(images):
        torch.manual_seed(seed + i)
        a = ours(image)
        torch.manual_seed(seed + i)
        b = theirs(image)
        worst = max(worst, rel_diff(a, b))
    return worst


@recipe("dassl_transforms", "dassl_repo")
def dassl_transforms(args) -> List[Result]:
    from yacs.config import CfgNode

    from mmprompt.config import load_cfg
    from mmprompt.data.build import build_transform

    repo = require_checkout(
        args.dassl_repo, "--dassl-repo", ["dassl/data/transforms/transforms.py", "dassl/config/defaults.py"]
    )
    transforms, _ = _dassl_modules(repo)
    with checkout_on_path(
        repo, stubs={"dassl": _package_stub("dassl", os.path.join(repo, "dassl"))}, prefixes=("dassl",)
    ):
        import importlib

        dassl_defaults = importlib.import_module("dassl.config.defaults")
    images = _images(args.seed)
    results = []
    for name, names in DASSL_INPUTS.items():
        # Their yaml's INPUT block (CoOp / MaPLe trainer yamls), on Dassl's defaults and on mmprompt's
        theirs_cfg = dassl_defaults._C.clone()
        values = {
            "SIZE": (224, 224),
            "INTERPOLATION": "bicubic",
            "TRANSFORMS": names,
            "PIXEL_MEAN": [0.48145466, 0.4578275, 0.40821073],
            "PIXEL_STD": [0.26862954, 0.26130258, 0.27577711],
        }
        theirs_cfg.merge_from_other_cfg(CfgNode({"INPUT": values}))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trainer.yaml")
            with open(path, "w") as f:
                f.write(
                    "INPUT:\n"
                    + "".join(
                        f"  {k}: {list(v) if isinstance(v, tuple) else v!r}\n" for k, v in values.items()
                    ).replace("'", '"')
                    + 'MODEL:\n  BACKBONE:\n    NAME: "ViT-B/16"\n'
                )
            ours_cfg = load_cfg(path, trainer="CoOp")
        for is_train in (True, False):
            rel = _compare(
                build_transform(ours_cfg, is_train),
                transforms.build_transform(theirs_cfg, is_train),
                images,
                args.seed,
                is_train,
            )
            results.append(
                Result(
                    recipe=f"transforms {name} {'train' if is_train else 'test'}",
                    compared_with="Dassl.pytorch dassl/data/transforms/transforms.py build_transform",
                    logits_rel=rel,
                    note="pixels after the transform, same RNG state",
                )
            )
    return results


@recipe("dassl_read_image", "dassl_repo")
def dassl_read_image(args) -> List[Result]:
    from mmprompt.data.build import load_image

    repo = require_checkout(args.dassl_repo, "--dassl-repo", ["dassl/utils/tools.py"])
    _, tools = _dassl_modules(repo)
    from torchvision.transforms.functional import pil_to_tensor

    rng = np.random.default_rng(args.seed)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    files = {
        "RGB jpeg": (Image.fromarray(rgb), "JPEG"),
        "L png": (Image.fromarray(rgb[..., 0]), "PNG"),
        "P png with transparency": (Image.fromarray(rgb).convert("P"), "PNG"),
        "RGBA png": (Image.fromarray(np.dstack([rgb, alpha])), "PNG"),
        "LA png": (Image.fromarray(np.dstack([rgb[..., 0], alpha])), "PNG"),
        "CMYK jpeg": (Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "1-bit png": (Image.fromarray(rgb[..., 0] > 127), "PNG"),
        "16-bit png": (Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "PNG"),
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (image, fmt) in files.items():
            path = os.path.join(tmp, label.replace(" ", "_") + "." + fmt.lower())
            if label.startswith("P "):
                image.info["transparency"] = 0
            image.save(path, fmt)
            rel = rel_diff(pil_to_tensor(load_image(path)).float(), pil_to_tensor(tools.read_image(path)).float())
            intended = (
                "Dassl's convert('RGB') clips 16-bit values at 255 (a white image); mmprompt scales them by 255/65535"
                if label.startswith("16-bit")
                else ""
            )
            results.append(
                Result(
                    recipe=f"read_image {label}",
                    compared_with="Dassl.pytorch dassl/utils/tools.py read_image",
                    logits_rel=rel,
                    note="decoded pixels",
                    intended=intended,
                )
            )
    return results


@recipe("vpt_transforms", "vpt_repo")
def vpt_transforms(args) -> List[Result]:
    import importlib

    from mmprompt.config import load_cfg
    from mmprompt.data.build import build_transform

    repo = require_checkout(args.vpt_repo, "--vpt-repo", ["src/data/transforms.py"])
    with checkout_on_path(
        repo,
        stubs={
            "src": _package_stub("src", os.path.join(repo, "src")),
            "src.data": _package_stub("src.data", os.path.join(repo, "src", "data")),
        },
        prefixes=("src",),
    ):
        theirs = importlib.import_module("src.data.transforms")
    base = os.path.join(REPO, "configs", "_base_")
    with tempfile.TemporaryDirectory() as tmp:  # how a VPT recipe uses the preset
        path = os.path.join(tmp, "vpt_recipe.yaml")
        with open(path, "w") as f:
            f.write(f"_BASE_: [{os.path.join(base, 'vit_b16.yaml')}, {os.path.join(base, 'vpt_fgvc_input.yaml')}]\n")
        ours_cfg = load_cfg(path)
    images = _images(args.seed)
    results = []
    for split, is_train in (("train", True), ("test", False)):
        rel = _compare(
            build_transform(ours_cfg, is_train), theirs.get_transforms(split, 224), images, args.seed, is_train
        )
        results.append(
            Result(
                recipe=f"vpt_fgvc_input {split}",
                compared_with="vpt src/data/transforms.py get_transforms(split, 224)",
                logits_rel=rel,
                note="configs/_base_/vpt_fgvc_input.yaml on vit_b16; pixels, same RNG state",
            )
        )
    return results
