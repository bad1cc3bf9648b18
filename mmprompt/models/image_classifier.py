"""Image classification with a prompted vision tower and a trainable linear head (VPT's setup).

The image batch runs through the backbone's ``vision`` tower with the prompt stack acting before
every layer; the pooled feature (``MODEL.HEAD.POOL``: the backbone's own pooling, ``cls`` or
``mean``) goes through dropout (``MODEL.HEAD.DROPOUT``) and a linear layer. The loss is
cross-entropy when the batch has labels.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..build import build_backbone, build_prompts
from ..errors import ConfigError
from ..registry import MODELS
from .base import PromptModel

TOWER = "vision"


def with_num_classes(cfg, classnames: Optional[Sequence[str]]):
    """A copy of ``cfg`` whose MODEL.HEAD.NUM_CLASSES is set (from the class names when it is 0),
    so prompt methods that size per-class parameters (CoOp's CSC) can read it."""
    n = cfg.MODEL.HEAD.NUM_CLASSES or (len(classnames) if classnames else 0)
    if n <= 0:
        raise ConfigError("The classifier needs its number of classes: give the dataset's class names "
                          "or set MODEL.HEAD.NUM_CLASSES.")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.HEAD.NUM_CLASSES = n
    return cfg


def vision_tower_of(backbone, model_name: str):
    if TOWER not in backbone.tower_names:
        raise ConfigError(f"{model_name} reads the '{TOWER}' tower; the {type(backbone).__name__} backbone has "
                          f"{backbone.tower_names} (use MODEL.BACKBONE.NAME timm_vit or open_clip).")
    return backbone.tower(TOWER)


class ImageClassifier(PromptModel):
    def __init__(self, backbone, prompts, num_classes: int, pool: str = "default", dropout: float = 0.0):
        super().__init__(backbone, prompts)
        self.pool_mode = pool
        tower = vision_tower_of(backbone, "image_classifier")
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(getattr(tower, "feature_dim", tower.width), num_classes)

    @property
    def tower(self):
        return self.backbone.tower(TOWER)

    def features(self, images: torch.Tensor, ctx=None) -> torch.Tensor:
        seq = self.tower.run_layers(self.tower.embed(images), self.prompts, ctx)
        return self.tower.pool(seq, self.pool_mode)

    def forward(self, batch, ctx=None):
        ctx = ctx if ctx is not None else self.new_context()
        images = batch["image"].to(self.head.weight.device)
        logits = self.head(self.dropout(self.features(images, ctx)))
        out = {"logits": logits}
        if "label" in batch:
            out["loss"] = F.cross_entropy(logits, batch["label"].to(logits.device))
        return out


@MODELS.register("image_classifier")
def build_image_classifier(cfg, classnames=None) -> ImageClassifier:
    cfg = with_num_classes(cfg, classnames)
    backbone = build_backbone(cfg)
    vision_tower_of(backbone, "image_classifier")
    prompts = build_prompts(cfg, backbone)
    return ImageClassifier(backbone, prompts, cfg.MODEL.HEAD.NUM_CLASSES, pool=cfg.MODEL.HEAD.POOL,
                           dropout=cfg.MODEL.HEAD.DROPOUT)
