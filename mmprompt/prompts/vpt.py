"""Visual Prompt Tuning (Jia et al. 2022): ``[CLS, P, patches]``, shallow or deep.

Shallow inserts ``P`` before layer 0; deep gives every layer below ``DEPTH`` its own ``P`` that
replaces the previous layer's prompt outputs, so the sequence length never grows. Tokens come from
``PROMPT.VPT.SOURCE`` (one source per layer) and enter through ``PROMPT.VPT.POSITION``, so a
VPT-deep prompt can be a SuperPos superposition or sit at a learned position. Works on any tower.
"""

from __future__ import annotations

from ..registry import PROMPTS
from .layer_prompts import LayerPrompts


@PROMPTS.register("vpt")
def build_vpt(cfg) -> LayerPrompts:
    c = cfg.PROMPT.VPT
    return LayerPrompts(
        cfg,
        method="vpt",
        tower=c.TOWER,
        length=c.NUM_TOKENS,
        depth=c.DEPTH if c.DEEP else 1,
        source=c.SOURCE,
        position=c.POSITION,
        init=c.INIT,
        init_text=c.INIT_TEXT,
        dropout=c.DROPOUT,
        depth_key="PROMPT.VPT.DEPTH",
    )
