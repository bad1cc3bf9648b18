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


#: shared config nodes a method may override for itself under PROMPT.PER_METHOD.<METHOD>
PER_METHOD_NODES = ("DYNAMIC", "SUPERPOS", "RESIDUAL")


def method_cfg(cfg, name: str):
    """``cfg`` as method ``name`` reads it: PROMPT.PER_METHOD.<NAME>'s DYNAMIC / SUPERPOS /
    RESIDUAL keys replace the shared ones (``cfg`` itself when the method overrides nothing)."""
    per_method = cfg.PROMPT.PER_METHOD
    unknown = sorted(set(per_method) - {n.upper() for n in cfg.PROMPT.METHODS})
    if unknown:
        raise ConfigError(
            f"PROMPT.PER_METHOD names {', '.join(unknown)}, which PROMPT.METHODS "
            f"({list(cfg.PROMPT.METHODS)}) does not list."
        )
    overrides = per_method.get(name.upper())
    if not overrides:
        return cfg
    out = cfg.clone()
    out.defrost()
    for node, values in overrides.items():
        if node not in PER_METHOD_NODES or not isinstance(values, dict):
            raise ConfigError(
                f"PROMPT.PER_METHOD.{name.upper()}.{node}: a method can override only the nodes "
                f"{', '.join(PER_METHOD_NODES)} (each a mapping of their keys)."
            )
        for key, value in values.items():
            if key not in out.PROMPT[node]:
                raise ConfigError(
                    f"PROMPT.PER_METHOD.{name.upper()}.{node}.{key}: PROMPT.{node} has no key {key} "
                    f"(it has {', '.join(sorted(out.PROMPT[node]))})."
                )
            default = out.PROMPT[node][key]
            if (
                isinstance(default, bool) != isinstance(value, bool)
                or (isinstance(default, (int, float)) and not isinstance(value, (int, float)))
                or (isinstance(default, str) and not isinstance(value, str))
            ):
                raise ConfigError(
                    f"PROMPT.PER_METHOD.{name.upper()}.{node}.{key} must be a "
                    f"{type(default).__name__} like PROMPT.{node}.{key}; got {value!r}."
                )
            out.PROMPT[node][key] = float(value) if isinstance(default, float) else value
    out.freeze()
    return out


def build_prompts(cfg, backbone) -> PromptStack:
    """The prompt modules named in ``PROMPT.METHODS``, in order, sized for ``backbone``; each
    built from :func:`method_cfg` (its own DYNAMIC / SUPERPOS / RESIDUAL values)."""
    names = list(cfg.PROMPT.METHODS)
    if len(set(names)) != len(names):
        raise ConfigError(f"PROMPT.METHODS lists a method twice: {names}")
    return PromptStack([PROMPTS.get(name)(method_cfg(cfg, name)) for name in names]).setup(backbone)


def build_model(cfg, classnames: Optional[Sequence[str]] = None, backbone=None):
    """The task model ``MODEL.NAME`` (backbone + prompts + head) for these class names.

    ``backbone``: a ready, frozen backbone adapter to use instead of building one from
    ``MODEL.BACKBONE`` (how :func:`mmprompt.wrap` prompts a model the user already has)."""
    builder = MODELS.get(cfg.MODEL.NAME)
    names = list(classnames) if classnames is not None else None
    model = builder(cfg, names) if backbone is None else builder(cfg, names, backbone=backbone)
    from .models.base import PromptModel

    if isinstance(model, PromptModel):  # what save_pretrained writes next to the weights
        model.cfg, model.classnames = cfg, names
    return model
