"""CoOp (Zhou et al. 2022): learned context tokens in CLIP's text tower.

The text tower's batch is the list of class prompts, so a unified context is one ``(1, l, D)``
tensor shared by the classes and a class-specific context (CSC) is ``(C, l, D)``, one row per
class. The class token position maps to a placement: ``end`` = ``[SOT, ctx, class, EOT]``
(prefix), ``middle`` = ``[SOT, ctx[:l//2], class, ctx[l//2:], EOT]``, ``front`` =
``[SOT, class, ctx, EOT]`` (suffix: after the class text, before EOT; the class text is
``MODEL.CLIP.PROMPT_TEMPLATE`` = "name.", so the context follows the full stop, where CoOp puts it
between the name and the full stop).
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

CLASS_TOKEN_PLACEMENTS = {"end": "prefix", "middle": "middle", "front": "suffix"}


def require_text_tower(backbone, method: str):
    if "text" not in backbone.tower_names:
        raise ConfigError(f"Prompt method '{method}' learns text context for CLIP-style class prompts and "
                          f"needs a 'text' tower, but the {type(backbone).__name__} backbone has only "
                          f"{backbone.tower_names}. Use an open_clip backbone, or a method that works on "
                          f"any tower (vpt, prompt_tuning, deep_prompt, dept, adept).")
    return backbone.tower("text")


def split_context_phrase(tower, phrase: str, n_ctx: int, key: str) -> Tuple[str, List[int]]:
    """Split an init phrase into the words whose tokens initialise ``n_ctx`` learned tokens and the
    token ids of the words after them, which stay as fixed words after the context (MaPLe's code
    learns the first ``n_ctx`` tokens of "a photo of a" and keeps "of a" as text)."""
    ids = phrase_token_ids(tower, phrase)
    if n_ctx > len(ids):
        raise ConfigError(f"{key} '{phrase}' has {len(ids)} tokens but {n_ctx} context tokens are learned; "
                          f"use a longer phrase or set the number of context tokens to at most {len(ids)}.")
    words = phrase.split()
    for k in range(1, len(words) + 1):
        head = " ".join(words[:k])
        if phrase_token_ids(tower, head) == ids[:n_ctx]:
            return head, ids[n_ctx:]
    raise ConfigError(f"The first {n_ctx} tokens of {key} '{phrase}' split a word; choose a number of "
                      f"context tokens that ends on a word boundary.")


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
    requires_towers = ("text",)

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        c = cfg.PROMPT.COOP
        if c.CLASS_TOKEN_POSITION not in CLASS_TOKEN_PLACEMENTS:
            raise ConfigError(f"PROMPT.COOP.CLASS_TOKEN_POSITION '{c.CLASS_TOKEN_POSITION}' is not one of "
                              f"{', '.join(CLASS_TOKEN_PLACEMENTS)}.")
        self.n_ctx = c.N_CTX
        self.csc = c.CSC
        self.num_classes = cfg.MODEL.HEAD.NUM_CLASSES if c.CSC else 1
        if c.CSC and self.num_classes <= 0:
            raise ConfigError("PROMPT.COOP.CSC needs the number of classes: set MODEL.HEAD.NUM_CLASSES "
                              "(the CLIP model builder sets it from the class names).")
        self.owner_id = new_owner_id()
        self.source = None
        self.placement = None
        self.fixed_words = None

    def setup(self, backbone):
        c = self.cfg.PROMPT.COOP
        tower = require_text_tower(backbone, "coop")
        init, init_text, rest = "normal", "", []
        if c.CTX_INIT:
            init = "text"
            init_text, rest = split_context_phrase(tower, c.CTX_INIT, self.n_ctx, "PROMPT.COOP.CTX_INIT")
        # CSC: one source of C*l tokens, viewed as (C, l, D), so any source can be class-specific
        self.source = build_source(c.SOURCE, self.cfg, length=self.n_ctx * self.num_classes, width=tower.width,
                                   tower=tower, init=init, init_text=" ".join([init_text] * self.num_classes))
        self.placement = build_placement(CLASS_TOKEN_PLACEMENTS[c.CLASS_TOKEN_POSITION], self.cfg,
                                         length=self.n_ctx, width=tower.width)
        self.fixed_words = FixedWords(tower, rest) if rest else None

    def context(self, ctx, batch_size: int) -> torch.Tensor:
        tokens = self.source(ctx, "text")
        if not self.csc:
            return tokens
        if batch_size != self.num_classes:
            raise MMPromptError(f"CoOp's class-specific context has {self.num_classes} classes but the text "
                                f"tower got {batch_size} class prompts; CSC contexts only fit the classes "
                                f"they were trained on (use CSC False to evaluate on other classes).")
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
    return CoOp(cfg)
