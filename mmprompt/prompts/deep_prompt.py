"""P-tuning v2 / deep prompts (Liu et al. 2021): own prompt tokens before every layer.

P-tuning v2 feeds per-layer prefixes as attention keys/values (``past_key_values``); T5's
encoder ignores those, so here every layer's prompts are hidden states placed in the sequence
through the token hook, replacing the previous layer's prompt outputs (the same form VPT-deep
uses). That works on every tower: T5's encoder, BERT-family encoders, ViTs. The key/value form
on BERT is not implemented.

``REPARAM`` produces all layers' prompts from one prompt by an MLP
``Linear(d, h) -> tanh -> Linear(h, depth * d)`` (P-tuning v2's prefix projection); the MLP's
input prompt still comes from ``SOURCE``.
"""
from __future__ import annotations

from torch import nn

from ..registry import PROMPTS
from .layer_prompts import LayerPrompts


class DeepPrompts(LayerPrompts):
    def __init__(self, cfg, **kwargs):
        super().__init__(cfg, **kwargs)
        self.reparam_hidden = cfg.PROMPT.PTUNING_V2.REPARAM_HIDDEN if cfg.PROMPT.PTUNING_V2.REPARAM else 0
        self.projection = None

    def setup(self, backbone):
        super().setup(backbone)
        if self.reparam_hidden:
            width = backbone.tower(self.tower_name).width
            self.projection = nn.Sequential(nn.Linear(width, self.reparam_hidden), nn.Tanh(),
                                            nn.Linear(self.reparam_hidden, self.depth * width))

    def num_sources(self):
        return 1 if self.reparam_hidden else self.depth

    def layer_tokens(self, i, ctx):
        if not self.reparam_hidden:
            return super().layer_tokens(i, ctx)
        key = f"ptuning_v2/{self.owner_id}"
        if key not in ctx.cache:  # the MLP runs once per forward pass for all layers
            ctx.cache[key] = self.projection(self.sources[0](ctx, self.tower_name))
        width = ctx.cache[key].shape[-1] // self.depth
        return ctx.cache[key][..., i * width:(i + 1) * width]


@PROMPTS.register("ptuning_v2")
def build_ptuning_v2(cfg) -> DeepPrompts:
    c = cfg.PROMPT.PTUNING_V2
    return DeepPrompts(cfg, method="ptuning_v2", tower=c.TOWER, length=c.NUM_TOKENS, depth=c.DEPTH,
                       source=c.SOURCE, position=c.POSITION, init=c.INIT, dropout=c.DROPOUT,
                       depth_key="PROMPT.PTUNING_V2.DEPTH")
