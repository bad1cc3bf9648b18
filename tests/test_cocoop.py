"""CoCoOp and zero-shot CLIP on open_clip towers (tiny random CLIPs; ViT-B/16 widths for the count)."""

import json

import pytest
import torch
import torch.nn.functional as F

from mmprompt.build import build_model
from mmprompt.config import get_cfg, merge_from_list
from mmprompt.errors import ConfigError, MMPromptError
from mmprompt.models.clip_templates import (
    DATASET_TEMPLATES,
    IMAGENET_TEMPLATES,
    IMAGENET_TEMPLATES_SELECT,
    zero_shot_templates,
)
from mmprompt.prompts.base import PromptContext
from mmprompt.prompts.cocoop import IMAGE_FEATURES

CLASSES = ["golden_retriever", "jack-o'-lantern", "crème brûlée"]


def clip_cfg(arch="configs/_base_/tiny_clip_model.json", methods=("cocoop",), **keys):
    cfg = get_cfg()
    merge_from_list(
        cfg,
        [
            "MODEL.NAME",
            "clip_prompt_classifier",
            "MODEL.BACKBONE.NAME",
            "open_clip",
            "MODEL.BACKBONE.ARCH",
            arch,
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "DATASET.NAME",
            "oxford_pets",
        ],
    )
    cfg.PROMPT.METHODS = list(methods)
    merge_from_list(cfg, [str(x) for kv in keys.items() for x in kv])
    return cfg


def tiny(methods=("cocoop",), classes=CLASSES, **keys):
    torch.manual_seed(0)
    return build_model(clip_cfg(methods=methods, **keys), classes)


def batch(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, size, size, generator=g), "label": torch.arange(n) % len(CLASSES)}


def recorded_text_sequences(model):
    """Record the sequence the text tower's layer 0 gets (after the prompts act)."""
    tower = model.backbone.tower("text")
    seen = []
    original = tower.layer

    def layer(i, seq):
        if i == 0:
            seen.append(seq)
        return original(i, seq)

    tower.layer = layer
    return seen


def test_parameter_count_and_shapes_at_vit_b16_widths(tmp_path):
    # ViT-B/16's widths where CoCoOp's parameters are sized: 512-d image embedding, 512-d text
    # tower (one layer each and a small image tower keep the build cheap)
    arch = tmp_path / "b16_widths.json"
    arch.write_text(
        json.dumps(
            {
                "embed_dim": 512,
                "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 1},
            }
        )
    )
    model = build_model(clip_cfg(arch=str(arch)), CLASSES)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    assert shapes == {
        "prompts.methods.0.ctx": (4, 512),
        "prompts.methods.0.meta_net.linear1.weight": (32, 512),
        "prompts.methods.0.meta_net.linear1.bias": (32,),
        "prompts.methods.0.meta_net.linear2.weight": (512, 32),
        "prompts.methods.0.meta_net.linear2.bias": (512,),
    }
    assert model.num_params()["trainable"] == 35360


def test_context_from_phrase_word_count_and_layout():
    model = tiny(**{"PROMPT.COCOOP.N_CTX": 16, "PROMPT.COCOOP.CTX_INIT": "a photo of a"})
    cocoop = model.prompts.methods[0]
    text = model.backbone.tower("text")
    assert cocoop.n_ctx == 4 and cocoop.fixed_words is None  # the phrase's 4 words, not N_CTX 16
    ids, _ = text.tokenize(["a photo of a"])
    assert torch.equal(cocoop.ctx.detach(), text.input_embeddings().weight[ids[0, 1:5]])
    seen = recorded_text_sequences(model)
    model.eval()
    with torch.no_grad():
        model({"image": batch()["image"]})
    seq = seen[0]
    assert seq.batch_size == 2 * len(CLASSES)  # images x classes, image-major
    plain_ids, plain_mask = text.tokenize([c.replace("_", " ") + "." for c in CLASSES])
    for row in range(seq.batch_size):
        assert seq.positions_of(cocoop.owner_id)[row].tolist() == [1, 2, 3, 4]  # [SOT, ctx, name, ., EOT]
        eot = int(plain_mask[row % len(CLASSES)].sum()) - 1
        assert int(seq.anchors["pool"][row]) == eot + 4


def test_phrase_with_more_tokens_than_words_keeps_the_rest_as_words():
    model = tiny(**{"PROMPT.COCOOP.CTX_INIT": "a close-up photo"})  # 3 words, 5 tokens
    cocoop = model.prompts.methods[0]
    text = model.backbone.tower("text")
    ids, mask = text.tokenize(["a close-up photo"])
    tokens = ids[0][mask[0]].tolist()[1:-1]
    assert cocoop.n_ctx == 3 and cocoop.fixed_words.ids.tolist() == tokens[3:]
    assert torch.equal(cocoop.ctx.detach(), text.input_embeddings().weight[tokens[:3]])


def test_context_differs_per_image_and_batching_matches_single_images():
    # the tiny CLIP's 32-d embedding gives the default ratio 2 hidden units, often both off after ReLU
    model = tiny(**{"PROMPT.COCOOP.CTX_INIT": "", "PROMPT.COCOOP.META_NET_RATIO": 2})
    cocoop = model.prompts.methods[0]
    assert cocoop.n_ctx == 4 and cocoop.ctx.std().item() == pytest.approx(0.02, rel=0.5)
    model.eval()
    b = batch(3)
    with torch.no_grad():
        image = F.normalize(model.backbone.tower("vision").run(b["image"]), dim=-1)
        context = cocoop.conditioned_context(image)
        text = model.image_conditioned_text_features(image, PromptContext())
        together = model({"image": b["image"]})["logits"]
        alone = torch.cat([model({"image": b["image"][i : i + 1]})["logits"] for i in range(3)])
    assert context.shape == (3, 4, cocoop.ctx.shape[1])
    assert not torch.allclose(context[0], context[1]) and not torch.allclose(text[0], text[1])
    expected = cocoop.ctx + cocoop.meta_net(image)[:, None]
    assert torch.allclose(context, expected)
    assert torch.allclose(together, alone, atol=1e-5)


def test_text_passes_split_by_whole_images_give_the_same_logits():
    b = batch(3)
    logits = {}
    for limit in (0, len(CLASSES), 2 * len(CLASSES) + 1):
        model = tiny(**{"MODEL.CLIP.MAX_TEXT_PROMPTS_PER_PASS": limit})
        seen = recorded_text_sequences(model)
        model.eval()
        with torch.no_grad():
            logits[limit] = model({"image": b["image"]})["logits"]
        assert [s.batch_size for s in seen] == {0: [9], 3: [3, 3, 3], 7: [6, 3]}[limit]
    assert torch.allclose(logits[0], logits[3], atol=1e-6) and torch.allclose(logits[0], logits[7], atol=1e-6)


def test_meta_net_and_context_get_gradients_and_text_features_are_not_cached():
    model = tiny()
    model.train()
    out = model(batch())
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == {
        "prompts.methods.0.ctx",
        "prompts.methods.0.meta_net.linear1.weight",
        "prompts.methods.0.meta_net.linear1.bias",
        "prompts.methods.0.meta_net.linear2.weight",
        "prompts.methods.0.meta_net.linear2.bias",
    }
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model._text_cache is None
    model.eval()
    with torch.no_grad():
        model({"image": batch()["image"]})
    assert model._text_cache is None  # eval too: the text features depend on the image
    with pytest.raises(MMPromptError, match="depend on the image"):
        model.class_text_features()


def test_without_image_features_the_module_says_what_to_use():
    model = tiny()
    text = model.backbone.tower("text")
    with pytest.raises(MMPromptError, match="clip_prompt_classifier"):
        text.run((model.class_token_ids, model.class_token_mask), model.prompts, PromptContext())
    ctx = PromptContext(features={IMAGE_FEATURES: torch.zeros(2, 32)})
    with pytest.raises(MMPromptError, match="3 text prompts for 2 images"):
        text.run((model.class_token_ids, model.class_token_mask), model.prompts, ctx)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"PROMPT.COCOOP.CTX_INIT": "", "PROMPT.COCOOP.N_CTX": 0}, "N_CTX must be >= 1"),
        ({"PROMPT.COCOOP.META_NET_RATIO": 64}, "leaves no hidden unit"),
        ({"PROMPT.COCOOP.CTX_INIT": "a  photo"}, "space-separated words"),
        ({"MODEL.CLIP.ZERO_SHOT_TEMPLATES": "coop", "DATASET.NAME": "stanford_cars"}, "ZERO_SHOT_TEMPLATES"),
    ],
)
def test_bad_settings_are_config_errors(keys, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**keys)


# ---------------------------------------------------------------------- zero-shot CLIP
def test_templates_per_dataset_and_ensembles():
    assert zero_shot_templates("coop", "dtd") == ["{} texture."]
    assert zero_shot_templates("coop", "DescribableTextures") == ["{} texture."]  # Dassl's name too
    assert zero_shot_templates("coop", "eurosat") == ["a centered satellite photo of {}."]
    assert zero_shot_templates("coop", "ucf101") == ["a photo of a person doing {}."]
    assert zero_shot_templates("coop_ensemble", "oxford_pets") == IMAGENET_TEMPLATES_SELECT + [
        "a photo of a {}, a type of pet."
    ]
    assert zero_shot_templates("coop_ensemble", "imagenet") == IMAGENET_TEMPLATES_SELECT  # no own template
    assert zero_shot_templates("coop_ensemble", "imagenet_sketch")[-1] == "a photo of a {}."
    assert len(zero_shot_templates("coop_ensemble_80", "food101")) == 81 and len(IMAGENET_TEMPLATES) == 80
    assert len(DATASET_TEMPLATES) == 15 and len(IMAGENET_TEMPLATES_SELECT) == 7
    with pytest.raises(ConfigError, match="no zero-shot template for the dataset 'cub'"):
        zero_shot_templates("coop", "cub")
    with pytest.raises(ConfigError, match="Unknown MODEL.CLIP.ZERO_SHOT_TEMPLATES 'ensemble'"):
        zero_shot_templates("ensemble", "dtd")


def test_ensemble_averages_normalised_text_features():
    model = tiny(methods=(), **{"MODEL.CLIP.ZERO_SHOT_TEMPLATES": "coop_ensemble", "DATASET.NAME": "ucf101"})
    templates = IMAGENET_TEMPLATES_SELECT + ["a photo of a person doing {}."]
    names = [c.replace("_", " ") for c in CLASSES]
    assert model.num_templates == 8 and model.class_texts[:3] == [templates[0].format(n) for n in names]
    clip = model.backbone.model
    model.eval()
    b = batch()
    with torch.no_grad():
        per_template = [
            F.normalize(clip.encode_text(model.backbone.tokenize([t.format(n) for n in names])[0]), dim=-1)
            for t in templates
        ]
        text = F.normalize(torch.stack(per_template).mean(0), dim=-1)
        image = F.normalize(clip.encode_image(b["image"]), dim=-1)
        expected = clip.logit_scale.exp() * image @ text.t()
        logits = model({"image": b["image"]})["logits"]
    assert torch.allclose(logits, expected, atol=1e-5)
    assert not torch.allclose(per_template[0], per_template[-1])  # the templates do differ


def test_single_dataset_template_is_the_class_prompt():
    model = tiny(methods=(), **{"MODEL.CLIP.ZERO_SHOT_TEMPLATES": "coop", "DATASET.NAME": "dtd"})
    assert model.class_texts == ["golden retriever texture.", "jack-o'-lantern texture.", "crème brûlée texture."]
    assert model.num_templates == 1 and not model.text_prompted
