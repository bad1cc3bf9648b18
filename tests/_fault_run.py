"""tools/train_net.py with the engine and fault test doubles registered, for tests that need a
real process (signals, torchrun workers re-run this same file)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _fault_doubles  # noqa: E402,F401  (registers the fault model; imports the engine doubles)
from _sandbox import tool  # noqa: E402

from mmprompt.utils.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(tool("train_net").main)
