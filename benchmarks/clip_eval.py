#!/usr/bin/env python
"""Evaluation throughput of a CLIP prompt recipe: class text features once per evaluation against
recomputing them for every batch.

    python benchmarks/clip_eval.py [--config maple.yaml] [--classes 100] [--batch-size 32] \\
        [--batches 3] [--size base|tiny] [--device cpu|cuda] [--threads N] [--clock cpu]

The model (random CLIP ViT-B/16 weights; ``--size tiny``: 2-layer towers at 32 px for a quick look)
is evaluated the way ``Trainer.evaluate`` does it: eval mode, ``torch.no_grad`` (no autograd graph
for the frozen image tower), the text tower run once for all classes and its features kept while
the model stays in eval mode (``CLIPPromptClassifier``'s cache). Against it, the same model with
the cache dropped before every batch, as code that re-encodes the class prompts per batch does
(the authors' MaPLe/CoOp ``CustomCLIP.forward`` runs the prompt learner and the text encoder at
every call, in evaluation too), with the text trimmed (``MODEL.BACKBONE.TRIM_TEXT``, the default)
and untrimmed (all 77 positions per class, as the authors' text encoder runs). It prints images/s
of each and the ratios; the ratio grows with the classes and shrinks with the batch size (the
image tower's work per batch). Class names: the first C of open_clip's ImageNet names.
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

TINY = [
    "MODEL.BACKBONE.ARCH",
    os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
    "INPUT.SIZE",
    "(32, 32)",
    "PROMPT.MAPLE.PROMPT_DEPTH",
    "2",
    "PROMPT.MAPLE.PROMPT_DEPTH_VISION",
    "2",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="maple.yaml", help="a CLIP recipe under configs/")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=3, help="timed batches per variant (after one warm-up)")
    p.add_argument("--size", choices=("base", "tiny"), default="base")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: this thread's CPU time, on one torch thread (CPU only)",
    )
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(REPO, "configs", args.config)):
        p.error(f"--config: no configs/{args.config}")
    if not 2 <= args.classes <= 1000:
        p.error("--classes must be between 2 and 1000 (ImageNet's class names)")
    if args.batch_size < 1 or args.batches < 1:
        p.error("--batch-size and --batches must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is visible here")
    if args.clock == "cpu" and (args.device != "cpu" or args.threads not in (0, 1)):
        p.error("--clock cpu times one CPU thread: use it with --device cpu and without --threads")
    return args


def build(args, trim: bool):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    opts = (TINY if args.size == "tiny" else []) + [
        "MODEL.BACKBONE.PRETRAINED",
        "",
        "MODEL.BACKBONE.TRIM_TEXT",
        str(trim),
    ]
    torch.manual_seed(0)
    model = build_model(
        load_cfg(os.path.join(REPO, "configs", args.config), opts=opts), list(IMAGENET_CLASSNAMES[: args.classes])
    )
    return model.to(args.device).eval()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads or args.clock == "cpu":
        torch.set_num_threads(args.threads or 1)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    cuda = args.device.startswith("cuda")
    trimmed, untrimmed = build(args, True), build(args, False)
    untrimmed.load_state_dict(trimmed.state_dict())
    size = 32 if args.size == "tiny" else 224
    images = torch.randn(args.batch_size, 3, size, size, device=args.device)

    def evaluation(model, per_batch: bool):
        def batch():
            if per_batch:
                model.clear_text_cache()
            with torch.no_grad():
                return model({"image": images})["logits"]

        return batch

    variants = {
        "text once per evaluation": evaluation(trimmed, False),
        "text per batch (trimmed)": evaluation(trimmed, True),
        "text per batch, 77 tokens": evaluation(untrimmed, True),
    }
    with torch.no_grad():  # the same logits every way
        reference = variants["text per batch, 77 tokens"]()
        for name, fn in variants.items():
            got = fn()
            assert (got - reference).abs().max() <= 1e-4 * reference.abs().max(), name
    times = {name: [] for name in variants}
    for i in range(args.batches + 1):  # the first round warms up (and fills the cache once)
        order = list(variants) if i % 2 == 0 else list(variants)[::-1]
        for name in order:
            t0 = clock()
            variants[name]()
            if cuda:
                torch.cuda.synchronize()
            if i:
                times[name].append(clock() - t0)
    rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
    print(
        f"# {args.config}, CLIP ViT-B/16{' (tiny)' if args.size == 'tiny' else ''}, {args.classes} classes, "
        f"batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"median of {args.batches} batches"
    )
    once = rate["text once per evaluation"]
    for name, r in rate.items():
        print(f"{name:28s} {r:8.2f} images/s" + ("" if r == once else f"   once-per-evaluation is {once / r:.2f}x"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
