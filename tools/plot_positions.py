#!/usr/bin/env python
"""Histograms of the learned dynamic-prompt positions / lengths of a run, one PNG per layer.

    python tools/plot_positions.py RUN_DIR [--out DIR]

Reads ``RUN_DIR/prompt_records.json`` (written by the test/eval pass: ``{key: [[value per test
sample], ...]}`` with keys such as ``vision.layer0.dpos``, ``encoder.layer0.length`` or
``text.pool.top``) and writes ``<key>.png`` into ``RUN_DIR/position_plots`` (or ``--out``): the
count of test samples per chosen value. A task-level position shows one bar; an instance-level
one its distribution over the dataset, as in the paper's case studies. Prints a one-line
summary per key (most frequent value and its share).
"""

import argparse
import json
import math
import os
import re
import sys
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mmprompt.errors import MMPromptError  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

RECORDS = "prompt_records.json"


def read_records(run_dir: str) -> dict:
    path = run_dir if run_dir.endswith(".json") else os.path.join(run_dir, RECORDS)
    if not os.path.isfile(path):
        raise MMPromptError(
            f"No {RECORDS} at {path}. It is written by an evaluation of a model with dynamic "
            f"prompts (tools/train_net.py ... --eval-only, with TEST.SAVE_RECORDS True); "
            f"pass that run's output directory."
        )
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except UnicodeDecodeError as e:
        raise MMPromptError(f"{path} is not UTF-8 text (byte {e.start}); it is not a {RECORDS} of mmprompt.") from None
    except json.JSONDecodeError as e:
        raise MMPromptError(f"{path} is not valid JSON ({e}); was the run interrupted while writing it?") from None
    if not isinstance(records, dict) or not records:
        raise MMPromptError(f"{path} holds no records (expected {{key: [[values], ...]}}).")
    return records


# a split point or length lies in [0, l] for a prompt of l tokens; anything past this is no record
# of a run (and would make the histogram's x axis billions of bars long)
MAX_POSITION = 100_000


def flatten(values, key: str = "", path: str = RECORDS):
    """All integer choices under a key, whatever the nesting of entries (one per layer call)."""
    if isinstance(values, (list, tuple)):
        for v in values:
            yield from flatten(v, key, path)
    elif (
        isinstance(values, (int, float))
        and not isinstance(values, bool)
        and math.isfinite(values)
        and 0 <= values <= MAX_POSITION
    ):
        yield int(round(float(values)))
    else:
        raise MMPromptError(
            f"{path}: record {key} holds {values!r:.40}, not a chosen position / length (a "
            f"number from 0 to the prompt length)."
        )


def plot(records: dict, out_dir: str, source: str = RECORDS):
    from mmprompt.utils.extras import require

    matplotlib = require("matplotlib", "Plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts_of = {key: Counter(flatten(records[key], key, source)) for key in sorted(records)}
    counts_of = {key: counts for key, counts in counts_of.items() if counts}
    if not counts_of:
        raise MMPromptError(
            f"{source}: every record ({', '.join(sorted(records)[:5])}) is empty, so there is "
            "nothing to plot. Were there no test samples, or no dynamic prompt recording them?"
        )
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise MMPromptError(f"Cannot make the plot folder {out_dir}: {e.strerror}.") from None
    written = []
    for key, counts in counts_of.items():
        lo, hi = min(0, min(counts)), max(counts)
        xs = list(range(lo, hi + 1))
        fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(xs) + 2), 3))
        ax.bar(xs, [counts.get(x, 0) for x in xs], color="tab:blue")
        what = key.rsplit(".", 1)[-1]
        ax.set_xlabel(
            {
                "dpos": "dpos (prompt tokens before the input)",
                "length": "kept length l*",
                "top": "pool prompt with the largest weight",
            }.get(what, what)
        )
        ax.set_ylabel("samples")
        ax.set_title(key)
        ax.set_xticks(xs if len(xs) <= 25 else xs[:: max(1, len(xs) // 20)])
        fig.tight_layout()
        path = os.path.join(out_dir, re.sub(r"[^A-Za-z0-9_.+-]", "_", key).lstrip(".") + ".png")  # keys are not paths
        fig.savefig(path, dpi=100)
        plt.close(fig)
        total = sum(counts.values())
        value, n = counts.most_common(1)[0]
        print(f"{key}: most often {value} ({100.0 * n / total:.1f}% of {total}) -> {path}")
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help=f"a run's output directory (or its {RECORDS})")
    parser.add_argument("--out", default="", help="where the PNGs go (default RUN_DIR/position_plots)")
    args = parser.parse_args(argv)
    records = read_records(args.run_dir)
    base = os.path.dirname(args.run_dir) if args.run_dir.endswith(".json") else args.run_dir
    source = args.run_dir if args.run_dir.endswith(".json") else os.path.join(args.run_dir, RECORDS)
    plot(records, args.out or os.path.join(base, "position_plots"), source)
    return 0


if __name__ == "__main__":
    run_cli(main)
