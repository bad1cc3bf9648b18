"""The token sequence every backbone exposes and every prompt method edits.

A :class:`TokenSeq` is a batch-first sequence ``x`` (B, N, D) together with

* ``mask`` (B, N) bool: True where a token may be attended to (real tokens and prompts),
  False for padding and for prompt tokens a method switched off;
* ``owner`` (B, N) long: 0 for the backbone's own tokens, otherwise the id of the prompt module
  that put the token there, so a deep method can find and replace its previous layer's tokens;
* ``anchors``: named (B,) long positions that must stay meaningful when tokens move:
  ``start`` (first content token: where prefix prompts go, after CLS/SOT), ``end`` (one past the
  last content token: where suffix prompts go, i.e. the position of EOT/SEP/EOS, or N), and
  ``pool`` (the token pooling reads: CLS, CLIP's EOT) when the backbone pools one token.

Every edit is batched: positions may differ per sample (padded text, instance-level positions)
and are handled with one gather, never with a Python loop over the batch.
Anchors follow the backbone's own tokens: inserting before an anchor's token shifts it.

Key/value prefixes (P-tuning v2, prefix tuning) are the one edit that is not a token: a prompt
module's ``before_layer(i)`` may attach a :class:`KVPrefix` (``seq.with_kv_prefix``), and the
tower's ``layer(i)`` then lets every query of that layer's self-attention attend to
``[prefix keys; the sequence's keys]`` (values alike), takes the prefix off
(``take_kv_prefix``) and returns a sequence without one, so a prefix acts on exactly one layer.
The prefix has no hidden state, mask entry, owner or anchor: pooling, anchors and the other
prompt methods see the sequence unchanged. ``position_offset`` shifts the absolute positions a
tower adds at layer 0, as transformers numbers the input after the tokens cached before it
(P-tuning v2's input starts at position l). Only towers whose ``kv_prefix_shape()`` is not None
accept prefixes (see :class:`mmprompt.backbones.base.TokenTower`).

Rows no one reads. A deep prompt's tokens are overwritten before the next layer reads them, so the
layer before need not compute their outputs. A prompt module promises this in ``before_layer(i)``
with ``seq.will_overwrite(owner_id, i + 1)``: in ``before_layer(i + 1)`` the owner's tokens are
overwritten in full (``replace``, or ``remove`` and insert anew; both drop the promise) and, until
then, nothing mixes their hidden states into other tokens (a per-token edit, such as an offset,
is overwritten with them). :meth:`~mmprompt.backbones.base.TokenTower.run_layers` refuses a promise
that was not kept, and gives a tower that computes row subsets ``needed_rows``: the (B, M)
positions the layer must compute. The tower's ``layer`` takes them off (``take_needed_rows``) and
may leave every other row of its output at any value (it keeps the layer's input there).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Dict, Iterable, Optional, Union

import torch
from torch import Tensor

_owner_ids = itertools.count(1)


def new_owner_id() -> int:
    """A fresh id for a prompt module's tokens (0 is reserved for the backbone's tokens)."""
    return next(_owner_ids)


Position = Union[int, str, Tensor]


@dataclass
class KVPrefix:
    """Keys and values one layer's self-attention puts before the sequence's own.

    ``keys`` and ``values`` are (B, heads, l, head_dim), the layout of transformers' attention
    caches: they are already projected (they bypass the layer's key/value weights) and every
    query attends to all l of them (P-tuning v2's all-ones prefix attention mask).
    """

    keys: Tensor
    values: Tensor

    def __post_init__(self):
        if self.keys.dim() != 4 or self.keys.shape != self.values.shape:
            raise ValueError(
                f"KVPrefix keys and values must both be (B, heads, l, head_dim); got "
                f"{tuple(self.keys.shape)} and {tuple(self.values.shape)}"
            )

    @property
    def length(self) -> int:
        return self.keys.shape[2]

    def then(self, other: "KVPrefix") -> "KVPrefix":
        """This prefix followed by ``other`` (two methods prefixing the same layer)."""
        return KVPrefix(torch.cat([self.keys, other.keys], 2), torch.cat([self.values, other.values], 2))


@dataclass
class TokenSeq:
    x: Tensor
    mask: Tensor
    owner: Tensor
    anchors: Dict[str, Tensor]
    tower: str = "encoder"
    meta: dict = field(default_factory=dict)
    #: keys/values the next layer's self-attention prepends (see the module docstring); None = none
    kv_prefix: Optional[KVPrefix] = None
    #: absolute positions of the sequence start after this many (set before layer 0; read by
    #: towers that add absolute positions at layer 0)
    position_offset: int = 0
    #: owner id -> the layer before which that owner's tokens are overwritten, unread until then
    #: (``will_overwrite``; see the module docstring)
    overwrite_before: Dict[int, int] = field(default_factory=dict)
    #: (B, M) positions whose outputs the next layer must compute, None = every position (set by
    #: ``run_layers``, taken off by the tower's ``layer``; see the module docstring)
    needed_rows: Optional[Tensor] = None

    @classmethod
    def from_embeddings(
        cls,
        x: Tensor,
        mask: Optional[Tensor] = None,
        *,
        tower: str,
        anchors: Optional[Dict[str, Tensor]] = None,
        meta=None,
    ) -> "TokenSeq":
        B, N, _ = x.shape
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=x.device)
        owner = torch.zeros(B, N, dtype=torch.long, device=x.device)
        anchors = {k: _as_batch_positions(v, B, x.device) for k, v in (anchors or {}).items()}
        anchors.setdefault("start", torch.zeros(B, dtype=torch.long, device=x.device))
        anchors.setdefault("end", mask.long().sum(1))
        return cls(x, mask.bool(), owner, anchors, tower, dict(meta or {}))

    # ------------------------------------------------------------------ shape
    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def length(self) -> int:
        return self.x.shape[1]

    @property
    def width(self) -> int:
        return self.x.shape[2]

    def with_x(self, x: Tensor) -> "TokenSeq":
        """The same sequence with new hidden states (a layer's output); shape must not change."""
        if x.shape[:2] != self.x.shape[:2]:
            raise ValueError(f"with_x expects (B, N) = {tuple(self.x.shape[:2])}, got {tuple(x.shape[:2])}")
        return dc_replace(self, x=x)

    def with_kv_prefix(self, prefix: KVPrefix) -> "TokenSeq":
        """The same sequence with ``prefix`` for the next layer's attention, after any prefix
        another method attached before the same layer."""
        if prefix.keys.shape[0] != self.batch_size:
            raise ValueError(f"a KVPrefix for {prefix.keys.shape[0]} samples does not fit a batch of {self.batch_size}")
        return dc_replace(self, kv_prefix=prefix if self.kv_prefix is None else self.kv_prefix.then(prefix))

    def take_kv_prefix(self):
        """``(prefix or None, the sequence without it)``: what a tower's ``layer`` starts with."""
        return self.kv_prefix, (self if self.kv_prefix is None else dc_replace(self, kv_prefix=None))

    def with_position_offset(self, offset: int) -> "TokenSeq":
        return dc_replace(self, position_offset=int(offset))

    def will_overwrite(self, owner_id: int, layer: int) -> "TokenSeq":
        """The promise that ``before_layer(layer)`` overwrites the tokens of ``owner_id`` in full and
        that nothing reads their hidden states until then, so layer ``layer - 1`` need not compute
        them (see the module docstring)."""
        return dc_replace(self, overwrite_before={**self.overwrite_before, owner_id: int(layer)})

    def _overwritten(self, owner_id: int) -> Dict[int, int]:
        """The promises without the one for ``owner_id``, whose tokens are being overwritten."""
        return {o: at for o, at in self.overwrite_before.items() if o != owner_id}

    def rows_except(self, owner_ids: Iterable[int]) -> Tensor:
        """(B, N - k) positions, in order, of every token the owners ``owner_ids`` did not insert
        (k of theirs per sample, the same k in every sample)."""
        skip = torch.isin(self.owner, torch.tensor(sorted(owner_ids), device=self.owner.device))
        counts = skip.sum(1)
        if counts.numel() and not bool((counts == counts[0]).all()):
            raise ValueError(f"owners {sorted(owner_ids)} have different token counts per sample: {counts.tolist()}")
        kept = self.length - (int(counts[0]) if counts.numel() else 0)
        return torch.sort(skip.to(torch.uint8), dim=1, stable=True).indices[:, :kept]

    def with_needed_rows(self, rows: Optional[Tensor]) -> "TokenSeq":
        return dc_replace(self, needed_rows=rows)

    def take_needed_rows(self):
        """``(rows or None, the sequence without them)``: what a row-computing tower's ``layer`` starts with."""
        return self.needed_rows, (self if self.needed_rows is None else dc_replace(self, needed_rows=None))

    def position(self, at: Position) -> Tensor:
        """(B,) long positions from an int, an anchor name or a (B,) tensor."""
        if isinstance(at, str):
            if at not in self.anchors:
                raise KeyError(f"{self.tower} sequence has no anchor '{at}' (has {sorted(self.anchors)})")
            return self.anchors[at]
        return _as_batch_positions(at, self.batch_size, self.x.device)

    # ------------------------------------------------------------------ edits
    def insert(self, tokens: Tensor, at: Position, owner_id: int, mask: Optional[Tensor] = None) -> "TokenSeq":
        """Insert the same k tokens per sample before position ``at`` (int, anchor name or (B,)).

        ``tokens`` is (k, D) shared by the batch or (B, k, D); ``mask`` optionally (B, k) or (k,)
        marks inserted tokens that may not be attended to.
        """
        tokens = self.batch_tokens(tokens)
        k = tokens.shape[1]
        positions = self.position(at)[:, None].expand(-1, k)
        return self.insert_at(tokens, positions, owner_id, mask)

    def insert_at(
        self,
        tokens: Tensor,
        positions: Tensor,
        owner_id: int,
        mask: Optional[Tensor] = None,
        joined: Optional[Tensor] = None,
        token_order: Optional[Tensor] = None,
    ) -> "TokenSeq":
        """Insert token t of each sample before original position ``positions[b, t]``.

        ``positions`` is (B, k), non-decreasing along k, values in [0, N]. Tokens aimed at the
        same position keep their order. This is the one primitive behind prefix, suffix, split
        ``[P_before; X; P_after]`` and per-instance placements. The new hidden states are one
        gather from ``[x; tokens]`` (B, N+k, D); ``joined`` is that concatenation when the caller
        built it already (dynamic prompting's choice gradient reads it too), else it is built here.
        ``token_order`` (B, k) long, a permutation per sample, inserts ``tokens[b, token_order[b, t]]``
        as token t (a rotated prompt, by the same gather); ``mask`` is indexed like ``tokens``.
        """
        tokens = self.batch_tokens(tokens)
        B, N, D = self.x.shape
        k = tokens.shape[1]
        if k == 0:
            return self
        positions = positions.to(device=self.x.device, dtype=torch.long).contiguous()
        if positions.shape != (B, k):
            raise ValueError(f"positions must be (B, k) = {(B, k)}, got {tuple(positions.shape)}")
        # New index of original token j: j plus the number of prompt tokens placed before it.
        orig = torch.arange(N, device=self.x.device).expand(B, N)
        before = torch.searchsorted(positions, orig.contiguous(), right=True)
        new_orig = orig + before
        new_tok = positions + torch.arange(k, device=self.x.device)
        src = torch.empty(B, N + k, dtype=torch.long, device=self.x.device)
        src.scatter_(1, new_orig, orig)
        if token_order is None:
            src.scatter_(1, new_tok, torch.arange(N, N + k, device=self.x.device).expand(B, k))
        else:
            if token_order.shape != (B, k):
                raise ValueError(f"token_order must be (B, k) = {(B, k)}, got {tuple(token_order.shape)}")
            src.scatter_(1, new_tok, token_order.to(device=self.x.device, dtype=torch.long) + N)

        if mask is None:
            tok_mask = torch.ones(B, k, dtype=torch.bool, device=self.x.device)
        else:
            tok_mask = mask.to(self.x.device).bool().expand(B, k)
        if joined is None:
            joined = torch.cat([self.x, tokens.to(self.x.dtype)], 1)
        x = joined.gather(1, src[..., None].expand(-1, -1, D))
        new_mask = torch.cat([self.mask, tok_mask], 1).gather(1, src)
        owner = torch.cat([self.owner, torch.full((B, k), owner_id, dtype=torch.long, device=self.x.device)], 1).gather(
            1, src
        )
        anchors = {
            name: a + torch.searchsorted(positions, a[:, None].contiguous(), right=True)[:, 0]
            for name, a in self.anchors.items()
        }
        return dc_replace(self, x=x, mask=new_mask, owner=owner, anchors=anchors)

    def positions_of(self, owner_id: int) -> Tensor:
        """(B, k) positions of the tokens ``owner_id`` inserted, in order."""
        sel = self.owner == owner_id
        counts = sel.sum(1)
        if counts.numel() and not bool((counts == counts[0]).all()):
            raise ValueError(f"owner {owner_id} has different token counts per sample: {counts.tolist()}")
        k = int(counts[0]) if counts.numel() else 0
        idx = torch.arange(self.length, device=self.x.device).expand_as(sel)
        # Stable sort puts the selected positions first, in order.
        order = torch.sort((~sel).long(), dim=1, stable=True).indices
        return idx.gather(1, order)[:, :k]

    def has(self, owner_id: int) -> bool:
        return bool((self.owner == owner_id).any())

    def replace(self, owner_id: int, tokens: Tensor, mask: Optional[Tensor] = None) -> "TokenSeq":
        """Overwrite the tokens ``owner_id`` inserted earlier (deep prompts replace, not add)."""
        tokens = self.batch_tokens(tokens)
        pos = self.positions_of(owner_id)
        if pos.shape[1] != tokens.shape[1]:
            raise ValueError(f"replace: owner {owner_id} has {pos.shape[1]} tokens, got {tokens.shape[1]}")
        D = self.width
        x = self.x.scatter(1, pos[..., None].expand(-1, -1, D), tokens.to(self.x.dtype))
        new_mask = self.mask
        if mask is not None:
            new_mask = self.mask.scatter(1, pos, mask.to(self.x.device).bool().expand_as(pos))
        return dc_replace(self, x=x, mask=new_mask, overwrite_before=self._overwritten(owner_id))

    def remove(self, owner_id: int) -> "TokenSeq":
        """Drop the tokens ``owner_id`` inserted; anchors move back with the remaining tokens."""
        pos = self.positions_of(owner_id)
        k = pos.shape[1]
        if k == 0:
            return dc_replace(self, overwrite_before=self._overwritten(owner_id))
        B, N, D = self.x.shape
        keep = self.owner != owner_id
        order = torch.sort((~keep).long(), dim=1, stable=True).indices[:, : N - k]
        x = self.x.gather(1, order[..., None].expand(-1, -1, D))
        anchors = {
            name: a - torch.searchsorted(pos.contiguous(), a[:, None].contiguous())[:, 0]
            for name, a in self.anchors.items()
        }
        return dc_replace(
            self,
            x=x,
            mask=self.mask.gather(1, order),
            owner=self.owner.gather(1, order),
            anchors=anchors,
            overwrite_before=self._overwritten(owner_id),
        )

    def gather_anchor(self, name: str) -> Tensor:
        """(B, D) hidden states at an anchor (e.g. the pooled CLS or EOT token)."""
        pos = self.anchors[name]
        return self.x[torch.arange(self.batch_size, device=self.x.device), pos]

    def batch_tokens(self, tokens: Tensor) -> Tensor:
        """Prompt tokens as a (B, l, D) batch for this sequence: a (l, D) or (1, l, D) prompt is
        shared by every sample (expanded, not copied); a (B, l, D) one is checked against the
        sequence's batch size and width. The helper every placement and method uses before
        inserting or replacing tokens."""
        if tokens.dim() == 2:
            tokens = tokens[None]
        if tokens.shape[0] == 1 and self.batch_size != 1:
            tokens = tokens.expand(self.batch_size, -1, -1)
        if tokens.shape[0] != self.batch_size or tokens.shape[2] != self.width:
            raise ValueError(
                f"prompt tokens of shape {tuple(tokens.shape)} do not fit a "
                f"{self.tower} sequence of shape {tuple(self.x.shape)} (B, N, D)"
            )
        return tokens


def _as_batch_positions(at, batch_size: int, device) -> Tensor:
    if isinstance(at, Tensor):
        at = at.to(device=device, dtype=torch.long)
        return at.expand(batch_size) if at.dim() == 0 else at
    return torch.full((batch_size,), int(at), dtype=torch.long, device=device)
