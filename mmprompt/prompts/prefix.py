"""P-tuning v2 (Liu et al. 2021, THUDM/P-tuning-v2): learned key/value prefixes at every layer.

Before each layer ``i < depth`` the module gives the tower l keys and l values per attention head
(a :class:`~mmprompt.tokens.KVPrefix`); that layer's self-attention attends over
``[prefix; sequence]`` and every query sees the whole prefix. The prefix is not a token of the
sequence: it has no hidden state and no output, so anchors, pooling and other prompt methods see
the input unchanged. Towers that take prefixes: BERT-family encoders (through transformers'
attention cache) and T5's encoder (see :mod:`mmprompt.backbones.t5`); others are refused at setup.

What THUDM's ``BertPrefixForSequenceClassification`` / ``RobertaPrefixForSequenceClassification``
(``model/sequence_classification.py``, ``model/prefix_encoder.py``) compute, and the defaults here:

* parameters (``projection=False``, their run scripts' setting): one table ``embedding``
  (l, depth·2·heads·head_dim), their ``PrefixEncoder.embedding``; row t holds prefix token t of
  every layer, laid out (depth, 2, heads, head_dim): layer i's key, then its value (their
  ``view(B, l, 2·L, heads, head_dim)`` and ``split(2)``). 2·L·l·d numbers on BERT.
* ``projection=True`` (their ``prefix_projection``): ``embedding`` is (l, d) and every layer's
  keys and values come from it through ``Linear(d, h) -> tanh -> Linear(h, depth·2·heads·head_dim)``,
  h = ``projection_hidden`` (their ``prefix_hidden_size``, 512), run once per forward pass.
* dropout ``dropout`` (their ``hidden_dropout_prob``, 0.1) on the keys and values after they
  are repeated over the batch, so each sample draws its own mask, as theirs does.
* positions: given a prefix, transformers numbers the input's absolute positions from l (the
  cache length), so BERT's [CLS] is at position l; ``positions_after_prefix=False`` keeps it at
  0 as without a prefix (mmprompt's variant). T5 has relative positions only (its prefix keys sit
  just before the input either way).
* init: normal(0, ``init_std``) for ``embedding`` and the projection's weights, zero projection
  biases: what their ``from_pretrained`` gives modules the checkpoint lacks (the model's
  ``_init_weights``, initializer_range 0.02 for BERT and RoBERTa).

Not here: their task heads (BERT's pooler + dropout + classifier is the text classifier's
``MODEL.HEAD`` setting in ``configs/bert_ptuning_v2.yaml``), DeBERTa, token classification, QA and
multiple choice. A dynamic position or length has nothing to act on (the prefix has no place in
the sequence); the hidden-state form with learned positions is ``deep_prompt``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import PROMPTS
from ..tokens import KVPrefix, new_owner_id
from .base import PromptContext, PromptModule
from .layer_prompts import method_tower, resolve_depth


class KVPrefixPrompts(PromptModule):
    """``length`` learned keys and values per head before the self-attention of the first
    ``depth`` layers (0 = every layer) of ``tower``."""

    def __init__(
        self,
        *,
        length: int = 20,
        depth: int = 0,
        projection: bool = False,
        projection_hidden: int = 512,
        dropout: float = 0.1,
        positions_after_prefix: bool = True,
        init_std: float = 0.02,
        tower: str = "encoder",
        method: str = "ptuning_v2",
        key: str = "PROMPT.PTUNING_V2",
    ):
        super().__init__()
        if length < 1:
            raise ConfigError(f"{key}.NUM_TOKENS must be at least 1 (the prefix length), got {length}.")
        if projection and projection_hidden < 1:
            raise ConfigError(
                f"{key}.PROJECTION_HIDDEN must be at least 1 with PROJECTION on, got {projection_hidden}."
            )
        self.length = length
        self.requested_depth = depth
        self.use_projection = projection
        self.projection_hidden = projection_hidden
        self.dropout = nn.Dropout(dropout)
        self.positions_after_prefix = positions_after_prefix
        self.init_std = init_std
        self.tower_name = tower
        self.method = method
        self.key = key
        self.cache_key = f"kv_prefix/{new_owner_id()}"
        self.depth = 0
        self.heads = self.head_dim = 0
        self.embedding = None
        self.projection = None

    @classmethod
    def from_config(cls, cfg) -> "KVPrefixPrompts":
        c = cfg.PROMPT.PTUNING_V2
        return cls(
            length=c.NUM_TOKENS,
            depth=c.DEPTH,
            projection=c.PROJECTION,
            projection_hidden=c.PROJECTION_HIDDEN,
            dropout=c.DROPOUT,
            positions_after_prefix=c.POSITIONS_AFTER_PREFIX,
            init_std=c.INIT_STD,
            tower=c.TOWER,
        )

    def setup(self, backbone) -> None:
        tower = method_tower(backbone, self.tower_name, self.method)
        shape = tower.kv_prefix_shape()
        if shape is None:
            raise ConfigError(
                f"Prompt method '{self.method}' prepends learned keys/values to every layer's self-attention, "
                f"which the {type(backbone).__name__} '{self.tower_name}' tower does not take; the BERT-family "
                f"(MODEL.BACKBONE.NAME hf_encoder) and T5 (t5) encoder towers do. For per-layer prompts on "
                f"this tower use 'deep_prompt' (hidden-state tokens replaced before every layer) or 'vpt' "
                f"with PROMPT.VPT.DEEP True."
            )
        self.depth = resolve_depth(self.requested_depth, tower, self.method, f"{self.key}.DEPTH")
        self.heads, self.head_dim = shape
        per_token = self.depth * 2 * self.heads * self.head_dim
        rows = tower.width if self.use_projection else per_token
        self.embedding = nn.Parameter(torch.randn(self.length, rows) * self.init_std)
        if self.use_projection:
            self.projection = nn.Sequential(
                nn.Linear(tower.width, self.projection_hidden), nn.Tanh(), nn.Linear(self.projection_hidden, per_token)
            )
            for linear in (self.projection[0], self.projection[2]):
                nn.init.normal_(linear.weight, std=self.init_std)
                nn.init.zeros_(linear.bias)

    def keys_and_values(self, batch_size: int) -> torch.Tensor:
        """(B, l, depth, 2, heads, head_dim): every prefixed layer's keys ([..., 0, :, :]) and
        values ([..., 1, :, :]), dropout applied per sample."""
        flat = self.embedding if self.projection is None else self.projection(self.embedding)
        kv = flat.view(1, self.length, self.depth, 2, self.heads, self.head_dim)
        return self.dropout(kv.expand(batch_size, -1, -1, -1, -1, -1))

    def before_layer(self, tower: str, i: int, seq, ctx: PromptContext):
        if tower != self.tower_name or i >= self.depth:
            return seq
        if i == 0 or self.cache_key not in ctx.cache:  # one projection and one dropout draw per pass
            ctx.cache[self.cache_key] = self.keys_and_values(seq.batch_size)
        kv = ctx.cache[self.cache_key][:, :, i]  # (B, l, 2, heads, head_dim)
        seq = seq.with_kv_prefix(KVPrefix(kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)))
        if i == 0 and self.positions_after_prefix:
            seq = seq.with_position_offset(seq.position_offset + self.length)
        return seq


@PROMPTS.register("ptuning_v2")
def build_ptuning_v2(cfg) -> KVPrefixPrompts:
    return KVPrefixPrompts.from_config(cfg)
