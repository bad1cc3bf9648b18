#!/usr/bin/env python
"""Shim for checkouts that are not installed: ``mmprompt-zoo`` (:mod:`mmprompt.cli.zoo`), same
flags. ``python tools/model_zoo.py --help`` shows them."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmprompt.cli.zoo import *  # noqa: E402,F401,F403
from mmprompt.cli.zoo import main  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
