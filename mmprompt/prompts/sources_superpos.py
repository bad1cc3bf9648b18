"""Reparameterised prompt sources: SuperPos-Prompt and Residual Prompt Tuning.

Both are token sources, so any prompt (shallow or deep, any tower, any layer) can take its
tokens from them by naming them in its method's ``SOURCE`` key.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

from ..registry import PROMPT_SOURCES
from .base import PromptContext, TokenSource, prompt_node
from .sources import initial_tokens


@PROMPT_SOURCES.register("superpos")
class SuperPosSource(TokenSource):
    """SuperPos-Prompt (SadraeiJavaeri et al. 2024): ``p_i = E_i p'_i``.

    ``E_i`` (d x m) starts from the same m distinct vocabulary embeddings for every token i and
    is tuned separately per token; ``E`` is excluded from weight decay (the paper: decay shrinks
    E and loses information). The paper does not state how ``p'_i`` starts; we draw it from
    N(0, 1/m), so each initial prompt token has about the norm of one vocabulary embedding.
    On a tower without a vocabulary (a ViT) the m columns start from the method's own init
    (e.g. VPT's xavier), since there are no token embeddings to sample.
    """

    def __init__(
        self,
        *,
        length: int,
        width: int,
        tower=None,
        init: str = "normal",
        init_text: str = "",
        patch_size: Optional[int] = None,
        m: int = 128,
        softmax: bool = False,
    ):
        """``m`` and ``softmax`` are PROMPT.SUPERPOS.M and .SOFTMAX."""
        super().__init__()
        self.length, self.width = length, width
        self.softmax = softmax
        vocab = tower.input_embeddings() if tower is not None else None
        if vocab is not None:
            ids = torch.randperm(vocab.weight.shape[0])[:m]
            columns = vocab.weight.detach()[ids].float()
        else:
            columns = initial_tokens(
                m, width, tower, "normal" if init in ("vocab", "sampled_vocab", "text") else init, patch_size=patch_size
            )
        m = columns.shape[0]  # a vocabulary smaller than M gives all its tokens
        self.E = nn.Parameter(columns.t().contiguous()[None].repeat(length, 1, 1))  # (length, d, m)
        self.weights = nn.Parameter(torch.randn(length, m) / math.sqrt(m))  # p'_i, (length, m)

    @classmethod
    def from_config(cls, cfg, **sizes) -> "SuperPosSource":
        node = prompt_node(cfg, "SUPERPOS")
        return cls(**sizes, m=node.M, softmax=node.SOFTMAX)

    def forward(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        w = self.weights.softmax(-1) if self.softmax else self.weights
        return torch.einsum("ldm,lm->ld", self.E, w)[None]

    def no_weight_decay(self) -> List[str]:
        return ["E"]


@PROMPT_SOURCES.register("residual")
class ResidualSource(TokenSource):
    """Residual Prompt Tuning (Razdaibiedina et al. 2023): ``P' = LN(W_up ReLU(W_down P)) + P``.

    A bottleneck MLP shared by the prompt tokens, followed by LayerNorm, with a residual link to
    the raw prompt; the raw prompt starts from the method's init (e.g. vocabulary tokens).
    """

    def __init__(
        self,
        *,
        length: int,
        width: int,
        tower=None,
        init: str = "normal",
        init_text: str = "",
        patch_size: Optional[int] = None,
        hidden: int = 400,
    ):
        """``hidden`` is PROMPT.RESIDUAL.HIDDEN."""
        super().__init__()
        self.length, self.width = length, width
        self.tokens = nn.Parameter(initial_tokens(length, width, tower, init, init_text, patch_size))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width), nn.LayerNorm(width))

    @classmethod
    def from_config(cls, cfg, **sizes) -> "ResidualSource":
        return cls(**sizes, hidden=prompt_node(cfg, "RESIDUAL").HIDDEN)

    def forward(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        return (self.mlp(self.tokens) + self.tokens)[None]
