"""timm Vision Transformers (any ``timm`` ViT with a class token) as a token-sequence tower.

The tower calls the timm model's own modules: ``patch_embed`` + ``_pos_embed`` (class/register
tokens and position embedding) + ``patch_drop`` + ``norm_pre`` to embed, ``blocks[i]`` per layer,
and ``norm`` + ``forward_head(pre_logits=True)`` (pooling as the model is configured: class
token, mean, attention pool; then ``fc_norm``, ``head_drop``) to pool. Prompts are inserted after
the position embedding, as in VPT. Pooling reads only the backbone's own tokens, so the pooled
token stays the class token and a mean never averages prompt tokens.

Rows no one reads (``skip_unused_rows``, ``MODEL.BACKBONE.SKIP_UNUSED_ROWS``, on by default; see
``backbones/base.py``): with class-token pooling the last layer computes only the class token, and
a layer before VPT-deep prompts are replaced skips their rows, in blocks
:func:`computes_row_subsets` accepts; keys and values still come from every row, so features and
gradients are the full layers' (``tests/test_row_savings.py``).

``MODEL.BACKBONE.PRETRAINED``: ``""`` random weights; ``"timm"`` / ``"True"`` timm's default
weights for the architecture (downloaded from the hub); a timm pretrained tag such as
``"augreg_in21k"``; or a local checkpoint file (``.safetensors``, ``.pth``, ``.bin``, ``.npz``).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES
from ..tokens import TokenSeq
from ..utils.extras import require
from ._common import RowSubset, backbone_tokens, close_names, plain
from ._hub import check_download_possible, hf_cached, hf_endpoint, hub_offline, offline_error
from .base import TokenBackbone, TokenTower

_DEFAULT_WEIGHTS = {"true", "timm", "1", "yes", "default"}
_CHECKPOINT_EXTENSIONS = (".safetensors", ".pth", ".pt", ".bin", ".npz", ".ckpt")
# timm's pool names for the MODEL.HEAD.POOL values that override the model's own pooling
POOL_MODES = {"cls": "token", "mean": "avg"}


def computes_row_subsets(block: nn.Module) -> bool:
    """Whether :func:`_block_rows` may run ``block``: exactly timm's ViT ``Block`` with its
    ``Attention`` (fused attention, as the library runs it by default; no output gate) and ``Mlp``,
    the modules whose steps it composes. Other blocks run in full."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention, Block

    attn = getattr(block, "attn", None)
    return (
        type(block) is Block
        and type(attn) is Attention
        and bool(attn.fused_attn)
        and getattr(attn, "gate", None) is None
        and type(block.mlp) is Mlp
    )


def _block_rows(block: nn.Module, x: torch.Tensor, rows: torch.Tensor, attn_mask: Optional[torch.Tensor]):
    """``block`` (:func:`computes_row_subsets`) on (B, N, D) ``x`` computing the outputs of ``rows``
    (B, M) only; the other rows keep their values of ``x`` (their outputs are read by no one).

    The block's own steps for those rows: ``norm1`` over every row; the queries of the M rows and
    the keys and values of all N from ``attn.qkv``'s weight (its query and key/value parts), then
    ``q_norm``/``k_norm``, the library's fused attention (``attn_drop``'s rate), ``attn.norm``,
    ``proj``, ``proj_drop``, ``ls1``, ``drop_path1``, ``norm2``, ``mlp``, ``ls2``, ``drop_path2`` on
    the M rows. ``attn_mask`` is the tower's (B, 1, 1, N) key mask.
    """
    attn = block.attn
    B, N, D = x.shape
    M = rows.shape[1]
    subset = RowSubset(rows, dim=1)
    normed = block.norm1(x)
    width = attn.attn_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(subset.take(normed), weight[:width], None if bias is None else bias[:width])
    kv = F.linear(normed, weight[width:], None if bias is None else bias[width:])
    q = q.reshape(B, M, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(B, N, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    attended = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=attn.attn_drop.p if attn.training else 0.0
    )
    attended = attn.proj_drop(attn.proj(attn.norm(attended.transpose(1, 2).reshape(B, M, width))))
    out = subset.take(x) + block.drop_path1(block.ls1(attended))
    out = out + block.drop_path2(block.ls2(block.mlp(block.norm2(out))))
    return subset.put(x, out)


class TimmViTTower(TokenTower):
    name = "vision"

    def __init__(self, vit: nn.Module, skip_unused_rows: bool = True):
        super().__init__()
        self.skip_unused_rows = skip_unused_rows
        # A plain reference: the weights are registered once, on the backbone.
        object.__setattr__(self, "_vit", vit)

    @property
    def width(self) -> int:
        return self._vit.embed_dim

    @property
    def num_layers(self) -> int:
        return len(self._vit.blocks)

    @property
    def patch_size(self) -> tuple:
        """(height, width) of a patch, from the model's own patch embedding: prompt inits that
        depend on it (VPT's xavier bound) read it here, so a /14 or /32 model gets its own."""
        return tuple(int(p) for p in self._vit.patch_embed.patch_size)

    @property
    def feature_dim(self) -> int:
        """Size of what :meth:`pool` returns (the classifier's input)."""
        return getattr(self._vit, "head_hidden_size", self._vit.num_features)

    def embed(self, images: torch.Tensor) -> TokenSeq:
        vit = self._vit
        x = vit.patch_embed(images)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        return TokenSeq.from_embeddings(
            x, tower=self.name, anchors={"start": vit.num_prefix_tokens, "end": x.shape[1], "pool": 0}
        )

    def layer(self, i: int, seq: TokenSeq) -> TokenSeq:
        rows, seq = seq.take_needed_rows()
        block = self._vit.blocks[i]
        # timm's attention takes a boolean mask broadcast over heads and queries (True = attend).
        attn_mask = None if bool(seq.mask.all()) else seq.mask[:, None, None, :]
        if rows is not None and computes_row_subsets(block):
            return seq.with_x(_block_rows(block, seq.x, rows, attn_mask))
        return seq.with_x(block(seq.x, attn_mask=attn_mask))

    def pooled_rows(self, seq: TokenSeq, mode: Optional[str] = None) -> Optional[torch.Tensor]:
        """The class token, when pooling takes it (timm's 'token' pool, no attention pool) after a
        per-token final norm."""
        vit = self._vit
        pool_type = vit.global_pool if mode in (None, "default") else POOL_MODES.get(mode)
        per_token_norm = isinstance(vit.norm, (nn.LayerNorm, nn.Identity))
        if pool_type == "token" and getattr(vit, "attn_pool", None) is None and per_token_norm:
            return seq.anchors["pool"][:, None]
        return None

    def pool(self, seq: TokenSeq, mode: Optional[str] = None) -> torch.Tensor:
        """Features before the classifier. ``mode`` (``MODEL.HEAD.POOL``): None/'default' pools as
        the model is configured; 'cls' / 'mean' override it with timm's 'token' / 'avg'."""
        vit = self._vit
        if mode not in (None, "default") and mode not in POOL_MODES:
            raise ConfigError(f"MODEL.HEAD.POOL '{mode}' is not one of default, {', '.join(POOL_MODES)} for a timm ViT")
        if self.pooled_rows(seq, mode) is not None:
            # token pooling reads the class token, and the norm acts per token: normalising the
            # class token alone is the same (and reads no row the last layer may have left)
            x = vit.norm(seq.gather_anchor("pool"))[:, None]
        else:
            x = vit.norm(backbone_tokens(seq))
        if mode in (None, "default"):
            return vit.forward_head(x, pre_logits=True)
        return vit.head_drop(vit.fc_norm(vit.pool(x, pool_type=POOL_MODES[mode])))


class TimmViT(TokenBackbone):
    """A timm VisionTransformer with one tower, ``vision``."""

    def __init__(self, vit: nn.Module, arch: str, skip_unused_rows: bool = True):
        super().__init__()
        self.model = vit
        self.arch = arch
        self.towers = nn.ModuleDict({"vision": TimmViTTower(vit, skip_unused_rows)})

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The timm model's own classifier head (Identity when built with ``num_classes=0``)."""
        return self.model.head(features)


def resolve_timm_name(arch: str) -> str:
    """A current timm model name ('arch' or 'arch.tag') for ``arch``; old names are mapped
    through timm's own deprecation table (e.g. ``vit_base_patch16_224_in21k`` ->
    ``vit_base_patch16_224.augreg_in21k``)."""
    timm = require("timm", "timm ViT backbones")
    from timm.models import get_deprecated_models

    deprecated = get_deprecated_models()
    if arch in deprecated:
        if deprecated[arch] is None:
            raise ConfigError(
                f"timm removed the architecture '{arch}' without a replacement; "
                f"pick another MODEL.BACKBONE.ARCH (see timm.list_models('vit_*'))."
            )
        arch = deprecated[arch]
    base = arch.split(".", 1)[0]
    if not timm.is_model(base):
        close = close_names(base, timm.list_models("*vit*") + list(deprecated))
        hint = f" Close timm names: {', '.join(close)}." if close else ""
        raise ConfigError(
            f"Unknown timm architecture MODEL.BACKBONE.ARCH '{arch}'.{hint} "
            f"timm.list_models('vit_*') lists the Vision Transformers."
        )
    return arch


def _is_path(value: str) -> bool:
    return os.path.sep in value or value.startswith(".") or value.lower().endswith(_CHECKPOINT_EXTENSIONS)


def create_timm_vit(
    arch: str,
    pretrained: str = "",
    kwargs: Optional[dict] = None,
    cache_dir: str = "",
    skip_unused_rows: bool = True,
) -> TimmViT:
    timm = require("timm", "timm ViT backbones")
    from timm.models import get_pretrained_cfg
    from timm.models.vision_transformer import VisionTransformer

    name = resolve_timm_name(arch)
    kwargs = dict(kwargs or {})
    # The task model has its own head; a 21k-class timm head would be 16M unused parameters.
    kwargs.setdefault("num_classes", 0)
    if cache_dir:
        kwargs["cache_dir"] = cache_dir
    weights = str(pretrained or "").strip()
    local_file = None
    if weights:
        if os.path.exists(weights) or _is_path(weights):
            if not os.path.isfile(weights):
                raise ConfigError(f"MODEL.BACKBONE.PRETRAINED file not found: {weights}")
            local_file = os.path.abspath(weights)
        elif weights.lower() not in _DEFAULT_WEIGHTS:
            tagged = f"{name.split('.', 1)[0]}.{weights}"
            if not timm.list_pretrained(tagged):
                tags = [t.split(".", 1)[1] for t in timm.list_pretrained(name.split(".", 1)[0] + ".*")]
                raise ConfigError(
                    f"MODEL.BACKBONE.PRETRAINED '{weights}' is neither a file nor a timm "
                    f'pretrained tag of {name}. Use "" (random), "timm" (default '
                    f"weights), a tag ({', '.join(tags) or 'none known'}) or a local file."
                )
            name = tagged
    download = bool(weights) and local_file is None
    hint = f"MODEL.BACKBONE.PRETRAINED /path/to/{name}.safetensors (or the .pth/.npz you downloaded)"
    if download:
        pcfg = get_pretrained_cfg(name)
        source = f"{hf_endpoint()}/{pcfg.hf_hub_id}" if pcfg and pcfg.hf_hub_id else (pcfg.url if pcfg else "")
        if source:
            check_download_possible(f"timm '{name}'", source, hint)
        # timm builds the model before it looks for weights (seconds for a ViT-B); offline, an
        # empty cache is known at once.
        if hub_offline() and pcfg and pcfg.hf_hub_id:
            files = [pcfg.hf_hub_filename] if pcfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
            if not hf_cached(pcfg.hf_hub_id, files, cache_dir):
                raise offline_error(
                    f"timm '{name}'",
                    f"{hf_endpoint()}/{pcfg.hf_hub_id}",
                    hint,
                    cause="HF_HUB_OFFLINE is set and they are not in the local cache",
                )
    # Google's .npz checkpoints go through timm's own npz loader; other files are loaded below,
    # strictly, so a file for another model is an error rather than a silently random backbone.
    npz = local_file is not None and local_file.lower().endswith(".npz")
    if npz:
        kwargs["pretrained_cfg_overlay"] = dict(file=local_file)
    try:
        model = timm.create_model(name, pretrained=download or npz, **kwargs)
    except TypeError as e:
        raise ConfigError(
            f"timm '{name}' does not accept MODEL.BACKBONE.KWARGS "
            f"{ {k: v for k, v in kwargs.items() if k != 'cache_dir'} }: {e}"
        ) from None
    except OSError as e:
        if download:
            raise offline_error(f"timm '{name}'", "the Hugging Face hub", hint, cause=type(e).__name__) from None
        raise ConfigError(f"Could not read MODEL.BACKBONE.PRETRAINED {weights}: {e}") from None
    except (RuntimeError, ValueError, KeyError) as e:
        if npz:
            raise ConfigError(
                f"The weights in {weights} do not fit timm '{name}' with KWARGS {kwargs}: {str(e)[:500]}"
            ) from None
        raise
    if not isinstance(model, VisionTransformer) or getattr(model, "cls_token", None) is None:
        raise ConfigError(
            f"timm '{name}' is a {type(model).__name__} without a class token; the "
            f"timm_vit backbone wraps timm VisionTransformers with a class token "
            f"(e.g. vit_base_patch16_224)."
        )
    if local_file is not None and not npz:
        load_weights_file(model, local_file, name)
    return TimmViT(model, name, skip_unused_rows)


def load_weights_file(model: nn.Module, path: str, name: str) -> None:
    """Load a timm state-dict file (.safetensors/.pth/.bin) into ``model``, adapting it with the
    model module's own ``checkpoint_filter_fn`` (position-embedding resize, old layouts). A
    classifier head that does not fit is dropped (the task model has its own); any other missing
    or unexpected key is a ConfigError."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(path)
    except Exception as e:  # torch.load / safetensors raise many types for a bad file
        raise ConfigError(f"Could not read MODEL.BACKBONE.PRETRAINED {path} as a state dict: {e}") from None
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    for key in ("head.weight", "head.bias"):
        if key in state and (key not in own or own[key].shape != state[key].shape):
            del state[key]
    wrong_shape = [k for k in state if k in own and own[k].shape != state[k].shape]
    for k in wrong_shape:
        del state[k]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    problems = [
        (label, keys)
        for label, keys in (
            ("missing in the file", missing),
            ("not in the model", list(result.unexpected_keys)),
            ("of another shape", wrong_shape),
        )
        if keys
    ]
    if problems:
        detail = "; ".join(
            f"{len(keys)} {label} ({', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''})" for label, keys in problems
        )
        raise ConfigError(
            f"The weights in {path} do not fit timm '{name}': {detail}. Is the file for "
            f"another architecture, or do MODEL.BACKBONE.ARCH / KWARGS differ from it?"
        )


@BACKBONES.register("timm_vit")
def build_timm_vit(cfg) -> TimmViT:
    b = cfg.MODEL.BACKBONE
    return create_timm_vit(b.ARCH, b.PRETRAINED, plain(b.KWARGS), b.CACHE_DIR, b.SKIP_UNUSED_ROWS)
