#!/usr/bin/env python
"""mmprompt's recipes side by side with the authors' released code, on identical weights.

    python benchmarks/vs_official.py --maple-repo ~/src/multimodal-prompt-learning \
        --coop-repo ~/src/CoOp --vpt-repo ~/src/vpt --dpt-repo ~/src/DPT \
        --dept-repo ~/src/DePT --adept-repo ~/src/ADePT --ptv2-repo ~/src/P-tuning-v2
    python benchmarks/vs_official.py --maple-repo DIR --only maple     # one family or recipe

Give the checkouts you have (``git clone`` of each authors' repository; nothing of theirs is
copied into mmprompt): every comparison whose checkouts are all given runs, the others are listed
as skipped. For each recipe it prints the max relative difference of the logits and of every
prompt gradient (float32), a verdict (SAME within 1e-4 relative) and the forward+backward time
ratio, ours / theirs. Both sides get the same random weights with every normalisation gain and
bias and every bias randomised (see ``benchmarks/official/common.py``). Exit status 1 when any
recipe is DIFFERENT (INTENDED: a difference mmprompt makes on purpose, with the reason printed,
does not count). ``docs/equivalence.md`` holds an output of this command.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import pkgutil
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.official import common  # noqa: E402

REPO_FLAGS = {
    "maple_repo": "muzairkhattak/multimodal-prompt-learning (MaPLe, IVLP, VPT-in-CLIP, CoOp, CoCoOp trainers)",
    "coop_repo": "KaiyangZhou/CoOp",
    "dassl_repo": "KaiyangZhou/Dassl.pytorch (data sampling; optional, only for the data comparisons)",
    "vpt_repo": "KMnP/vpt",
    "dpt_repo": "Xianjun-Yang/DPT (dynamic prompting, the seed paper's code)",
    "dept_repo": "ZhengxiangShi/DePT",
    "adept_repo": "HungerPWAY/ADePT",
    "ptv2_repo": "THUDM/P-tuning-v2",
}


def load_families():
    package = os.path.join(REPO, "benchmarks", "official")
    for info in sorted(pkgutil.iter_modules([package]), key=lambda m: m.name):
        if info.name != "common":
            importlib.import_module(f"benchmarks.official.{info.name}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for dest, what in REPO_FLAGS.items():
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, metavar="DIR", help=f"checkout of {what}")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only recipes or families matching this glob (repeatable)",
    )
    p.add_argument(
        "--size",
        choices=("base", "tiny"),
        default="base",
        help="base = the papers' model sizes (ViT-B/16, T5-base/BERT-base shapes); tiny = small "
        "random configs of the same architectures, for a quick look",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed forward+backward passes per side (0 = no timing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--list", action="store_true", help="list the comparisons and the checkouts each needs")
    return p.parse_args(argv)


def selected(recipe: common.Recipe, patterns) -> bool:
    return not patterns or any(
        fnmatch.fnmatch(recipe.name, pat) or fnmatch.fnmatch(recipe.family, pat) or pat in recipe.name
        for pat in patterns
    )


def format_result(r: common.Result) -> str:
    grads = ", ".join(f"{k} {v:.1e}" for k, v in r.grads_rel.items())
    ratio = f"ratio {r.ratio:.2f}x" if r.ratio is not None else "ratio -"
    return (
        f"{r.recipe:<44} logits {r.logits_rel:.1e}  grads max {max(r.grads_rel.values(), default=0.0):.1e}  "
        f"{r.verdict:<9} {ratio}\n    vs {r.compared_with}"
        + (f"\n    grads: {grads}" if grads else "")
        + (f"\n    note: {r.note}" if r.note else "")
        + (f"\n    intended: {r.intended}" if r.intended else "")
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    load_families()
    torch.manual_seed(args.seed)
    recipes = [r for r in common.RECIPES if selected(r, args.only)]
    if args.list:
        for r in recipes:
            print(f"{r.family:<14} {r.name:<44} needs {', '.join('--' + x.replace('_', '-') for x in r.repos)}")
        return 0
    if not recipes:
        print(f"error: --only {' '.join(args.only)} matches no comparison; see --list.", file=sys.stderr)
        return 2
    if args.repeats < 0:
        print(f"error: --repeats must be >= 0 (0 = no timing), got {args.repeats}.", file=sys.stderr)
        return 2
    if args.json:  # refused now, not after every comparison has run
        folder = os.path.dirname(os.path.abspath(args.json))
        why = (
            "it is a folder"
            if os.path.isdir(args.json)
            else ""
            if os.path.isdir(folder)
            else f"{folder} is not a folder"
        )
        if why:
            print(f"error: --json {args.json} cannot be written: {why}.", file=sys.stderr)
            return 2
    results, skipped, failed = [], [], []
    for r in recipes:
        missing = [x for x in r.repos if not getattr(args, x)]
        if missing:
            skipped.append((r.name, missing))
            continue
        try:
            out = r.run(args)
        except common.CheckoutError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception:  # a comparison that breaks must not hide the others' results
            failed.append((r.name, traceback.format_exc()))
            continue
        for res in out:
            print(format_result(res), flush=True)
            results.append(res)
    for name, missing in skipped:
        print(f"skipped {name}: give {', '.join('--' + x.replace('_', '-') for x in missing)}")
    for name, tb in failed:
        print(f"FAILED {name}:\n{tb}", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{**vars(r), "verdict": r.verdict} for r in results], f, indent=1)
    different = [r.recipe for r in results if r.verdict == "DIFFERENT"]
    intended = [r.recipe for r in results if r.verdict == "INTENDED"]
    print(
        f"\n{len(results)} compared: {len(results) - len(different) - len(intended)} SAME, "
        f"{len(intended)} different on purpose"
        + (f" ({', '.join(intended)})" if intended else "")
        + f", {len(different)} DIFFERENT"
        + (f" ({', '.join(different)})" if different else "")
        + f"; {len(skipped)} skipped, {len(failed)} failed"
    )
    return 1 if different or failed else 0


if __name__ == "__main__":
    sys.exit(main())
