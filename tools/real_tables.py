"""The machinery behind the real-data results tables (tools/results_vision.py, tools/results_snli.py).

A table is a :class:`TableSpec`: a folder of method configs, the methods in table order, each
method's learning-rate grid, the shot counts and seeds. :func:`run_table` runs, for every method
and shot count:

1. the **lr grid** on the first seed (1 by default): one run per grid point, scored on the *whole* validation split (never
   on test; no test number is computed for these runs);
2. the **table runs**: every seed at the grid point with the best val accuracy (ties: the first
   point of the grid), each tested on the test split.

Every finished run is appended to ``<output-dir>/results.json`` and the markdown file is
rewritten, so an interrupted table resumes where it stopped (runs already in results.json are
not run again) and always shows what it has. Each run is the library's
:class:`~mmprompt.engine.trainer.Trainer` on the method's config, as ``tools/train_net.py`` runs it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import demo  # noqa: E402  (cpu_seconds, quiet_libraries, _pm: the BBC table's helpers)

from mmprompt.errors import ConfigError  # noqa: E402

REPO = demo.REPO
GridPoint = Tuple[str, ...]  # KEY VALUE overrides of one grid point, e.g. ("OPTIM.LR", "0.03")


@dataclass
class TableSpec:
    name: str  # short name, used in run folders
    title: str  # the markdown file's heading
    config_dir: str  # folder of <method>.yaml
    methods: Dict[str, str]  # method -> one-line description, in table order
    grids: Dict[str, List[GridPoint]]  # method -> its grid points
    shots: List[int]
    seeds: List[int]
    doc: str  # markdown file written
    setting: str  # paragraph describing the setting, printed under the command
    chance: float  # accuracy of a constant guess (%)
    dynamic_methods: Tuple[str, ...] = ()  # methods whose learned positions are plotted
    plot: str = ""  # PNG of the learned positions ("" = none)
    extra_notes: List[str] = field(default_factory=list)


def lr_grid(values: Sequence[float], group_ratio: Optional[float] = None) -> List[GridPoint]:
    """Grid points over OPTIM.LR; with ``group_ratio`` the offsets group (DePT/ADePT) gets
    ``lr * group_ratio`` at each point."""
    points = []
    for lr in values:
        point = ("OPTIM.LR", repr(float(lr)))
        if group_ratio is not None:
            point += ("OPTIM.GROUP_LR.offsets", repr(float(lr) * group_ratio))
        points.append(point)
    return points


def point_label(point: GridPoint) -> str:
    pairs = dict(zip(point[::2], point[1::2]))
    label = f"lr {float(pairs.get('OPTIM.LR', 'nan')):g}"
    if "OPTIM.GROUP_LR.offsets" in pairs:
        label += f" (offsets {float(pairs['OPTIM.GROUP_LR.offsets']):g})"
    return label


def config_path(spec: TableSpec, method: str) -> str:
    path = os.path.join(spec.config_dir, f"{method}.yaml")
    if "." in method and method.split(".")[0].isupper():
        raise ConfigError(
            f"'{method}' is a KEY VALUE override, not a {spec.name} method: --methods takes every "
            "word after it, so give the overrides before --methods or after another flag."
        )
    if method not in spec.methods or not os.path.isfile(path):
        raise ConfigError(f"Unknown {spec.name} method '{method}'. Choose from {', '.join(spec.methods)}.")
    return path


_FULL_VAL: Dict[tuple, list] = {}  # (dataset, root, split seed) -> the whole val split, built once per process


def full_val(cfg) -> list:
    from mmprompt.data.build import build_dataset

    key = (cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.DATASET.TEXT.SPLIT_SEED, cfg.DATASET.TEXT.NUM_VAL_FROM_TRAIN)
    if key not in _FULL_VAL:
        _FULL_VAL[key] = build_dataset(cfg, num_shots=-1).val
    return _FULL_VAL[key]


def run_config(
    spec: TableSpec,
    method: str,
    shots: int,
    seed: int,
    point: GridPoint,
    output_dir: str,
    phase: str,
    opts: Sequence[str] = (),
):
    """The frozen, validated config of one run: a bad override or dataset is one message here,
    before any run trains."""
    from mmprompt.config import load_cfg
    from mmprompt.config.validate import validate_config

    tag = "-".join(v for v in point[1::2])
    run_dir = os.path.join(output_dir, "runs", method, f"{phase}-shots{shots}-seed{seed}-{tag}")
    cfg = load_cfg(
        config_path(spec, method),
        opts=[
            "DATASET.NUM_SHOTS",
            str(shots),
            "SEED",
            str(seed),
            "OUTPUT_DIR",
            run_dir,
            "TEST.NO_TEST",
            "True",
            "TRAIN.PROGRESS_BAR",
            "False",
            *point,
            *opts,
        ],
    )
    cfg.freeze()
    validate_config(cfg)
    return cfg


def run_one(
    spec: TableSpec,
    method: str,
    shots: int,
    seed: int,
    point: GridPoint,
    output_dir: str,
    phase: str,
    opts: Sequence[str] = (),
) -> Dict:
    """Train one (method, shots, seed, grid point); ``phase`` "grid" scores the whole val split
    and skips the test, "table" scores the K-shot val split and tests.

    A run folder not in results.json is an unfinished run (the table was interrupted): it is
    replaced, under the run-dir lock (mmprompt.engine.run_dir), so two table commands on one
    --output-dir cannot mix their runs."""
    from mmprompt.engine.run_dir import open_run_dir
    from mmprompt.engine.trainer import Trainer

    grid = phase == "grid"
    cfg = run_config(spec, method, shots, seed, point, output_dir, phase, opts)
    run_dir = open_run_dir(cfg, "overwrite")
    trainer = None
    try:
        trainer = Trainer(cfg)
        start, cpu_start = time.perf_counter(), demo.cpu_seconds()
        extra = trainer.train()
        train_time, train_cpu = time.perf_counter() - start, demo.cpu_seconds() - cpu_start
        val_items = full_val(cfg) if grid else trainer.dataset.val
        eval_start, eval_cpu_start = time.perf_counter(), demo.cpu_seconds()
        val = trainer.evaluate(cfg, trainer.model, val_items, trainer.classnames)
        results = None if grid else trainer.test(extra)
        eval_time, eval_cpu = time.perf_counter() - eval_start, demo.cpu_seconds() - eval_cpu_start
    finally:
        if trainer is not None:
            trainer.close()
        run_dir.close()
    return {
        "phase": phase,
        "method": method,
        "shots": shots,
        "seed": seed,
        "point": list(point),
        "point_label": point_label(point),
        "trainable_params": int(trainer.model.num_params()["trainable"]),
        "val_acc": float(val["accuracy"]),
        "val_items": len(val_items),
        "test_acc": None if grid else float(results["test"]["accuracy"]),
        "test_macro_f1": None if grid else float(results["test"]["macro_f1"]),
        "test_items": 0 if grid else int(results["test"]["num_samples"]),
        "train_time_s": round(train_time, 2),
        "train_cpu_s": round(train_cpu, 2),
        "eval_time_s": round(eval_time, 2),
        "eval_cpu_s": round(eval_cpu, 2),
        "steps": int(extra["step"]),
        "output_dir": run_dir.output_dir,
        "opts": list(opts),
    }


def _key(run: Dict) -> tuple:
    return (run["phase"], run["method"], run["shots"], run["seed"], tuple(run["point"]))


def chosen_point(spec: TableSpec, runs: Sequence[Dict], method: str, shots: int) -> Optional[GridPoint]:
    """The grid point with the best whole-val accuracy of the grid runs (first in grid order on ties);
    None until every point has run. A one-point grid needs no search."""
    grid = [tuple(p) for p in spec.grids[method]]
    if len(grid) == 1:
        return grid[0]
    scores = {
        tuple(r["point"]): r["val_acc"]
        for r in runs
        if r["phase"] == "grid" and r["method"] == method and r["shots"] == shots
    }
    if any(p not in scores for p in grid):
        return None
    return max(grid, key=lambda p: (scores[p], -grid.index(p)))


def plan(spec: TableSpec, methods: Sequence[str], shots: Sequence[int], seeds: Sequence[int]):
    """Jobs in order, method by method: the grid runs of a (method, shots), then its table runs.
    Table jobs carry point None: it is filled in from the grid's results when they are due."""
    jobs = []
    for m in methods:
        for k in shots:
            if len(spec.grids[m]) > 1:
                jobs += [("grid", m, k, seeds[0], tuple(p)) for p in spec.grids[m]]
            jobs += [("table", m, k, s, None) for s in seeds]
    return jobs


def summarize(runs: Sequence[Dict]) -> Dict[tuple, Dict]:
    rows: Dict[tuple, Dict] = {}
    for r in runs:
        if r["phase"] != "table":
            continue
        row = rows.setdefault(
            (r["method"], r["shots"]),
            {
                "test": [],
                "val": [],
                "time": [],
                "seeds": [],
                "params": r["trainable_params"],
                "point": r["point_label"],
            },
        )
        row["test"].append(r["test_acc"])
        row["val"].append(r["val_acc"])
        row["time"].append(r["train_time_s"])
        row["seeds"].append(r["seed"])
    return rows


def _cell(values: List[float]) -> str:
    if not values:
        return "not run"
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    return demo._pm(mean, std, n) + ("" if n == 3 else f" ({n} seed{'s' if n > 1 else ''})")


def render(spec: TableSpec, runs: Sequence[Dict], jobs: Sequence[tuple], command: str, wall_s: float) -> str:
    rows = summarize(runs)
    methods = list(dict.fromkeys(j[1] for j in jobs))
    shots = sorted({j[2] for j in jobs})
    lines = [f"# {spec.title}", "", f"Command: `{command}`", "", spec.setting, ""]
    head = "| method | trainable params | " + " | ".join(f"test acc, {k} shots (%)" for k in shots)
    head += " | " + " | ".join(f"train s, {k} shots" for k in shots) + " |"
    lines += [head, "|---|---:|" + "---:|" * (2 * len(shots))]
    for m in methods:
        params = next((r["params"] for (mm, _), r in rows.items() if mm == m), None)
        cells = [_cell(rows[(m, k)]["test"]) if (m, k) in rows else "not run" for k in shots]
        times = [f"{statistics.fmean(rows[(m, k)]['time']):.0f}" if (m, k) in rows else "-" for k in shots]
        lines.append(f"| {m} | {params:,} | " if params is not None else f"| {m} | - | ")
        lines[-1] += " | ".join(cells + times) + " |"
    lines += [
        "",
        f"Chance: {spec.chance:.1f}%. Mean ± sample std over seeds "
        f"{', '.join(map(str, spec.seeds))}; train s = mean training seconds of a table run on the "
        "machine that ran it (evaluation excluded).",
        "",
    ]
    lines += [
        "## Learning rates chosen on val",
        "",
        "Seed 1, every grid point, scored on the whole validation split (no test number computed).",
        "",
        "| method | shots | " + "val acc per grid point (%)" + " | chosen |",
        "|---|---:|---|---|",
    ]
    for m in methods:
        for k in shots:
            grid = [r for r in runs if r["phase"] == "grid" and r["method"] == m and r["shots"] == k]
            point = chosen_point(spec, runs, m, k)
            scores = ", ".join(f"{r['point_label']}: {r['val_acc']:.1f}" for r in grid) or (
                "single point" if len(spec.grids[m]) == 1 else "not run"
            )
            lines.append(f"| {m} | {k} | {scores} | {point_label(point) if point else '-'} |")
    if spec.plot and os.path.isfile(spec.plot):
        rel = os.path.relpath(spec.plot, os.path.dirname(os.path.abspath(spec.doc)))
        lines += [
            "",
            "## Learned positions",
            "",
            "Test-set histograms of the chosen split point dpos (prompt tokens before the input) of "
            "seed 1's table run, for each method with a learned position:",
            "",
            f"![learned positions]({rel})",
        ]
    lines += [
        "",
        "## Every run",
        "",
        "| phase | method | shots | seed | grid point | params | val acc (%) | val items | "
        "test acc (%) | test items | steps | train s | eval s |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        test = f"{r['test_acc']:.2f}" if r["test_acc"] is not None else "-"
        lines.append(
            f"| {r['phase']} | {r['method']} | {r['shots']} | {r['seed']} | {r['point_label']} | "
            f"{r['trainable_params']:,} | {r['val_acc']:.2f} | {r['val_items']} | {test} | {r['test_items']} | "
            f"{r['steps']} | {r['train_time_s']:.0f} | {r['eval_time_s']:.0f} |"
        )
    done = {_key(r) for r in runs}
    missing = [j for j in jobs if j[0] == "grid" and (j[0], j[1], j[2], j[3], j[4]) not in done]
    missing_table = [
        j
        for j in jobs
        if j[0] == "table"
        and not any(r["phase"] == "table" and (r["method"], r["shots"], r["seed"]) == j[1:4] for r in runs)
    ]
    if missing or missing_table:
        lines += [
            "",
            f"Not run yet: {len(missing)} grid run(s), {len(missing_table)} table run(s) of {len(jobs)} planned.",
        ]
    cpu_s = sum(r["train_cpu_s"] + r.get("eval_cpu_s", 0.0) for r in runs)
    lines += [
        *spec.extra_notes,
        "",
        f"Wall time of the runs above: {wall_s / 60:.0f} min (training and evaluation: "
        f"{cpu_s / 60:.0f} CPU-minutes, which is what predicts the wall time on another machine).",
    ]
    return "\n".join(lines) + "\n"


# what every run in results.json must hold, and of which type, for the table to be built from it
RUN_FIELDS = {
    "phase": str,
    "method": str,
    "shots": int,
    "seed": int,
    "point": list,
    "point_label": str,
    "trainable_params": int,
    "val_acc": (int, float),
    "val_items": int,
    "test_items": int,
    "train_time_s": (int, float),
    "eval_time_s": (int, float),
    "train_cpu_s": (int, float),
    "steps": int,
    "output_dir": str,
}


def load_runs(path: str, opts: Sequence[str] = ()) -> List[Dict]:
    """The runs of an earlier call from ``path``; refused when unreadable, or made with other KEY
    VALUE overrides than ``opts`` (a table mixing the two would be silently wrong)."""
    if not os.path.isfile(path):
        return []
    move = "move it away to start afresh"
    try:
        with open(path, encoding="utf-8") as f:
            runs = json.load(f)["runs"]
    except (ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON or not UTF-8
        raise ConfigError(f"{path} is not a results file of this tool ({type(e).__name__}: {e}); {move}.") from None
    if not isinstance(runs, list):
        raise ConfigError(f"{path}: 'runs' must be a list of runs; {move}.")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            bad = ["everything (not an object)"]
        else:
            bad = [
                k for k, kind in RUN_FIELDS.items() if not isinstance(run.get(k), kind) or isinstance(run.get(k), bool)
            ]
            if run.get("phase") == "table" and not isinstance(run.get("test_acc"), (int, float)):
                bad.append("test_acc")
        if bad:
            raise ConfigError(f"{path}: run {i} has missing or wrongly typed {', '.join(bad)}; {move}.")
        made_with = run.get("opts", [])  # results files from before opts were recorded: the tables use none
        if list(made_with) != list(opts):
            raise ConfigError(
                f"{path}: its runs were made with the overrides {made_with or 'none'}, this call "
                f"gives {list(opts) or 'none'}; a table would mix the two. Give the same overrides, "
                f"or another --output-dir."
            )
    return runs


def run_table(
    spec: TableSpec,
    methods: Sequence[str],
    shots: Sequence[int],
    seeds: Sequence[int],
    output_dir: str,
    command: str,
    opts: Sequence[str] = (),
    plot_fn: Optional[Callable] = None,
) -> List[Dict]:
    for m in methods:
        config_path(spec, m)
    if not seeds or not shots:
        raise ConfigError("Give at least one seed and one shot count.")
    demo.check_opts(methods, opts)
    demo.check_unique(methods=methods, shots=shots, seeds=seeds)
    jobs = plan(spec, methods, shots, seeds)
    for phase, m, k, s, point in jobs:  # a bad override or dataset fails before any training
        run_config(spec, m, k, s, point or tuple(spec.grids[m][0]), output_dir, phase, opts)
    demo.check_writable_file(spec.doc, "--doc")
    if plot_fn is not None and spec.plot:
        demo.check_writable_file(spec.plot, "--plot")
    os.makedirs(output_dir, exist_ok=True)
    results_path = os.path.join(output_dir, "results.json")
    runs = load_runs(results_path, opts)
    done = {_key(r) for r in runs}
    wall_before = sum(r["train_time_s"] + r["eval_time_s"] for r in runs)
    start = time.perf_counter()

    def save():
        with open(results_path, "w") as f:
            json.dump({"command": command, "runs": runs}, f, indent=1)
        if plot_fn is not None:
            plot_fn(runs)
        os.makedirs(os.path.dirname(os.path.abspath(spec.doc)), exist_ok=True)
        with open(spec.doc, "w") as f:
            f.write(render(spec, runs, jobs, command, wall_before + time.perf_counter() - start))

    for i, (phase, m, k, s, point) in enumerate(jobs, 1):
        if phase == "table":
            point = chosen_point(spec, runs, m, k)
            if point is None:
                raise ConfigError(f"{m} {k} shots: the lr grid has not finished, so no lr is chosen.")
        key = (phase, m, k, s, tuple(point))
        if key in done:
            continue
        # the seed-1 table run at the chosen point is a run of its own, not the grid run reused:
        # the grid run scored the whole val split and computed no test number
        print(f"[{i}/{len(jobs)}] {phase} {m}, {k} shots, seed {s}, {point_label(point)}", flush=True)
        run = run_one(spec, m, k, s, point, output_dir, phase, opts)
        runs.append(run)
        done.add(key)
        test = f"test {run['test_acc']:.2f}%  " if run["test_acc"] is not None else ""
        print(
            f"    {test}val {run['val_acc']:.2f}% ({run['val_items']} items)  "
            f"{run['train_time_s']:.0f} s training, {run['eval_time_s']:.0f} s evaluation",
            flush=True,
        )
        save()
    save()
    return runs


def plot_positions(spec: TableSpec, runs: Sequence[Dict]) -> Optional[str]:
    """One PNG (``spec.plot``): for every dynamic method and shot count, the test-set histogram of
    the split point chosen by seed 1's table run (the first seed's, when seed 1 is not run);
    records from ``prompt_records.json`` (see tools/plot_positions.py)."""
    import plot_positions as pp

    panels = []
    for m in spec.dynamic_methods:
        for k in spec.shots:
            table = sorted(
                (r for r in runs if r["phase"] == "table" and r["method"] == m and r["shots"] == k),
                key=lambda r: r["seed"],
            )
            path = os.path.join(table[0]["output_dir"], pp.RECORDS) if table else ""
            if not path or not os.path.isfile(path):
                continue
            records = pp.read_records(path)
            # the first layer's choice: with PROMPT.DYNAMIC.CHOICE_DEPTH 1 (the tables' setting)
            # every deeper layer records the same value
            keys = sorted(
                (key for key in records if key.endswith(".dpos")),
                key=lambda key: int("".join(c for c in key.split(".")[-2] if c.isdigit()) or 0),
            )
            if keys:
                panels.append((f"{m}, {k} shots ({keys[0]})", list(pp.flatten(records[keys[0]]))))
    if not spec.plot or not panels:
        return None
    from mmprompt.utils.extras import require

    matplotlib = require("matplotlib", "Plotting")
    matplotlib.use("Agg")
    from collections import Counter

    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (title, values) in zip(axes.ravel(), panels):
        counts = Counter(values)
        top = max(max(counts), 1)
        ax.bar(range(top + 1), [counts.get(x, 0) for x in range(top + 1)], color="tab:blue")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("dpos (prompt tokens before the input)", fontsize=7)
        ax.set_ylabel("test samples", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(spec.plot)), exist_ok=True)
    fig.savefig(spec.plot, dpi=100)
    plt.close(fig)
    return spec.plot


def main_for(spec: TableSpec, doc: str, argv: Optional[Sequence[str]] = None) -> int:
    """The command line shared by the table tools."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(spec.methods), help=f"default: {' '.join(spec.methods)}")
    p.add_argument("--shots", nargs="+", type=int, default=spec.shots)
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=spec.seeds,
        help="seeds of the table runs; the lr grid runs on the first",
    )
    p.add_argument(
        "--output-dir",
        default=os.path.join("output", f"results_{spec.name}"),
        help="the runs' folders and results.json (an existing results.json is resumed)",
    )
    p.add_argument("--doc", default=spec.doc, help=f"markdown file written (default {os.path.relpath(spec.doc, REPO)})")
    p.add_argument("--plot", default=spec.plot, help="PNG of the learned positions")
    p.add_argument(
        "--single-lr",
        action="store_true",
        help="no lr search: every method runs at the middle point of its grid (pilots, timing)",
    )
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides for every run (the tables use none)")
    args = p.parse_args(argv)
    if any(k <= 0 for k in args.shots):
        raise ConfigError(f"--shots must be positive; got {args.shots}")
    # a copy: the module's spec keeps its defaults for the next call in this process
    spec = replace(spec, doc=args.doc, plot=args.plot, shots=list(args.shots), seeds=list(args.seeds))
    if args.single_lr:
        spec.grids = {m: [grid[len(grid) // 2]] for m, grid in spec.grids.items()}
    demo.quiet_libraries()
    tool = os.path.relpath(os.path.abspath(sys.argv[0]), REPO) if argv is None else f"tools/results_{spec.name}.py"
    command = (f"python {tool} " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    plot_fn = (lambda runs: plot_positions(spec, runs)) if spec.dynamic_methods and spec.plot else None
    run_table(spec, args.methods, args.shots, args.seeds, args.output_dir, command, args.opts, plot_fn)
    print(open(spec.doc).read())
    return 0
