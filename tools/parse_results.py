#!/usr/bin/env python
"""Average runs into the table the papers print.

    python tools/parse_results.py output/maple_adap_pos            # every metrics.json below it
    python tools/parse_results.py out/seed1 out/seed2 out/seed3 --json table.json

Runs are grouped by recipe (the --config-file name train_net records; else PROMPT.METHODS, else
MODEL.NAME) and dataset. Each dataset row is
mean ± std over its runs (seeds; population std, as CoOp's parse_test_res); base-to-novel runs
get base / new / HM columns, with HM the harmonic mean of the mean base and mean new accuracies
(CoCoOp/MaPLe's convention); the average row averages the dataset means (and its HM is the
HM of the averages). Cross-dataset targets appear as rows ``source -> target``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmprompt.errors import MMPromptError  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402


def find_metrics(paths: List[str]) -> List[str]:
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
            continue
        if not os.path.isdir(path):
            raise MMPromptError(f"{path} does not exist.")
        for folder, _, files in os.walk(path):
            if "metrics.json" in files:
                found.append(os.path.join(folder, "metrics.json"))
    if not found:
        raise MMPromptError(f"No metrics.json under {', '.join(paths)}: are these output dirs of finished runs?")
    return sorted(found)


def _mean_std(values: List[float]):
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5


def _hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n) if b + n > 0 else 0.0


def _number(v) -> bool:
    """A finite number: a NaN or inf metric would show as 'nan' in the table and spoil every mean."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_metrics(path: str) -> Dict:
    """One metrics.json, or MMPromptError saying what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except UnicodeDecodeError as e:
        raise MMPromptError(f"{path} is not valid UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise MMPromptError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except OSError as e:  # a link loop, a folder of that name, no permission
        raise MMPromptError(f"{path} cannot be read ({e.strerror or e})") from None
    if not isinstance(m, dict):
        raise MMPromptError(f"{path} holds a {type(m).__name__}, not the object train_net writes")
    for key in ("main_metric", "split", "dataset"):
        if key in m and not isinstance(m[key], str):
            raise MMPromptError(f"{path}: {key} must be a name, got {m[key]!r:.40}")
    main = m.get("main_metric", "accuracy")
    needed = ["base", "new"] if "hm" in m else [m.get("split", "test")] if m.get("split", "test") in m else []
    for key in needed:
        if not (isinstance(m.get(key), dict) and _number(m[key].get(main))):
            raise MMPromptError(f"{path}: {key}.{main} is missing or not a number")
    cross = m.get("cross") or {}
    if not isinstance(cross, dict) or not all(isinstance(v, dict) and _number(v.get(main)) for v in cross.values()):
        raise MMPromptError(f"{path}: cross must map each target dataset to its metrics, with {main}")
    return m


def collect(files: List[str]) -> Dict[str, Dict[str, Dict[str, List[float]]]]:
    """{method: {row: {column: [value per run]}}}. Every file is checked first; one message
    lists all that cannot be used (a table silently missing runs would be wrong)."""
    runs, problems = [], []
    for path in files:
        try:
            runs.append((path, read_metrics(path)))
        except MMPromptError as e:
            problems.append(str(e))
    if problems:
        raise MMPromptError(
            f"{len(problems)} of {len(files)} metrics.json file(s) cannot be used:\n  "
            + "\n  ".join(problems[:10])
            + ("\n  ..." if len(problems) > 10 else "")
            + "\nRemove or fix them (or pass only the runs you want) and run again."
        )
    table: Dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for path, m in runs:
        method = m.get("recipe") or "+".join(map(str, m.get("methods") or [])) or str(m.get("model", "?"))
        main = m.get("main_metric", "accuracy")
        row = table[method][str(m.get("dataset", os.path.dirname(path)))]
        if "hm" in m:
            row["base"].append(m["base"][main])
            row["new"].append(m["new"][main])
        elif m.get("split", "test") in m:
            row[main].append(m[m.get("split", "test")][main])
        for target, metrics in (m.get("cross") or {}).items():
            table[method][f"{m.get('dataset')} -> {target}"][main].append(metrics[main])
    return table


def summarise(rows: Dict[str, Dict[str, List[float]]]) -> Dict[str, Dict[str, object]]:
    out: Dict[str, Dict[str, object]] = {}
    for name, columns in sorted(rows.items()):
        out[name] = {c: {"mean": _mean_std(v)[0], "std": _mean_std(v)[1], "runs": len(v)} for c, v in columns.items()}
        if "base" in columns and "new" in columns:
            out[name]["hm"] = {"mean": _hm(out[name]["base"]["mean"], out[name]["new"]["mean"])}
    datasets = [n for n in out if " -> " not in n]
    if len(datasets) > 1:
        columns = sorted({c for n in datasets for c in out[n] if c != "hm"})
        avg = {
            c: {"mean": sum(out[n][c]["mean"] for n in datasets if c in out[n]) / sum(c in out[n] for n in datasets)}
            for c in columns
        }
        if "base" in avg and "new" in avg:
            avg["hm"] = {"mean": _hm(avg["base"]["mean"], avg["new"]["mean"])}
        out["average"] = avg
    return out


def markdown(method: str, summary: Dict[str, Dict[str, object]]) -> str:
    columns = []
    for row in summary.values():
        for c in row:
            if c not in columns:
                columns.append(c)
    order = [c for c in ("base", "new", "hm") if c in columns] + [c for c in columns if c not in ("base", "new", "hm")]
    lines = [
        f"### {method}",
        "",
        "| dataset | " + " | ".join(c if c != "hm" else "HM" for c in order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for name, row in summary.items():
        cells = []
        for c in order:
            cell = row.get(c)
            if cell is None:
                cells.append("")
            elif "std" in cell and cell.get("runs", 1) > 1:
                cells.append(f"{cell['mean']:.2f} ± {cell['std']:.2f}")
            else:
                cells.append(f"{cell['mean']:.2f}")
        label = f"**{name}**" if name == "average" else name
        runs = max((cell.get("runs", 0) for cell in row.values()), default=0)
        lines.append(f"| {label}{f' ({runs} runs)' if runs > 1 else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="output dirs (searched recursively) or metrics.json files")
    p.add_argument("--json", default="", help="also write the table as JSON here")
    args = p.parse_args(argv)
    table = collect(find_metrics(args.dirs))
    result = {method: summarise(rows) for method, rows in sorted(table.items())}
    if not any(columns for summary in result.values() for columns in summary.values()):
        raise MMPromptError(
            f"The metrics.json files under {', '.join(args.dirs)} hold no test results (runs with "
            "TEST.NO_TEST?): nothing to tabulate."
        )
    print("\n\n".join(markdown(method, summary) for method, summary in result.items()))
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
        except OSError as e:
            raise MMPromptError(f"Cannot write --json {args.json}: {e.strerror}.") from None
    return 0


if __name__ == "__main__":
    run_cli(main)
