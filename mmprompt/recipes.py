"""The packaged recipes: the yaml configs (and the open_clip model JSONs they name) shipped
inside the package, so an installed mmprompt can load its own recipes.

In a checkout they live in ``configs/`` (``mmprompt/_recipes`` is a link to it); an installed
package holds a copy under ``mmprompt/_recipes``. A recipe is named by its path under that folder
without ``.yaml``: ``"maple_adap_pos"``, ``"demo/adap_pos"``, ``"_base_/tiny_vit"``.

Paths inside recipes that start with ``configs/`` (e.g. ``MODEL.BACKBONE.ARCH
configs/_base_/tiny_clip_model.json``) mean the packaged file: :func:`packaged_path` resolves
them when the path does not exist relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from .errors import ConfigError

#: where recipes live: the link to configs/ in a checkout, the packaged copy once installed
RECIPE_ROOT = Path(__file__).resolve().parent / "_recipes"
#: the prefix recipes use for the toolkit's own files, as in the repository
CONFIGS_PREFIX = "configs/"


def list_recipes(include_bases: bool = False) -> List[str]:
    """Names of the packaged recipes, sorted (``_base_/`` fragments only with ``include_bases``)."""
    if not RECIPE_ROOT.is_dir():
        return []
    names = []
    for path in RECIPE_ROOT.rglob("*.yaml"):
        name = path.relative_to(RECIPE_ROOT).with_suffix("").as_posix()
        if include_bases or not name.startswith("_base_/"):
            names.append(name)
    return sorted(names)


def recipe_path(name: str) -> str:
    """The yaml file of recipe ``name`` (``"maple_adap_pos"``, ``"configs/maple_adap_pos.yaml"``
    and ``"maple_adap_pos.yaml"`` all work), or a ConfigError listing close names."""
    key = name[len(CONFIGS_PREFIX) :] if name.startswith(CONFIGS_PREFIX) else name
    key = key[:-5] if key.endswith(".yaml") else key
    path = RECIPE_ROOT / f"{key}.yaml"
    if path.is_file():
        return str(path)
    import difflib

    close = difflib.get_close_matches(key, list_recipes(include_bases=True), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"No recipe '{name}'.{hint} mmprompt.list_recipes() lists them; a path to a yaml file works too.")


def packaged_path(path: str) -> Optional[str]:
    """The packaged file a recipe means by ``configs/...`` when ``path`` does not exist as given
    (relative to the working directory); None when it names no packaged file either."""
    if os.path.exists(path) or os.path.isabs(path):
        return None
    posix = Path(path).as_posix()
    if not posix.startswith(CONFIGS_PREFIX):
        return None
    candidate = RECIPE_ROOT / posix[len(CONFIGS_PREFIX) :]
    return str(candidate) if candidate.exists() else None
