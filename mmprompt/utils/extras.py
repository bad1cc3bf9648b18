"""Optional dependencies: each backbone family and tool is an extra of the package.

The base install (``pip install mmprompt``) imports without any of them; the first use of a
backbone or tool whose library is missing raises an :class:`~mmprompt.errors.MMPromptError`
naming the extra that installs it, e.g. ``pip install "mmprompt[clip]"``. ``EXTRAS`` must match
``[project.optional-dependencies]`` in pyproject.toml (tests/test_packaging.py checks it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MMPromptError

#: importable module -> (PyPI distribution, extra of mmprompt that installs it)
EXTRAS = {
    "open_clip": ("open_clip_torch", "clip"),
    "timm": ("timm", "timm"),
    "torchvision": ("torchvision", "timm"),
    "transformers": ("transformers", "text"),
    "datasets": ("datasets", "text"),
    "peft": ("peft", "peft"),
    "sklearn": ("scikit-learn", "lpclip"),
    "tensorboard": ("tensorboard", "logs"),
    "matplotlib": ("matplotlib", "logs"),
}


def require(module: str, what: str = "") -> ModuleType:
    """``import module``, or an MMPromptError that says which extra installs it.

    ``what`` names the feature that needs it ("open_clip backbones"); only a missing top-level
    package is reported this way, an ImportError from inside an installed one is raised as is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:
            raise
        dist, extra = EXTRAS[top]
        needed = f"{what} needs" if what else "This needs"
        raise MMPromptError(
            f"{needed} the '{dist}' package, which is not installed: "
            f'pip install "mmprompt[{extra}]" (or pip install {dist}).'
        ) from None
