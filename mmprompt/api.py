"""The Python API: prompt a model you already have, build one from a recipe, save and reload it.

* :func:`wrap` -- ``wrap(model, method, ...)`` prompts an existing timm ``VisionTransformer``,
  open_clip ``CLIP``, transformers T5 (``T5ForConditionalGeneration``) or BERT-family model. The
  backbone is frozen and in eval mode; the result is a :class:`~mmprompt.models.base.PromptModel`
  whose ``forward(batch)`` returns ``{"logits": ...}`` (and ``"loss"`` when the batch has
  ``"label"``), the same task models the Trainer trains.
* :func:`create_model` -- from a packaged recipe name (:func:`mmprompt.list_recipes`), a yaml
  path or a config, plus ``KEY VALUE`` overrides.
* :meth:`PromptModel.save_pretrained <mmprompt.models.base.PromptModel.save_pretrained>` /
  :func:`from_pretrained` -- trainable weights (safetensors), ``config.yaml`` and a model card.

Options of :func:`wrap` are the config keys in lower case (docs/api.md lists where each goes):
a key of a chosen method's node (``num_tokens``, ``depth``, ``deep``, ``n_ctx``, ``ctx_init``,
``position="adap_pos"`` ...), else of a shared node (``PROMPT.DYNAMIC``: ``gamma``, ``tau0`` ...;
``PROMPT.SUPERPOS``, ``PROMPT.RESIDUAL``; ``MODEL.HEAD``, ``MODEL.CLIP``, ``MODEL.TEXT``,
``MODEL.BACKBONE``). A key two chosen methods both have, or settings for one method only, go in
a dict named after the method: ``wrap(clip, ["maple", "vpt"], maple={"n_ctx": 2}, vpt={
"num_tokens": 4, "dynamic": {"gamma": 0.1}})`` (a method's ``dynamic`` / ``superpos`` /
``residual`` dicts become ``PROMPT.PER_METHOD``). Whole nodes can be given as dicts too:
``dynamic={"gamma": 0.1}``, ``head={"dropout": 0.1}``.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings
from typing import Dict, List, Optional, Sequence, Union

from .build import PER_METHOD_NODES, build_model
from .config import CfgNode, drop_unknown_keys, get_cfg, load_cfg
from .errors import ConfigError, MMPromptError
from .recipes import recipe_path

#: option dicts naming a whole config node
NODE_OPTIONS = {
    "dynamic": "PROMPT.DYNAMIC",
    "superpos": "PROMPT.SUPERPOS",
    "residual": "PROMPT.RESIDUAL",
    "head": "MODEL.HEAD",
    "clip": "MODEL.CLIP",
    "text": "MODEL.TEXT",
    "backbone": "MODEL.BACKBONE",
}
#: where a flat option that no chosen method has is looked up, in this order
SHARED_NODES = (
    "PROMPT.DYNAMIC",
    "PROMPT.SUPERPOS",
    "PROMPT.RESIDUAL",
    "MODEL.HEAD",
    "MODEL.CLIP",
    "MODEL.TEXT",
    "MODEL.BACKBONE",
)
#: files of a save_pretrained folder
WEIGHTS_FILE = "prompts.safetensors"
CONFIG_FILE = "config.yaml"
CARD_FILE = "README.md"
#: metadata key saying the backbone came from the user (wrap), so reloading needs it again
WRAPPED_KEY = "wrapped_backbone"


# ----------------------------------------------------------------------------- wrap
def wrap(
    model,
    method: Union[str, Sequence[str]],
    *,
    classnames: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    tokenizer=None,
    **options,
):
    """Prompt ``model`` (timm ViT, open_clip CLIP, transformers T5 or BERT-family) with ``method``
    (a ``PROMPT.METHODS`` name or a list of them, composed in order); see the module docstring
    for ``options``. The task model follows from the backbone and the arguments:

    * timm ViT: ``image_classifier`` (a linear head of ``num_classes`` or ``len(classnames)``);
    * open_clip CLIP: ``clip_prompt_classifier`` with ``classnames`` (zero-shot-style logits against
      the prompted class texts); with ``num_classes`` and no class names, ``image_classifier`` on
      its vision tower;
    * BERT-family: ``text_classifier``; T5: ``t5_verbalizer`` with ``classnames`` (the label words
      the decoder scores), ``text_classifier`` with ``num_classes``.

    ``tokenizer``: the text tokenizer (a transformers tokenizer for T5/BERT; for open_clip, its
    tokenizer when the model's text tower is not CLIP's own BPE). transformers models without one
    load ``AutoTokenizer.from_pretrained(model.config.name_or_path)``.
    """
    methods = [method] if isinstance(method, str) else list(method)
    cfg = get_cfg()
    kind, arch, default_pool = _describe(model)
    cfg.MODEL.BACKBONE.NAME = kind
    cfg.MODEL.BACKBONE.ARCH = arch
    cfg.MODEL.NAME = _task_model(kind, classnames, num_classes)
    cfg.PROMPT.METHODS = methods
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ConfigError(f"num_classes must be a whole number >= 1, got {num_classes!r}.")
        cfg.MODEL.HEAD.NUM_CLASSES = int(num_classes)
    _apply_options(cfg, methods, options)
    cfg.freeze()
    return _build_wrapped(model, cfg, classnames, tokenizer, default_pool)


def _build_wrapped(model, cfg, classnames, tokenizer, default_pool: str = "cls"):
    backbone = _adapter(model, cfg, tokenizer, default_pool)
    if cfg.MODEL.BACKBONE.FREEZE:
        backbone.freeze(dropout_off=cfg.MODEL.BACKBONE.DROPOUT_OFF)
    backbone.eval()
    task = build_model(cfg, classnames, backbone=backbone)
    task.wrapped_backbone = True
    return task


def _is_timm_vit(model) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        return False
    return isinstance(model, VisionTransformer)


def _is_open_clip(model) -> bool:
    return hasattr(model, "visual") and hasattr(model, "encode_text") and hasattr(model, "logit_scale")


def _hf_model_type(model) -> Optional[str]:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) if config is not None and hasattr(model, "base_model") else None


def _describe(model):
    """``(MODEL.BACKBONE.NAME, MODEL.BACKBONE.ARCH, default pooling)`` of a library model."""
    if _is_timm_vit(model):
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or "vit"
        return "timm_vit", arch, "default"
    if _is_open_clip(model):
        return "open_clip", type(model).__name__, "default"
    model_type = _hf_model_type(model)
    if model_type in ("t5", "mt5", "umt5"):
        return "t5", model_type, "default"
    from .backbones.hf_encoder import SUPPORTED_TYPES

    if model_type in SUPPORTED_TYPES:
        return "hf_encoder", model_type, "cls"
    raise ConfigError(
        f"mmprompt.wrap prompts a timm VisionTransformer, an open_clip CLIP, a transformers "
        f"T5ForConditionalGeneration or a BERT-family model ({', '.join(SUPPORTED_TYPES)}); got "
        f"{type(model).__module__}.{type(model).__name__}"
        + (f" (model_type '{model_type}')" if model_type else "")
        + "."
    )


def _task_model(kind: str, classnames, num_classes) -> str:
    if kind == "timm_vit":
        return "image_classifier"
    if kind == "open_clip":
        if classnames:
            return "clip_prompt_classifier"
        if num_classes:
            return "image_classifier"
        raise ConfigError(
            "mmprompt.wrap on a CLIP needs classnames= (logits against the prompted class texts) "
            "or num_classes= (a linear head on the image features)."
        )
    if kind == "t5" and classnames and not num_classes:
        return "t5_verbalizer"
    return "text_classifier"


def _adapter(model, cfg, tokenizer, default_pool: str):
    """The backbone adapter around the user's own model object (its weights are not copied)."""
    kind = cfg.MODEL.BACKBONE.NAME
    if kind == "timm_vit":
        from .backbones.timm_vit import TimmViT

        return TimmViT(model, cfg.MODEL.BACKBONE.ARCH, skip_unused_rows=cfg.MODEL.BACKBONE.SKIP_UNUSED_ROWS)
    if kind == "open_clip":
        from .backbones.open_clip import OpenCLIP

        return OpenCLIP(
            model,
            cfg.MODEL.BACKBONE.ARCH,
            tokenizer or _open_clip_tokenizer(model),
            trim_text=cfg.MODEL.BACKBONE.TRIM_TEXT,
            skip_unused_rows=cfg.MODEL.BACKBONE.SKIP_UNUSED_ROWS,
        )
    from .backbones._hf import LazyTokenizer

    hf_tokenizer = tokenizer if tokenizer is not None else _hf_tokenizer(model)
    text = LazyTokenizer(lambda: hf_tokenizer, cfg.MODEL.TEXT.MAX_LENGTH)
    if kind == "t5":
        if not hasattr(model, "generate") or not hasattr(model, "encoder"):
            raise ConfigError(
                f"mmprompt.wrap needs T5ForConditionalGeneration for T5 (the verbalizer scores label "
                f"words with its decoder); got {type(model).__name__}."
            )
        from .backbones.t5 import T5Backbone

        return T5Backbone(model, text, trim_text=cfg.MODEL.BACKBONE.TRIM_TEXT)
    from .backbones.hf_encoder import HFEncoderBackbone

    encoder = model if hasattr(model, "embeddings") else model.base_model
    if not hasattr(encoder, "embeddings"):
        raise ConfigError(
            f"{type(model).__name__} has no .embeddings (nor its base_model): pass the encoder "
            f"(AutoModel), e.g. BertModel."
        )
    return HFEncoderBackbone(encoder, text, default_pool, trim_text=cfg.MODEL.BACKBONE.TRIM_TEXT)


def _open_clip_tokenizer(model):
    from .utils.extras import require

    open_clip = require("open_clip", "open_clip backbones")
    if hasattr(model, "text") and not hasattr(model.text, "token_embedding"):
        raise ConfigError(
            "This open_clip model's text tower is not CLIP's own (a Hugging Face text encoder): pass "
            "its tokenizer, e.g. tokenizer=open_clip.get_tokenizer(MODEL_NAME)."
        )
    return open_clip.tokenizer.SimpleTokenizer(context_length=getattr(model, "context_length", 77))


def _hf_tokenizer(model):
    source = getattr(model.config, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    if not source:
        raise ConfigError(
            f"{type(model).__name__} was not loaded from a checkpoint, so its tokenizer is unknown: "
            f"pass tokenizer= (e.g. AutoTokenizer.from_pretrained(...))."
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ConfigError(f"No tokenizer for {source} ({type(e).__name__}): pass tokenizer=.") from None


def _apply_options(cfg, methods: List[str], options: Dict[str, object]) -> None:
    from .config.config import merge_dict

    nested: Dict[str, dict] = {}

    def put(dotted: str, value) -> None:
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    method_nodes = {m: m.upper() for m in methods}
    for m, node in method_nodes.items():
        if node not in cfg.PROMPT:
            raise ConfigError(
                f"Unknown prompt method '{m}' for mmprompt.wrap (methods: "
                f"{', '.join(n.lower() for n in _method_nodes(cfg))})."
            )
    for key, value in options.items():
        if key in method_nodes:  # settings for one method
            if not isinstance(value, dict):
                raise ConfigError(f"{key}= takes a dict of that method's settings, e.g. {key}={{'num_tokens': 4}}.")
            for sub, v in value.items():
                if sub.upper() in PER_METHOD_NODES:
                    if not isinstance(v, dict):
                        raise ConfigError(f"{key}={{'{sub}': ...}} takes a dict of PROMPT.{sub.upper()} keys.")
                    for k, vv in v.items():
                        put(f"PROMPT.PER_METHOD.{method_nodes[key]}.{sub.upper()}.{k.upper()}", vv)
                else:
                    _check_key(cfg, f"PROMPT.{method_nodes[key]}", sub)
                    put(f"PROMPT.{method_nodes[key]}.{sub.upper()}", v)
            continue
        if key in NODE_OPTIONS and isinstance(value, dict):
            for sub, v in value.items():
                _check_key(cfg, NODE_OPTIONS[key], sub)
                put(f"{NODE_OPTIONS[key]}.{sub.upper()}", v)
            continue
        upper = key.upper()
        owners = [node for node in method_nodes.values() if upper in cfg.PROMPT[node]]
        if len(owners) > 1:
            raise ConfigError(
                f"Option {key} is a key of {' and '.join(owners)}: give it per method, e.g. "
                f"{owners[0].lower()}={{'{key}': ...}}."
            )
        if owners:
            put(f"PROMPT.{owners[0]}.{upper}", value)
            continue
        shared = [node for node in SHARED_NODES if upper in _node(cfg, node)]
        if not shared:
            raise ConfigError(
                f"Option {key} is not a key of {', '.join('PROMPT.' + n for n in method_nodes.values())} "
                f"nor of {', '.join(SHARED_NODES)}; docs/api.md lists the options."
            )
        put(f"{shared[0]}.{upper}", value)
    merge_dict(cfg, nested, source="mmprompt.wrap options")


def _method_nodes(cfg) -> List[str]:
    from .registry import PROMPTS

    return [n.upper() for n in PROMPTS.names() if n.upper() in cfg.PROMPT]


def _node(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _check_key(cfg, node_name: str, key: str) -> None:
    node = _node(cfg, node_name)
    if key.upper() not in node:
        raise ConfigError(f"{node_name} has no key {key.upper()} (it has {', '.join(k.lower() for k in node)}).")


# ----------------------------------------------------------------------------- create_model
def create_model(config: Union[str, CfgNode], *overrides: str, classnames: Optional[Sequence[str]] = None):
    """The task model of a packaged recipe (``"maple_adap_pos"``), a yaml path or a config, with
    ``KEY VALUE`` overrides (``create_model("vpt_deep_cub", "PROMPT.VPT.NUM_TOKENS", "5")``).

    The backbone comes from ``MODEL.BACKBONE`` (downloading pretrained weights as the recipe says;
    offline, point ``MODEL.BACKBONE.PRETRAINED`` at a local file). ``classnames`` size the head or
    the CLIP class texts (else ``MODEL.HEAD.NUM_CLASSES``)."""
    cfg = _resolve_config(config, overrides)
    return build_model(cfg, classnames)


def _resolve_config(config, overrides: Sequence[str]) -> CfgNode:
    if len(overrides) % 2:
        raise ConfigError(f"Overrides come as KEY VALUE pairs; got an odd number: {list(overrides)}.")
    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        cfg.merge_from_list([str(o) for o in overrides])
    elif isinstance(config, str):
        path = config if os.path.isfile(config) else recipe_path(config)
        cfg = load_cfg(path, opts=[str(o) for o in overrides])
    else:
        raise ConfigError(f"create_model takes a recipe name, a yaml path or a CfgNode; got {type(config).__name__}.")
    cfg.freeze()
    return cfg


# ----------------------------------------------------------------------------- save / load
def save_pretrained(model, directory: str) -> str:
    """Write ``prompts.safetensors`` (trainable weights and prompt buffers; the config, ``step``,
    class names and whether the backbone was the user's in its metadata), ``config.yaml`` and
    ``README.md`` (a model card) to ``directory``; the weights file's path."""
    from .engine.checkpoint import save_weights, write_text_atomic

    if getattr(model, "cfg", None) is None:
        raise MMPromptError(
            "save_pretrained needs the model's config: build the model with mmprompt.wrap, "
            "mmprompt.create_model, mmprompt.from_pretrained or mmprompt.build.build_model."
        )
    os.makedirs(directory, exist_ok=True)
    cfg_text = model.cfg.dump()
    path = os.path.join(directory, WEIGHTS_FILE)
    wrapped = bool(getattr(model, "wrapped_backbone", False))
    save_weights(
        path,
        model.trainable_state_dict(),
        model.cfg,
        cfg_text,
        step=int(model.step),
        classnames=json.dumps(model.classnames),
        **{WRAPPED_KEY: json.dumps(wrapped)},
    )
    write_text_atomic(os.path.join(directory, CONFIG_FILE), cfg_text)
    write_text_atomic(os.path.join(directory, CARD_FILE), _model_card(model, wrapped))
    return path


def _model_card(model, wrapped: bool) -> str:
    cfg = model.cfg
    counts = model.num_params()
    temperatures = _temperatures(model)
    load = (
        "mmprompt.from_pretrained(DIR, model=backbone)  # the same backbone model you wrapped"
        if wrapped
        else "mmprompt.from_pretrained(DIR)"
    )
    lines = [
        f"# mmprompt: {' + '.join(cfg.PROMPT.METHODS) or 'no prompt method'} on {cfg.MODEL.BACKBONE.NAME}",
        "",
        f"- task model: `{cfg.MODEL.NAME}`",
        f"- backbone: `{cfg.MODEL.BACKBONE.NAME}` `{cfg.MODEL.BACKBONE.ARCH}`"
        + (
            " (the user's own model object, not saved here)"
            if wrapped
            else f", weights `{cfg.MODEL.BACKBONE.PRETRAINED or 'random init'}`"
        ),
        f"- trainable parameters: {counts['trainable']:,} of {counts['total']:,}",
        f"- optimizer steps: {model.step}",
    ]
    if temperatures:
        lines.append(f"- Gumbel temperatures: {', '.join(f'{t:.4g}' for t in temperatures)}")
    if model.classnames:
        shown = ", ".join(model.classnames[:20]) + (" ..." if len(model.classnames) > 20 else "")
        lines.append(f"- classes ({len(model.classnames)}): {shown}")
    lines += [
        "",
        "Load it:",
        "",
        "```python",
        "import mmprompt",
        f"model = {load}",
        "```",
        "",
        f"Files: `{WEIGHTS_FILE}` (trainable weights and prompt buffers), `{CONFIG_FILE}` (the full config).",
        "",
    ]
    return "\n".join(lines)


def _temperatures(model) -> List[float]:
    from .prompts.dynamic import TemperatureSchedule

    return [float(m.tau) for m in model.modules() if isinstance(m, TemperatureSchedule)]


def _metadata_json(meta, key: str, default, path: str):
    """A JSON value of the checkpoint's metadata; a damaged one is the file's problem, said so."""
    raw = meta.get(key) or ""
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise MMPromptError(
            f"{path}: its metadata {key!r} is not valid JSON ({raw[:60]!r}); the file was not "
            "saved by mmprompt, or was changed since."
        ) from None


def from_pretrained(
    dir_or_zoo_name: str,
    model=None,
    *,
    classnames: Optional[Sequence[str]] = None,
    tokenizer=None,
    cache_dir: Optional[str] = None,
):
    """A model saved by ``save_pretrained`` (a folder), a trainer checkpoint (``.safetensors`` or a
    run's output dir) or a model-zoo name (downloaded and checked against its sha256), in eval
    mode, with its step (and so its temperature schedule) restored.

    ``model``: the backbone to prompt (the library model object); needed when the weights were
    made by :func:`wrap`, which saves no backbone. Without it the backbone is built from the
    stored config. ``classnames`` default to the stored ones."""
    from .engine.checkpoint import load_weights

    path = _weights_file(dir_or_zoo_name, cache_dir)
    state, meta = load_weights(path)
    if "config" not in meta:
        raise MMPromptError(f"{path} carries no config; it was not saved by mmprompt.")
    cfg = _config_from_text(meta["config"], path)
    stored_names = _metadata_json(meta, "classnames", None, path)
    names = list(classnames) if classnames is not None else stored_names
    wrapped = _metadata_json(meta, WRAPPED_KEY, False, path)
    if model is not None:
        _, _, default_pool = _describe(model)
        task = _build_wrapped(model, cfg, names, tokenizer, default_pool)
    elif wrapped:
        raise MMPromptError(
            f"{path} holds prompts for a backbone you wrapped yourself ({cfg.MODEL.BACKBONE.NAME} "
            f"{cfg.MODEL.BACKBONE.ARCH}); pass it again: mmprompt.from_pretrained(..., model=backbone)."
        )
    else:
        if names is None and cfg.MODEL.HEAD.NUM_CLASSES == 0 and "head.weight" in state:
            cfg.defrost()
            cfg.MODEL.HEAD.NUM_CLASSES = int(state["head.weight"].shape[0])
            cfg.freeze()
        task = build_model(cfg, names)
    task.load_trainable_state_dict(state, source=path)
    task.step = int(meta.get("step", 0) or 0)
    return task.eval()


def _weights_file(source: str, cache_dir: Optional[str]) -> str:
    from .engine.checkpoint import weights_path

    if os.path.isdir(source):
        mine = os.path.join(source, WEIGHTS_FILE)
        return mine if os.path.isfile(mine) else weights_path(source)
    if os.path.isfile(source):
        return source
    from . import zoo

    entry = zoo.find(source, zoo.load_index())
    return zoo.download(entry, cache=cache_dir)


def _config_from_text(text: str, path: str) -> CfgNode:
    import yaml

    from .config.config import merge_dict

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise MMPromptError(f"The config stored in {path} is not a yaml mapping; it was not saved by mmprompt.")
    cfg = get_cfg()
    obsolete = drop_unknown_keys(cfg, data)
    if obsolete:
        # a saved config is a full dump of the defaults of its day; keys since removed are read by
        # nothing any more, so the weights still load
        warnings.warn(
            f"{path} was saved by an older mmprompt; its config keys {', '.join(obsolete)} no longer "
            f"exist and are ignored.",
            stacklevel=3,
        )
    merge_dict(cfg, data, source=path)
    cfg.freeze()
    return cfg
