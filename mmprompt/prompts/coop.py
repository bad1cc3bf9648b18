"""CoOp (Zhou et al. 2022): learned context tokens in CLIP's text tower.

The text tower's batch is the list of class prompts, so a unified context is one ``(1, l, D)``
tensor shared by the classes and a class-specific context (CSC) is ``(C, l, D)``, one row per
class. The class prompt is ``MODEL.CLIP.PROMPT_TEMPLATE`` = "name.", and the class token position
places the context around the class *name*, keeping the full stop after it, as CoOp's
``PromptLearner`` builds its prompts (``trainers/coop.py``):

* ``end``    = ``[SOT, ctx, name, ., EOT]``
* ``middle`` = ``[SOT, ctx[:l//2], name, ctx[l//2:], ., EOT]``
* ``front``  = ``[SOT, name, ctx, ., EOT]``

The name's end is the ``class_end`` anchor the CLIP classifier sets (see
:mod:`mmprompt.prompts.placement`).

Context rules (CoOp's code): with ``CTX_INIT`` the context has one token per word of the phrase
(``N_CTX`` is ignored, so the ``ctxv1`` recipes that keep ``N_CTX 16`` learn 4 tokens from
"a photo of a"), initialised from the phrase's token embeddings, and it is generic even when
``CSC`` is set; without it, ``N_CTX`` tokens from normal(0, 0.02), class-specific with ``CSC``.
Underscores in the phrase are spaces. CoOp keeps its CLIP in fp16 unless ``PREC`` is fp32; the
context here is computed in the backbone's dtype, which matches CoOp's fp32 computation.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..errors import ConfigError, MMPromptError
from ..registry import PROMPTS
from ..tokens import new_owner_id
from .base import PromptModule
from .placement import build_placement
from .sources import build_source, phrase_token_ids

CLASS_TOKEN_PLACEMENTS = {"end": "prefix", "middle": "class_middle", "front": "after_class"}


def require_text_tower(backbone, method: str):
    if "text" not in backbone.tower_names:
        raise ConfigError(
            f"Prompt method '{method}' learns text context for CLIP-style class prompts and "
            f"needs a 'text' tower, but the {type(backbone).__name__} backbone has only "
            f"{backbone.tower_names}. Use an open_clip backbone, or a method that works on "
            f"any tower (vpt, prompt_tuning, deep_prompt, dept, adept)."
        )
    return backbone.tower("text")


def split_context_phrase(tower, phrase: str, n_ctx: int, key: str) -> Tuple[str, List[int]]:
    """Split an init phrase into the words whose tokens initialise ``n_ctx`` learned tokens and the
    token ids of the tokens after them, which stay as fixed words after the context (the authors'
    code learns the first ``n_ctx`` tokens of the phrase and keeps the rest as text: MaPLe's "a photo"
    learned, "of a" kept)."""
    ids = phrase_token_ids(tower, phrase)
    if n_ctx > len(ids):
        raise ConfigError(
            f"{key} '{phrase}' has {len(ids)} tokens but {n_ctx} context tokens are learned; "
            f"use a longer phrase or set the number of context tokens to at most {len(ids)}."
        )
    words = phrase.split()
    for k in range(1, len(words) + 1):
        head = " ".join(words[:k])
        if phrase_token_ids(tower, head) == ids[:n_ctx]:
            return head, ids[n_ctx:]
    raise ConfigError(
        f"The first {n_ctx} tokens of {key} '{phrase}' split a word; choose a number of "
        f"context tokens that ends on a word boundary."
    )


def coop_context_length(phrase: str, n_ctx: int) -> int:
    """CoOp's number of context tokens: the phrase's word count (split on single spaces, as its
    code does) when there is an init phrase, else ``N_CTX``."""
    return len(phrase.split(" ")) if phrase else n_ctx


class FixedWords(nn.Module):
    """Words kept as text after a learned context (not trained). Their embeddings are read from
    the tower's vocabulary at every pass, so they follow the backbone weights that get loaded."""

    def __init__(self, tower, ids: List[int]):
        super().__init__()
        self.register_buffer("ids", torch.as_tensor(ids, dtype=torch.long), persistent=False)
        self._vocabulary = [tower.input_embeddings()]  # a list: the backbone owns these weights
        self.owner_id = new_owner_id()

    def place_after_context(self, seq):
        # inserting at "start" after a prefix context puts the words between context and class
        if seq.has(self.owner_id):
            return seq
        return seq.insert(self._vocabulary[0](self.ids)[None], "start", self.owner_id)


class CoOp(PromptModule):
    def __init__(
        self,
        *,
        n_ctx: int = 16,
        ctx_init: str = "",
        csc: bool = False,
        num_classes: int = 0,
        class_token_position: str = "end",
        source: str = "param",
        settings=None,
    ):
        """Keywords are the PROMPT.COOP keys in lower case; ``num_classes`` (MODEL.HEAD.NUM_CLASSES)
        sizes a class-specific context; ``settings``: the config its source and placement read
        (None = defaults)."""
        super().__init__()
        self.settings = settings
        if class_token_position not in CLASS_TOKEN_PLACEMENTS:
            raise ConfigError(
                f"PROMPT.COOP.CLASS_TOKEN_POSITION '{class_token_position}' is not one of "
                f"{', '.join(CLASS_TOKEN_PLACEMENTS)}."
            )
        self.class_token_position = class_token_position
        self.source_name = source
        self.ctx_init = ctx_init
        self.init_phrase = ctx_init.replace("_", " ")
        self.n_ctx = coop_context_length(self.init_phrase, n_ctx)
        if self.n_ctx < 1:
            raise ConfigError(f"PROMPT.COOP.N_CTX = {n_ctx}: CoOp learns at least one context token.")
        self.csc = csc and not self.init_phrase  # CoOp's phrase-initialised context is always generic
        self.num_classes = num_classes if self.csc else 1
        if self.csc and self.num_classes <= 0:
            raise ConfigError(
                "PROMPT.COOP.CSC needs the number of classes: set MODEL.HEAD.NUM_CLASSES "
                "(the CLIP model builder sets it from the class names)."
            )
        self.owner_id = new_owner_id()
        self.source = None
        self.placement = None
        self.fixed_words = None

    @classmethod
    def from_config(cls, cfg) -> "CoOp":
        c = cfg.PROMPT.COOP
        return cls(
            n_ctx=c.N_CTX,
            ctx_init=c.CTX_INIT,
            csc=c.CSC,
            num_classes=cfg.MODEL.HEAD.NUM_CLASSES,
            class_token_position=c.CLASS_TOKEN_POSITION,
            source=c.SOURCE,
            settings=cfg,
        )

    def setup(self, backbone):
        tower = require_text_tower(backbone, "coop")
        init, init_text, rest = "normal", "", []
        if self.init_phrase:
            init = "text"
            init_text, rest = split_context_phrase(tower, self.init_phrase, self.n_ctx, "PROMPT.COOP.CTX_INIT")
        if rest and self.class_token_position != "end":
            raise ConfigError(
                f"PROMPT.COOP.CTX_INIT '{self.ctx_init}' has more tokens than words, so some of its tokens stay as "
                f"fixed words after the context; CoOp's code then cuts the class name wrongly for "
                f"CLASS_TOKEN_POSITION {self.class_token_position}. Use a phrase of one token per word or "
                f"CLASS_TOKEN_POSITION end."
            )
        # CSC: one source of C*l tokens, viewed as (C, l, D), so any source can be class-specific
        self.source = build_source(
            self.source_name,
            self.settings,
            length=self.n_ctx * self.num_classes,
            width=tower.width,
            tower=tower,
            init=init,
            init_text=init_text,
        )
        self.placement = build_placement(
            CLASS_TOKEN_PLACEMENTS[self.class_token_position], self.settings, length=self.n_ctx, width=tower.width
        )
        self.fixed_words = FixedWords(tower, rest) if rest else None

    def context(self, ctx, batch_size: int) -> torch.Tensor:
        tokens = self.source(ctx, "text")
        if not self.csc:
            return tokens
        if batch_size != self.num_classes:
            raise MMPromptError(
                f"CoOp's class-specific context has {self.num_classes} classes but the text "
                f"tower got {batch_size} class prompts; CSC contexts only fit the classes "
                f"they were trained on (use CSC False to evaluate on other classes)."
            )
        return tokens.reshape(self.num_classes, self.n_ctx, -1)

    def before_layer(self, tower, i, seq, ctx):
        if tower != "text" or i != 0:
            return seq
        seq = self.placement.place(seq, self.context(ctx, seq.batch_size), self.owner_id, ctx)
        return self.fixed_words.place_after_context(seq) if self.fixed_words is not None else seq

    def no_weight_decay(self):
        return [f"source.{n}" for n in self.source.no_weight_decay()] if self.source is not None else []


@PROMPTS.register("coop")
def build_coop(cfg) -> CoOp:
    return CoOp.from_config(cfg)
