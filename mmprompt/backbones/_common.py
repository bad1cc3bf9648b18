"""Small pieces the vision/CLIP adapters share."""

from __future__ import annotations

import difflib
from typing import Iterable, List, Optional

import torch

from ..errors import MMPromptError
from ..tokens import TokenSeq


def backbone_tokens(seq: TokenSeq) -> torch.Tensor:
    """(B, N0, D) hidden states of the backbone's own tokens (owner 0), in their order.

    Pooling reads these, so a library's own pooling (CLS, mean over patches, attention pool)
    sees exactly the layout it was written for, whatever prompts were inserted.
    """
    own = seq.owner == 0
    if bool(own.all()):
        return seq.x
    counts = own.sum(1)
    if not bool((counts == counts[0]).all()):
        raise MMPromptError(
            f"the {seq.tower} sequence has a different number of backbone tokens per "
            f"sample ({counts.tolist()}); a prompt method removed backbone tokens unevenly"
        )
    order = torch.sort((~own).to(torch.uint8), dim=1, stable=True).indices[:, : int(counts[0])]
    return seq.x.gather(1, order[..., None].expand(-1, -1, seq.width))


def additive_key_mask(
    mask: torch.Tensor,
    num_heads: int,
    dtype: torch.dtype,
    base: torch.Tensor = None,
    rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(B * heads, N, N) additive mask (0 / -inf) that hides keys where ``mask`` is False.

    This is the 3-D form ``nn.MultiheadAttention`` and open_clip's own attention both accept
    (a boolean mask would be cast to 0/1 by open_clip's block, not treated as a mask).
    ``base`` (N, N), e.g. a causal mask, is added to every sample's mask. ``rows`` (B, M): the mask
    of only those query rows, (B * heads, M, N); ``base`` is then theirs too, (B, M, N).
    """
    B, N = mask.shape
    key = torch.zeros(B, 1, N, dtype=dtype, device=mask.device).masked_fill(~mask[:, None, :], float("-inf"))
    queries = N if rows is None else rows.shape[1]
    full = key.expand(B, queries, N) if base is None else key + base.to(dtype)
    # Every token may attend to itself: a switched-off token that could otherwise see only
    # switched-off tokens (e.g. before SOT under a causal mask) keeps a finite row instead of NaN,
    # which would leak into everyone through its value. No other token attends to it.
    if rows is None:
        own = torch.eye(N, dtype=torch.bool, device=mask.device)[None]
    else:
        own = rows[..., None] == torch.arange(N, device=mask.device)
    full = full.masked_fill(own, 0.0)
    return full.repeat_interleave(num_heads, dim=0)


class RowSubset:
    """The rows ``rows`` (B, M) of (B, N, D)-like tensors along ``dim`` (1 batch-first, 0
    sequence-first): :meth:`take` them, :meth:`put` computed ones back into a copy of the rest.

    When every sample has the same rows, in increasing order (the class token, the tokens around
    prefix or suffix prompts), they are a few runs of positions: slices to take and to put back
    by concatenation, whose backward passes are slices of the gradient; else a gather and a
    scatter (rows that differ per sample, such as each text's EOT).
    """

    def __init__(self, rows: torch.Tensor, dim: int):
        self.rows, self.dim = rows, dim
        first = rows[0]
        self.runs = None  # [(start, count)] of the shared rows
        if bool((rows == first).all()) and bool((first[1:] > first[:-1]).all()):
            runs = []
            for r in first.tolist():
                if runs and runs[-1][0] + runs[-1][1] == r:
                    runs[-1][1] += 1
                else:
                    runs.append([r, 1])
            self.runs = [tuple(run) for run in runs]

    def _index(self, x: torch.Tensor) -> torch.Tensor:
        index = self.rows if self.dim == 1 else self.rows.t()
        return index[..., None].expand(-1, -1, x.shape[-1])

    def take(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs is None:
            return x.gather(self.dim, self._index(x))
        parts = [x.narrow(self.dim, start, count) for start, count in self.runs]
        return parts[0] if len(parts) == 1 else torch.cat(parts, self.dim)

    def put(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``x`` with ``rows`` (what :meth:`take` gave, computed anew) in their places."""
        if self.runs is None:
            return x.scatter(self.dim, self._index(x), rows)
        parts, position, taken = [], 0, 0
        for start, count in self.runs:
            if start > position:
                parts.append(x.narrow(self.dim, position, start - position))
            parts.append(rows.narrow(self.dim, taken, count))
            position, taken = start + count, taken + count
        if position < x.shape[self.dim]:
            parts.append(x.narrow(self.dim, position, x.shape[self.dim] - position))
        return torch.cat(parts, self.dim)


def close_names(name: str, names: Iterable[str], n: int = 5) -> List[str]:
    names = list(names)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    if not close:
        lowered = name.lower()
        close = [c for c in names if lowered in c.lower()][:n]
    return close


def plain(node):
    """A yacs node as plain dicts/lists, as library constructors expect."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(plain(v) for v in node)
    return node
