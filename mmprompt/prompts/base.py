"""What every prompt method is built from.

A prompt method is a :class:`PromptModule`: it sees the tower name, the layer index and the
:class:`~mmprompt.tokens.TokenSeq`, and returns the edited sequence. It never asks which backbone
it runs on. Three separable pieces make the methods composable:

* a :class:`TokenSource` says *what* the prompt tokens are (a plain parameter, a SuperPos
  superposition, a Residual MLP, a MaPLe coupling, a prompt pool ...);
* a :class:`Placement` says *where* they enter the sequence (prefix, suffix, a learned split
  position ...) and how a deep method replaces them at the next layer;
* offsets (DePT/ADePT) edit tokens already in the sequence;
* key/value prefixes (P-tuning v2) are no tokens at all: ``before_layer(i)`` attaches a
  :class:`~mmprompt.tokens.KVPrefix` with ``seq.with_kv_prefix`` for layer i's self-attention, on
  towers whose ``kv_prefix_shape()`` is not None (the contract is in :mod:`mmprompt.tokens` and
  :mod:`mmprompt.backbones.base`).

:class:`PromptStack` runs the configured modules in order at every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import torch
from torch import nn

from ..tokens import TokenSeq


@dataclass
class PromptContext:
    """State of one forward pass shared by the prompt modules.

    ``features[tower]`` is the instance feature instance-level methods condition on: by default
    the masked mean of the tower's embedded input tokens, computed once before layer 0.
    ``cache`` lets modules share work within the pass (MaPLe's coupled prompts, a pool's
    mixing weights); ``records`` collects what a run should save (chosen positions/lengths).
    """

    step: int = 0
    layer: int = 0  # index of the layer about to run (set by PromptStack before each layer)
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    cache: Dict[str, object] = field(default_factory=dict)
    records: Dict[str, List[torch.Tensor]] = field(default_factory=dict)

    def record(self, key: str, value: torch.Tensor):
        self.records.setdefault(key, []).append(value.detach() if value.requires_grad else value)


#: ctx.cache key of a tower's prompt-free layer-0 input, ``(FROZEN_PASS_INPUT, tower) -> (backbone,
#: seq)``, kept for modules that run a frozen pass over it (see PromptStack.attach)
FROZEN_PASS_INPUT = "frozen_pass_input"


class PromptModule(nn.Module):
    """Base of every prompt method; override :meth:`before_layer` (and :meth:`setup`).

    Which towers a method edits is what its ``before_layer`` changes: it returns ``seq`` unchanged
    for every other tower (the CLIP classifier relies on that to learn whether the text tower is
    prompted); ``setup`` refuses a backbone without the towers the method needs.
    """

    def setup(self, backbone) -> None:
        """Called once with the backbone before training, to size parameters from its towers
        (widths, depth, vocabulary embeddings). Raise ConfigError for impossible combinations."""

    def before_layer(self, tower: str, i: int, seq: TokenSeq, ctx: PromptContext) -> TokenSeq:
        return seq

    def no_weight_decay(self) -> List[str]:
        """Names (relative to this module) of parameters that must not get weight decay."""
        return []

    def param_groups(self) -> Dict[str, List[str]]:
        """Optional named groups of parameter names (relative to this module), e.g. DePT's
        ``{"offsets": [...]}``, so the optimizer can give them their own learning rate."""
        return {}


class TokenSource(nn.Module):
    """Produces prompt tokens: ``forward(ctx, tower) -> (1 or B, length, width)``.

    Built from keywords (``length``, ``width``, ``tower``, ``init`` ... and the source's own
    settings); :meth:`from_config` reads the settings a config holds (e.g. PROMPT.SUPERPOS.M).
    """

    length: int
    width: int

    @classmethod
    def from_config(cls, cfg, **sizes) -> "TokenSource":
        """The source with the settings ``cfg`` holds (None: the defaults) and the given sizes."""
        return cls(**sizes)

    def forward(self, ctx: PromptContext, tower: str) -> torch.Tensor:
        raise NotImplementedError

    def no_weight_decay(self) -> List[str]:
        return []


class Placement(nn.Module):
    """Puts a source's tokens into the sequence, and replaces them at deeper layers.

    Built from keywords; :meth:`from_config` reads the settings a config holds (learned
    placements: PROMPT.DYNAMIC). ``ctx.layer`` is the index of the layer about to run.
    """

    #: whether ``place`` for an owner whose tokens are in the sequence already overwrites all of
    #: them without reading their hidden states (``replace``, or ``remove`` and insert anew): a
    #: deep method that places again before the next layer may then promise the overwrite
    #: (``TokenSeq.will_overwrite``), and that layer skips their rows
    overwrites_in_full: bool = False

    @classmethod
    def from_config(cls, cfg, *, length=None, width=None) -> "Placement":
        """The placement with the settings ``cfg`` holds (None: the defaults) for ``length``
        tokens of ``width``."""
        return cls(length=length, width=width)

    def place(self, seq: TokenSeq, tokens: torch.Tensor, owner_id: int, ctx: PromptContext) -> TokenSeq:
        raise NotImplementedError


class PromptStack(nn.Module):
    """The configured prompt modules, applied in order before every layer of every tower."""

    def __init__(self, modules: Iterable[PromptModule] = ()):
        super().__init__()
        self.methods = nn.ModuleList(modules)

    def setup(self, backbone) -> "PromptStack":
        for m in self.methods:
            m.setup(backbone)
        return self.attach(backbone)

    def attach(self, backbone) -> "PromptStack":
        """Remember the backbone (for the frozen instance-feature pass) without owning it:
        the stack must not register or checkpoint backbone weights."""
        self.__dict__["_backbone"] = backbone
        # Contract: a module whose ``frozen_pass_mode`` is set conditions on a prompt-free pass
        # of the frozen tower (dynamic prompting's LM(X)); it runs that pass itself, on the
        # backbone and layer-0 input the stack keeps in ctx.cache[(FROZEN_PASS_INPUT, tower)].
        self.frozen_pass = any(getattr(m, "frozen_pass_mode", None) for m in self.modules())
        return self

    def before_layer(self, tower: str, i: int, seq: TokenSeq, ctx: Optional[PromptContext]) -> TokenSeq:
        if ctx is None:
            ctx = PromptContext()
        ctx.layer = i
        if i == 0 and tower not in ctx.features:
            ctx.features[tower] = masked_mean(seq.x, seq.mask)
            if getattr(self, "frozen_pass", False):
                ctx.cache[(FROZEN_PASS_INPUT, tower)] = (self._backbone, seq)
        for m in self.methods:
            seq = m.before_layer(tower, i, seq, ctx)
        return seq

    def __len__(self):
        return len(self.methods)


def prompt_node(cfg, name: str):
    """``cfg.PROMPT.<name>``; for ``cfg`` None (a module built from keywords, asking a source or
    placement for its settings) the defaults' node."""
    if cfg is None:
        from ..config import get_cfg

        cfg = get_cfg()
    return cfg.PROMPT[name]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens a mask allows: (B, N, D), (B, N) -> (B, D)."""
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
