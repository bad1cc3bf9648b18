"""Images per second of the training loader (decode + CoOp augmentation + collate).

    python benchmarks/loader_speed.py [--images 512] [--workers N] [--batch-size 32] [KEY VALUE ...]

Writes ``--images`` generated 224-px JPEGs (natural-image-sized, ~15-25 KB) into a temporary
folder, builds the train loader exactly as training does (``build_loader(cfg, items, True)``),
and times two passes after a warm-up batch, with the configured ``DATALOADER.NUM_WORKERS`` and,
side by side, with 0 workers, printing images/s for both and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mmprompt.config import get_cfg, merge_from_list  # noqa: E402
from mmprompt.data.base import Datum  # noqa: E402
from mmprompt.data.build import build_loader  # noqa: E402


def write_jpegs(folder: str, count: int, size: int = 224, classes: int = 10):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    items = []
    for i in range(count):
        # smooth gradients plus mild noise: compresses like a photo, not like flat colour or pure noise
        base = np.stack([np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)], -1)
        pixels = ((base * 0.5 + 0.5) * 200 + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        items.append(Datum(label=i % classes, classname=f"class{i % classes}", impath=path))
    return items


def images_per_second(cfg, items, passes: int = 2) -> float:
    loader = build_loader(cfg, items, is_train=True)
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for batch in iterator:
        seen += len(batch["label"])
    for _ in range(passes - 1):
        for batch in loader:
            seen += len(batch["label"])
    return seen / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=None, help="default: DATALOADER.NUM_WORKERS")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    cfg = get_cfg()
    merge_from_list(cfg, args.opts)
    if args.workers is not None:
        cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = args.batch_size
    with tempfile.TemporaryDirectory() as folder:
        items = write_jpegs(folder, args.images)
        kb = sum(os.path.getsize(d.impath) for d in items) / len(items) / 1024
        configured = images_per_second(cfg, items)
        workers = cfg.DATALOADER.NUM_WORKERS
        cfg.DATALOADER.NUM_WORKERS = 0
        single = images_per_second(cfg, items)
    print(
        f"{args.images} JPEGs of 224 px (mean {kb:.1f} KB), batch {args.batch_size}, "
        f"{cfg.INPUT.TRANSFORMS} to {tuple(cfg.INPUT.SIZE)}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (other processes slow both figures)"
    )
    print(f"train loader, {workers} workers: {configured:.0f} images/s")
    print(f"train loader, 0 workers:  {single:.0f} images/s  (ratio {configured / single:.2f}x)")


if __name__ == "__main__":
    main()
