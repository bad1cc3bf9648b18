"""Where prompt tokens come from.

Every source returns ``(1 or B, length, width)`` tokens from ``forward(ctx, tower)``. The plain
``param`` source is a learned matrix; other sources (SuperPos, Residual, MaPLe coupling, the
dynamic prompt pool) are registered beside it and chosen by a method's ``SOURCE`` key, which is
what lets any deep or shallow prompt in any tower take its tokens from any of them.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import PROMPT_SOURCES
from .base import PromptContext, TokenSource

#: initialisations a source understands: normal (std 0.02), xavier (VPT's uniform bound from the
#: patch size), vocab (embeddings of the first vocabulary tokens, Lester et al.), sampled_vocab
#: (random vocabulary tokens), text (the embeddings of a phrase such as "a photo of a", exactly as
#: many tokens as the prompt), text_repeat (the phrase's token ids *with* the tokenizer's special
#: tokens, e.g. T5's </s>, repeated and cut to the prompt length: HF peft's TEXT init, which DePT
#: and ADePT use)
INITS = ("normal", "xavier", "vocab", "sampled_vocab", "text", "text_repeat", "zeros")

#: patch size assumed by the xavier init on a tower that exposes none (a text tower): VPT's ViT-B/16
DEFAULT_PATCH = (16, 16)

PatchSize = Union[int, Tuple[int, int], None]


def xavier_bound(width: int, patch_size: PatchSize = None) -> float:
    """VPT's prompt init bound ``sqrt(6 / (3 * ph * pw + width))``: xavier-uniform over the fan-in
    (3 colour channels x the patch) and fan-out (width) of the patch projection, from the tower's
    real patch size (``None``: :data:`DEFAULT_PATCH`)."""
    if patch_size is None:
        patch_size = DEFAULT_PATCH
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    return math.sqrt(6.0 / (3 * ph * pw + width))


def initial_tokens(
    length: int,
    width: int,
    tower=None,
    init: str = "normal",
    init_text: str = "",
    patch_size: PatchSize = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """A (length, width) tensor of initial prompt tokens."""
    if init == "normal":
        return torch.randn(length, width, generator=generator) * 0.02
    if init == "zeros":
        return torch.zeros(length, width)
    if init == "xavier":
        bound = xavier_bound(width, patch_size)
        return (torch.rand(length, width, generator=generator) * 2 - 1) * bound
    if init in ("vocab", "sampled_vocab", "text", "text_repeat"):
        emb = tower.input_embeddings() if tower is not None else None
        if emb is None:
            raise ConfigError(
                f"Prompt init '{init}' needs a text tower with a vocabulary; "
                f"the '{getattr(tower, 'name', '?')}' tower has none. Use normal or xavier."
            )
        weight = emb.weight.detach()
        if init == "vocab":
            ids = torch.arange(length) % weight.shape[0]
        elif init == "sampled_vocab":
            ids = torch.randint(0, min(weight.shape[0], 5000), (length,), generator=generator)
        elif init == "text_repeat":
            if not init_text:
                raise ConfigError(
                    "Prompt init 'text_repeat' needs INIT_TEXT, e.g. 'Classify this text is postive or not:'."
                )
            ids = repeated_phrase_ids(tower, init_text, length)
        else:
            if not init_text:
                raise ConfigError("Prompt init 'text' needs INIT_TEXT, e.g. 'a photo of a'.")
            ids = phrase_token_ids(tower, init_text)
            if len(ids) != length:
                raise ConfigError(
                    f"INIT_TEXT '{init_text}' has {len(ids)} tokens but the prompt has "
                    f"{length}; set the number of prompt tokens to {len(ids)} or change the phrase."
                )
            ids = torch.as_tensor(ids)
        return weight[ids].clone().float()
    raise ConfigError(f"Unknown prompt init '{init}'; choose one of {', '.join(INITS)}.")


def repeated_phrase_ids(tower, text: str, length: int) -> torch.Tensor:
    """``length`` token ids: the phrase as the tokenizer encodes it, special tokens included,
    repeated and cut to ``length`` (HF peft's ``PromptTuningInit.TEXT``)."""
    ids, mask = tower.tokenize([text])
    unit = ids[0][mask[0].bool()].cpu()
    if unit.numel() == 0:
        raise ConfigError(f"INIT_TEXT '{text}' tokenizes to no tokens; give a phrase.")
    return unit.repeat(math.ceil(length / unit.numel()))[:length]


def phrase_token_ids(tower, text: str):
    """Token ids of a phrase without the tower's special tokens (SOT/EOT, [CLS]/[SEP], </s>)."""
    ids, mask = tower.tokenize([text])
    seq_ids = ids[0][mask[0].bool()].tolist()
    special = set(getattr(tower, "special_token_ids", lambda: set())())
    return [i for i in seq_ids if i not in special]


@PROMPT_SOURCES.register("param")
class ParamSource(TokenSource):
    """A learned (length, width) matrix: the classic soft prompt."""

    def __init__(
        self,
        *,
        length: int,
        width: int,
        tower=None,
        init: str = "normal",
        init_text: str = "",
        patch_size: PatchSize = None,
    ):
        super().__init__()
        self.length, self.width = length, width
        self.tokens = nn.Parameter(initial_tokens(length, width, tower, init, init_text, patch_size))

    def forward(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        return self.tokens[None]


def build_source(name: str, cfg, *, length: int, width: int, tower=None, **init) -> TokenSource:
    """Source ``name`` with the settings of ``cfg`` (None: the defaults)."""
    return PROMPT_SOURCES.get(name).from_config(cfg, length=length, width=width, tower=tower, **init)
