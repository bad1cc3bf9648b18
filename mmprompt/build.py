"""Building backbones, prompt stacks and task models from a config, by registry name."""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import ConfigError
from .prompts.base import PromptStack
from .registry import BACKBONES, MODELS, PROMPTS


def build_backbone(cfg):
    """The configured backbone adapter, frozen unless ``MODEL.BACKBONE.FREEZE`` is False."""
    backbone = BACKBONES.get(cfg.MODEL.BACKBONE.NAME)(cfg)
    if cfg.MODEL.BACKBONE.FREEZE:
        backbone.freeze(dropout_off=cfg.MODEL.BACKBONE.DROPOUT_OFF)
    return backbone


def build_prompts(cfg, backbone) -> PromptStack:
    """The prompt modules named in ``PROMPT.METHODS``, in order, sized for ``backbone``."""
    names = list(cfg.PROMPT.METHODS)
    if len(set(names)) != len(names):
        raise ConfigError(f"PROMPT.METHODS lists a method twice: {names}")
    return PromptStack([PROMPTS.get(name)(cfg) for name in names]).setup(backbone)


def build_model(cfg, classnames: Optional[Sequence[str]] = None):
    """The task model ``MODEL.NAME`` (backbone + prompts + head) for these class names."""
    return MODELS.get(cfg.MODEL.NAME)(cfg, list(classnames) if classnames is not None else None)
