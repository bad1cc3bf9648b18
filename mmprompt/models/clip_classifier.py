"""CLIP classification by prompted image and class-text features (CoOp, CoCoOp, MaPLe, zero-shot CLIP).

``logits = logit_scale.exp() * normalize(image features) @ normalize(class text features).T``

The class texts are tokenized once, when the model is built:

* when a prompt method edits the text tower, each class is ``MODEL.CLIP.PROMPT_TEMPLATE``
  (``"{}."``, as CoOp tokenizes "name.") and the method inserts its learned context; the text
  tower gets the ``class_end`` anchor (one past the class name's tokens, i.e. at the "."), which
  CoOp's middle/front placements need. It counts the name's tokens on the name alone, as CoOp's
  ``name_lens`` does;
* otherwise each class is ``MODEL.CLIP.TEMPLATE`` (``"a photo of a {}."``): zero-shot CLIP; or,
  with ``MODEL.CLIP.ZERO_SHOT_TEMPLATES``, CoOp's template of the dataset or an ensemble of
  templates, whose text features are L2-normalised per template and averaged (CoOp's
  ``ZeroshotCLIP`` / ``ZeroshotCLIP2``; see :mod:`mmprompt.models.clip_templates`).

Image-conditioned text prompts (CoCoOp; a prompt module with ``image_conditioned = True``): the
image tower runs first; the text tower then runs on ``B x C`` class prompts, image-major, with
the ``(B, E)`` L2-normalised image embeddings in ``ctx.features[IMAGE_FEATURES]`` (see
:mod:`mmprompt.prompts.cocoop`), in passes of at most ``MODEL.CLIP.MAX_TEXT_PROMPTS_PER_PASS``
prompts (whole images per pass; each pass has its own :class:`PromptContext` holding its images'
embeddings, sharing the records). Each image gets logits against its own class text features,
which are never cached.

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
from ..errors import ConfigError, MMPromptError
from ..prompts.base import PromptContext
from ..prompts.cocoop import IMAGE_FEATURES
from ..prompts.placement import CLASS_END
from ..prompts.sources import phrase_token_ids
from ..registry import MODELS
from .base import PromptModel
from .clip_templates import zero_shot_templates
from .image_classifier import with_num_classes


def _format(template: str, key: str, classname: str) -> str:
    if "{}" not in template:
        raise ConfigError(f"{key} '{template}' has no '{{}}' where the class name goes.")
    return template.format(classname)


class CLIPPromptClassifier(PromptModel):
    """``templates``: the zero-shot class-prompt templates averaged over (None: ``[template]``);
    only for a CLIP whose text tower no prompt method edits."""

    def __init__(
        self,
        backbone,
        prompts,
        classnames: Sequence[str],
        template: str = "a photo of a {}.",
        prompt_template: str = "{}.",
        templates: Optional[Sequence[str]] = None,
        max_text_prompts_per_pass: int = 1024,
    ):
        super().__init__(backbone, prompts)
        for tower in ("vision", "text"):
            if tower not in backbone.tower_names:
                raise ConfigError(
                    f"clip_prompt_classifier needs 'vision' and 'text' towers; the "
                    f"{type(backbone).__name__} backbone has {backbone.tower_names} "
                    f"(use MODEL.BACKBONE.NAME open_clip)."
                )
        # CoOp writes class names with spaces ("golden_retriever" -> "golden retriever").
        self.classnames: List[str] = [c.replace("_", " ") for c in classnames]
        if max_text_prompts_per_pass < 0:
            raise ConfigError(
                f"MODEL.CLIP.MAX_TEXT_PROMPTS_PER_PASS must be >= 0 (0 = no limit), got {max_text_prompts_per_pass}."
            )
        self.max_text_prompts_per_pass = max_text_prompts_per_pass
        self.image_conditioned = any(getattr(m, "image_conditioned", False) for m in prompts.methods)
        text = self.backbone.tower("text")
        ids, mask = text.tokenize([_format(prompt_template, "MODEL.CLIP.PROMPT_TEMPLATE", c) for c in self.classnames])
        self.text_prompted = self._prompts_edit_text(ids, mask)
        if self.text_prompted:
            if templates is not None:
                raise ConfigError(
                    "MODEL.CLIP.ZERO_SHOT_TEMPLATES chooses the class prompts of a CLIP whose text "
                    "tower no prompt method edits; here a method learns text context (class prompts "
                    'are MODEL.CLIP.PROMPT_TEMPLATE). Set MODEL.CLIP.ZERO_SHOT_TEMPLATES "".'
                )
            self.class_texts = [prompt_template.format(c) for c in self.classnames]
            self.num_templates = 1
            rows = [(prompt_template, c) for c in self.classnames]
        else:
            templates = list(templates) if templates else [template]
            # template-major: the C class texts of template 0, then those of template 1 ...
            self.class_texts = [_format(t, "MODEL.CLIP.TEMPLATE", c) for t in templates for c in self.classnames]
            self.num_templates = len(templates)
            rows = [(t, c) for t in templates for c in self.classnames]
            ids, mask = text.tokenize(self.class_texts)
        self.register_buffer("class_token_ids", ids, persistent=False)
        self.register_buffer("class_token_mask", mask, persistent=False)
        self.register_buffer("class_name_end", self._class_name_end(rows, ids, mask), persistent=False)
        self._text_cache: Optional[torch.Tensor] = None

    @torch.no_grad()
    def _class_name_end(self, rows, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Position one past the class name in each tokenized class text (``rows``: its
        ``(template, class name)``): the content start plus the tokens of the template's text
        before "{}" and of the name, each counted alone as CoOp's ``name_lens`` does."""
        text = self.backbone.tower("text")
        anchors = text.embed((ids, mask)).anchors
        lengths = torch.as_tensor(
            [len(phrase_token_ids(text, t.split("{}")[0])) + len(phrase_token_ids(text, c)) for t, c in rows],
            dtype=torch.long,
            device=anchors["start"].device,
        )
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
        # image-conditioned modules read one (zero) image embedding for this look at the layout
        image = torch.zeros(1, self.backbone.tower("vision").feature_dim, device=ids.device)
        ctx = PromptContext(features={IMAGE_FEATURES: image})
        return any(self.prompts.before_layer("text", i, seq, ctx) is not seq for i in range(text.num_layers))

    # ------------------------------------------------------------------ text features
    def _text_cacheable(self) -> bool:
        if not self.training:
            return True
        return not self.text_prompted and not any(p.requires_grad for p in self.backbone.parameters())

    def class_text_features(self, ctx: Optional[PromptContext] = None) -> torch.Tensor:
        """(C, D) text features of the class prompts, one text pass for all classes: unnormalised
        for one template, the mean of the templates' L2-normalised features for an ensemble."""
        if self._text_cache is not None:
            return self._text_cache
        if self.image_conditioned:
            raise MMPromptError(
                "This CLIP's class text features depend on the image (an image-conditioned "
                "prompt method such as cocoop): call the model on a batch of images instead."
            )
        text = self.backbone.tower("text")
        features = text.run(self.class_text_inputs(), self.prompts, ctx if ctx is not None else self.new_context())
        if self.num_templates > 1:
            features = F.normalize(features.reshape(self.num_templates, len(self.classnames), -1), dim=-1).mean(0)
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

    def image_conditioned_text_features(self, image_features: torch.Tensor, ctx: PromptContext) -> torch.Tensor:
        """(B, C, D) L2-normalised class text features of each image, for image-conditioned prompts:
        the text tower runs on whole images' class prompts, at most MAX_TEXT_PROMPTS_PER_PASS a pass."""
        text = self.backbone.tower("text")
        num_classes = len(self.classnames)
        limit = self.max_text_prompts_per_pass
        images_per_pass = max(1, limit // num_classes) if limit else image_features.shape[0]
        out = []
        for start in range(0, image_features.shape[0], images_per_pass):
            chunk = image_features[start : start + images_per_pass]
            n = chunk.shape[0]
            pass_ctx = PromptContext(step=ctx.step, features={IMAGE_FEATURES: chunk}, records=ctx.records)
            ids = self.class_token_ids.repeat(n, 1)
            mask = self.class_token_mask.repeat(n, 1)
            features = text.run((ids, mask, {CLASS_END: self.class_name_end.repeat(n)}), self.prompts, pass_ctx)
            out.append(F.normalize(features, dim=-1).reshape(n, num_classes, -1))
        return torch.cat(out)

    # ------------------------------------------------------------------ forward
    def forward(self, batch, ctx=None):
        ctx = self.forward_context(ctx)
        images = batch["image"].to(self.class_token_ids.device)
        scale = self.backbone.logit_scale.exp()
        if self.image_conditioned:
            image_features = F.normalize(self.backbone.tower("vision").run(images, self.prompts, ctx), dim=-1)
            text_features = self.image_conditioned_text_features(image_features, ctx)
            logits = scale * torch.einsum("bd,bcd->bc", image_features, text_features)
        else:
            text_features = F.normalize(self.class_text_features(ctx), dim=-1)
            image_features = F.normalize(self.backbone.tower("vision").run(images, self.prompts, ctx), dim=-1)
            logits = scale * image_features @ text_features.t()
        if getattr(self.backbone, "logit_bias", None) is not None:
            logits = logits + self.backbone.logit_bias
        out = {"logits": logits}
        if "label" in batch:
            out["loss"] = F.cross_entropy(logits, batch["label"].to(logits.device))
        return out


@MODELS.register("clip_prompt_classifier")
def build_clip_prompt_classifier(cfg, classnames=None, backbone=None) -> CLIPPromptClassifier:
    if not classnames:
        raise ConfigError("clip_prompt_classifier needs the dataset's class names to build its class prompts.")
    cfg = with_num_classes(cfg, classnames)
    backbone = backbone if backbone is not None else build_backbone(cfg)
    prompts = build_prompts(cfg, backbone)
    clip = cfg.MODEL.CLIP
    templates = zero_shot_templates(clip.ZERO_SHOT_TEMPLATES, cfg.DATASET.NAME) if clip.ZERO_SHOT_TEMPLATES else None
    return CLIPPromptClassifier(
        backbone,
        prompts,
        classnames,
        template=clip.TEMPLATE,
        prompt_template=clip.PROMPT_TEMPLATE,
        templates=templates,
        max_text_prompts_per_pass=clip.MAX_TEXT_PROMPTS_PER_PASS,
    )
