"""Image classification with a prompted vision tower and a trainable linear head (VPT's setup).

The image batch runs through the backbone's ``vision`` tower with the prompt stack acting before
every layer; the pooled feature (``MODEL.HEAD.POOL``: the backbone's own pooling, ``cls`` or
``mean``) goes through dropout (``MODEL.HEAD.DROPOUT``) and a linear layer. The loss is
cross-entropy when the batch has labels.

``MODEL.HEAD.INIT`` ``vpt`` initialises that layer as KMnP/vpt's classifier (``src/models/mlp.py``
``MLP.last_layer`` with ``special_bias=True``): weights ``kaiming_normal_(mode='fan_out')``
(std ``sqrt(2 / num_classes)``), every bias ``-log((1 - 0.01) / 0.01)`` (a 1 % prior per class);
``default`` keeps ``nn.Linear``'s own init. ``MODEL.HEAD.BIAS_WEIGHT_DECAY False`` exempts the
head's bias from weight decay, as VPT's optimizer does for ``last_layer.bias``.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..build import build_backbone, build_prompts
from ..errors import ConfigError
from ..registry import MODELS
from .base import PromptModel

TOWER = "vision"
HEAD_INITS = ("default", "vpt")
#: KMnP/vpt's special_bias: every class starts at this prior probability
VPT_PRIOR_PROB = 0.01


def init_head_(head: nn.Linear, init: str) -> nn.Linear:
    """Initialise a linear classifier in place (see the module docstring for the choices)."""
    if init == "vpt":
        nn.init.kaiming_normal_(head.weight, a=0, mode="fan_out")
        nn.init.constant_(head.bias, -math.log((1 - VPT_PRIOR_PROB) / VPT_PRIOR_PROB))
    elif init != "default":
        raise ConfigError(f"MODEL.HEAD.INIT '{init}' is not one of {', '.join(HEAD_INITS)}.")
    return head


def with_num_classes(cfg, classnames: Optional[Sequence[str]]):
    """A copy of ``cfg`` whose MODEL.HEAD.NUM_CLASSES is set (from the class names when it is 0),
    so prompt methods that size per-class parameters (CoOp's CSC) can read it."""
    n = cfg.MODEL.HEAD.NUM_CLASSES or (len(classnames) if classnames else 0)
    if n <= 0:
        raise ConfigError(
            "The classifier needs its number of classes: give the dataset's class names or set MODEL.HEAD.NUM_CLASSES."
        )
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.HEAD.NUM_CLASSES = n
    return cfg


def vision_tower_of(backbone, model_name: str):
    if TOWER not in backbone.tower_names:
        raise ConfigError(
            f"{model_name} reads the '{TOWER}' tower; the {type(backbone).__name__} backbone has "
            f"{backbone.tower_names} (use MODEL.BACKBONE.NAME timm_vit or open_clip)."
        )
    return backbone.tower(TOWER)


class ImageClassifier(PromptModel):
    def __init__(
        self,
        backbone,
        prompts,
        num_classes: int,
        pool: str = "default",
        dropout: float = 0.0,
        head_init: str = "default",
        head_bias_weight_decay: bool = True,
    ):
        super().__init__(backbone, prompts)
        self.pool_mode = pool
        tower = vision_tower_of(backbone, "image_classifier")
        self.dropout = nn.Dropout(dropout)
        self.head = init_head_(nn.Linear(getattr(tower, "feature_dim", tower.width), num_classes), head_init)
        self.head_bias_weight_decay = head_bias_weight_decay

    @classmethod
    def from_config(cls, cfg, backbone, prompts) -> "ImageClassifier":
        """``cfg`` must already carry MODEL.HEAD.NUM_CLASSES (see :func:`with_num_classes`)."""
        h = cfg.MODEL.HEAD
        return cls(
            backbone,
            prompts,
            h.NUM_CLASSES,
            pool=h.POOL,
            dropout=h.DROPOUT,
            head_init=h.INIT,
            head_bias_weight_decay=h.BIAS_WEIGHT_DECAY,
        )

    def no_weight_decay(self) -> List[str]:
        # read by the optimizer's parameter groups (mmprompt/engine/optim.py), names relative to self
        return [] if self.head_bias_weight_decay else ["head.bias"]

    @property
    def tower(self):
        return self.backbone.tower(TOWER)

    def features(self, images: torch.Tensor, ctx=None) -> torch.Tensor:
        seq = self.tower.run_layers(
            self.tower.embed(images), self.prompts, ctx, then_pool=True, pool_mode=self.pool_mode
        )
        return self.tower.pool(seq, self.pool_mode)

    def forward(self, batch, ctx=None):
        ctx = self.forward_context(ctx)
        images = batch["image"].to(self.head.weight.device)
        logits = self.head(self.dropout(self.features(images, ctx)))
        out = {"logits": logits}
        if "label" in batch:
            out["loss"] = F.cross_entropy(logits, batch["label"].to(logits.device))
        return out


@MODELS.register("image_classifier")
def build_image_classifier(cfg, classnames=None, backbone=None) -> ImageClassifier:
    cfg = with_num_classes(cfg, classnames)
    backbone = backbone if backbone is not None else build_backbone(cfg)
    vision_tower_of(backbone, "image_classifier")
    prompts = build_prompts(cfg, backbone)
    return ImageClassifier.from_config(cfg, backbone, prompts)
