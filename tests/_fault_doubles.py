"""Faults on demand for the bad-input matrix: the engine test model (tests/_engine_doubles.py)
with a NaN loss, NaN evaluation logits or a failing rank at chosen steps.

``MODEL.NAME fault_test_model`` reads the environment, so a subprocess (torchrun workers) sees the
same faults:

* ``FAULT_NAN_LOSS_AT``: comma-separated model steps whose training loss is NaN ("all": every one)
* ``FAULT_NAN_EVAL``: "1" makes every evaluation logit NaN
* ``FAULT_FAIL_RANK`` / ``FAULT_FAIL_AT``: that rank raises a user error in the training forward
  of that step, while the other ranks go on into the gradient all-reduce
"""

from __future__ import annotations

import os

import _engine_doubles
import torch

from mmprompt.errors import MMPromptError
from mmprompt.registry import MODELS


def _steps(name: str):
    raw = os.environ.get(name, "")
    return raw if raw == "all" else {int(s) for s in raw.split(",") if s}


@MODELS.register("fault_test_model")
class FaultModel(_engine_doubles.TinyModel):
    def forward(self, batch, ctx=None):
        if (
            self.training
            and os.environ.get("FAULT_FAIL_AT") == str(self.step)
            and os.environ.get("RANK", "0") == os.environ.get("FAULT_FAIL_RANK")
        ):
            raise MMPromptError(f"injected failure on rank {os.environ.get('RANK')} at step {self.step}")
        out = super().forward(batch, ctx)
        nan_steps = _steps("FAULT_NAN_LOSS_AT")
        if self.training and out["loss"] is not None and (nan_steps == "all" or self.step in nan_steps):
            out["loss"] = out["loss"] * float("nan")
        if not self.training and os.environ.get("FAULT_NAN_EVAL") == "1":
            out["logits"] = torch.full_like(out["logits"], float("nan"))
        return out
