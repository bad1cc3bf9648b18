#!/usr/bin/env python
"""Cost of the token-sequence adapters next to the libraries' own forwards, side by side.

    python benchmarks/vision_tower_overhead.py [--reps 7] [--batch-size 4] [--threads 1] [--tiny]

For random-weight timm ViT-B/16 and open_clip ViT-B-16 (``--tiny``: the test configs), times
inference (no grad) of

* ``timm``: ``model.forward_head(model.forward_features(x), pre_logits=True)`` vs the wrapped
  ``vision`` tower with no prompts;
* ``clip image``: ``model.encode_image`` vs the wrapped ``vision`` tower;
* ``clip text``: ``model.encode_text`` vs the wrapped ``text`` tower (CoOp's case: a batch of
  class prompts), with no prompts and with 16 context tokens inserted after SOT.

Library and adapter calls alternate within each round; the median thread CPU time per variant
and the ratio adapter / library are printed (1.00 = no overhead). With the context tokens the
text is trimmed back to CLIP's 77 positions at layer 0 (the padding after EOT goes), so the
prompted text tower costs what the plain one does.

Measured on the shared 2-core CPU machine (``--reps 5 --batch-size 2``, ViT-B/16, random
weights): ratios 0.93 (timm), 0.97 (image), 0.99 (text), 0.98 (text + 16 tokens), i.e. no
overhead beyond noise; on the tiny configs the fixed Python cost per call (~0.3 ms) shows.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mmprompt.backbones.open_clip import create_open_clip  # noqa: E402
from mmprompt.backbones.timm_vit import create_timm_vit  # noqa: E402
from mmprompt.tokens import new_owner_id  # noqa: E402

TINY_VIT = dict(embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8)
TINY_CLIP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "_base_", "tiny_clip_model.json")


def cpu_time(fn, reps):
    times = []
    for _ in range(reps):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return times


def compare(label, library, adapter, reps):
    library(), adapter()  # warm-up
    lib_times, ada_times = [], []
    for _ in range(reps):  # alternate so drifts in machine load hit both alike
        lib_times += cpu_time(library, 1)
        ada_times += cpu_time(adapter, 1)
    lib, ada = statistics.median(lib_times), statistics.median(ada_times)
    print(f"{label:<34} library {lib * 1e3:9.1f} ms   adapter {ada * 1e3:9.1f} ms   ratio {ada / lib:5.3f}")


class Context:
    """16 CoOp-style context tokens after SOT, before layer 0."""

    def __init__(self, width):
        self.tokens = torch.randn(16, width) * 0.02
        self.owner = new_owner_id()

    def before_layer(self, tower, i, seq, ctx):
        return seq.insert(self.tokens, "start", self.owner) if i == 0 else seq


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the tiny test configs instead of ViT-B/16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = 32 if args.tiny else 224
    images = torch.randn(args.batch_size, 3, size, size)

    vit = create_timm_vit("vit_base_patch16_224", "", TINY_VIT if args.tiny else {}).eval()
    clip = create_open_clip(TINY_CLIP if args.tiny else "ViT-B-16").eval()
    classes = [f"a photo of a class number {i}." for i in range(args.batch_size * 8)]
    ids, mask = clip.tokenize(classes)
    text = clip.tower("text")
    with torch.no_grad():
        m = vit.model
        compare(
            "timm ViT features",
            lambda: m.forward_head(m.forward_features(images), pre_logits=True),
            lambda: vit.tower("vision").run(images),
            args.reps,
        )
        compare(
            "open_clip encode_image",
            lambda: clip.model.encode_image(images),
            lambda: clip.tower("vision").run(images),
            args.reps,
        )
        compare(
            f"open_clip encode_text ({len(classes)} texts)",
            lambda: clip.model.encode_text(ids),
            lambda: text.run((ids, mask)),
            args.reps,
        )
        compare(
            "  + 16 context tokens",
            lambda: clip.model.encode_text(ids),
            lambda: text.run((ids, mask), Context(text.width)),
            args.reps,
        )


if __name__ == "__main__":
    main()
