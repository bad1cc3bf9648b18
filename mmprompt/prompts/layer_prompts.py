"""Prompt tokens in one tower, inserted once and replaced at deeper layers.

:class:`LayerPrompts` is the machinery VPT (shallow and deep), prompt tuning, deep prompts and the
short prompts of DePT/ADePT share: tokens from any registered source, put in by any registered
placement, before layer 0 and (deep) replaced before every layer up to a depth. It registers no
method itself; the methods configure it from their own config node.
"""

from __future__ import annotations

from typing import List, Optional

from torch import nn

from ..errors import ConfigError
from ..tokens import new_owner_id
from .base import PromptContext, PromptModule
from .placement import build_placement
from .sources import build_source


def method_tower(backbone, tower_name: str, method: str):
    """The tower a method acts on, or a ConfigError that names the method and the towers there are."""
    if tower_name not in backbone.tower_names:
        raise ConfigError(
            f"Prompt method '{method}' acts on the '{tower_name}' tower, but the "
            f"{type(backbone).__name__} backbone has only {backbone.tower_names}. "
            f"Set its TOWER key to one of those, or use a backbone that has a "
            f"'{tower_name}' tower."
        )
    return backbone.tower(tower_name)


def resolve_depth(depth: int, tower, method: str, key: str) -> int:
    """Layers 0..depth-1 get prompts; 0 means every layer of the tower."""
    if depth <= 0:
        return tower.num_layers
    if depth > tower.num_layers:
        raise ConfigError(
            f"{key} = {depth} but the {tower.name} tower has {tower.num_layers} layers; "
            f"set it to at most {tower.num_layers} (0 = every layer) for {method}."
        )
    return depth


class LayerPrompts(PromptModule):
    """``length`` tokens in ``tower``: inserted before layer 0 and, for the first ``depth``
    layers, replaced by that layer's own tokens (deep prompts replace, never accumulate).

    ``depth = 1`` is a shallow prompt. With ``shared_source`` every layer reads one source
    (used by reparameterisations that produce all layers' tokens at once, see
    :meth:`layer_tokens`).
    """

    def __init__(
        self,
        cfg=None,
        *,
        method: str,
        tower: str,
        length: int,
        depth: int = 1,
        source: str = "param",
        position: str = "prefix",
        init: str = "normal",
        init_text: str = "",
        dropout: float = 0.0,
        depth_key: str = "DEPTH",
    ):
        """``cfg``: where the source and placement read their own settings (PROMPT.DYNAMIC,
        SUPERPOS, RESIDUAL); None builds them with the defaults. The methods' builders
        (``build_vpt`` ...) are the ``from_config`` of each method."""
        super().__init__()
        self.cfg = cfg
        self.method = method
        self.tower_name = tower
        self.length = length
        self.requested_depth = depth
        self.source_name = source
        self.position_name = position
        self.init = init
        self.init_text = init_text
        self.depth_key = depth_key
        self.dropout = nn.Dropout(dropout)
        self.owner_id = new_owner_id()
        self.depth = 0
        self.sources: Optional[nn.ModuleList] = None
        self.placement = None

    def setup(self, backbone) -> None:
        tower = method_tower(backbone, self.tower_name, self.method)
        self.depth = resolve_depth(self.requested_depth, tower, self.method, self.depth_key)
        self.sources = nn.ModuleList([self.build_layer_source(tower, i) for i in range(self.num_sources())])
        self.placement = build_placement(self.position_name, self.cfg, length=self.length, width=tower.width)

    def num_sources(self) -> int:
        return self.depth

    def build_layer_source(self, tower, i: int):
        return build_source(
            self.source_name,
            self.cfg,
            length=self.length,
            width=tower.width,
            tower=tower,
            init=self.init,
            init_text=self.init_text,
            patch_size=getattr(tower, "patch_size", None),
        )

    def layer_tokens(self, i: int, ctx: PromptContext):
        """(1 or B, length, width) tokens for layer ``i``."""
        return self.sources[i](ctx, self.tower_name)

    def before_layer(self, tower, i, seq, ctx):
        if tower != self.tower_name or i >= self.depth or self.length == 0:
            return seq
        tokens = self.dropout(self.layer_tokens(i, ctx))
        seq = self.placement.place(seq, tokens, self.owner_id, ctx)
        if i + 1 < self.depth and self.placement.overwrites_in_full:
            seq = seq.will_overwrite(self.owner_id, i + 1)  # layer i need not compute them
        return seq

    def no_weight_decay(self) -> List[str]:
        return [f"sources.{i}.{name}" for i, s in enumerate(self.sources or []) for name in s.no_weight_decay()]
