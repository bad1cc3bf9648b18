"""Test doubles for dynamic prompting: small token towers with CLS pooling, padded text with
EOT pooling, and a position-sensitive tower whose output only sees the tokens before ``end``.

They honour ``seq.mask`` in attention, like the real adapters, so masks are tested too.
"""

from __future__ import annotations

import torch
from _fake_backbone import RecordingTower
from torch import nn

from mmprompt.backbones.base import TokenTower
from mmprompt.prompts.base import PromptModule
from mmprompt.prompts.placement import build_placement
from mmprompt.prompts.sources import build_source
from mmprompt.tokens import TokenSeq, new_owner_id

PAD, SOT, EOT = 0, 1, 2


class _Blocks(RecordingTower):
    """The prompt tests' recording tower without dropout, so outputs compare exactly."""

    def __init__(self, name, width, depth):
        super().__init__(name, width, depth, dropout=0.0)


class VisionTower(_Blocks):
    """[CLS, patches]; pools CLS (anchor 0)."""

    def __init__(self, width=16, depth=2, patches=5):
        super().__init__("vision", width, depth)
        self.cls = nn.Parameter(torch.randn(1, 1, width))
        self.patches = patches
        self.proj = nn.Linear(3, width)

    def embed(self, images):  # images: (B, patches, 3)
        x = torch.cat([self.cls.expand(images.shape[0], -1, -1), self.proj(images)], 1)
        return TokenSeq.from_embeddings(x, tower=self.name, anchors={"start": 1, "end": x.shape[1], "pool": 0})


class TextTower(_Blocks):
    """[SOT, words, EOT, pad...] from lists of word ids; pools EOT like CLIP's text tower."""

    def __init__(self, width=12, depth=2, vocab=32, name="text"):
        super().__init__(name, width, depth)
        self.emb = nn.Embedding(vocab, width)

    def input_embeddings(self):
        return self.emb

    def embed(self, rows):
        rows = [[SOT] + list(r) + [EOT] for r in rows]
        n = max(len(r) for r in rows)
        ids = torch.tensor([r + [PAD] * (n - len(r)) for r in rows])
        mask = ids != PAD
        eot = mask.long().sum(1) - 1
        return TokenSeq.from_embeddings(
            self.emb(ids), mask, tower=self.name, anchors={"start": 1, "end": eot, "pool": eot}
        )


class WindowTower(TokenTower):
    """Position-sensitive toy tower: its output is the mean of the ``window`` tokens just before
    ``end``, so a prompt only acts when placed after the input."""

    name = "encoder"

    def __init__(self, width=8, window=4):
        super().__init__()
        self._width = width
        self.window = window

    @property
    def width(self):
        return self._width

    @property
    def num_layers(self):
        return 1

    def embed(self, x):
        return TokenSeq.from_embeddings(x, tower=self.name, anchors={"start": 0, "end": x.shape[1]})

    def layer(self, i, seq):
        return seq

    def pool(self, seq):
        idx = seq.anchors["end"][:, None] - torch.arange(1, self.window + 1)
        return seq.x.gather(1, idx[..., None].expand(-1, -1, seq.width)).mean(1)


class TwoSidedWindowTower(WindowTower):
    """Instance-dependent toy tower: inputs whose first feature is positive are read through the
    ``window`` tokens before ``end``, the others through the first ``window`` tokens.
    A prompt helps the first kind only after the input, the second only before it."""

    def embed(self, x):
        seq = super().embed(x)
        seq.meta["reads_end"] = x[:, :, 0].mean(1) > 0
        return seq

    def pool(self, seq):
        w = torch.arange(self.window)
        at_end = seq.anchors["end"][:, None] - 1 - w
        at_front = w.expand_as(at_end)  # the first tokens of the sequence
        idx = torch.where(seq.meta["reads_end"][:, None], at_end, at_front)
        return seq.x.gather(1, idx[..., None].expand(-1, -1, seq.width)).mean(1)


class OnePrompt(PromptModule):
    """A minimal prompt method built like the real ones: a source and a placement from config
    names, in one tower, at layer 0 (shallow) or every layer (deep, each layer its own tokens)."""

    def __init__(self, cfg, tower, *, length, width, position, source="param", deep_layers=1, init="normal"):
        super().__init__()
        self.tower = tower
        self.owner = new_owner_id()
        self.sources = nn.ModuleList(
            [build_source(source, cfg, length=length, width=width, init=init) for _ in range(deep_layers)]
        )
        self.placement = build_placement(position, cfg, length=length, width=width)

    def before_layer(self, tower, i, seq, ctx):
        if tower != self.tower or i >= len(self.sources):
            return seq
        return self.placement.place(seq, self.sources[i](ctx, tower), self.owner, ctx)
