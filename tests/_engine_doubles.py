"""Test doubles for the engine tests: a tiny CLIP-like prompt model and generated datasets.

* ``engine_test_model``: a frozen linear "backbone" on 4 numbers, a prompt module with a
  projection ``E`` (declared no-weight-decay), an ``offset`` (declared group ``offsets``), a
  temperature buffer driven by ``model.step`` (as dynamic prompting's), dropout from
  ``MODEL.HEAD.DROPOUT`` (so resuming must restore RNG states), and logits against fixed
  per-classname vectors: the trainable weights do not depend on the classes, so base-to-novel
  and cross-dataset evaluation work as with CLIP. It records a per-sample "position" at two
  "layers" in ``ctx.records``.
* datasets ``engine_test_blobs`` (8 classes of Gaussian blobs, items are text "x0 x1 x2 x3")
  and ``engine_test_blobs_shifted`` (the same classes, shifted: a cross-dataset target).

Env ``ENGINE_TEST_BLOCK_AT_STEP`` / ``ENGINE_TEST_BLOCK_FILE``: the training forward at that
model step touches the file and waits (at most 120 s, then exits), so a test can SIGKILL the
run mid-epoch at a known point without timing guesses.
"""

from __future__ import annotations

import math
import os
import sys
import time
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from mmprompt.data.base import DatasetBase, Datum
from mmprompt.models.base import PromptModel
from mmprompt.prompts.base import PromptModule, PromptStack
from mmprompt.registry import DATASETS, MODELS

DIM = 4
NUM_CLASSES = 8


def _class_vector(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn(DIM, generator=g)


def _items(n_per_class: int, seed: int, shift: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for c in range(NUM_CLASSES):
        center = 1.5 * _class_vector(f"class{c}")
        for _ in range(n_per_class):
            x = center + shift + 0.8 * torch.randn(DIM, generator=g)
            items.append(Datum(label=c, classname=f"class{c}", text=" ".join(f"{v:.6f}" for v in x.tolist())))
    return items


@DATASETS.register("engine_test_blobs")
def blobs(cfg):
    return DatasetBase(_items(6, 1), _items(2, 2), _items(5, 3), name="engine_test_blobs")


@DATASETS.register("engine_test_blobs_shifted")
def blobs_shifted(cfg):
    return DatasetBase(_items(2, 4, 0.3), _items(1, 5, 0.3), _items(3, 6, 0.3), name="engine_test_blobs_shifted")


class TinyPrompt(PromptModule):
    def __init__(self):
        super().__init__()
        self.E = nn.Parameter(torch.eye(DIM) + 0.1 * torch.randn(DIM, DIM))
        self.offset = nn.Parameter(torch.zeros(DIM))
        self.register_buffer("temperature", torch.tensor(1.0))

    def no_weight_decay(self):
        return ["E"]

    def param_groups(self):
        return {"offsets": ["offset"]}


@MODELS.register("engine_test_model")
class TinyModel(PromptModel):
    def __init__(self, cfg, classnames):
        backbone = nn.Linear(DIM, DIM)
        backbone.requires_grad_(False)
        super().__init__(backbone, PromptStack([TinyPrompt()]))
        self.register_buffer("class_vectors", torch.stack([_class_vector(n) for n in classnames]))
        self.dropout = nn.Dropout(cfg.MODEL.HEAD.DROPOUT)

    def forward(self, batch, ctx=None):
        ctx = ctx if ctx is not None else self.new_context()
        prompt = self.prompts.methods[0]
        if self.training:
            _maybe_block(self.step)
            prompt.temperature.fill_(max(0.5, math.exp(-0.02 * self.step)))
        x = torch.tensor([[float(v) for v in t.split()] for t in batch["text"]], device=self.class_vectors.device)
        feat = self.dropout(self.backbone(x) @ prompt.E + prompt.offset)
        logits = feat @ self.class_vectors.T / prompt.temperature
        for _layer in range(2):
            ctx.record("position", (feat[:, _layer] > 0).long())
        out = {"logits": logits, "loss": None}
        if "label" in batch:
            out["loss"] = F.cross_entropy(logits, batch["label"])
        return out


def _maybe_block(step: int) -> None:
    at = os.environ.get("ENGINE_TEST_BLOCK_AT_STEP")
    if at is None or int(at) != step:
        return
    with open(os.environ["ENGINE_TEST_BLOCK_FILE"], "w") as f:
        f.write(str(step))
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.05)
    sys.exit(3)
