"""Where prompt tokens enter the sequence.

A placement inserts a source's tokens the first time (layer 0 or the first layer a deep method
acts on) and replaces them at later layers, so deep prompts replace rather than accumulate.
The static placements here cover prefix prompts (VPT, Lester), suffix prompts, a fixed split
``[P_before; X; P_after]``, and CoOp's placements around the class *name* of a class prompt
(``class_middle``, ``after_class``); learned placements (dynamic position/length) live in
:mod:`mmprompt.prompts.dynamic` and use the same :func:`split_positions`.

Anchor contract: ``class_end`` (one past the class name's last token; in "name." the position of
the ".") is set by whoever tokenized class prompts (the CLIP classifier). A sequence without it
holds no separate class name, so the name is taken to end where the content ends (``end``).
"""

from __future__ import annotations

import functools

import torch

from ..registry import PLACEMENTS
from ..tokens import TokenSeq
from .base import Placement, PromptContext

CLASS_END = "class_end"


def class_end(seq: TokenSeq) -> torch.Tensor:
    """(B,) one past the class name (the ``class_end`` anchor, else the content end)."""
    return seq.anchors.get(CLASS_END, seq.anchors["end"])


def split_positions(seq: TokenSeq, length: int, dpos: torch.Tensor, end: str = "end") -> torch.Tensor:
    """(B, length) insertion positions putting tokens ``[:dpos]`` at the content start and
    ``[dpos:]`` at anchor ``end`` of each sample (``dpos`` is (B,) long in [0, length]);
    ``end = "class_end"`` splits around the class name (falling back to the content end)."""
    start = seq.anchors["start"][:, None]
    stop = (class_end(seq) if end == CLASS_END else seq.anchors[end])[:, None]
    return torch.where(_token_indices(length, seq.x.device) < dpos[:, None], start, stop)


@functools.lru_cache(maxsize=64)
def _token_indices(length: int, device: torch.device) -> torch.Tensor:
    """(1, length) ``arange``, made once per length and device (split placements run every pass)."""
    return torch.arange(length, device=device)[None]


class StaticPlacement(Placement):
    """Insert once at fixed positions; later layers overwrite the same slots."""

    overwrites_in_full = True  # replace

    def positions(self, seq: TokenSeq, length: int) -> torch.Tensor:
        raise NotImplementedError

    def place(self, seq: TokenSeq, tokens: torch.Tensor, owner_id: int, ctx: PromptContext) -> TokenSeq:
        if seq.has(owner_id):
            return seq.replace(owner_id, tokens)
        tokens = seq.batch_tokens(tokens)
        return seq.insert_at(tokens, self.positions(seq, tokens.shape[1]), owner_id)


@PLACEMENTS.register("prefix")
class Prefix(StaticPlacement):
    """``[CLS/SOT, P, X]``: before the first content token (VPT, prompt tuning, CoOp 'end')."""

    def __init__(self, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        return seq.anchors["start"][:, None].expand(-1, length)


@PLACEMENTS.register("suffix")
class Suffix(StaticPlacement):
    """``[X, P, EOT/SEP]``: after the last content token of each sample, before padding."""

    def __init__(self, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        return seq.anchors["end"][:, None].expand(-1, length)


@PLACEMENTS.register("middle")
class Middle(StaticPlacement):
    """``[P[:l//2], X, P[l//2:]]``: a fixed split (CoOp's class token in the middle)."""

    def __init__(self, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        dpos = torch.full((seq.batch_size,), length // 2, dtype=torch.long, device=seq.x.device)
        return split_positions(seq, length, dpos)


@PLACEMENTS.register("class_middle")
class ClassMiddle(StaticPlacement):
    """``[SOT, P[:l//2], name, P[l//2:], ., EOT]``: CoOp's class token in the middle (the context
    halves around the class name; the full stop stays after the context, as CoOp builds it)."""

    def __init__(self, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        dpos = torch.full((seq.batch_size,), length // 2, dtype=torch.long, device=seq.x.device)
        return split_positions(seq, length, dpos, end=CLASS_END)


@PLACEMENTS.register("after_class")
class AfterClass(StaticPlacement):
    """``[SOT, name, P, ., EOT]``: CoOp's class token at the front (context right after the name)."""

    def __init__(self, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        return class_end(seq)[:, None].expand(-1, length)


def build_placement(name: str, cfg, *, length: int, width: int) -> Placement:
    """Placement ``name`` with the settings of ``cfg`` (None: the defaults)."""
    return PLACEMENTS.get(name).from_config(cfg, length=length, width=width)
