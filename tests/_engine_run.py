"""Runs tools/train_net.py with the engine test doubles registered (tests start it in a
subprocess; torchrun workers re-run this same file, since sys.argv[0] stays this file)."""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _engine_doubles  # noqa: E402,F401  (registers the test model and datasets)

from mmprompt.utils.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location(
        "train_net", os.path.join(os.path.dirname(HERE), "tools", "train_net.py")
    )
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    run_cli(train_net.main)
