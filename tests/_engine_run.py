"""Runs tools/train_net.py with the engine test doubles registered (tests start it in a
subprocess; torchrun workers re-run this same file)."""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import _engine_doubles  # noqa: E402,F401  (registers the test model and datasets)

if __name__ == "__main__":
    runpy.run_path(os.path.join(os.path.dirname(HERE), "tools", "train_net.py"), run_name="__main__")
