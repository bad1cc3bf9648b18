#!/usr/bin/env python
"""Build a model from a config (random weights are fine, no data needed) and print its sizes.

    python tools/model_info.py --config-file configs/maple.yaml [KEY VALUE ...]

Prints JSON: total and trainable parameter counts, trainable counts per module, and each
backbone tower's width and depth — how researchers check methods at equal parameter budgets.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mmprompt.build import build_model  # noqa: E402
from mmprompt.config import load_cfg  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="method config (yaml, _BASE_ allowed)")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=0,
        help="classes to size heads / class prompts for; 0 = MODEL.HEAD.NUM_CLASSES or 10",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_cfg(args.config_file, opts=args.opts)
    n = args.num_classes or cfg.MODEL.HEAD.NUM_CLASSES or 10
    model = build_model(cfg, [f"class {i}" for i in range(n)])
    info = model.num_params()
    info["backbone"] = model.backbone.info()
    info["backbone_name"] = cfg.MODEL.BACKBONE.NAME
    info["arch"] = cfg.MODEL.BACKBONE.ARCH
    info["prompt_methods"] = list(cfg.PROMPT.METHODS)
    info["num_classes"] = n
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
