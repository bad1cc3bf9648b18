"""MaPLe (Khattak et al. 2023) and the baselines its repository ships beside it (IVLP, VPT in CLIP).

Modes (``PROMPT.MAPLE.MODE``), each the model of one trainer of muzairkhattak/multimodal-prompt-learning:

* ``maple`` (``trainers/maple.py``): text context of ``N_CTX`` tokens before text layer 0 and own
  deep text prompts before text layers 1..J-1 (J = ``PROMPT_DEPTH``); the vision prompts of layer j
  are produced from the text prompts of layer j by a coupling ``Linear(text width -> vision width)``,
  one per layer. The layer-0 coupling is a Linear of its own; the deeper ones start as copies of
  one Linear (the authors clone a single layer), so they are equal at init.
* ``ivlp`` (``trainers/independentVL.py``, "2+2ctx"): independent deep vision and deep text
  prompts, no coupling; vision and text may differ in length (``N_CTX_VISION``) and depth
  (``PROMPT_DEPTH_VISION``), as IVLP's N_CTX_VISION / N_CTX_TEXT and PROMPT_DEPTH_VISION / _TEXT.
* ``deep_language`` (IVLP's "language_only" recipe): deep text prompts only.
* ``deep_vision`` (``trainers/vpt.py``, VPT-deep inside CLIP): deep vision prompts only; the class
  texts stay the hand-written ``MODEL.CLIP.TEMPLATE`` "a photo of a {}." (the VPT trainer's).

Placement, as the authors' CLIP fork: text prompts right after SOT (``[SOT, ctx, fixed words,
name, ., EOT]``); vision prompts after the patches, the layer-0 ones concatenated *before*
``ln_pre`` (the open_clip tower defers ``ln_pre`` to layer 0, see ``backbones/base.py``), deeper
ones replacing the previous layer's prompt outputs.

Context init (their ``if ctx_init and n_ctx <= 4``): with ``CTX_INIT`` and ``N_CTX <= 4`` the
text context starts from the first ``N_CTX`` tokens of the phrase and the phrase's other tokens
stay as fixed words after it ("a photo" learned, "of a" kept); with ``N_CTX > 4`` the authors'
code ignores ``CTX_INIT``: normal(0, 0.02) and no fixed words. Deep text prompts and all vision
prompts start from normal(0, 0.02).

Precision: the authors' code casts prompts and the layer-0 coupling to fp16 (``.half()``) even
when the rest runs at fp32 (with ``PREC fp32`` their MaPLe does not even run: an fp16 Linear gets
fp32 input). That is an artifact of their fp16 CLIP; here everything runs in the backbone's dtype,
which equals their computation with those casts removed (what ``benchmarks/official/clip_family.py``
compares against).

Widths come from the towers. The coupled vision tokens are computed once per forward pass and
shared through ``ctx.cache``, whichever tower runs first. Parameters on ViT-B/16 CLIP with
N_CTX 2 and depth 9: 2x512 + 8x2x512 text tokens + 9 x (512x768 + 768) couplings = 3,555,072.
"""

from __future__ import annotations

import copy
from typing import Dict, List

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
#: the authors' trainers initialise the text context from CTX_INIT only up to this many tokens
MAX_PHRASE_INIT_CTX = 4


class MaPLe(PromptModule):
    """Keywords are the PROMPT.MAPLE keys in lower case (their meaning is documented there);
    ``settings``: the config its sources and placements read (PROMPT.DYNAMIC ...), None = defaults."""

    def __init__(
        self,
        *,
        mode: str = "maple",
        n_ctx: int = 2,
        n_ctx_vision: int = 0,
        ctx_init: str = "a photo of a",
        prompt_depth: int = 9,
        prompt_depth_vision: int = 0,
        source: str = "param",
        position: str = "prefix",
        vision_position: str = "suffix",
        settings=None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"PROMPT.MAPLE.MODE '{mode}' is not one of {', '.join(MODES)}.")
        self.settings = settings
        self.mode = mode
        self.n_ctx = n_ctx
        coupled = mode == "maple"
        self.n_ctx_vision = n_ctx if coupled or n_ctx_vision <= 0 else n_ctx_vision
        self.ctx_init = ctx_init
        self.prompt_depth = prompt_depth
        self.prompt_depth_vision = prompt_depth_vision
        self.source_name = source
        self.position_name = position
        self.vision_position_name = vision_position
        self.text_prompts = mode in ("maple", "deep_language", "ivlp")
        self.vision_prompts = mode in ("maple", "deep_vision", "ivlp")
        for key, value, used in (
            ("N_CTX", self.n_ctx, self.text_prompts),
            ("N_CTX_VISION", self.n_ctx_vision, self.vision_prompts),
        ):
            if used and value < 1:
                raise ConfigError(f"PROMPT.MAPLE.{key} = {value}: mode {mode} needs at least one prompt token.")
        self.text_owner = new_owner_id()
        self.vision_owner = new_owner_id()
        self.text_depth = 0
        self.vision_depth = 0
        self.text_sources = nn.ModuleList()
        self.vision_sources = nn.ModuleList()
        self.couplings = nn.ModuleList()
        self.text_placement = None
        self.vision_placement = None
        self.fixed_words = None

    @classmethod
    def from_config(cls, cfg) -> "MaPLe":
        c = cfg.PROMPT.MAPLE
        return cls(
            mode=c.MODE,
            n_ctx=c.N_CTX,
            n_ctx_vision=c.N_CTX_VISION,
            ctx_init=c.CTX_INIT,
            prompt_depth=c.PROMPT_DEPTH,
            prompt_depth_vision=c.PROMPT_DEPTH_VISION,
            source=c.SOURCE,
            position=c.POSITION,
            vision_position=c.VISION_POSITION,
            settings=cfg,
        )

    def depths(self, layers: Dict[str, int]) -> Dict[str, int]:
        """The prompt depth of each prompted tower ("text", "vision") for towers of ``layers[name]``
        layers, or a ConfigError naming the key that is out of range. :meth:`setup` calls it with
        the built towers; the config check before anything is built, with the layers the
        architecture's config states (``mmprompt/config/validate.py``)."""

        def checked(key: str, depth: int, max_depth: int) -> int:
            if not 1 <= depth <= max_depth:
                raise ConfigError(
                    f"PROMPT.MAPLE.{key} = {depth}; it must be between 1 and {max_depth} "
                    f"(the layers of the prompted towers)."
                )
            return depth

        if self.mode == "maple":  # one depth: layer j's vision prompts come from layer j's text prompts
            depth = checked("PROMPT_DEPTH", self.prompt_depth, min(layers["text"], layers["vision"]))
            return {"text": depth, "vision": depth}
        depths = {}
        if self.text_prompts:
            depths["text"] = checked("PROMPT_DEPTH", self.prompt_depth, layers["text"])
        if self.vision_prompts:
            key = "PROMPT_DEPTH_VISION" if self.prompt_depth_vision > 0 else "PROMPT_DEPTH"
            depths["vision"] = checked(key, self.prompt_depth_vision or self.prompt_depth, layers["vision"])
        return depths

    def setup(self, backbone):
        what = f"maple (mode {self.mode})"
        text = require_text_tower(backbone, what) if self.text_prompts else None
        vision = method_tower(backbone, "vision", what) if self.vision_prompts else None
        depths = self.depths({name: t.num_layers for name, t in (("text", text), ("vision", vision)) if t is not None})
        self.text_depth, self.vision_depth = depths.get("text", 0), depths.get("vision", 0)
        if self.text_prompts:
            init_text, rest = "", []
            phrase = self.ctx_init.replace("_", " ")
            if phrase and self.n_ctx <= MAX_PHRASE_INIT_CTX:
                init_text, rest = split_context_phrase(text, phrase, self.n_ctx, "PROMPT.MAPLE.CTX_INIT")
            # layer 0 starts from the phrase, deeper text prompts from normal(0, 0.02) as in MaPLe
            self.text_sources = nn.ModuleList(
                [
                    build_source(
                        self.source_name,
                        self.settings,
                        length=self.n_ctx,
                        width=text.width,
                        tower=text,
                        init="text" if (i == 0 and init_text) else "normal",
                        init_text=init_text if i == 0 else "",
                    )
                    for i in range(self.text_depth)
                ]
            )
            self.text_placement = build_placement(
                self.position_name, self.settings, length=self.n_ctx, width=text.width
            )
            self.fixed_words = FixedWords(text, rest) if rest else None
        if self.vision_prompts:
            if self.mode == "maple":
                deep = nn.Linear(text.width, vision.width)
                self.couplings = nn.ModuleList(
                    [nn.Linear(text.width, vision.width)] + [copy.deepcopy(deep) for _ in range(self.vision_depth - 1)]
                )
            else:
                self.vision_sources = nn.ModuleList(
                    [
                        build_source(
                            self.source_name,
                            self.settings,
                            length=self.n_ctx_vision,
                            width=vision.width,
                            tower=vision,
                            init="normal",
                            patch_size=getattr(vision, "patch_size", None),
                        )
                        for _ in range(self.vision_depth)
                    ]
                )
            self.vision_placement = build_placement(
                self.vision_position_name, self.settings, length=self.n_ctx_vision, width=vision.width
            )

    @property
    def depth(self) -> int:
        """The deepest prompted layer + 1, over both towers."""
        return max(self.text_depth, self.vision_depth)

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
        if tower == "text" and self.text_prompts and i < self.text_depth:
            seq = self.text_placement.place(seq, self._tokens(ctx, "text")[i], self.text_owner, ctx)
            if i == 0 and self.fixed_words is not None:
                seq = self.fixed_words.place_after_context(seq)
            if i + 1 < self.text_depth and self.text_placement.overwrites_in_full:
                seq = seq.will_overwrite(self.text_owner, i + 1)  # layer i need not compute them
        elif tower == "vision" and self.vision_prompts and i < self.vision_depth:
            seq = self.vision_placement.place(seq, self._tokens(ctx, "vision")[i], self.vision_owner, ctx)
            if i + 1 < self.vision_depth and self.vision_placement.overwrites_in_full:
                seq = seq.will_overwrite(self.vision_owner, i + 1)
        return seq

    def no_weight_decay(self):
        names = []
        for group in ("text_sources", "vision_sources"):
            for i, s in enumerate(getattr(self, group)):
                names += [f"{group}.{i}.{n}" for n in s.no_weight_decay()]
        return names


@PROMPTS.register("maple")
def build_maple(cfg) -> MaPLe:
    return MaPLe.from_config(cfg)
