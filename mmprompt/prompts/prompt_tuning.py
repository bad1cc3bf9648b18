"""Prompt tuning (Lester et al. 2021): ``l`` soft tokens prepended to a tower's input embeddings.

Initialised from the first vocabulary tokens, sampled vocabulary tokens or a phrase. With
``SOURCE: superpos`` it is SuperPos-Prompt, with ``SOURCE: residual`` Residual Prompt Tuning.
"""

from __future__ import annotations

from ..registry import PROMPTS
from .layer_prompts import LayerPrompts


@PROMPTS.register("prompt_tuning")
def build_prompt_tuning(cfg) -> LayerPrompts:
    c = cfg.PROMPT.PROMPT_TUNING
    return LayerPrompts(
        cfg,
        method="prompt_tuning",
        tower=c.TOWER,
        length=c.NUM_TOKENS,
        depth=1,
        source=c.SOURCE,
        position=c.POSITION,
        init=c.INIT,
        init_text=c.INIT_TEXT,
    )
