"""image_classifier and clip_prompt_classifier on tiny random backbones."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmprompt.build import build_model
from mmprompt.config import load_cfg
from mmprompt.errors import ConfigError
from mmprompt.models.clip_classifier import CLIPPromptClassifier
from mmprompt.prompts.base import PromptContext, PromptModule, PromptStack
from mmprompt.tokens import new_owner_id

CLASSES = ["golden_retriever", "cat", "sports car"]


class InsertPrompt(PromptModule):
    """k learned tokens inserted at ``at`` before layer 0 of one tower."""

    def __init__(self, tower: str, width: int, k: int = 2, at: str = "start"):
        super().__init__()
        self.tower_name, self.at = tower, at
        self.tokens = nn.Parameter(torch.randn(k, width) * 0.02)
        self.owner_id = new_owner_id()

    def before_layer(self, tower, i, seq, ctx):
        if tower != self.tower_name or i != 0:
            return seq
        return seq.insert(self.tokens, self.at, self.owner_id)


def batch(b=2, labels=True):
    out = {"image": torch.randn(b, 3, 32, 32)}
    if labels:
        out["label"] = torch.arange(b) % len(CLASSES)
    return out


# ---------------------------------------------------------------------- image_classifier
def vit_model(*opts):
    return build_model(load_cfg("configs/_base_/tiny_vit.yaml", opts=list(opts)), CLASSES)


def test_image_classifier_equals_timm_features_through_its_head():
    model = vit_model().eval()
    b = batch()
    out = model(b)
    vit = model.backbone.model
    expected = model.head(vit.forward_head(vit.forward_features(b["image"]), pre_logits=True))
    assert out["logits"].shape == (2, 3)
    assert torch.allclose(out["logits"], expected, atol=1e-6)
    assert torch.allclose(out["loss"], F.cross_entropy(expected, b["label"]), atol=1e-6)
    assert "loss" not in model(batch(labels=False))


def test_image_classifier_trains_only_head_and_prompts():
    model = vit_model()
    model.prompts = PromptStack([InsertPrompt("vision", 64, k=3)])
    model(batch())["loss"].backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {"head.weight", "head.bias", "prompts.methods.0.tokens"}
    assert model.num_params()["trainable"] == 64 * 3 + 3 + 3 * 64


def test_image_classifier_head_pool_modes():
    default = vit_model().eval()
    mean = vit_model("MODEL.HEAD.POOL", "mean").eval()
    mean.load_state_dict(default.state_dict())
    x = batch()["image"]
    vit = default.backbone.model
    tokens = vit.forward_features(x)  # final norm included
    assert torch.allclose(mean.features(x), tokens[:, 1:].mean(1), atol=1e-6)
    assert torch.allclose(default.features(x), tokens[:, 0], atol=1e-6)
    with pytest.raises(ConfigError, match="MODEL.HEAD.POOL"):
        vit_model("MODEL.HEAD.POOL", "max").features(x)


def test_image_classifier_num_classes_from_names_or_config():
    assert vit_model().head.out_features == 3
    assert vit_model("MODEL.HEAD.NUM_CLASSES", 7).head.out_features == 7
    with pytest.raises(ConfigError, match="number of classes"):
        build_model(load_cfg("configs/_base_/tiny_vit.yaml"), None)


# ---------------------------------------------------------------------- clip_prompt_classifier
@pytest.fixture
def clip_model():
    return build_model(load_cfg("configs/_base_/tiny_clip.yaml"), CLASSES)


def with_prompts(base: CLIPPromptClassifier, *modules) -> CLIPPromptClassifier:
    return CLIPPromptClassifier(base.backbone, PromptStack(list(modules)), CLASSES)


def zero_shot_logits(model, images, texts):
    clip = model.backbone.model
    ids, _ = model.backbone.tokenize(texts)
    img = F.normalize(clip.encode_image(images), dim=-1)
    txt = F.normalize(clip.encode_text(ids), dim=-1)
    return clip.logit_scale.exp() * img @ txt.t()


def test_zero_shot_uses_the_template_and_equals_clip(clip_model):
    model = clip_model.eval()
    assert not model.text_prompted
    assert model.class_texts == ["a photo of a golden retriever.", "a photo of a cat.", "a photo of a sports car."]
    b = batch()
    expected = zero_shot_logits(model, b["image"], model.class_texts)
    out = model(b)
    assert torch.allclose(out["logits"], expected, atol=1e-5)
    assert torch.allclose(out["loss"], F.cross_entropy(expected, b["label"]), atol=1e-5)


def test_text_prompts_get_coop_class_texts_and_vision_prompts_keep_the_template(clip_model):
    text_prompted = with_prompts(clip_model, InsertPrompt("text", 64))
    assert text_prompted.text_prompted
    assert text_prompted.class_texts == ["golden retriever.", "cat.", "sports car."]
    vision_only = with_prompts(clip_model, InsertPrompt("vision", 64))
    assert not vision_only.text_prompted
    assert vision_only.class_texts[0] == "a photo of a golden retriever."


def test_one_text_pass_per_batch_over_all_classes(clip_model, monkeypatch):
    model = with_prompts(clip_model, InsertPrompt("text", 64), InsertPrompt("vision", 64))
    text = model.backbone.tower("text")
    calls = []
    embed = text.embed
    monkeypatch.setattr(text, "embed", lambda inputs: calls.append(inputs[0].shape[0]) or embed(inputs))
    model.train()
    model(batch(4))
    model(batch(4))
    assert calls == [3, 3]  # once per batch, for the 3 classes, never per image
    model.eval()
    first = model(batch(4))["logits"]
    model(batch(4))
    assert calls == [3, 3, 3]  # eval: the class features are cached
    model.train()
    model(batch(4))
    assert calls == [3, 3, 3, 3]  # train() drops the cache
    assert first.shape == (4, 3)


def test_cache_is_dropped_when_trained_weights_load(clip_model):
    model = with_prompts(clip_model, InsertPrompt("text", 64)).eval()
    b = batch()
    before = model(b)["logits"]
    state = {k: v + torch.randn_like(v) for k, v in model.trainable_state_dict().items()}
    model.load_trainable_state_dict(state)
    after = model(b)["logits"]
    assert not torch.allclose(before, after, atol=1e-4)
    fresh = with_prompts(clip_model, InsertPrompt("text", 64)).eval()
    fresh.load_trainable_state_dict(state)
    assert torch.allclose(after, fresh(b)["logits"], atol=1e-6)


def test_frozen_clip_trains_only_prompts_and_both_towers_share_one_context(clip_model):
    model = with_prompts(clip_model, InsertPrompt("text", 64), InsertPrompt("vision", 64)).train()
    ctx = PromptContext()
    model(batch(), ctx)["loss"].backward()
    assert set(ctx.features) == {"text", "vision"}
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {"prompts.methods.0.tokens", "prompts.methods.1.tokens"}
    assert all(p.grad is None for p in model.backbone.parameters())


def test_clip_classifier_needs_class_names_and_two_towers():
    with pytest.raises(ConfigError, match="class names"):
        build_model(load_cfg("configs/_base_/tiny_clip.yaml"), None)
    with pytest.raises(ConfigError, match="'text'"):
        build_model(load_cfg("configs/_base_/tiny_vit.yaml", opts=["MODEL.NAME", "clip_prompt_classifier"]), CLASSES)


def test_image_classifier_on_clip_image_features():
    model = build_model(load_cfg("configs/_base_/tiny_clip.yaml", opts=["MODEL.NAME", "image_classifier"]), CLASSES)
    model.eval()
    b = batch()
    assert model.head.in_features == 32  # CLIP's joint embedding, after the image projection
    expected = model.head(model.backbone.model.encode_image(b["image"]))
    assert torch.allclose(model(b)["logits"], expected, atol=1e-6)
