"""What every side-by-side comparison with an authors' checkout shares.

A comparison builds the authors' model and mmprompt's on the *same* weights, copies the prompt
parameters from one to the other, runs both on the same inputs and reports

* the max relative difference of the logits, ``max|ours - theirs| / max|theirs|``;
* the same for the gradient of the loss w.r.t. every prompt parameter (matched by name);
* the ratio of forward+backward time, ours / theirs, timed interleaved.

Weights must not be at their init: :func:`perturb_norms_and_biases_` gives every normalisation
layer a random gain and bias and every bias a random value, since with gains 1 and biases 0 a
LayerNorm undoes a misplaced shift or scale and the check hides it (seen with CLIP's ``ln_pre``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

#: the mmprompt checkout these comparisons run from (its configs/)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: relative difference at float32 under which two computations count as the same
TOLERANCE = 1e-4


class CheckoutError(Exception):
    """A checkout that is missing or is not the repository a flag asks for."""


@dataclass
class Result:
    recipe: str  # the mmprompt recipe (config name or method + options)
    compared_with: str  # repository and the module/class of theirs that ran
    logits_rel: float
    grads_rel: Dict[str, float] = field(default_factory=dict)
    ratio: Optional[float] = None  # ours / theirs, forward + backward
    note: str = ""  # how the two were aligned
    tolerance: float = TOLERANCE
    intended: str = ""  # why mmprompt differs on purpose (e.g. a bug of theirs it does not copy); "" = none

    @property
    def worst(self) -> float:
        return max([self.logits_rel, *self.grads_rel.values()])

    @property
    def verdict(self) -> str:
        if self.worst <= self.tolerance:
            return "SAME"
        return "INTENDED" if self.intended else "DIFFERENT"


@dataclass
class Recipe:
    name: str
    repos: Sequence[str]  # the driver's flag names this comparison needs, e.g. ("maple_repo",)
    run: Callable[..., List[Result]]  # run(args) -> results
    family: str = ""


RECIPES: List[Recipe] = []


def recipe(name: str, *repos: str):
    """Register ``run(args) -> List[Result]`` as the comparison ``name`` needing the checkouts
    ``repos`` (attribute names of the driver's parsed arguments, e.g. ``"maple_repo"``)."""

    def register(fn):
        RECIPES.append(Recipe(name, repos, fn, fn.__module__.rsplit(".", 1)[-1]))
        return fn

    return register


# ---------------------------------------------------------------------- numbers
def rel_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """``max|ours - theirs| / max|theirs|`` in float64; inf when the shapes differ."""
    ours, theirs = ours.detach().double().cpu(), theirs.detach().double().cpu()
    if ours.shape != theirs.shape:
        return float("inf")
    scale = theirs.abs().max().item()
    return (ours - theirs).abs().max().item() / (scale if scale > 0 else 1.0)


def grads_rel(ours: Dict[str, torch.Tensor], theirs: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Per-name relative gradient differences; a name on one side only counts as inf."""
    out = {}
    for name in sorted(set(ours) | set(theirs)):
        if name not in ours or name not in theirs or ours[name] is None or theirs[name] is None:
            out[name] = float("inf")
        else:
            out[name] = rel_diff(ours[name], theirs[name])
    return out


@torch.no_grad()
def perturb_norms_and_biases_(module: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Random gains ``1 + scale·N(0,1)`` and biases ``scale·N(0,1)`` for every normalisation layer,
    and random values for every other bias, from a fixed seed (deterministic in module order)."""
    g = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        is_norm = isinstance(sub, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(sub).__name__.lower()
        for name, p in sub.named_parameters(recurse=False):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p)
            if is_norm and name == "weight":
                p.copy_(1 + scale * noise)
            elif name == "bias" or name.endswith("_bias"):
                p.copy_(scale * noise)
    return module


def interleaved_times(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int = 5, warmup: int = 1
) -> Dict[str, float]:
    """Median seconds of each callable, run alternately (which goes first alternates too)."""
    times = {"ours": [], "theirs": []}
    for i in range(warmup + repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for key, fn in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def time_ratio(ours: Callable[[], object], theirs: Callable[[], object], repeats: int = 5) -> Optional[float]:
    if repeats <= 0:
        return None
    t = interleaved_times(ours, theirs, repeats)
    return t["ours"] / t["theirs"]


# ---------------------------------------------------------------------- checkouts
def require_checkout(path: Optional[str], flag: str, must_have: Iterable[str]) -> str:
    """The checkout's absolute path, or a CheckoutError saying what is missing."""
    if not path:
        raise CheckoutError(f"{flag} DIR is needed (a clone of the authors' repository)")
    path = os.path.abspath(os.path.expanduser(path))
    missing = [m for m in must_have if not os.path.exists(os.path.join(path, m))]
    if missing:
        raise CheckoutError(f"{flag} {path} lacks {', '.join(missing)}: is it the right repository?")
    return path


@contextlib.contextmanager
def checkout_on_path(path: str, stubs: Optional[Dict[str, object]] = None, prefixes: Sequence[str] = ()):
    """Import from ``path`` for the duration of the block.

    ``stubs`` are placed in ``sys.modules`` (the parts of the authors' dependencies a comparison
    does not need, e.g. Dassl's registry); ``prefixes`` are top-level module names the checkout
    defines (``clip``, ``trainers`` ...) that other checkouts define too: they are dropped from
    ``sys.modules`` before and after, so two checkouts never see each other's modules.
    """

    def drop():
        for name in list(sys.modules):
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                del sys.modules[name]

    saved = {name: sys.modules[name] for name in (stubs or {}) if name in sys.modules}
    drop()
    sys.path.insert(0, path)
    sys.modules.update(stubs or {})
    try:
        yield
    finally:
        sys.path.remove(path)
        for name in stubs or {}:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
        drop()


def import_from(path: str, module: str, **kwargs):
    """``importlib.import_module(module)`` with ``path`` first on ``sys.path`` (see
    :func:`checkout_on_path` for ``stubs`` / ``prefixes``); the module stays usable afterwards."""
    with checkout_on_path(path, **kwargs):
        return importlib.import_module(module)
