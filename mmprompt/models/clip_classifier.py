"""CLIP classification by prompted image and class-text features (CoOp, MaPLe, zero-shot CLIP).

``logits = logit_scale.exp() * normalize(image features) @ normalize(class text features).T``

The class texts are tokenized once, when the model is built:

* when a prompt method edits the text tower, each class is ``MODEL.CLIP.PROMPT_TEMPLATE``
  (``"{}."``, as CoOp tokenizes "name.") and the method inserts its learned context; the text
  tower gets the ``class_end`` anchor (one past the class name's tokens, i.e. at the "."), which
  CoOp's middle/front placements need. It counts the name's tokens on the name alone, as CoOp's
  ``name_lens`` does;
* otherwise each class is ``MODEL.CLIP.TEMPLATE`` (``"a photo of a {}."``): zero-shot CLIP.

Which case applies is found by asking the prompt stack once, on the tokenized class texts,
whether it changes the text sequence before any layer (methods return the sequence unchanged for
towers they do not act on).

The text tower runs once per batch over all classes, not once per image. Its features are cached
while they cannot change: always, when no prompt edits the text tower and the backbone is frozen;
in eval mode otherwise. ``train()``, loading weights and moving the model drop the cache. Prompt
modules must therefore not rely on the text tower having run in the same pass (MaPLe's coupling
computes its tokens from its own parameters, whichever tower asks first).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..build import build_backbone, build_prompts
from ..errors import ConfigError
from ..prompts.base import PromptContext
from ..prompts.placement import CLASS_END
from ..prompts.sources import phrase_token_ids
from ..registry import MODELS
from .base import PromptModel
from .image_classifier import with_num_classes


def _format(template: str, key: str, classname: str) -> str:
    if "{}" not in template:
        raise ConfigError(f"{key} '{template}' has no '{{}}' where the class name goes.")
    return template.format(classname)


class CLIPPromptClassifier(PromptModel):
    def __init__(self, backbone, prompts, classnames: Sequence[str], template: str = "a photo of a {}.",
                 prompt_template: str = "{}."):
        super().__init__(backbone, prompts)
        for tower in ("vision", "text"):
            if tower not in backbone.tower_names:
                raise ConfigError(f"clip_prompt_classifier needs 'vision' and 'text' towers; the "
                                  f"{type(backbone).__name__} backbone has {backbone.tower_names} "
                                  f"(use MODEL.BACKBONE.NAME open_clip).")
        # CoOp writes class names with spaces ("golden_retriever" -> "golden retriever").
        self.classnames: List[str] = [c.replace("_", " ") for c in classnames]
        text = self.backbone.tower("text")
        ids, mask = text.tokenize([_format(prompt_template, "MODEL.CLIP.PROMPT_TEMPLATE", c) for c in self.classnames])
        self.text_prompted = self._prompts_edit_text(ids, mask)
        if not self.text_prompted:
            ids, mask = text.tokenize([_format(template, "MODEL.CLIP.TEMPLATE", c) for c in self.classnames])
        self.class_texts = [(prompt_template if self.text_prompted else template).format(c) for c in self.classnames]
        self.register_buffer("class_token_ids", ids, persistent=False)
        self.register_buffer("class_token_mask", mask, persistent=False)
        self.register_buffer("class_name_end", self._class_name_end(prompt_template if self.text_prompted else template,
                                                                    ids, mask), persistent=False)
        self._text_cache: Optional[torch.Tensor] = None

    @torch.no_grad()
    def _class_name_end(self, template: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(C,) position one past each class name in the tokenized class texts: the content start
        plus the tokens of the template's text before "{}" and of the name (each counted alone)."""
        text = self.backbone.tower("text")
        anchors = text.embed((ids, mask)).anchors
        before = len(phrase_token_ids(text, template.split("{}")[0]))
        lengths = torch.as_tensor([before + len(phrase_token_ids(text, c)) for c in self.classnames],
                                  dtype=torch.long, device=anchors["start"].device)
        return torch.minimum(anchors["start"] + lengths, anchors["end"])  # a truncated text ends at EOT

    def class_text_inputs(self):
        """What the text tower embeds: the class token ids, their mask and the ``class_end`` anchor."""
        return self.class_token_ids, self.class_token_mask, {CLASS_END: self.class_name_end}

    @torch.no_grad()
    def _prompts_edit_text(self, ids: torch.Tensor, mask: torch.Tensor) -> bool:
        text = self.backbone.tower("text")
        if len(self.prompts) == 0:
            return False
        seq = text.embed((ids, mask))
        ctx = PromptContext()
        return any(self.prompts.before_layer("text", i, seq, ctx) is not seq for i in range(text.num_layers))

    # ------------------------------------------------------------------ text features
    def _text_cacheable(self) -> bool:
        if not self.training:
            return True
        return not self.text_prompted and not any(p.requires_grad for p in self.backbone.parameters())

    def class_text_features(self, ctx: Optional[PromptContext] = None) -> torch.Tensor:
        """(C, D) unnormalised text features of the class prompts, one text pass for all classes."""
        if self._text_cache is not None:
            return self._text_cache
        text = self.backbone.tower("text")
        features = text.run(self.class_text_inputs(), self.prompts, ctx if ctx is not None else self.new_context())
        if self._text_cacheable():
            self._text_cache = features.detach()
        return features

    def clear_text_cache(self) -> None:
        self._text_cache = None

    def train(self, mode: bool = True):
        self._text_cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._text_cache = None  # .to(device / dtype) must not leave features behind
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, *args, **kwargs):
        self._text_cache = None
        return super().load_state_dict(state_dict, strict, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(self, batch, ctx=None):
        ctx = ctx if ctx is not None else self.new_context()
        text_features = self.class_text_features(ctx)
        images = batch["image"].to(self.class_token_ids.device)
        image_features = self.backbone.tower("vision").run(images, self.prompts, ctx)
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        logits = self.backbone.logit_scale.exp() * image_features @ text_features.t()
        if getattr(self.backbone, "logit_bias", None) is not None:
            logits = logits + self.backbone.logit_bias
        out = {"logits": logits}
        if "label" in batch:
            out["loss"] = F.cross_entropy(logits, batch["label"].to(logits.device))
        return out


@MODELS.register("clip_prompt_classifier")
def build_clip_prompt_classifier(cfg, classnames=None) -> CLIPPromptClassifier:
    if not classnames:
        raise ConfigError("clip_prompt_classifier needs the dataset's class names to build its class prompts.")
    cfg = with_num_classes(cfg, classnames)
    backbone = build_backbone(cfg)
    prompts = build_prompts(cfg, backbone)
    return CLIPPromptClassifier(backbone, prompts, classnames, template=cfg.MODEL.CLIP.TEMPLATE,
                                prompt_template=cfg.MODEL.CLIP.PROMPT_TEMPLATE)
