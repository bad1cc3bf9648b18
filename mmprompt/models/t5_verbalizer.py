"""Classification with T5 by generating label words (Lester et al.'s prompt-tuning setup).

The class names are the label words. The prompted encoder states (with the prompted mask) go to
the library's own decoder and LM head:

* ``loss``: sequence-to-sequence cross-entropy of the gold label word (its tokens and ``</s>``),
  averaged over target tokens exactly as ``T5ForConditionalGeneration(labels=...)`` does;
* ``logits`` (B, C): each class's sequence log-likelihood, the sum of its tokens' log-probs, so
  the argmax is rank classification over the label words and accuracy works as for any head.

All label words are scored in one batched decoder pass (B x C rows); the loss is read from the
gold rows of that same pass, so training needs no second decoder run. ``generate`` decodes free
text greedily from the same prompted encoder, for tasks scored on generated answers (EM/F1).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..build import build_backbone, build_prompts
from ..errors import ConfigError
from ..registry import MODELS
from .base import PromptModel
from .text_classifier import batch_texts

TOWER = "encoder"


class T5Verbalizer(PromptModel):
    def __init__(self, backbone, prompts, label_words: Sequence[str], max_length: Optional[int] = None):
        super().__init__(backbone, prompts)
        self.label_words = list(label_words)
        self.max_length = max_length
        self._targets: Optional[torch.Tensor] = None

    @property
    def tower(self):
        return self.backbone.tower(TOWER)

    def targets(self, device) -> torch.Tensor:
        """(C, L) token ids of the label words (with ``</s>``), -100 after each word's end."""
        if self._targets is None:
            ids, mask = self.tower.tokenize(self.label_words)
            targets = ids.masked_fill(~mask.bool(), -100).cpu()
            rows = {}
            for word, row in zip(self.label_words, targets.tolist()):
                if tuple(row) in rows:
                    raise ConfigError(
                        f"Label words '{rows[tuple(row)]}' and '{word}' tokenize to the same "
                        "tokens, so the verbalizer cannot tell their classes apart; rename one class."
                    )
                rows[tuple(row)] = word
            self._targets = targets
        return self._targets.to(device)

    def encode(self, batch, ctx):
        tokens = self.tower.tokenize(*batch_texts(batch, "t5_verbalizer"), self.max_length)
        return self.tower.encode(tokens, self.prompts, ctx)

    @torch.no_grad()
    def generate(self, batch, ctx=None, max_new_tokens: Optional[int] = None) -> List[str]:
        """Greedy answers for the batch's texts; at most ``max_new_tokens`` tokens (default: as
        many as the longest label word has)."""
        encoded = self.encode(batch, ctx if ctx is not None else self.new_context())
        limit = max_new_tokens or self.targets(encoded.x.device).shape[1]
        return self.tower.decode(self.backbone.generate_ids(encoded.x, encoded.mask, limit))

    def forward(self, batch, ctx=None):
        ctx = self.forward_context(ctx)
        encoded = self.encode(batch, ctx)
        B, N, D = encoded.x.shape
        targets = self.targets(encoded.x.device)
        C, L = targets.shape
        token_log_probs = self.backbone.target_log_probs(
            encoded.x[:, None].expand(B, C, N, D).reshape(B * C, N, D),
            encoded.mask[:, None].expand(B, C, N).reshape(B * C, N),
            targets[None].expand(B, C, L).reshape(B * C, L),
        ).view(B, C, L)
        out = {"logits": token_log_probs.sum(-1)}
        if "label" in batch:
            label = batch["label"].to(encoded.x.device)
            gold = token_log_probs[torch.arange(B, device=label.device), label]
            out["loss"] = -gold.sum() / (targets[label] != -100).sum()
        return out


@MODELS.register("t5_verbalizer")
def build_t5_verbalizer(cfg, classnames=None, backbone=None) -> T5Verbalizer:
    if cfg.MODEL.BACKBONE.NAME != "t5":
        raise ConfigError(
            f"t5_verbalizer decodes label words with T5's decoder; set MODEL.BACKBONE.NAME t5 "
            f"(got {cfg.MODEL.BACKBONE.NAME})."
        )
    if not classnames:
        raise ConfigError(
            "t5_verbalizer needs label words: the dataset's class names are used as the "
            "words the decoder must generate."
        )
    backbone = backbone if backbone is not None else build_backbone(cfg)
    prompts = build_prompts(cfg, backbone)
    return T5Verbalizer(backbone, prompts, classnames, max_length=cfg.MODEL.TEXT.MAX_LENGTH)
