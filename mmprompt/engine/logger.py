"""Run logs: a JSON-lines file (``log.jsonl``, one record per event) and tensorboard scalars.

Only the main process writes. A resumed run appends to the same file, so records of steps
redone after a crash appear twice; readers keep the last record per (kind, step). A run killed
while writing may leave a cut-off last line: the next run starts on a new line, and readers skip
such a line with a warning.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict

from ..errors import MMPromptError
from ..utils.extras import require


class RunLogger:
    def __init__(self, output_dir: str, *, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = os.path.join(output_dir, "log.jsonl")
        self._tb = None
        if enabled and os.path.isfile(self.path) and os.path.getsize(self.path):
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # cut off by a kill: keep the next record on its own line
                    f.write(b"\n")
        if enabled and tensorboard:
            try:
                require("tensorboard", "TRAIN.TENSORBOARD True (tensorboard scalars)")
            except MMPromptError as e:
                # log.jsonl holds every scalar too, so a run without tensorboard loses nothing
                print(
                    f"warning: {e} Writing log.jsonl only (TRAIN.TENSORBOARD False silences this).",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def log(self, kind: str, step: int, values: Dict[str, object], **extra) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **extra, **values}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_log(path: str):
    """Records of a log.jsonl, keeping the last one per (kind, step, dataset). Lines that are not
    a JSON record (cut off by a kill) are skipped with a warning; a file with no record at all
    is an error."""
    latest: Dict[tuple, dict] = {}
    bad = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise MMPromptError(f"{path} is not UTF-8 text (byte {e.start}): it is not a log.jsonl of mmprompt.") from None
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            r = None
        if not isinstance(r, dict) or not isinstance(r.get("kind"), str) or not isinstance(r.get("step", 0), int):
            bad.append(number)
            continue
        latest[(r.get("kind"), r.get("step"), r.get("dataset"))] = r
    if bad and not latest:
        raise MMPromptError(
            f"{path} holds no readable record (line {bad[0]} is not a JSON record with a kind and "
            "a step): it is not a log.jsonl written by mmprompt."
        )
    if bad:
        print(
            f"warning: {path}: skipped {len(bad)} line(s) that are not JSON records (line "
            f"{', '.join(map(str, bad[:5]))}); a run killed while writing leaves one.",
            file=sys.stderr,
        )
    return sorted(latest.values(), key=lambda r: (r.get("step", 0), r.get("time", 0)))
