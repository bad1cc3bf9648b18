#!/usr/bin/env python
"""What skipping the rows no one reads saves in a training step: MODEL.BACKBONE.SKIP_UNUSED_ROWS on
against off, on the same model, side by side.

    python benchmarks/row_savings.py [--recipes vpt_deep,vpt_shallow,vpt_clip,maple,coop]
        [--size base|tiny] [--batch-size 4] [--classes 19] [--repeats 3] [--threads 1] [--clock cpu]

A step is forward, cross-entropy and backward at ``--batch-size`` images, with random weights:
timm ViT-B/16 at 224 px for ``vpt_deep`` / ``vpt_shallow`` (configs/vpt_deep_cub.yaml,
configs/vpt_shallow_cub.yaml: 10 tokens, 200 classes), CLIP ViT-B/16 for ``vpt_clip``, ``maple``
and ``coop`` (configs/*.yaml, ``--classes`` class names; ``--size tiny``: the test configs, 32
px). Before timing, one step with the switch on and one with it off must give the same logits
and the same gradient of every trainable parameter (max relative difference 1e-4), else the
script exits with status 1. Then the two run interleaved (which goes first alternates),
``--repeats`` times after a warm-up, and the median step time of each is printed with the ratio
on / off. ``--clock cpu`` times the thread's CPU time on one torch thread, so other processes on
a shared machine do not inflate the times (default ``wall``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mmprompt.build import build_model  # noqa: E402
from mmprompt.config import load_cfg  # noqa: E402

#: recipe: (config, options)
RECIPES = {
    "vpt_deep": ("vpt_deep_cub.yaml", []),
    "vpt_shallow": ("vpt_shallow_cub.yaml", []),
    "vpt_clip": ("vpt_clip.yaml", []),
    "maple": ("maple.yaml", []),
    "coop": ("coop.yaml", []),
}
TINY = {
    "timm": ["MODEL.BACKBONE.KWARGS", "{'embed_dim': 64, 'depth': 4, 'num_heads': 2, 'img_size': 32, 'patch_size': 8}"],
    "clip": [
        "MODEL.BACKBONE.ARCH",
        os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
        "PROMPT.MAPLE.PROMPT_DEPTH",  # the tiny towers' 2 layers
        "2",
        "PROMPT.MAPLE.PROMPT_DEPTH_VISION",
        "2",
    ],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    p.add_argument("--size", choices=("base", "tiny"), default="base")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--classes", type=int, default=19, help="class names of the CLIP recipes")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per setting (after one warm-up)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = p.parse_args(argv)
    unknown = sorted(set(args.recipes.split(",")) - set(RECIPES))
    if unknown:
        p.error(f"unknown recipes {unknown}; choose from {', '.join(RECIPES)}")
    if args.clock == "cpu" and args.threads not in (0, 1):
        p.error("--clock cpu measures one thread's CPU time, so torch runs on one thread: drop --threads")
    return args


def build(recipe: str, args):
    config, opts = RECIPES[recipe]
    clip = not config.startswith("vpt_") or recipe == "vpt_clip"
    opts = opts + ["MODEL.BACKBONE.PRETRAINED", ""]
    if args.size == "tiny":
        opts += TINY["clip" if clip else "timm"] + ["INPUT.SIZE", "(32, 32)"]
    cfg = load_cfg(os.path.join(REPO, "configs", config), opts=opts)
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(IMAGENET_CLASSNAMES[: args.classes]) if clip else [f"class {i}" for i in range(200)]
    torch.manual_seed(0)
    model = build_model(cfg, names).train()
    size = cfg.INPUT.SIZE[0] if cfg.INPUT.SIZE else 224  # empty: the CLIP recipes' ViT-B/16 input
    images = torch.randn(args.batch_size, 3, size, size)
    labels = torch.arange(args.batch_size) % len(names)
    return model, {"image": images, "label": labels}


def step(model, batch, skip: bool):
    """One forward and backward with the switch ``skip``; logits and the trainable gradients."""
    for tower in model.backbone.towers.values():
        tower.skip_unused_rows = skip
    model.zero_grad()
    torch.manual_seed(1)  # the same prompt dropout / Gumbel noise on both settings
    out = model(batch, model.new_context())
    out["loss"].backward()
    return out["logits"].detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def rel_diff(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def run(recipe: str, args, clock) -> bool:
    model, batch = build(recipe, args)
    on_logits, on_grads = step(model, batch, True)
    on_grads = {n: g.clone() for n, g in on_grads.items()}
    off_logits, off_grads = step(model, batch, False)
    worst = max([rel_diff(on_logits, off_logits)] + [rel_diff(on_grads[n], off_grads[n]) for n in off_grads])
    if worst > 1e-4:
        print(f"{recipe}: skipping rows changed the step (max relative difference {worst:.1e})")
        return False
    times = {True: [], False: []}
    for r in range(args.repeats + 1):
        for skip in (True, False) if r % 2 else (False, True):
            t0 = clock()
            step(model, batch, skip)
            if r:  # the first round warms up
                times[skip].append(clock() - t0)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"{recipe}: skip on {on * 1e3:.0f} ms, off {off * 1e3:.0f} ms (median of {args.repeats}); "
        f"same logits and gradients (max rel {worst:.1e}); ratio {on / off:.2f}x"
    )
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads or args.clock == "cpu":
        torch.set_num_threads(args.threads or 1)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(
        f"# batch {args.batch_size}, {args.size}, {torch.get_num_threads()} threads, {args.clock} clock; "
        f"one step = forward + cross-entropy + backward"
    )
    ok = [run(recipe, args, clock) for recipe in args.recipes.split(",")]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
