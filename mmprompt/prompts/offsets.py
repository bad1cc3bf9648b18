"""Token offsets: DePT (Shi & Lipani 2024) and ADePT (Tang et al. 2025).

Both are a short prompt (prompt tuning's machinery: ``SOURCE``/``POSITION``) plus offsets added
to tokens already in the sequence:

* DePT, position-based: ``x_j += s (A B)_j`` for the j-th offset token, ``A`` (MAX_LEN x r),
  ``B`` (r x d), ``A`` LoRA's ``kaiming_uniform_(a=sqrt(5))`` and ``B`` zero-initialised so
  training starts from the frozen model. ``s`` is ``SCALING``: ``ALPHA / sqrt(r)`` in the
  authors' code (their ``lora_alpha`` 8: 1.19 at r=45), 1 in the paper's equation;
* ADePT, token-shared: ``x += ReLU(dropout(x W_down + b1)) W_up + b2`` with the authors' dropout
  0.1 on the bottleneck while training, ``W_down`` U(+-1/sqrt(r)) and ``b1 = 0`` (their d x r
  ``A`` under ``kaiming_uniform_(a=sqrt(5))``), ``W_up`` and ``b2`` zero-initialised.

Offsets apply before each layer in ``LAYERS`` (each layer its own parameters), so they reach
deep layers too, e.g. ADePT offsets on a ViT's patch tokens before layers 0-3. ``TOKENS`` says
which tokens move: ``content`` (the backbone's own tokens between the ``start`` and ``end``
anchors: words or patches, not CLS/SOT/EOT, prompts or padding), ``backbone`` (every backbone
token but padding) or ``all`` (prompts too). The offset parameters form the ``offsets`` group of
:meth:`param_groups`, so ``OPTIM.GROUP_LR.offsets`` gives them their own learning rate.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from ..errors import ConfigError, MMPromptError
from ..registry import PROMPTS
from ..tokens import TokenSeq
from .base import PromptModule
from .layer_prompts import LayerPrompts, method_tower

TOKEN_SETS = ("content", "backbone", "all")


def offset_token_mask(seq: TokenSeq, tokens: str) -> torch.Tensor:
    """(B, N) bool: the tokens an offset moves."""
    sel = seq.mask.clone()
    if tokens in ("content", "backbone"):
        sel &= seq.owner == 0
    if tokens == "content":
        pos = torch.arange(seq.length, device=seq.x.device)[None]
        sel &= (pos >= seq.anchors["start"][:, None]) & (pos < seq.anchors["end"][:, None])
    return sel


#: DePT offset scalings s in x + s A B, by PROMPT.DEPT.SCALING
DEPT_SCALINGS = ("alpha_sqrt_rank", "alpha_rank", "none")
#: ADePT down-projection inits, by PROMPT.ADEPT.DOWN_INIT
ADEPT_DOWN_INITS = ("adept", "linear")


def dept_scale(scaling: str, alpha: float, rank: int) -> float:
    """The factor ``s`` in ``x + s A B``."""
    if scaling not in DEPT_SCALINGS:
        raise ConfigError(f"PROMPT.DEPT.SCALING '{scaling}' is not one of {', '.join(DEPT_SCALINGS)}.")
    if scaling == "none" or rank == 0:
        return 1.0
    return alpha / (math.sqrt(rank) if scaling == "alpha_sqrt_rank" else rank)


class PositionOffsets(nn.Module):
    """DePT's ``scale * A B`` for one layer; the j-th selected token of a sample gets row j."""

    def __init__(self, max_len: int, rank: int, width: int, scale: float = 1.0):
        super().__init__()
        self.A = nn.Parameter(torch.empty(max_len, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # LoRA-style A; B = 0 keeps A B = 0 at start
        self.B = nn.Parameter(torch.zeros(rank, width))
        self.scale = scale

    def forward(self, x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        index = sel.long().cumsum(1) - 1
        count = int(sel.sum(1).max()) if sel.numel() else 0
        if count > self.A.shape[0]:
            raise MMPromptError(
                f"DePT offsets cover {self.A.shape[0]} tokens (PROMPT.DEPT.MAX_LEN) but a sample "
                f"has {count} tokens to offset; raise PROMPT.DEPT.MAX_LEN or truncate inputs "
                f"(e.g. MODEL.TEXT max length)."
            )
        offsets = (self.scale * (self.A @ self.B))[index.clamp_min(0)]
        return x + offsets * sel[..., None].to(x.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


class TokenSharedOffsets(nn.Module):
    """ADePT's ``ReLU(dropout(x W_down + b1)) W_up + b2`` for one layer."""

    def __init__(self, width: int, bottleneck: int, dropout: float = 0.0, down_init: str = "adept"):
        super().__init__()
        if down_init not in ADEPT_DOWN_INITS:
            raise ConfigError(f"PROMPT.ADEPT.DOWN_INIT '{down_init}' is not one of {', '.join(ADEPT_DOWN_INITS)}.")
        self.down = nn.Linear(width, bottleneck)
        if down_init == "adept":
            # The authors' A is (d, r), so kaiming_uniform_(a=sqrt(5)) takes fan_in = r: U(+-1/sqrt(r)).
            bound = 1.0 / math.sqrt(bottleneck) if bottleneck else 0.0
            nn.init.uniform_(self.down.weight, -bound, bound)
            nn.init.zeros_(self.down.bias)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.dropout(self.down(x)))) * sel[..., None].to(x.dtype)


class OffsetPrompt(PromptModule):
    """A short prompt plus per-layer token offsets in one tower.

    The keywords DePT and ADePT share are these (defaults = PROMPT.DEPT's and ADEPT's, which
    agree); ``cfg`` is where the short prompt's source and placement read their own settings
    (PROMPT.DYNAMIC, SUPERPOS, RESIDUAL); None builds them with the defaults. Subclasses build
    each layer's offset module (:meth:`build_offsets`) from their own keywords."""

    def __init__(
        self,
        cfg=None,
        *,
        method: str,
        num_tokens: int,
        layers: Sequence[int] = (0,),
        tokens: str = "content",
        init: str = "text_repeat",
        init_text: str = "Classify this text is postive or not:",
        tower: str = "encoder",
        source: str = "param",
        position: str = "prefix",
    ):
        super().__init__()
        if tokens not in TOKEN_SETS:
            raise ConfigError(f"PROMPT.{method.upper()}.TOKENS '{tokens}' is not one of {', '.join(TOKEN_SETS)}.")
        if not layers:
            raise ConfigError(f"PROMPT.{method.upper()}.LAYERS is empty; list the layers to offset, e.g. [0].")
        self.method = method
        self.tower_name = tower
        self.tokens = tokens
        self.layers = sorted(set(int(i) for i in layers))
        self.prompt = None
        if num_tokens > 0:
            self.prompt = LayerPrompts(
                cfg,
                method=method,
                tower=tower,
                length=num_tokens,
                depth=1,
                source=source,
                position=position,
                init=init,
                init_text=init_text,
            )
        self.offsets = nn.ModuleDict()

    @staticmethod
    def prompt_kwargs(node) -> dict:
        """The keywords every offset method's config node gives :class:`OffsetPrompt`."""
        return dict(
            tower=node.TOWER,
            num_tokens=node.NUM_TOKENS,
            layers=list(node.LAYERS),
            tokens=node.TOKENS,
            init=node.INIT,
            init_text=node.INIT_TEXT,
            source=node.SOURCE,
            position=node.POSITION,
        )

    def setup(self, backbone):
        tower = method_tower(backbone, self.tower_name, self.method)
        bad = [i for i in self.layers if not 0 <= i < tower.num_layers]
        if bad:
            raise ConfigError(
                f"PROMPT.{self.method.upper()}.LAYERS has {bad}, outside the {tower.name} "
                f"tower's layers 0..{tower.num_layers - 1}."
            )
        if self.prompt is not None:
            self.prompt.setup(backbone)
        self.offsets = nn.ModuleDict({str(i): self.build_offsets(tower.width) for i in self.layers})

    def build_offsets(self, width: int) -> nn.Module:
        raise NotImplementedError

    def before_layer(self, tower, i, seq, ctx):
        if tower != self.tower_name:
            return seq
        if str(i) in self.offsets:
            seq = seq.with_x(self.offsets[str(i)](seq.x, offset_token_mask(seq, self.tokens)))
        if self.prompt is not None:
            seq = self.prompt.before_layer(tower, i, seq, ctx)
        return seq

    def param_groups(self) -> Dict[str, List[str]]:
        return {"offsets": [f"offsets.{n}" for n, _ in self.offsets.named_parameters()]}

    def no_weight_decay(self) -> List[str]:
        return [f"prompt.{n}" for n in self.prompt.no_weight_decay()] if self.prompt is not None else []


class DePT(OffsetPrompt):
    """DePT (Shi & Lipani 2024): a short prompt and position offsets ``s A B`` added to the
    content tokens' embeddings. Keyword defaults are PROMPT.DEPT's; ``prompt``: the keywords of
    :class:`OffsetPrompt` (layers, tokens, init, init_text, tower, source, position)."""

    def __init__(
        self,
        cfg=None,
        *,
        num_tokens: int = 40,
        rank: int = 45,
        max_len: int = 256,
        alpha: float = 8.0,
        scaling: str = "alpha_sqrt_rank",
        **prompt,
    ):
        super().__init__(cfg, method="dept", num_tokens=num_tokens, **prompt)
        self.rank, self.max_len = rank, max_len
        self.scale = dept_scale(scaling, alpha, rank)  # checks SCALING before anything is built

    @classmethod
    def from_config(cls, cfg) -> "DePT":
        c = cfg.PROMPT.DEPT
        return cls(cfg, rank=c.RANK, max_len=c.MAX_LEN, alpha=c.ALPHA, scaling=c.SCALING, **cls.prompt_kwargs(c))

    def build_offsets(self, width):
        return PositionOffsets(self.max_len, self.rank, width, scale=self.scale)


class ADePT(OffsetPrompt):
    """ADePT (Tang et al. 2025): a short prompt and token-shared offsets from a small MLP of each
    token's embedding. Keyword defaults are PROMPT.ADEPT's; ``prompt``: the keywords of
    :class:`OffsetPrompt` (layers, tokens, init, init_text, tower, source, position)."""

    def __init__(
        self,
        cfg=None,
        *,
        num_tokens: int = 60,
        bottleneck: int = 19,
        dropout: float = 0.1,
        down_init: str = "adept",
        **prompt,
    ):
        super().__init__(cfg, method="adept", num_tokens=num_tokens, **prompt)
        self.bottleneck, self.offset_dropout, self.down_init = bottleneck, dropout, down_init

    @classmethod
    def from_config(cls, cfg) -> "ADePT":
        c = cfg.PROMPT.ADEPT
        return cls(cfg, bottleneck=c.BOTTLENECK, dropout=c.DROPOUT, down_init=c.DOWN_INIT, **cls.prompt_kwargs(c))

    def build_offsets(self, width):
        return TokenSharedOffsets(width, self.bottleneck, dropout=self.offset_dropout, down_init=self.down_init)


@PROMPTS.register("dept")
def build_dept(cfg) -> DePT:
    return DePT.from_config(cfg)


@PROMPTS.register("adept")
def build_adept(cfg) -> ADePT:
    return ADePT.from_config(cfg)
