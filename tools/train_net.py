#!/usr/bin/env python
"""Shim for checkouts that are not installed: ``mmprompt-train`` (:mod:`mmprompt.cli.train`),
same flags. ``python tools/train_net.py --help`` shows them."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmprompt.cli.train import *  # noqa: E402,F401,F403  (tools import setup_cfg, main ... from here)
from mmprompt.cli.train import main  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
