"""Deep prompts as hidden states: own prompt tokens before every layer, in any tower.

Every layer below ``DEPTH`` gets its own ``l`` tokens, placed in the sequence through the token
hook and replacing the previous layer's prompt outputs (the form VPT-deep uses), so they work on
every tower: T5's encoder, BERT-family encoders, ViTs, CLIP's towers, at any placement (prefix,
suffix, learned positions). This was mmprompt's ``ptuning_v2`` before that name went to the
authors' method (:mod:`mmprompt.prompts.prefix`, key/value prefixes). The two differ: a deep
prompt token p enters the layer as a hidden state, so its key and value are the layer's own
projections of it (``k = W_k p + b_k``, ``v = W_v p + b_v``), it is itself updated by the layer
(its output is discarded when the next layer's tokens replace it), and on BERT it takes a
position embedding; P-tuning v2's keys and values are free parameters (2·L·l·d of them, against
L·l·d here) and the input keeps its own positions.

``REPARAM`` produces all layers' prompts from one prompt by an MLP
``Linear(d, h) -> tanh -> Linear(h, depth * d)`` (shaped like P-tuning v2's prefix projection);
the MLP's input prompt still comes from ``SOURCE``.
"""

from __future__ import annotations

from torch import nn

from ..registry import PROMPTS
from .layer_prompts import LayerPrompts


class DeepPrompts(LayerPrompts):
    def __init__(self, cfg, *, reparam_hidden: int = 0, **kwargs):
        super().__init__(cfg, **kwargs)
        self.reparam_hidden = reparam_hidden
        self.projection = None

    def setup(self, backbone):
        super().setup(backbone)
        if self.reparam_hidden:
            width = backbone.tower(self.tower_name).width
            self.projection = nn.Sequential(
                nn.Linear(width, self.reparam_hidden), nn.Tanh(), nn.Linear(self.reparam_hidden, self.depth * width)
            )

    def num_sources(self):
        return 1 if self.reparam_hidden else self.depth

    def layer_tokens(self, i, ctx):
        if not self.reparam_hidden:
            return super().layer_tokens(i, ctx)
        key = f"deep_prompt/{self.owner_id}"
        if key not in ctx.cache:  # the MLP runs once per forward pass for all layers
            ctx.cache[key] = self.projection(self.sources[0](ctx, self.tower_name))
        width = ctx.cache[key].shape[-1] // self.depth
        return ctx.cache[key][..., i * width : (i + 1) * width]


@PROMPTS.register("deep_prompt")
def build_deep_prompt(cfg) -> DeepPrompts:
    c = cfg.PROMPT.DEEP_PROMPT
    return DeepPrompts(
        cfg,
        method="deep_prompt",
        tower=c.TOWER,
        length=c.NUM_TOKENS,
        depth=c.DEPTH,
        source=c.SOURCE,
        position=c.POSITION,
        init=c.INIT,
        dropout=c.DROPOUT,
        reparam_hidden=c.REPARAM_HIDDEN if c.REPARAM else 0,
        depth_key="PROMPT.DEEP_PROMPT.DEPTH",
    )
