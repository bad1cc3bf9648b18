"""Registries that find their members by name and import their modules lazily.

Each registry knows the packages its members live in; the first lookup of a name it does not
hold yet imports every module of those packages (mmengine-style), so a command-line tool never
imports all of torchvision/open_clip/transformers up front just to parse its flags.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Dict, Iterable, Optional

from .errors import RegistryError


class Registry:
    def __init__(self, name: str, packages: Iterable[str] = ()):
        self.name = name
        self.packages = tuple(packages)
        self._members: Dict[str, object] = {}
        self._imported = False
        self._import_error: Optional[BaseException] = None

    def register(self, name: Optional[str] = None, obj=None):
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator."""

        def _add(o):
            key = name or o.__name__
            if key in self._members and self._members[key] is not o:
                raise RegistryError(f"{self.name}: '{key}' is registered twice ({self._members[key]!r} and {o!r})")
            self._members[key] = o
            return o

        return _add(obj) if obj is not None else _add

    def _import_all(self):
        """Import every member module once. A module that fails to import raises its own error,
        here and at every later lookup, instead of leaving its members out so that they show up
        as unknown names."""
        if self._import_error is not None:
            raise self._import_error
        if self._imported:
            return
        for package in self.packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__, package + "."):
                if info.name.rsplit(".", 1)[-1].startswith("_"):
                    continue
                try:
                    importlib.import_module(info.name)
                except Exception as e:
                    # kept: importing the module again could fail differently (members it
                    # registered before failing would be registered twice)
                    self._import_error = e
                    raise
        self._imported = True

    def get(self, name: str):
        if name not in self._members:
            self._import_all()
        if name not in self._members:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(f"Unknown {self.name} '{name}'.{hint} Known: {', '.join(self.names())}.")
        return self._members[name]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self):
        self._import_all()
        return sorted(self._members)

    def __contains__(self, name: str) -> bool:
        self._import_all()
        return name in self._members

    def __repr__(self):
        return f"Registry({self.name}, {sorted(self._members)})"


BACKBONES = Registry("backbone", ["mmprompt.backbones"])
PROMPTS = Registry("prompt method", ["mmprompt.prompts"])
PROMPT_SOURCES = Registry("prompt token source", ["mmprompt.prompts"])
PLACEMENTS = Registry("prompt placement", ["mmprompt.prompts"])
MODELS = Registry("model", ["mmprompt.models"])
DATASETS = Registry("dataset", ["mmprompt.data"])
EVALUATORS = Registry("evaluator", ["mmprompt.evaluation"])
