"""Configuration: yacs defaults with ``_BASE_`` inheritance and strict, well-explained merging."""

from .config import CfgNode, drop_unknown_keys, get_cfg, load_cfg, merge_from_file, merge_from_list

__all__ = ["CfgNode", "drop_unknown_keys", "get_cfg", "load_cfg", "merge_from_file", "merge_from_list"]
