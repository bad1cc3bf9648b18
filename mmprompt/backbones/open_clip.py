"""open_clip CLIP models (ViT image tower + transformer text tower) as two token-sequence towers.

``vision`` embeds with the image tower's own modules (conv1 patches, class embedding, position
embedding, patch dropout) and defers ``ln_pre`` to the start of layer 0, where it normalises every
token then in the sequence: prompts inserted before layer 0 go through ``ln_pre`` with the patches,
as in the CLIP fork of MaPLe / IVLP / VPT-in-CLIP (they concatenate their layer-0 vision prompts
before ``ln_pre``). Then ``transformer.resblocks[i]`` per layer and ``_pool`` (ln_post and the
model's pooling) + ``proj`` -- with no prompts, exactly what ``model.encode_image`` does.

``text`` embeds words with ``token_embedding`` and defers the position embedding to the start of
layer 0, so prompts inserted before layer 0 sit in word-embedding space and get positions like
words (CoOp). Each layer gets a causal mask built for the current length (plus key padding when a
token before EOT is switched off); pooling takes ``ln_final`` at the EOT token -- found from the
token ids the way open_clip does (argmax, or the EOS id) and tracked as the ``pool`` anchor while
tokens are inserted -- then ``text_projection``: what ``model.encode_text`` does (unnormalised).

Trimming (``trim_text``, ``MODEL.BACKBONE.TRIM_TEXT``, on by default): ``embed`` cuts the token
ids after the batch's last EOT (the last token the mask allows, for a tower without causal mask
that hides padding by its pad mask; nothing, for one that attends to padding). Under the causal
mask no token up to EOT sees a later one, and pooling reads EOT, so the dropped padding changes no
feature and no gradient (``tests/test_text_trimming.py``), while every layer runs on the length the
batch needs (a CoOp/MaPLe class prompt is some 10-20 of the 77 tokens). Prompts are inserted into
the trimmed sequence, before EOT as always, and keep their positions: positions are added at layer
0 from position 0 on, and the kept tokens are the first ones. ``trim_text = False`` keeps the full
context.

Rows no one reads (``skip_unused_rows``, ``MODEL.BACKBONE.SKIP_UNUSED_ROWS``, on by default; see
``backbones/base.py``): both towers' last layer computes only the pooled token (the class token of
a ``tok``-pooling image tower, EOT) and a layer before deep prompts are replaced skips the rows
they overwrite, in blocks :func:`computes_row_subsets` accepts: keys and values still come from
every row, so features and gradients are the full layers' (``tests/test_row_savings.py``).

``MODEL.BACKBONE.ARCH``: an open_clip model name (``open_clip.list_models()``) or a path to an
open_clip model-config JSON. ``MODEL.BACKBONE.PRETRAINED``: ``""`` random, an open_clip tag
(``openai``, ``laion2b_s34b_b88k`` ...), or a local checkpoint file.

``MODEL.BACKBONE.ACTIVATION`` (:func:`resolve_quick_gelu`): the MLP activation must be the one the
weights were trained with -- OpenAI's CLIPs use QuickGELU, most LAION ones GELU; the wrong one changes
every logit without any error. A tag says which (``auto`` follows it, and a
contradicting explicit value is refused); a checkpoint file does not, so with a file ``auto`` is
refused unless the architecture's own config names the activation.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..recipes import packaged_path
from ..registry import BACKBONES
from ..tokens import TokenSeq
from ..utils.extras import require
from ._common import RowSubset, additive_key_mask, backbone_tokens, close_names, plain
from ._hub import check_download_possible, hf_endpoint, offline_error
from .base import TokenBackbone, TokenTower


@contextlib.contextmanager
def _sequence_first(attn: nn.MultiheadAttention):
    """``attn`` taking (N, B, D) inputs for the duration (its ``batch_first`` switched off)."""
    attn.batch_first = False
    try:
        yield
    finally:
        attn.batch_first = True


def _run_block(
    block: nn.Module,
    x: torch.Tensor,
    attn_mask: Optional[torch.Tensor],
    batch_first: bool,
    rows: Optional[torch.Tensor] = None,
):
    """One residual block on (B, N, D) ``x``; with ``rows`` (B, M), see :func:`_run_block_rows`.

    Training (autograd on), a batch-first ``nn.MultiheadAttention`` is run sequence-first: with
    ``batch_first`` it transposes its input and projects the transposed view, which its autograd
    path computes as a batched matmul against the projection weight expanded to every position (a
    copy of the weight per token row). The block's other steps act per token, so running it on a
    contiguous (N, B, D) copy with the attention's ``batch_first`` switched off for the call is the
    same computation, some 15-20% faster per ViT-B/16 block; it is the layout the authors' CLIP
    fork uses throughout. Without autograd the library's own (fast) batch-first path runs.
    """
    if rows is not None:
        return _run_block_rows(block, x, attn_mask, batch_first, rows)
    attn = getattr(block, "attn", None)
    if batch_first and torch.is_grad_enabled() and isinstance(attn, nn.MultiheadAttention) and attn.batch_first:
        with _sequence_first(attn):
            return block(x.transpose(0, 1).contiguous(), attn_mask=attn_mask).transpose(0, 1)
    if batch_first:
        return block(x, attn_mask=attn_mask)
    return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


def computes_row_subsets(block: nn.Module) -> bool:
    """Whether :func:`_run_block_rows` may run ``block``: exactly open_clip's self-attention
    ``ResidualAttentionBlock`` (no cross-attention norm) around a plain ``nn.MultiheadAttention``
    (packed projections, no key/value biases or zero attention), the block whose steps it composes.
    Other blocks (open_clip's ``CustomResidualAttentionBlock``, a user's) run in full."""
    from open_clip.transformer import ResidualAttentionBlock

    attn = getattr(block, "attn", None)
    return (
        type(block) is ResidualAttentionBlock
        and not hasattr(block, "ln_1_kv")
        and type(attn) is nn.MultiheadAttention
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


def _run_block_rows(block: nn.Module, x: torch.Tensor, attn_mask, batch_first: bool, rows: torch.Tensor):
    """``block`` (:func:`computes_row_subsets`) on (B, N, D) ``x`` computing the outputs of ``rows``
    (B, M) only; the other rows keep their values of ``x`` (their outputs are read by no one).

    The block's own steps for those rows: ``ln_1`` over every row, the attention with the query
    rows' queries against every row's keys and values (``nn.MultiheadAttention`` with query !=
    key projects the queries of the M rows and the keys/values of all N), then ``ls_1``, ``ln_2``,
    ``mlp``, ``ls_2`` on the M rows. ``attn_mask`` is the (B * heads, M, N) mask of those query
    rows. Sequence-first, as the training path of :func:`_run_block` (for the same reason).
    """
    xs = x.transpose(0, 1).contiguous() if batch_first else x.transpose(0, 1)  # (N, B, D)
    subset = RowSubset(rows, dim=0)
    normed = block.ln_1(xs)
    mask = attn_mask.to(xs.dtype) if attn_mask is not None else None
    attn = block.attn
    with _sequence_first(attn) if attn.batch_first else contextlib.nullcontext():
        attended = attn(subset.take(normed), normed, normed, need_weights=False, attn_mask=mask)[0]
    out = subset.take(xs) + block.ls_1(attended)
    out = out + block.ls_2(block.mlp(block.ln_2(out)))
    return subset.put(xs, out).transpose(0, 1)


def _num_heads(block: nn.Module) -> int:
    return block.attn.num_heads


class OpenCLIPVisionTower(TokenTower):
    name = "vision"
    deferred_input_norm = True

    def __init__(self, visual: nn.Module, skip_unused_rows: bool = True):
        super().__init__()
        self.skip_unused_rows = skip_unused_rows
        object.__setattr__(self, "_visual", visual)  # weights are registered once, on the backbone

    @property
    def width(self) -> int:
        return self._visual.transformer.width

    @property
    def num_layers(self) -> int:
        return len(self._visual.transformer.resblocks)

    @property
    def feature_dim(self) -> int:
        """Size of what :meth:`pool` returns (the joint embedding after ``proj``)."""
        return self._visual.proj.shape[1] if self._visual.proj is not None else self.width

    def embed(self, images: torch.Tensor) -> TokenSeq:
        """``[CLS, patches]`` with positions added, before ``ln_pre`` (applied at layer 0).
        The steps of the library's ``VisionTransformer._embeds`` up to its ``ln_pre``."""
        visual = self._visual
        x = visual.conv1(images)  # (B, width, grid, grid)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, grid**2, width)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        return TokenSeq.from_embeddings(x, tower=self.name, anchors={"start": 1, "end": x.shape[1], "pool": 0})

    def layer(self, i: int, seq: TokenSeq) -> TokenSeq:
        rows, seq = seq.take_needed_rows()
        if i == 0:  # deferred from embed: normalises the prompts inserted before layer 0 too
            seq = seq.with_x(self._visual.ln_pre(seq.x))
        transformer = self._visual.transformer
        block = transformer.resblocks[i]
        if rows is not None and not computes_row_subsets(block):
            rows = None
        attn_mask = None
        if not bool(seq.mask.all()):
            attn_mask = additive_key_mask(seq.mask, _num_heads(block), seq.x.dtype, rows=rows)
        return seq.with_x(_run_block(block, seq.x, attn_mask, transformer.batch_first, rows))

    def pooled_rows(self, seq: TokenSeq, mode: Optional[str] = None) -> Optional[torch.Tensor]:
        """The class token, when the model pools it (``pool_type`` 'tok', no attention pool)."""
        visual = self._visual
        if mode in (None, "default") and visual.attn_pool is None and visual.pool_type == "tok":
            return seq.anchors["pool"][:, None]
        return None

    def pool(self, seq: TokenSeq, mode: Optional[str] = None) -> torch.Tensor:
        # The model's own pooling on its own tokens: CLS stays the pooled token, 'avg' never
        # averages prompts.
        if mode not in (None, "default"):
            raise ConfigError(
                f"The open_clip image tower pools as the model does (pool_type "
                f"'{self._visual.pool_type}'); MODEL.HEAD.POOL '{mode}' is not available, use default."
            )
        visual = self._visual
        if visual.attn_pool is None and visual.pool_type == "tok" and not visual.final_ln_after_pool:
            # the library's _pool normalises every token and keeps the class token; LayerNorm acts
            # per token, so normalising the class token alone is the same (and spares the backward
            # pass through the others)
            pooled = visual.ln_post(seq.gather_anchor("pool"))
        else:
            pooled, _ = visual._pool(backbone_tokens(seq))
        if self._visual.proj is not None:
            pooled = pooled @ self._visual.proj
        return pooled


class OpenCLIPTextTower(TokenTower):
    name = "text"
    deferred_position = True

    def __init__(self, model: nn.Module, tokenizer, trim_text: bool = True, skip_unused_rows: bool = True):
        super().__init__()
        self.trim_text = trim_text
        self.skip_unused_rows = skip_unused_rows
        # CLIP keeps the text modules on the model itself; CustomTextCLIP has them in model.text.
        object.__setattr__(self, "_root", model.text if hasattr(model, "text") else model)
        object.__setattr__(self, "_tokenizer", tokenizer)
        root = self._root
        if getattr(root, "cls_emb", None) is not None:
            raise ConfigError(
                "open_clip text towers with an appended class token (CoCa) are not supported by the open_clip backbone"
            )
        self.pool_type = getattr(model, "text_pool_type", None) or getattr(root, "pool_type", "argmax")
        if self.pool_type not in ("argmax", "eos"):
            raise ConfigError(
                f"open_clip text pooling '{self.pool_type}' is not supported: the text "
                f"tower pools at the EOT token (pool_type 'argmax' or 'eos')"
            )
        self.eos_id = getattr(model, "text_eos_id", getattr(root, "eos_id", None))
        self.pad_id = getattr(root, "pad_id", 0)
        self.use_pad_mask = bool(getattr(root, "use_pad_mask", False))

    # ------------------------------------------------------------------ sizes
    @property
    def width(self) -> int:
        return self._root.transformer.width

    @property
    def num_layers(self) -> int:
        return len(self._root.transformer.resblocks)

    @property
    def feature_dim(self) -> int:
        projection = self._root.text_projection
        if projection is None:
            return self.width
        return projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]

    @property
    def context_length(self) -> int:
        return self._root.positional_embedding.shape[0]

    @property
    def causal(self) -> bool:
        return self._root.attn_mask is not None

    def input_embeddings(self) -> nn.Embedding:
        return self._root.token_embedding

    def tokenize(self, texts: Union[str, Sequence[str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``: (B, context_length) token ids from open_clip's tokenizer (SOT ... EOT,
        then padding) and a bool mask that is True up to and including EOT."""
        ids = self._tokenizer([texts] if isinstance(texts, str) else list(texts))
        ids = ids.to(self._root.token_embedding.weight.device)
        eot = self.eot_positions(ids)
        return ids, torch.arange(ids.shape[1], device=ids.device)[None] <= eot[:, None]

    def special_token_ids(self) -> Set[int]:
        """SOT, EOT and padding: the ids that are not words."""
        specials = set(getattr(self._tokenizer, "all_special_ids", []) or [])
        return specials | {self.pad_id}

    # ------------------------------------------------------------------ steps
    def eot_positions(self, ids: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "argmax":  # the EOT id is the largest in CLIP's vocabulary
            return ids.argmax(dim=-1)
        return (ids == self.eos_id).int().argmax(dim=-1)

    def embed(self, inputs) -> TokenSeq:
        """From token ids (B, L), an ``(ids, mask)`` pair from :meth:`tokenize`, an
        ``(ids, mask, anchors)`` triple whose dict adds (B,) anchors in token positions (the CLIP
        classifier's ``class_end``), or raw strings. The mask is rebuilt from the ids, as the
        library finds EOT from them too."""
        if isinstance(inputs, (str, list)):
            inputs = self.tokenize(inputs)
        extra_anchors = inputs[2] if isinstance(inputs, tuple) and len(inputs) > 2 else {}
        ids = inputs[0] if isinstance(inputs, tuple) else inputs
        root = self._root
        ids = ids.to(root.token_embedding.weight.device)
        if self.trim_text:
            ids = ids[:, : self.needed_length(ids)]
        x = root.token_embedding(ids).to(root.transformer.get_cast_dtype())
        eot = self.eot_positions(ids)
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        if self.causal:
            mask = positions <= eot[:, None]  # what follows EOT is padding the causal mask hides
        elif self.use_pad_mask:
            mask = ids != self.pad_id
        else:
            mask = torch.ones_like(ids, dtype=torch.bool)  # the library attends to padding too
        anchors = {"start": 1, "end": eot, "pool": eot, **extra_anchors}
        return TokenSeq.from_embeddings(x, mask, tower=self.name, anchors=anchors, meta={"token_ids": ids})

    def needed_length(self, ids: torch.Tensor) -> int:
        """How many leading tokens of ``ids`` (B, L) can change a feature: up to the batch's last
        EOT under a causal mask, up to its last non-padding token when the pad mask hides padding,
        else all L (this tower's attention sees padding)."""
        if self.causal:
            return int(self.eot_positions(ids).max()) + 1 if ids.numel() else ids.shape[1]
        if self.use_pad_mask:
            real = (ids != self.pad_id).any(0).nonzero()
            return int(real.max()) + 1 if real.numel() else 1
        return ids.shape[1]

    def layer(self, i: int, seq: TokenSeq) -> TokenSeq:
        rows, seq = seq.take_needed_rows()
        if i == 0:
            if seq.length > self.context_length:
                rows = None  # the trim to the context length drops positions the rows may name
            seq = self._add_positions(seq)
        transformer = self._root.transformer
        block = transformer.resblocks[i]
        if rows is not None and not computes_row_subsets(block):
            rows = None
        attn_mask = self._attention_mask(seq, _num_heads(block), rows)
        return seq.with_x(_run_block(block, seq.x, attn_mask, transformer.batch_first, rows))

    def _attention_mask(self, seq: TokenSeq, heads: int, rows: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The layer's additive mask for every query row, or for ``rows`` (B, M) only."""
        N, device, dtype = seq.length, seq.x.device, seq.x.dtype
        causal = None
        if self.causal:
            keys = torch.arange(N, device=device)
            if rows is None:
                causal = torch.full((N, N), float("-inf"), device=device, dtype=dtype).triu_(1)
            else:
                causal = torch.zeros(*rows.shape, N, device=device, dtype=dtype)
                causal = causal.masked_fill(keys > rows[..., None], float("-inf"))
            # Switched-off tokens after EOT are hidden by causality already; only those the
            # pooled token could see need a per-sample mask.
            visible = keys[None] <= seq.anchors["pool"][:, None]
            needs_key_mask = bool((~seq.mask & visible).any())
        else:
            needs_key_mask = not bool(seq.mask.all())
        if needs_key_mask:
            return additive_key_mask(seq.mask, heads, dtype, base=causal, rows=rows)
        if causal is not None and rows is not None:
            return causal.repeat_interleave(heads, dim=0)
        return causal

    def pooled_rows(self, seq: TokenSeq, mode: Optional[str] = None) -> Optional[torch.Tensor]:
        """The EOT token (``ln_final`` acts per token)."""
        return seq.anchors["pool"][:, None]

    def _add_positions(self, seq: TokenSeq) -> TokenSeq:
        limit = self.context_length
        if seq.length > limit:
            seq = self._trim(seq, limit)
        pos = self._root.positional_embedding[: seq.length].to(seq.x.dtype)
        return seq.with_x(seq.x + pos)

    def _trim(self, seq: TokenSeq, limit: int) -> TokenSeq:
        """Drop trailing padding that insertions pushed beyond the position embedding."""
        eot = seq.anchors["pool"]
        if bool((eot >= limit).any()):
            raise ConfigError(
                f"A text with its prompt tokens is {int(eot.max()) + 1} tokens up to EOT, more than the "
                f"text tower's context length {limit}: use fewer prompt tokens or shorter class names/texts."
            )
        if bool((seq.owner[:, limit:] != 0).any()):
            raise ConfigError(
                f"Prompt tokens were placed after EOT beyond the context length {limit}; place text "
                f"prompts before the 'end' anchor or use fewer of them."
            )
        return dc_replace(seq, x=seq.x[:, :limit], mask=seq.mask[:, :limit], owner=seq.owner[:, :limit])

    def pool(self, seq: TokenSeq, mode: Optional[str] = None) -> torch.Tensor:
        if mode not in (None, "default", "eot"):
            raise ConfigError(f"The CLIP text tower pools at EOT; pool mode '{mode}' is not available.")
        root = self._root
        pooled = root.ln_final(seq.gather_anchor("pool"))
        projection = root.text_projection
        if projection is None:
            return pooled
        if isinstance(projection, nn.Linear):
            return projection(pooled)
        return pooled @ projection


class OpenCLIP(TokenBackbone):
    """An open_clip CLIP model with towers ``vision`` and ``text``."""

    def __init__(self, model: nn.Module, arch: str, tokenizer, trim_text: bool = True, skip_unused_rows: bool = True):
        super().__init__()
        self.model = model
        self.arch = arch
        self.towers = nn.ModuleDict(
            {
                "vision": OpenCLIPVisionTower(model.visual, skip_unused_rows),
                "text": OpenCLIPTextTower(model, tokenizer, trim_text, skip_unused_rows),
            }
        )

    @property
    def activation(self) -> str:
        """The MLP activation the model was built with (``quick_gelu`` or ``gelu``), read from it."""
        block = self.model.visual.transformer.resblocks[0]
        act = getattr(getattr(block, "mlp", None), "gelu", None)
        return "quick_gelu" if type(act).__name__ == "QuickGELU" else "gelu"

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> Optional[nn.Parameter]:
        return getattr(self.model, "logit_bias", None)

    def tokenize(self, texts) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.towers["text"].tokenize(texts)


# ---------------------------------------------------------------------- building
def architecture_sizes(arch: str, kwargs: Optional[dict] = None) -> Optional[Dict[str, int]]:
    """``text`` / ``vision``: the layers of each tower, and ``context_length``: the text tower's
    positions, of open_clip ``arch`` as its model config states them (open_clip's defaults for
    what it leaves out), without building anything (for checks before the model is built); None
    when ``kwargs`` (MODEL.BACKBONE.KWARGS) replaces a tower's config or a value is not a whole
    number (building the model then says what is wrong)."""
    if {"text_cfg", "vision_cfg"} & set(kwargs or {}):
        return None
    open_clip = require("open_clip", "open_clip backbones")
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    model_cfg = open_clip.get_model_config(resolve_open_clip_arch(arch))
    text, vision = model_cfg.get("text_cfg") or {}, model_cfg.get("vision_cfg") or {}
    try:
        return {
            "text": int(text.get("layers", CLIPTextCfg.layers)),
            "vision": int(vision.get("layers", CLIPVisionCfg.layers)),
            "context_length": int(text.get("context_length", CLIPTextCfg.context_length)),
        }
    except (TypeError, ValueError):
        return None


def resolve_open_clip_arch(arch: str) -> str:
    """The open_clip model name for ``arch``: a built-in name, or a model-config JSON path
    (registered with ``open_clip.add_model_config`` under the file's stem)."""
    open_clip = require("open_clip", "open_clip backbones")

    if arch.lower().endswith(".json") or os.path.isfile(arch):
        # recipes name the toolkit's own JSONs as configs/...; found in the package when installed
        path = Path(packaged_path(arch) or arch)
        if not path.is_file():
            raise ConfigError(f"open_clip model config not found: {arch}")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{arch} is not a readable JSON model config: {e}") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            raise ConfigError(
                f"{arch} lacks the open_clip model-config keys {missing} "
                f"(see open_clip/model_configs/ViT-B-16.json for the format)"
            )
        open_clip.add_model_config(path)
        return path.stem
    if arch not in open_clip.list_models():
        close = close_names(arch, open_clip.list_models())
        hint = f" Close open_clip names: {', '.join(close)}." if close else ""
        raise ConfigError(
            f"Unknown open_clip architecture MODEL.BACKBONE.ARCH '{arch}'.{hint} "
            f"open_clip.list_models() lists them; a path to a model-config JSON works too."
        )
    return arch


def _check_vit_based(name: str, model_cfg: dict) -> None:
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if "timm_model_name" in vision or not isinstance(vision.get("layers", 12), int):
        raise ConfigError(
            f"open_clip '{name}' has a ResNet/timm image tower; the open_clip backbone "
            f"wraps ViT image towers (e.g. ViT-B-16). For timm image models use timm_vit."
        )
    if text.get("embed_cls") or text.get("pool_type", "argmax") not in ("argmax", "eos"):
        raise ConfigError(
            f"open_clip '{name}' pools its text tower with "
            f"{'a class token' if text.get('embed_cls') else repr(text.get('pool_type'))}; "
            f"the open_clip backbone wraps text towers that pool at EOT (pool_type argmax/eos)."
        )
    if "hf_model_name" in text:
        raise ConfigError(
            f"open_clip '{name}' has a Hugging Face text tower, which the open_clip "
            f"backbone does not wrap; pick a CLIP with its own text transformer."
        )


ACTIVATIONS = ("auto", "quick_gelu", "gelu")


def _activation_name(quick_gelu: bool) -> str:
    return "quick_gelu" if quick_gelu else "gelu"


def resolve_quick_gelu(
    name: str,
    model_cfg: dict,
    activation: str,
    *,
    tag: str = "",
    tag_cfg: Optional[dict] = None,
    checkpoint_file: str = "",
) -> bool:
    """Whether to build ``name`` with QuickGELU, from ``MODEL.BACKBONE.ACTIVATION``.

    * a tag (``tag_cfg``): the activation the tag was trained with (open_clip's pretrained config
      says, e.g. ``openai`` -> QuickGELU); ``auto`` follows it, a contradicting value is refused;
    * a checkpoint file: the file cannot say, so ``auto`` needs the architecture's config to name
      it (``quick_gelu`` in the model config, as the ``-quickgelu`` architectures do) and is refused
      otherwise: a file saved from the ``openai`` tag needs ``quick_gelu`` to give the tag's logits;
    * random weights: ``auto`` is the architecture's default.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"MODEL.BACKBONE.ACTIVATION '{activation}' is not one of {', '.join(ACTIVATIONS)}.")
    explicit = None if activation == "auto" else activation == "quick_gelu"
    if tag_cfg is not None:
        trained = bool(tag_cfg.get("quick_gelu", False))
        if explicit is not None and explicit != trained:
            raise ConfigError(
                f"open_clip '{name}' tag '{tag}' was trained with {_activation_name(trained)} but "
                f"MODEL.BACKBONE.ACTIVATION is {activation}, which would change every logit "
                f"without an error. Set MODEL.BACKBONE.ACTIVATION auto (or {_activation_name(trained)})."
            )
        return trained
    if explicit is not None:
        return explicit
    if checkpoint_file and "quick_gelu" not in model_cfg:
        raise ConfigError(
            f"MODEL.BACKBONE.PRETRAINED is a checkpoint file ({checkpoint_file}), which does not say which "
            f"activation its weights were trained with, and MODEL.BACKBONE.ACTIVATION is auto. Set "
            f"MODEL.BACKBONE.ACTIVATION quick_gelu for OpenAI's CLIP weights (e.g. a file of the 'openai' tag) "
            f"or gelu for weights trained with GELU (e.g. most LAION tags); the wrong one changes every logit "
            f"without an error."
        )
    return bool(model_cfg.get("quick_gelu", False))


def create_open_clip(
    arch: str,
    pretrained: str = "",
    kwargs: Optional[dict] = None,
    cache_dir: str = "",
    activation: str = "auto",
    trim_text: bool = True,
    skip_unused_rows: bool = True,
) -> OpenCLIP:
    open_clip = require("open_clip", "open_clip backbones")

    name = resolve_open_clip_arch(arch)
    model_cfg = open_clip.get_model_config(name)
    _check_vit_based(name, model_cfg)
    kwargs = dict(kwargs or {})
    clash = sorted({"quick_gelu", "force_quick_gelu"} & set(kwargs))
    if clash:
        raise ConfigError(
            f"MODEL.BACKBONE.KWARGS sets {', '.join(clash)}: choose the activation with "
            f"MODEL.BACKBONE.ACTIVATION (auto, quick_gelu or gelu) instead."
        )
    weights = str(pretrained or "").strip()
    checkpoint = None
    tag_cfg = None
    if weights:
        if os.path.isfile(weights):
            checkpoint = weights
        else:
            tag_cfg = open_clip.get_pretrained_cfg(name, weights)
            if not tag_cfg:
                if os.path.sep in weights or weights.startswith("."):
                    raise ConfigError(f"MODEL.BACKBONE.PRETRAINED file not found: {weights}")
                tags = open_clip.list_pretrained_tags_by_model(name)
                raise ConfigError(
                    f"MODEL.BACKBONE.PRETRAINED '{weights}' is neither a file nor an open_clip "
                    f'tag of {name} (tags: {", ".join(tags) or "none"}). Use "" for random weights.'
                )
    quick_gelu = resolve_quick_gelu(
        name, model_cfg, activation, tag=weights, tag_cfg=tag_cfg, checkpoint_file=checkpoint or ""
    )
    if tag_cfg is not None:
        source = f"{hf_endpoint()}/{tag_cfg['hf_hub'].rstrip('/')}" if tag_cfg.get("hf_hub") else tag_cfg.get("url", "")
        what = f"open_clip '{name}' tag '{weights}'"
        hint = (
            f"MODEL.BACKBONE.PRETRAINED /path/to/{name}-{weights}.bin (open_clip checkpoint file) with "
            f"MODEL.BACKBONE.ACTIVATION {_activation_name(quick_gelu)}"
        )
        check_download_possible(what, source, hint)
        try:
            checkpoint = open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir or None)
        except OSError as e:
            raise offline_error(what, source, hint, cause=type(e).__name__) from None
    try:
        # quick_gelu as a model kwarg overrides the architecture's config in both directions
        model = open_clip.create_model(
            name, pretrained=checkpoint, cache_dir=cache_dir or None, quick_gelu=quick_gelu, **kwargs
        )
    except TypeError as e:
        raise ConfigError(f"open_clip '{name}' does not accept MODEL.BACKBONE.KWARGS {kwargs}: {e}") from None
    except RuntimeError as e:
        if checkpoint:
            raise ConfigError(f"The weights in {checkpoint} do not fit open_clip '{name}': {str(e)[:500]}") from None
        raise
    return OpenCLIP(model, name, open_clip.get_tokenizer(name), trim_text, skip_unused_rows)


@BACKBONES.register("open_clip")
def build_open_clip(cfg) -> OpenCLIP:
    b = cfg.MODEL.BACKBONE
    return create_open_clip(
        b.ARCH,
        b.PRETRAINED,
        plain(b.KWARGS),
        b.CACHE_DIR,
        b.ACTIVATION,
        trim_text=b.TRIM_TEXT,
        skip_unused_rows=b.SKIP_UNUSED_ROWS,
    )


__all__ = [
    "OpenCLIP",
    "OpenCLIPVisionTower",
    "OpenCLIPTextTower",
    "create_open_clip",
    "resolve_open_clip_arch",
    "resolve_quick_gelu",
]
