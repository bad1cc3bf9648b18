"""T5 (transformers ``T5ForConditionalGeneration``) as a token-sequence backbone.

The encoder is the prompted tower ("encoder"); the decoder and LM head stay the library's own and
are used by the T5 verbalizer to score label words given the prompted encoder states.

* ``embed``: the shared vocabulary embedding of the input ids (T5 has no absolute positions).
* ``layer(i)``: ``encoder.block[i]`` with the additive attention mask built from the current
  ``seq.mask`` and the relative position bias of block 0 for the current length, both computed
  once per sequence (and again only when a prompt changes its length or mask). Prompt tokens
  whose mask is off take no relative position, so they change nothing. Layer 0 first
  applies the encoder's input dropout, so prompts inserted before layer 0 get it as inputs do.
  A key/value prefix on the sequence (``seq.kv_prefix``, P-tuning v2) goes to the block as the
  library's ``cache`` (past keys/values; T5's encoder stack never passes one, its blocks' attention
  takes one all the same), the key mask gains ones for the prefix, and the relative position
  bias places the l prefix keys just before the input, as T5's attention computes it for cached
  keys (query j at position l + j, prefix key k at k).
* ``final``: the encoder's final RMS norm and dropout, giving what the decoder cross-attends to;
  ``encode`` runs embed -> prompted layers -> final.
* ``pool``: T5 pools no single token; the feature is the masked mean of the final states over
  the input's own tokens (prompts excluded), for linear heads on the encoder.

Trimming (``trim_text``, ``MODEL.BACKBONE.TRIM_TEXT``, on by default): ``embed`` drops the columns
after the batch's last real token, which every sample's mask switches off (pre-padded inputs, e.g.
DePT's ``padding="max_length"`` to 256). The encoder is bidirectional with relative positions, so
the kept tokens' distances are unchanged and masked keys get no weight; the decoder cross-attends
through the same mask and the mean pool skips masked tokens, so logits and gradients are the
untrimmed pass's. Padding inside the batch (a shorter sample's tail) stays.

Anchors: ``start`` = first real token, ``end`` = the ``</s>`` of each sample (its last real
token), so suffix prompts go before ``</s>``; no ``pool`` anchor.

Random init (PRETRAINED ""): ARCH may be a T5 v1.1 / LM-adapted hub id (google/t5-base-lm-adapt,
google/t5-v1_1-large ...) whose published hyperparameters are built in, so a full-size random
model needs no download; ``t5`` (v1.1-base hyperparameters, for tiny test models via KWARGS);
or a folder / cached hub id holding a config.json.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES
from ..tokens import TokenSeq
from ..utils.extras import require
from . import _hf
from ._hf import LazyTokenizer, prefix_cache, prefixed_key_mask, real_token_span, token_inputs
from .base import TokenBackbone, TokenTower

# Published T5 v1.1 hyperparameters (the LM-adapted checkpoints share them): gated-GELU FFN,
# untied output projection in the original checkpoints (no decoder-output rescaling).
_V1_1_COMMON = {
    "model_type": "t5",
    "vocab_size": 32128,
    "d_kv": 64,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "dropout_rate": 0.1,
    "decoder_start_token_id": 0,
}
_V1_1_SIZES = {
    "small": {"d_model": 512, "d_ff": 1024, "num_layers": 8, "num_heads": 6},
    "base": {"d_model": 768, "d_ff": 2048, "num_layers": 12, "num_heads": 12},
    "large": {"d_model": 1024, "d_ff": 2816, "num_layers": 24, "num_heads": 16},
    "xl": {"d_model": 2048, "d_ff": 5120, "num_layers": 24, "num_heads": 32},
    "xxl": {"d_model": 4096, "d_ff": 10240, "num_layers": 24, "num_heads": 64},
}
BUILTIN_CONFIGS = {}
for _size, _dims in _V1_1_SIZES.items():
    for _hub_id in (f"google/t5-v1_1-{_size}", f"google/t5-{_size}-lm-adapt"):
        BUILTIN_CONFIGS[_hub_id] = {**_V1_1_COMMON, **_dims}
TYPE_DEFAULTS = {"t5": {**_V1_1_COMMON, **_V1_1_SIZES["base"]}}


class T5EncoderTower(TokenTower):
    name = "encoder"
    deferred_position = False  # relative positions only: nothing to add at layer 0

    def __init__(self, model, tokenizer: LazyTokenizer, trim_text: bool = True):
        super().__init__()
        # Held outside the module tree: the backbone registers the model once, so its weights are
        # not listed twice in state dicts.
        self.__dict__["hf"] = model
        self.__dict__["tokenizer"] = tokenizer
        self.trim_text = trim_text

    @property
    def stack(self):
        return self.hf.encoder

    @property
    def width(self) -> int:
        return self.hf.config.d_model

    @property
    def num_layers(self) -> int:
        return len(self.stack.block)

    def input_embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def kv_prefix_shape(self):
        attention = self.stack.block[0].layer[0].SelfAttention
        return attention.n_heads, attention.key_value_proj_dim

    def tokenize(self, texts, texts_b=None, max_length=None):
        """``(ids, mask)`` for a batch of texts (pairs with ``texts_b``), padded and truncated to
        ``max_length`` (default MODEL.TEXT.MAX_LENGTH), on the model's device."""
        return self.tokenizer(texts, texts_b, max_length, device=self.input_embeddings().weight.device)

    def special_token_ids(self):
        return self.tokenizer.special_token_ids()

    def decode(self, ids: torch.Tensor):
        """Texts of generated token ids, special tokens dropped."""
        return self.tokenizer.get().batch_decode(ids, skip_special_tokens=True)

    def embed(self, inputs) -> TokenSeq:
        """Texts, ``tokenize``'s ``(ids, mask)``, a tokenizer's dict or an id tensor -> TokenSeq."""
        if isinstance(inputs, (str, list)):  # raw texts
            inputs = self.tokenize(inputs)
        ids, mask, _ = token_inputs(inputs)
        if self.trim_text:
            ids, mask, _ = _hf.trim_trailing_padding(ids, mask)
        first, last = real_token_span(mask)
        x = self.stack.embed_tokens(ids)
        return TokenSeq.from_embeddings(x, mask, tower=self.name, anchors={"start": first, "end": last})

    def _attention_inputs(self, seq: TokenSeq, prefix_length: int = 0):
        """The additive mask and relative position bias for this sequence (and a key/value prefix
        of ``prefix_length``), built once per mask and prefix length and shared by the blocks."""
        from transformers.masking_utils import create_bidirectional_mask

        cached = seq.meta.get("t5_attention")
        if cached is None or cached[0] is not seq.mask:
            cached = seq.meta["t5_attention"] = (seq.mask, {})
        if prefix_length not in cached[1]:
            keys = prefixed_key_mask(seq.mask, prefix_length) if prefix_length else seq.mask
            mask = create_bidirectional_mask(config=self.stack.config, inputs_embeds=seq.x, attention_mask=keys)
            cached[1][prefix_length] = (mask, self._position_bias(seq, prefix_length))
        return cached[1][prefix_length]

    def _position_bias(self, seq: TokenSeq, prefix_length: int = 0) -> torch.Tensor:
        """Block 0's relative position bias, (1 or B, heads, N, prefix_length + N). Prompt tokens
        whose mask is off take no position, so switching a prompt token off leaves the distances
        between the others, and thus the output, unchanged (the library's own bias is used
        whenever every token counts). Prefix keys sit at positions 0..l-1 before the input."""
        attention = self.stack.block[0].layer[0].SelfAttention
        counted = seq.mask | (seq.owner == 0)
        if bool(counted.all()):
            return attention.compute_bias(
                seq.length, prefix_length + seq.length, device=seq.x.device, past_seen_tokens=prefix_length
            )
        queries = torch.cumsum(counted.long(), 1) - 1 + prefix_length
        prefix = torch.arange(prefix_length, device=seq.x.device).expand(seq.batch_size, -1)
        keys = torch.cat([prefix, queries], 1)
        relative = keys[:, None, :] - queries[:, :, None]  # (B, query, key): key - query
        buckets = attention._relative_position_bucket(
            relative,
            bidirectional=True,
            num_buckets=attention.relative_attention_num_buckets,
            max_distance=attention.relative_attention_max_distance,
        )
        return attention.relative_attention_bias(buckets).permute(0, 3, 1, 2)  # (B, heads, query, key)

    def layer(self, i: int, seq: TokenSeq) -> TokenSeq:
        prefix, seq = seq.take_kv_prefix()
        x = self.stack.dropout(seq.x) if i == 0 else seq.x
        if prefix is None:
            mask, bias = self._attention_inputs(seq)
            hidden = self.stack.block[i](x, attention_mask=mask, position_bias=bias)[0]
        else:
            mask, bias = self._attention_inputs(seq, prefix.length)
            hidden = self.stack.block[i](x, attention_mask=mask, position_bias=bias, cache=prefix_cache(i, prefix))[0]
        return seq.with_x(hidden)

    def final(self, seq: TokenSeq) -> TokenSeq:
        """The encoder output the decoder cross-attends to (final norm and dropout applied)."""
        return seq.with_x(self.stack.dropout(self.stack.final_layer_norm(seq.x)))

    def encode(self, inputs, prompts=None, ctx=None) -> TokenSeq:
        """Prompted encoder states and their mask, ready for the decoder."""
        return self.final(self.run_layers(self.embed(inputs), prompts, ctx))

    def pool(self, seq: TokenSeq, mode: str = "default") -> torch.Tensor:
        if mode not in ("default", "mean"):
            raise ConfigError(
                f"The T5 encoder pools by mean over its tokens; MODEL.HEAD.POOL '{mode}' "
                "is not available for it (use 'default' or 'mean')."
            )
        seq = self.final(seq)
        weights = (seq.mask & (seq.owner == 0)).to(seq.x.dtype)[..., None]
        return (seq.x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class T5Backbone(TokenBackbone):
    """A ``T5ForConditionalGeneration`` with its encoder as the prompted tower."""

    def __init__(self, model, tokenizer: LazyTokenizer, trim_text: bool = True):
        super().__init__()
        self.model = model
        self.towers = nn.ModuleDict({"encoder": T5EncoderTower(model, tokenizer, trim_text)})

    @property
    def config(self):
        return self.model.config

    def target_log_probs(self, states: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, L) log-probability of each target token given the previous ones and the (prompted)
        encoder ``states`` (B, N, D) with their ``mask`` (B, N), from the library's decoder and LM
        head; 0 where ``labels`` is -100."""
        from transformers.modeling_outputs import BaseModelOutput

        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=mask.long(),
            decoder_input_ids=self.model.prepare_decoder_input_ids_from_labels(labels),
        )
        log_probs = out.logits.float().log_softmax(-1)
        picked = log_probs.gather(-1, labels.clamp_min(0)[..., None])[..., 0]
        return picked * (labels != -100)

    @torch.no_grad()
    def generate_ids(self, states: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding from (prompted) encoder states with the library's ``generate``."""
        from transformers.modeling_outputs import BaseModelOutput

        return self.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=mask.long(),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )


@BACKBONES.register("t5")
def build_t5(cfg) -> T5Backbone:
    require("transformers", "T5 backbones")
    from transformers import T5ForConditionalGeneration

    bb = cfg.MODEL.BACKBONE
    overrides = dict(bb.KWARGS)
    if "num_layers" in overrides and "num_decoder_layers" not in overrides:
        # T5 derives the decoder depth from num_layers only when no config sets it already.
        overrides["num_decoder_layers"] = overrides["num_layers"]
    config = _hf.build_config(cfg, builtin=BUILTIN_CONFIGS, type_defaults=TYPE_DEFAULTS, overrides=overrides)
    if config.model_type not in ("t5", "mt5", "umt5"):
        raise ConfigError(
            f"MODEL.BACKBONE.NAME 't5' needs a T5-family model; {bb.ARCH} is a "
            f"'{config.model_type}' (use the 'hf_encoder' backbone for encoder-only models)."
        )
    weights = _hf.weights_source(bb.ARCH, bb.PRETRAINED)
    if weights is None:
        model = T5ForConditionalGeneration(config)
    else:
        model = _hf.load_or_explain(
            T5ForConditionalGeneration.from_pretrained,
            weights,
            "T5 weights",
            "MODEL.BACKBONE.PRETRAINED",
            config=config,
            **_hf.hub_kwargs(cfg),
        )
    tokenizer_source = weights or _hf.resolve(bb.ARCH)
    if bb.ARCH in _hf.model_types():  # a bare model type has no tokenizer files of its own
        tokenizer_source = None
    tokenizer = LazyTokenizer(lambda: _hf.tokenizer_from(cfg, tokenizer_source), cfg.MODEL.TEXT.MAX_LENGTH)
    return T5Backbone(model, tokenizer, trim_text=bb.TRIM_TEXT)
