"""The interface every backbone adapter implements.

An adapter is a thin wrapper around a library model object (timm, open_clip, transformers): it
calls that object's own modules and owns no weights of its own. It exposes one or more *towers*
(a ViT has one, CLIP has ``vision`` and ``text``, T5 and BERT have ``encoder``); each tower is a
:class:`TokenTower` with the four steps of the token-sequence hook::

    seq = tower.embed(inputs)
    for i in range(tower.num_layers):
        seq = prompts.before_layer(tower.name, i, seq, ctx)
        seq = tower.layer(i, seq)
    feat = tower.pool(seq)

With no prompts the result equals the library's own forward (each adapter has a test for it).

Whatever a library does to the input tokens *before its first block* but which a prompt method's
authors apply to their prompts too is deferred from :meth:`TokenTower.embed` to the start of
``layer(0)``, so a prompt inserted by ``before_layer(name, 0, ...)`` gets it like the tokens it sits
among: text towers add positional embeddings there (``deferred_position``: CoOp's context gets
positions like words), CLIP's image tower applies ``ln_pre`` there (``deferred_input_norm``:
MaPLe/IVLP/VPT-in-CLIP concatenate their layer-0 prompts before ``ln_pre``). Consequently what
``embed`` returns is not yet what block 0 sees: code that reads ``seq.x`` before layer 0 (the
``embed_mean`` instance feature) reads the un-normalised / position-free embeddings.

Key/value prefixes: a prompt module may attach a :class:`~mmprompt.tokens.KVPrefix` to the
sequence in ``before_layer(i)``. A tower that accepts them says so with :meth:`TokenTower.kv_prefix_shape`
(the ``(heads, head_dim)`` a prefix must have) and, in ``layer(i)``, takes the prefix off the
sequence, runs the layer with its self-attention over ``[prefix; sequence]`` (every query sees
the whole prefix; padded keys of the sequence stay hidden) and returns the output without a
prefix. Towers with absolute positions add ``seq.position_offset`` to them at layer 0. A tower
that returns None from ``kv_prefix_shape`` never sees a prefix: :meth:`TokenTower.run_layers`
refuses one, and methods that make prefixes refuse such towers when they are set up.

Rows no one reads (``skip_unused_rows``, ``MODEL.BACKBONE.SKIP_UNUSED_ROWS``): a tower whose layers
can compute the outputs of some rows only (keys and values still from every row) gets from
:meth:`TokenTower.run_layers` the rows a layer must compute (``TokenSeq.needed_rows``), and leaves
the others at any value: at the last layer, when only :meth:`TokenTower.pool` follows and it reads
one token per sample (:meth:`TokenTower.pooled_rows`), only that token; before a layer whose prompts
overwrite the previous ones (``TokenSeq.will_overwrite``, see :mod:`mmprompt.tokens`), all but
those. The result -- features and every gradient -- is the one of the full layers.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError, MMPromptError
from ..tokens import TokenSeq


class TokenTower(nn.Module):
    """One token-sequence stack of a backbone (a ViT, CLIP's text tower, an encoder)."""

    name: str = "encoder"
    #: whether :meth:`embed` returns raw token embeddings that still need positional/type
    #: embeddings added at layer 0 (text towers), so prompts inserted before layer 0 are placed
    #: like words and get positions as words do
    deferred_position: bool = False
    #: whether the tower's input normalisation (CLIP's ``ln_pre``) runs at the start of layer 0 over
    #: every token then in the sequence, so prompts inserted before layer 0 are normalised with
    #: the patches (as MaPLe's CLIP fork does)
    deferred_input_norm: bool = False
    #: whether :meth:`layer` computes only ``seq.needed_rows`` when given them (towers that can set
    #: it from ``MODEL.BACKBONE.SKIP_UNUSED_ROWS``); :meth:`run_layers` gives rows only then
    skip_unused_rows: bool = False

    @property
    def width(self) -> int:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        raise NotImplementedError

    def embed(self, inputs) -> TokenSeq:
        raise NotImplementedError

    def layer(self, i: int, seq: TokenSeq) -> TokenSeq:
        raise NotImplementedError

    def pool(self, seq: TokenSeq) -> torch.Tensor:
        raise NotImplementedError

    def pooled_rows(self, seq: TokenSeq, mode: Optional[str] = None) -> Optional[torch.Tensor]:
        """(B, M) positions of the only rows ``pool(seq, mode)`` reads (a class or EOT token), or
        None when it reads more (the default)."""
        return None

    def kv_prefix_shape(self) -> Optional[Tuple[int, int]]:
        """``(heads, head_dim)`` of the key/value prefixes every layer's self-attention takes
        (``TokenSeq.kv_prefix``), or None when this tower's layers take none (the default)."""
        return None

    def input_embeddings(self) -> Optional[nn.Embedding]:
        """The vocabulary embedding of a text tower (used to initialise prompts from words)."""
        return None

    def tokenize(self, texts):
        """Token ids (and mask) for raw strings; text towers only."""
        raise NotImplementedError(f"the {self.name} tower does not take text")

    def run(self, inputs, prompts=None, ctx=None) -> torch.Tensor:
        """The whole hook: embed, prompts before every layer, layers, pool."""
        seq = self.embed(inputs)
        return self.pool(self.run_layers(seq, prompts, ctx, then_pool=True))

    def run_layers(
        self,
        seq: TokenSeq,
        prompts=None,
        ctx=None,
        upto: Optional[int] = None,
        *,
        then_pool: bool = False,
        pool_mode: Optional[str] = None,
    ) -> TokenSeq:
        """Prompts and layers 0..upto-1 (all by default). ``then_pool``: the caller reads the result
        only through ``pool(seq, pool_mode)``, so (``skip_unused_rows``) the last layer may compute
        only :meth:`pooled_rows`; callers that read the states themselves leave it False."""
        end = self.num_layers if upto is None else upto
        kept_rows = {}  # the rows of the last layout that skipped owners (see _needed_rows)
        for i in range(end):
            if prompts is not None:
                seq = prompts.before_layer(self.name, i, seq, ctx)
                if seq.kv_prefix is not None and self.kv_prefix_shape() is None:
                    raise ConfigError(
                        f"A prompt method gave the {type(self).__name__} '{self.name}' tower "
                        f"key/value prefixes, which its layers cannot take; only the "
                        f"BERT-family (hf_encoder) and T5 encoder towers accept them."
                    )
            broken = sorted(owner for owner, at in seq.overwrite_before.items() if at <= i)
            if broken:
                raise MMPromptError(
                    f"Prompt tokens of owner(s) {broken} in the '{self.name}' tower were promised to be "
                    f"overwritten before layer {i} (TokenSeq.will_overwrite) but were not; a prompt "
                    f"module promised an overwrite it does not make."
                )
            if self.skip_unused_rows:
                seq = seq.with_needed_rows(self._needed_rows(i, end, seq, then_pool, pool_mode, kept_rows))
            seq = self.layer(i, seq)
        return seq

    def _needed_rows(
        self, i: int, end: int, seq: TokenSeq, then_pool: bool, pool_mode, kept_rows: dict
    ) -> Optional[torch.Tensor]:
        """The rows layer ``i`` must compute, None for all: the pooled rows at the last layer when
        only pooling follows; else, training, all but those of tokens overwritten before layer
        ``i + 1``, when this loop runs that layer's prompts (and so has checked the promise).
        Without autograd the few prompt rows do not pay for the subset's copies and for leaving
        the library's fast inference path (a ViT-B/16 evaluation ran faster without them).

        Deep prompts overwrite their slots in place, so the layout (``seq.owner``, the same tensor)
        is usually that of the layer before: ``kept_rows`` holds the last layout's rows, with the
        owner tensor itself, so they are reused while that very tensor is the layout (it cannot be
        freed and its id reused meanwhile) and the search (two host syncs) runs once a pass."""
        if then_pool and i == self.num_layers - 1:
            return self.pooled_rows(seq, pool_mode)
        if i + 1 < end and torch.is_grad_enabled():
            unread = tuple(sorted(owner for owner, at in seq.overwrite_before.items() if at == i + 1))
            if unread:
                last = kept_rows.get(unread)
                if last is None or last[0] is not seq.owner:
                    last = kept_rows[unread] = (seq.owner, seq.rows_except(unread))
                return last[1]
        return None


class TokenBackbone(nn.Module):
    """A library model wrapped as named :class:`TokenTower` s; frozen by default.

    Subclasses set ``self.model`` (the library object) and ``self.towers`` (a ModuleDict of
    towers that refer to ``self.model``'s modules).
    """

    def __init__(self):
        super().__init__()
        self.frozen = False
        self.dropout_off = False

    @property
    def tower_names(self):
        return list(self.towers.keys())

    def tower(self, name: str) -> TokenTower:
        if name not in self.towers:
            raise ConfigError(f"{type(self).__name__} has no '{name}' tower (it has {self.tower_names})")
        return self.towers[name]

    def freeze(self, dropout_off: bool = False) -> "TokenBackbone":
        """Freeze every backbone weight. ``dropout_off`` keeps the frozen model's dropout off
        while prompts train (SuperPos-Prompt shows this helps every method)."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.frozen = True
        self.dropout_off = dropout_off
        return self.train(self.training)

    def train(self, mode: bool = True):
        # The frozen backbones here (ViT, CLIP, T5, BERT) have no batch statistics, so their
        # train mode only switches dropout; ``dropout_off`` keeps it off while prompts train.
        # The whole backbone goes to eval mode, not just its Dropout modules: attention layers
        # (BERT, T5, timm) read their own ``training`` flag to drop attention probabilities.
        super().train(mode and not (self.frozen and self.dropout_off))
        return self

    def info(self) -> Dict[str, object]:
        return {name: {"width": t.width, "layers": t.num_layers} for name, t in self.towers.items()}
