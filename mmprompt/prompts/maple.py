"""MaPLe (Khattak et al. 2023) and the ablations its model zoo reports.

Modes (``PROMPT.MAPLE.MODE``):

* ``maple``: text context of ``N_CTX`` tokens before text layer 0 and own deep text prompts before
  text layers 1..J-1 (J = ``PROMPT_DEPTH``); the vision prompts of layer j are produced from the
  text prompts of layer j by a coupling function ``Linear(text width -> vision width)``, one per
  layer. Deep prompts replace the previous layer's prompt outputs.
* ``deep_vision``: deep vision prompts only (VPT-deep inside CLIP's image tower).
* ``deep_language``: deep text prompts only.
* ``ivlp``: independent deep vision and deep text prompts, no coupling.

Known difference from MaPLe's code: there the layer-0 vision prompts are concatenated before
CLIP's ``ln_pre``; here every prompt enters after the tower's ``embed`` (which ends with
``ln_pre`` in the open_clip adapter), as VPT prompts do, so layer-0 vision prompts are not
normalised by ``ln_pre``. Deep prompts (layers >= 1) are placed as in MaPLe.

Widths come from the towers. The coupled vision tokens are computed once per forward pass and
shared through ``ctx.cache``, whichever tower runs first. Parameters on ViT-B/16 CLIP with
N_CTX 2 and depth 9: 2x512 + 8x2x512 text tokens + 9 x (512x768 + 768) couplings = 3,555,072.
"""
from __future__ import annotations

from typing import List

from torch import nn

from ..errors import ConfigError
from ..registry import PROMPTS
from ..tokens import new_owner_id
from .base import PromptModule
from .coop import FixedWords, require_text_tower, split_context_phrase
from .layer_prompts import method_tower
from .placement import build_placement
from .sources import build_source

MODES = ("maple", "deep_vision", "deep_language", "ivlp")


class MaPLe(PromptModule):
    def __init__(self, cfg):
        super().__init__()
        c = cfg.PROMPT.MAPLE
        if c.MODE not in MODES:
            raise ConfigError(f"PROMPT.MAPLE.MODE '{c.MODE}' is not one of {', '.join(MODES)}.")
        self.cfg = cfg
        self.mode = c.MODE
        self.n_ctx = c.N_CTX
        self.n_ctx_vision = c.N_CTX if c.MODE == "maple" or c.N_CTX_VISION <= 0 else c.N_CTX_VISION
        self.text_prompts = c.MODE in ("maple", "deep_language", "ivlp")
        self.vision_prompts = c.MODE in ("maple", "deep_vision", "ivlp")
        self.text_owner = new_owner_id()
        self.vision_owner = new_owner_id()
        self.depth = 0
        self.text_sources = nn.ModuleList()
        self.vision_sources = nn.ModuleList()
        self.couplings = nn.ModuleList()
        self.text_placement = None
        self.vision_placement = None
        self.fixed_words = None

    def setup(self, backbone):
        c = self.cfg.PROMPT.MAPLE
        text = require_text_tower(backbone, f"maple (mode {self.mode})") if self.text_prompts or self.mode == "maple" else None
        vision = method_tower(backbone, "vision", f"maple (mode {self.mode})") if self.vision_prompts else None
        towers = [t for t in (text, vision) if t is not None]
        max_depth = min(t.num_layers for t in towers)
        if not 1 <= c.PROMPT_DEPTH <= max_depth:
            raise ConfigError(f"PROMPT.MAPLE.PROMPT_DEPTH = {c.PROMPT_DEPTH}; it must be between 1 and "
                              f"{max_depth} (the layers of the prompted towers).")
        self.depth = c.PROMPT_DEPTH
        if self.text_prompts:
            init_text, rest = "", []
            if c.CTX_INIT:
                init_text, rest = split_context_phrase(text, c.CTX_INIT, self.n_ctx, "PROMPT.MAPLE.CTX_INIT")
            # layer 0 starts from the phrase, deeper text prompts from normal(0, 0.02) as in MaPLe
            self.text_sources = nn.ModuleList([
                build_source(c.SOURCE, self.cfg, length=self.n_ctx, width=text.width, tower=text,
                             init="text" if (i == 0 and init_text) else "normal", init_text=init_text if i == 0 else "")
                for i in range(self.depth)])
            self.text_placement = build_placement(c.POSITION, self.cfg, length=self.n_ctx, width=text.width)
            self.fixed_words = FixedWords(text, rest) if rest else None
        if self.vision_prompts:
            if self.mode == "maple":
                self.couplings = nn.ModuleList([nn.Linear(text.width, vision.width) for _ in range(self.depth)])
            else:
                self.vision_sources = nn.ModuleList([
                    build_source(c.SOURCE, self.cfg, length=self.n_ctx_vision, width=vision.width, tower=vision,
                                 init="normal", patch_size=getattr(vision, "patch_size", None))
                    for _ in range(self.depth)])
            self.vision_placement = build_placement(c.VISION_POSITION, self.cfg, length=self.n_ctx_vision,
                                                    width=vision.width)

    def _tokens(self, ctx, tower: str) -> List:
        """Every prompted layer's tokens for ``tower``, computed once per forward pass."""
        key = f"maple/{self.text_owner}/{tower}"
        if key not in ctx.cache:
            if tower == "text":
                ctx.cache[key] = [s(ctx, "text") for s in self.text_sources]
            elif self.mode == "maple":
                ctx.cache[key] = [f(t) for f, t in zip(self.couplings, self._tokens(ctx, "text"))]
            else:
                ctx.cache[key] = [s(ctx, "vision") for s in self.vision_sources]
        return ctx.cache[key]

    def before_layer(self, tower, i, seq, ctx):
        if i >= self.depth:
            return seq
        if tower == "text" and self.text_prompts:
            seq = self.text_placement.place(seq, self._tokens(ctx, "text")[i], self.text_owner, ctx)
            if i == 0 and self.fixed_words is not None:
                seq = self.fixed_words.place_after_context(seq)
        elif tower == "vision" and self.vision_prompts:
            seq = self.vision_placement.place(seq, self._tokens(ctx, "vision")[i], self.vision_owner, ctx)
        return seq

    def no_weight_decay(self):
        names = []
        for group in ("text_sources", "vision_sources"):
            for i, s in enumerate(getattr(self, group)):
                names += [f"{group}.{i}.{n}" for n in s.no_weight_decay()]
        return names


@PROMPTS.register("maple")
def build_maple(cfg) -> MaPLe:
    return MaPLe(cfg)
