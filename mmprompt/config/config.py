"""Loading and merging configs.

* ``_BASE_: relative/path.yaml`` (or a list of them) at the top of a yaml inherits that file;
  chains are followed, cycles are refused.
* Keys must exist in :mod:`mmprompt.config.defaults`; an unknown key names the closest valid
  ones, a value of the wrong type names the key and the type expected.
* Command-line overrides are ``KEY VALUE`` pairs, values parsed as Python literals when they can be.
* The authors' Dassl/CoOp/MaPLe yamls and overrides (``TRAINER.MAPLE.N_CTX`` ...) are read by
  :func:`load_cfg` through :mod:`mmprompt.config.dassl_compat`, detected by their keys.
"""

from __future__ import annotations

import ast
import copy
import difflib
import os
from typing import Iterable, List, Optional, Sequence

import yaml
from yacs.config import CfgNode as _YacsNode

from ..errors import ConfigError
from ..recipes import packaged_path
from ..utils.files import open_regular

BASE_KEY = "_BASE_"


class CfgNode(_YacsNode):
    """yacs CfgNode whose merges give actionable errors."""

    def merge_from_file(self, path: str) -> "CfgNode":
        merge_from_file(self, path)
        return self

    def merge_from_list(self, opts: Sequence[str]) -> "CfgNode":
        merge_from_list(self, opts)
        return self


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    from .defaults import _C

    return _C.clone()


def load_cfg(
    config_file: Optional[str] = None,
    dataset_config_file: Optional[str] = None,
    opts: Sequence[str] = (),
    trainer: str = "",
) -> CfgNode:
    """defaults -> dataset config -> method config -> KEY VALUE overrides (Dassl's order).

    When the files or overrides are Dassl-style (a ``TRAINER`` node, ``trainer`` given -- their
    ``--trainer`` flag --, or a CLIP name such as ``ViT-B/16`` as ``MODEL.BACKBONE.NAME``), they
    are translated to mmprompt's keys by :func:`mmprompt.config.dassl_compat.translate_sources`.
    """
    from . import dassl_compat

    sources = []
    if dataset_config_file:
        sources.append((os.path.relpath(dataset_config_file), _read_yaml_chain(dataset_config_file, [])))
    if config_file:
        sources.append((os.path.relpath(config_file), _read_yaml_chain(config_file, [])))
    overrides = _overrides_as_dicts(opts)
    if not dassl_compat.is_dassl_style(sources + overrides, trainer):
        cfg = get_cfg()
        for label, data in sources + overrides:
            _merge_dict(cfg, data, source=label)
        return cfg
    return _load_dassl_style(sources, overrides, trainer)


def _load_dassl_style(sources, overrides, trainer: str) -> CfgNode:
    from . import dassl_compat

    cfg = get_cfg()
    # Overrides merge key by key, so a later one wins over an earlier one of the same key.
    result = dassl_compat.translate_sources(sources + overrides, trainer, lambda key: has_key(cfg, key))
    methods_given = any("METHODS" in data.get("PROMPT", {}) for _, data in result.native)
    if result.trainer is None and not methods_given:
        raise ConfigError(dassl_compat.requires_method_message())
    for key, value, origin in result.translated:
        _merge_dict(cfg, dassl_compat.nest({key: value}), source=origin)
    for label, data in result.native:
        _merge_dict(cfg, data, source=label)
    return cfg


def has_key(cfg: _YacsNode, key: str) -> bool:
    """Whether the dotted ``key`` exists in ``cfg`` (or lies under a node that accepts new keys)."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, _YacsNode):
            return False
        if part not in node:
            return node.is_new_allowed()
        node = node[part]
    return True


def _read_yaml_chain(path: str, stack: List[str]) -> dict:
    # configs/... names a packaged recipe when the working directory has no such file (installed)
    path = os.path.abspath(packaged_path(path) or path)
    if not os.path.exists(path):
        raise ConfigError(f"Config file not found: {path}")
    if path in stack:
        chain = " -> ".join(os.path.relpath(p) for p in stack + [path])
        raise ConfigError(f"_BASE_ cycle in configs: {chain}. Remove one of these _BASE_ links.")
    try:
        with open_regular(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8.") from None
    except OSError as e:
        raise ConfigError(f"Cannot read config file {path}: {e.strerror}.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not (isinstance(bases, list) and bases and all(isinstance(b, str) and b for b in bases)):
        raise ConfigError(f"{path}: {BASE_KEY} must be the path of a yaml file (or a list of paths), got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        _deep_update(merged, _read_yaml_chain(base_path, stack + [path]))
    _deep_update(merged, data)
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` keeps the last of two equal keys; in a config that silently drops the
    first (a second ``OPTIM:`` block replaces the whole first one), so a repeated key is an error."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                    "keep one (the first would be silently ignored)",
                    key_node.start_mark,
                )
            try:
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the SafeLoader's own message follows
                break
        return super().construct_mapping(node, deep=deep)


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def merge_from_file(cfg: CfgNode, path: str) -> None:
    _merge_dict(cfg, _read_yaml_chain(path, []), source=os.path.relpath(path))


def merge_from_list(cfg: CfgNode, opts: Sequence[str]) -> None:
    for label, data in _overrides_as_dicts(opts):
        _merge_dict(cfg, data, source=label)


def _overrides_as_dicts(opts: Sequence[str]) -> List[tuple]:
    """``KEY VALUE`` pairs as one (source, nested dict) per pair, in order."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"Overrides come in KEY VALUE pairs; got an odd number: {opts}")
    out = []
    for key, raw in zip(opts[0::2], opts[1::2]):
        node = {}
        cur = node
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = _parse_literal(raw)
        out.append(("command line", node))
    return out


def _parse_literal(raw):
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def all_keys(cfg: _YacsNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, _YacsNode):
            keys.extend(all_keys(v, full + "."))
    return keys


def merge_dict(cfg: CfgNode, data: dict, source: str) -> None:
    """Merge a nested dict of keys into ``cfg`` with the checks of a yaml merge: unknown keys
    (with close names), values coerced to the default's type; ``source`` names where they came from."""
    _merge_dict(cfg, data, source=source)


def _merge_dict(cfg: CfgNode, data: dict, source: str, prefix: str = "", root=None) -> None:
    root = cfg if root is None else root
    root_keys: Optional[Iterable[str]] = None
    for k, v in data.items():
        full = f"{prefix}{k}"
        if not isinstance(k, str):
            raise ConfigError(
                f"Config key {full} (from {source}) is not a name ({type(k).__name__}); config keys are "
                "names such as OPTIM or LR."
            )
        if k not in cfg:
            if cfg.is_new_allowed():
                cfg[k] = _to_node(v)
                continue
            root_keys = root_keys or all_keys(root)
            close = difflib.get_close_matches(full, root_keys, n=3, cutoff=0.6)
            if not close:  # a typo'd last part still matches keys of the same node
                close = [f"{prefix}{c}" for c in difflib.get_close_matches(k, list(cfg.keys()), n=3, cutoff=0.5)]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            if full == "TRAINER":
                hint = (
                    " TRAINER is a Dassl/CoOp node: load such a file with load_cfg(...) or "
                    "tools/train_net.py, which translate it."
                )
            raise ConfigError(f"Unknown config key {full} (from {source}).{hint}")
        old = cfg[k]
        if isinstance(old, _YacsNode):
            if not isinstance(v, dict):
                raise ConfigError(
                    f"Config key {full} (from {source}) is a group of keys "
                    f"({', '.join(list(old.keys())[:6])}...), not a value; got {v!r}"
                )
            _merge_dict(old, v, source, full + ".", root)
            continue
        cfg[k] = _coerce(full, old, v, source)


def _to_node(v):
    return CfgNode(v, new_allowed=True) if isinstance(v, dict) else v


def _coerce(key: str, old, new, source: str):
    if isinstance(new, str) and not isinstance(old, str):
        new = _parse_literal(new)
    if new is None and old is not None:
        raise ConfigError(
            f"Config key {key} (from {source}) is empty (null); give it a value (default {old!r}) or remove the line."
        )
    if old is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, int):
        return float(new)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    elif isinstance(old, (list, tuple)) and isinstance(new, (str, int, float)):
        return type(old)([new])
    elif isinstance(new, type(old)):
        return new
    raise ConfigError(
        f"Config key {key} (from {source}) expects {type(old).__name__} "
        f"(default {old!r}), got {type(new).__name__} {new!r}"
    )


def drop_unknown_keys(node, data: dict, prefix: str = "") -> List[str]:
    """Remove from ``data`` (in place) the keys ``node`` does not have; their dotted names.

    For configs stored in checkpoints: a stored config is a full dump of the defaults of the
    mmprompt that saved it, so a key removed since is read by nothing and the weights still load
    (``mmprompt.from_pretrained``, ``mmprompt-zoo eval``)."""
    dropped = []
    for key in list(data):
        if key not in node:
            if not node.is_new_allowed():
                dropped.append(prefix + key)
                del data[key]
        elif isinstance(node[key], CfgNode) and isinstance(data[key], dict):
            dropped += drop_unknown_keys(node[key], data[key], f"{prefix}{key}.")
    return dropped
