#!/usr/bin/env python
"""Training curves of one run to PNG: loss and lr per step, validation metric per epoch.

    python tools/plot_run.py output/maple_adap_pos/pets/seed1 [--out curves.png]

Reads OUTPUT_DIR/log.jsonl (records redone after a --resume count once, the last one kept).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmprompt.errors import MMPromptError  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

SKIP = {"num_samples", "error_rate", "epoch", "iter", "step", "time"}


def _metric(records, preferred: str):
    """The metric to plot for val/test records: the run's main metric, else the first numeric."""
    keys = [
        k
        for r in records
        for k, v in r.items()
        if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return preferred if preferred in keys else (keys[0] if keys else None)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot(output_dir: str, out: str) -> str:
    import json

    from mmprompt.utils.extras import require

    matplotlib = require("matplotlib", "Plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmprompt.engine.logger import read_log

    log = os.path.join(output_dir, "log.jsonl")
    if not os.path.isfile(log):
        raise MMPromptError(f"No log.jsonl in {output_dir}: is it the OUTPUT_DIR of a run?")
    records = read_log(log)
    train = [r for r in records if r["kind"] == "train" and _number(r.get("loss")) and _number(r.get("lr"))]
    val = [r for r in records if r["kind"] == "val" and _number(r.get("epoch"))]
    if not train:
        raise MMPromptError(f"{log} has no training records (with a loss and an lr) yet: nothing to plot.")
    main = "accuracy"
    metrics_file = os.path.join(output_dir, "metrics.json")
    if os.path.isfile(metrics_file):
        try:
            with open(metrics_file, encoding="utf-8") as f:
                main = json.load(f).get("main_metric", main)
        except (UnicodeDecodeError, ValueError, AttributeError) as e:
            print(f"warning: {metrics_file} is unreadable ({type(e).__name__}); plotting {main}", file=sys.stderr)
    name = _metric(val, main)
    val = [r for r in val if name is not None and _number(r.get(name))]

    fig, axes = plt.subplots(1, 3 if val else 2, figsize=(13 if val else 9, 3.6))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], lw=1.2)
    axes[0].set(title="training loss", xlabel="optimizer step", ylabel="loss")
    axes[1].plot(steps, [r["lr"] for r in train], lw=1.2, color="tab:orange")
    axes[1].set(title="learning rate (first group)", xlabel="optimizer step", ylabel="lr")
    if val:
        axes[2].plot([r["epoch"] for r in val], [r[name] for r in val], marker="o", color="tab:green")
        axes[2].set(title=f"validation {name}", xlabel="epoch", ylabel=name)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.abspath(output_dir)))
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as e:
        raise MMPromptError(f"Cannot write the plot {out}: {e.strerror}.") from None
    finally:
        plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir")
    p.add_argument("--out", default="", help="PNG path, or a folder for curves.png (default OUTPUT_DIR/curves.png)")
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.output_dir, "curves.png")
    if os.path.isdir(out):  # a folder: the plot goes inside it
        out = os.path.join(out, "curves.png")
    print(plot(args.output_dir, out))
    return 0


if __name__ == "__main__":
    run_cli(main)
