"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted by a meta-net of the image.

For an image with L2-normalised CLIP image embedding ``v`` (the same vector the logits use),
every class prompt gets the context ``ctx + meta_net(v)``: one learned ``(n_ctx, D)`` context
plus a ``(D,)`` shift broadcast over the context tokens, ``meta_net = Linear(E, E // 16) -> ReLU
-> Linear(E // 16, D)`` (``E`` the image embedding width, ``D`` the text tower width). The
layout is CoOp's class token at the end, ``[SOT, ctx, name, ., EOT]``. So the text tower runs on
``B x C`` prompts (one set of class prompts per image) and its features are never cached.

Contract with the task model (:class:`~mmprompt.models.clip_classifier.CLIPPromptClassifier`
honours it for every module with ``image_conditioned = True``): before the text tower runs, the
model puts the ``(B, E)`` L2-normalised image embeddings of the batch into
``ctx.features[IMAGE_FEATURES]`` and hands the text tower ``B x C`` class prompts, image-major
(the C prompts of image 0, then those of image 1 ...).

What the authors' code computes, parameter by parameter (``ctx``, ``meta_net.linear1``,
``meta_net.linear2``, named as theirs, so their prompt learners' weights map one to one):
``N_CTX`` is the word count of ``CTX_INIT`` when one is given (their rule; the configured
``N_CTX`` is then not used) and the context starts as the embeddings of the phrase's first
``N_CTX`` tokens; without a phrase it is ``normal(0, 0.02)``. Their ``PREC fp16`` casts of the
meta-net are an artifact of running CLIP in half precision: the module computes in the dtype
of its parameters (fp32), what their ``PREC fp32`` computes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from ..errors import ConfigError, MMPromptError
from ..registry import PROMPTS
from ..tokens import new_owner_id
from .base import PromptModule
from .coop import FixedWords, require_text_tower
from .placement import Prefix
from .sources import phrase_token_ids

#: key of ``PromptContext.features`` holding the (B, E) L2-normalised image embeddings that
#: image-conditioned text prompts read (set by the CLIP task model before the text pass)
IMAGE_FEATURES = "image_features"


def context_from_phrase(tower, phrase: str):
    """CoCoOp's rule: ``(n_ctx, ids of the first n_ctx tokens, ids of the phrase's other tokens)``
    with ``n_ctx`` the number of space-separated words (underscores read as spaces)."""
    phrase = phrase.replace("_", " ")
    n_ctx = len(phrase.split(" "))
    ids = phrase_token_ids(tower, phrase)
    if n_ctx > len(ids):
        raise ConfigError(
            f"PROMPT.COCOOP.CTX_INIT '{phrase}' has {n_ctx} space-separated words but only "
            f"{len(ids)} tokens (CoCoOp learns one token per word): remove repeated or "
            f"trailing spaces."
        )
    return n_ctx, ids[:n_ctx], ids[n_ctx:]


class CoCoOp(PromptModule):
    """Conditional context for CLIP's text tower; sized from the backbone in :meth:`setup`."""

    image_conditioned = True  # the CLIP task model hands it the image embeddings (module docstring)

    def __init__(self, n_ctx: int = 4, ctx_init: str = "a photo of a", meta_net_ratio: int = 16):
        super().__init__()
        if not ctx_init and n_ctx < 1:
            raise ConfigError(f"PROMPT.COCOOP.N_CTX must be >= 1 without CTX_INIT, got {n_ctx}.")
        if meta_net_ratio < 1:
            raise ConfigError(f"PROMPT.COCOOP.META_NET_RATIO must be >= 1, got {meta_net_ratio}.")
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.meta_net_ratio = meta_net_ratio
        self.owner_id = new_owner_id()
        self.placement = Prefix()  # [SOT, ctx, (rest of the phrase), name, ., EOT]
        self.ctx: Optional[nn.Parameter] = None
        self.meta_net: Optional[nn.Sequential] = None
        self.fixed_words: Optional[FixedWords] = None

    @classmethod
    def from_config(cls, cfg) -> "CoCoOp":
        c = cfg.PROMPT.COCOOP
        return cls(n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, meta_net_ratio=c.META_NET_RATIO)

    def setup(self, backbone) -> None:
        text = require_text_tower(backbone, "cocoop")
        if "vision" not in backbone.tower_names:
            raise ConfigError(
                "Prompt method 'cocoop' conditions the text context on image embeddings and needs "
                f"a 'vision' tower; the {type(backbone).__name__} backbone has {backbone.tower_names}."
            )
        image_dim = backbone.tower("vision").feature_dim
        hidden = image_dim // self.meta_net_ratio
        if hidden < 1:
            raise ConfigError(
                f"PROMPT.COCOOP.META_NET_RATIO {self.meta_net_ratio} leaves no hidden unit for "
                f"{image_dim}-dimensional image embeddings; use a ratio <= {image_dim}."
            )
        vocabulary = text.input_embeddings()
        if self.ctx_init:
            self.n_ctx, ctx_ids, rest = context_from_phrase(text, self.ctx_init)
            init = vocabulary.weight.detach()[torch.as_tensor(ctx_ids)].clone().float()
            self.fixed_words = FixedWords(text, rest) if rest else None
        else:
            init = torch.randn(self.n_ctx, text.width) * 0.02
        self.ctx = nn.Parameter(init)
        self.meta_net = nn.Sequential(
            OrderedDict(
                [
                    ("linear1", nn.Linear(image_dim, hidden)),
                    ("relu", nn.ReLU()),
                    ("linear2", nn.Linear(hidden, text.width)),
                ]
            )
        )

    def conditioned_context(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, n_ctx, D): the context of each image, ``ctx + meta_net(image embedding)``."""
        shift = self.meta_net(image_features.to(self.ctx.dtype))
        return self.ctx[None] + shift[:, None]

    def before_layer(self, tower, i, seq, ctx):
        if tower != "text" or i != 0:
            return seq
        image_features = ctx.features.get(IMAGE_FEATURES)
        if image_features is None:
            raise MMPromptError(
                "CoCoOp conditions the text context on the image, but no image embeddings were "
                f"handed to the text pass (ctx.features['{IMAGE_FEATURES}']). Use MODEL.NAME "
                "clip_prompt_classifier, which runs the image tower first."
            )
        images = image_features.shape[0]
        if seq.batch_size % images:
            raise MMPromptError(
                f"CoCoOp got {seq.batch_size} text prompts for {images} images; the text pass "
                f"must hold the same class prompts for every image (images x classes)."
            )
        context = self.conditioned_context(image_features).repeat_interleave(seq.batch_size // images, dim=0)
        seq = self.placement.place(seq, context.to(seq.x.dtype), self.owner_id, ctx)
        return self.fixed_words.place_after_context(seq) if self.fixed_words is not None else seq


@PROMPTS.register("cocoop")
def build_cocoop(cfg) -> CoCoOp:
    return CoCoOp.from_config(cfg)


__all__ = ["CoCoOp", "IMAGE_FEATURES", "context_from_phrase"]
