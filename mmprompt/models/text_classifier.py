"""Text classification with a prompted encoder and a linear head.

The batch's texts are tokenized inside ``forward`` by the encoder tower's tokenizer (pairs when the
batch has ``text_b``), run through the prompted tower, pooled as ``MODEL.HEAD.POOL`` says (the
tower's default, ``cls``, ``mean`` ...) and classified by a linear layer; the loss is cross-entropy.
Works on any backbone with a text tower named "encoder" (BERT-family, T5 encoder).

P-tuning v2's sequence-classification head (THUDM's ``BertPrefixForSequenceClassification``) is
this model with ``pool="pooler"`` (BERT's frozen dense + tanh on [CLS]), ``dropout`` their
hidden_dropout_prob (0.1) and ``head_init_std`` 0.02: normal(0, 0.02) weights and a zero bias,
what their ``from_pretrained`` gives the new classifier. Their RoBERTa head is the same on
RoBERTa's pooler (which the roberta-large checkpoint lacks, so it is random and frozen there too).
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

TOWER = "encoder"


def batch_texts(batch, model: str):
    """The batch's texts (and second texts of pairs), or an error naming what the batch holds."""
    if not isinstance(batch, dict) or "text" not in batch:
        held = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ConfigError(
            f"{model} reads batches with a 'text' list (and optional 'text_b'); this one has "
            f"{held}. Use a text dataset with this model (DATASET.NAME)."
        )
    return batch["text"], batch.get("text_b")


def num_outputs(cfg, classnames: Optional[Sequence[str]]) -> int:
    n = cfg.MODEL.HEAD.NUM_CLASSES or (len(classnames) if classnames else 0)
    if n <= 0:
        raise ConfigError(
            "The classifier needs its number of classes: give the dataset's class names or set MODEL.HEAD.NUM_CLASSES."
        )
    return n


class TextClassifier(PromptModel):
    def __init__(
        self,
        backbone,
        prompts,
        num_classes: int,
        pool: str = "default",
        dropout: float = 0.0,
        max_length: Optional[int] = None,
        head_init_std: float = 0.0,
    ):
        super().__init__(backbone, prompts)
        self.pool_mode = pool
        self.max_length = max_length
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.tower.width, num_classes)
        if head_init_std < 0:
            raise ConfigError(f"MODEL.TEXT.HEAD_INIT_STD must be >= 0 (0 = torch's default init), got {head_init_std}.")
        if head_init_std > 0:
            nn.init.normal_(self.head.weight, std=head_init_std)
            nn.init.zeros_(self.head.bias)

    @property
    def tower(self):
        return self.backbone.tower(TOWER)

    def features(self, batch, ctx=None) -> torch.Tensor:
        tokens = self.tower.tokenize(*batch_texts(batch, "text_classifier"), self.max_length)
        seq = self.tower.run_layers(self.tower.embed(tokens), self.prompts, ctx)
        return self.tower.pool(seq, self.pool_mode)

    def forward(self, batch, ctx=None):
        ctx = self.forward_context(ctx)
        logits = self.head(self.dropout(self.features(batch, ctx)))
        out = {"logits": logits}
        if "label" in batch:
            out["loss"] = F.cross_entropy(logits, batch["label"].to(logits.device))
        return out


@MODELS.register("text_classifier")
def build_text_classifier(cfg, classnames=None, backbone=None) -> TextClassifier:
    backbone = backbone if backbone is not None else build_backbone(cfg)
    if TOWER not in backbone.tower_names:
        raise ConfigError(
            f"text_classifier reads the '{TOWER}' tower; backbone {cfg.MODEL.BACKBONE.NAME} has "
            f"{backbone.tower_names} (use MODEL.BACKBONE.NAME hf_encoder or t5)."
        )
    prompts = build_prompts(cfg, backbone)
    return TextClassifier(
        backbone,
        prompts,
        num_outputs(cfg, classnames),
        pool=cfg.MODEL.HEAD.POOL,
        dropout=cfg.MODEL.HEAD.DROPOUT,
        max_length=cfg.MODEL.TEXT.MAX_LENGTH,
        head_init_std=cfg.MODEL.TEXT.HEAD_INIT_STD,
    )
