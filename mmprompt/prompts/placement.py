"""Where prompt tokens enter the sequence.

A placement inserts a source's tokens the first time (layer 0 or the first layer a deep method
acts on) and replaces them at later layers, so deep prompts replace rather than accumulate.
The static placements here cover prefix prompts (VPT, Lester), suffix prompts, and a fixed split
``[P_before; X; P_after]`` (CoOp's class token in the middle); learned placements (dynamic
position/length) live in :mod:`mmprompt.prompts.dynamic` and use the same :func:`split_positions`.
"""
from __future__ import annotations

import torch

from ..registry import PLACEMENTS
from ..tokens import TokenSeq
from .base import Placement, PromptContext


def split_positions(seq: TokenSeq, length: int, dpos: torch.Tensor) -> torch.Tensor:
    """(B, length) insertion positions putting tokens ``[:dpos]`` at the content start and
    ``[dpos:]`` at the content end of each sample (``dpos`` is (B,) long in [0, length])."""
    k = torch.arange(length, device=seq.x.device)
    start = seq.anchors["start"][:, None]
    end = seq.anchors["end"][:, None]
    return torch.where(k[None] < dpos.to(seq.x.device)[:, None], start, end)


class StaticPlacement(Placement):
    """Insert once at fixed positions; later layers overwrite the same slots."""

    def positions(self, seq: TokenSeq, length: int) -> torch.Tensor:
        raise NotImplementedError

    def place(self, seq: TokenSeq, tokens: torch.Tensor, owner_id: int, ctx: PromptContext) -> TokenSeq:
        if seq.has(owner_id):
            return seq.replace(owner_id, tokens)
        tokens = seq._batch_tokens(tokens)
        return seq.insert_at(tokens, self.positions(seq, tokens.shape[1]), owner_id)


@PLACEMENTS.register("prefix")
class Prefix(StaticPlacement):
    """``[CLS/SOT, P, X]``: before the first content token (VPT, prompt tuning, CoOp 'end')."""

    def __init__(self, cfg=None, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        return seq.anchors["start"][:, None].expand(-1, length)


@PLACEMENTS.register("suffix")
class Suffix(StaticPlacement):
    """``[X, P, EOT/SEP]``: after the last content token of each sample, before padding."""

    def __init__(self, cfg=None, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        return seq.anchors["end"][:, None].expand(-1, length)


@PLACEMENTS.register("middle")
class Middle(StaticPlacement):
    """``[P[:l//2], X, P[l//2:]]``: a fixed split (CoOp's class token in the middle)."""

    def __init__(self, cfg=None, *, length=None, width=None):
        super().__init__()

    def positions(self, seq, length):
        dpos = torch.full((seq.batch_size,), length // 2, dtype=torch.long, device=seq.x.device)
        return split_positions(seq, length, dpos)


def build_placement(name: str, cfg, *, length: int, width: int) -> Placement:
    return PLACEMENTS.get(name)(cfg, length=length, width=width)
