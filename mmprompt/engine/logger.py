"""Run logs: a JSON-lines file (``log.jsonl``, one record per event) and tensorboard scalars.

Only the main process writes. A resumed run appends to the same file, so records of steps
redone after a crash appear twice; readers keep the last record per (kind, step).
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict


class RunLogger:
    def __init__(self, output_dir: str, *, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = os.path.join(output_dir, "log.jsonl")
        self._tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def log(self, kind: str, step: int, values: Dict[str, object], **extra) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **extra, **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_log(path: str):
    """Records of a log.jsonl, keeping the last one per (kind, step, dataset)."""
    latest: Dict[tuple, dict] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                latest[(r.get("kind"), r.get("step"), r.get("dataset"))] = r
    return sorted(latest.values(), key=lambda r: (r.get("step", 0), r.get("time", 0)))
