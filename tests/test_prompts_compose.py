"""The composition examples of issue 3 on the real tiny backbones, built from the method configs:
MaPLe with a superposed text context, VPT-deep with superposed prompts, VPT-deep with ADePT offsets
on the patch tokens of layers 0-3, prompt tuning with Residual reparameterisation; and an
impossible combination refused at setup."""

import os

import pytest
import torch

from mmprompt.build import build_model
from mmprompt.config import load_cfg
from mmprompt.engine.optim import build_param_groups
from mmprompt.errors import ConfigError
from mmprompt.prompts.base import PromptContext

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIGS = os.path.join(ROOT, "configs")
TINY_CLIP = [
    "MODEL.BACKBONE.ARCH",
    os.path.join(CONFIGS, "_base_", "tiny_clip_model.json"),
    "MODEL.BACKBONE.PRETRAINED",
    "",
]
TINY_VIT = [
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "MODEL.BACKBONE.KWARGS",
    "{'embed_dim': 32, 'depth': 4, 'num_heads': 2, 'img_size': 16, 'patch_size': 8}",
]
TINY_T5 = [
    "MODEL.BACKBONE.ARCH",
    "t5",
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "MODEL.TEXT.TOKENIZER",
    "byt5",
    "MODEL.BACKBONE.KWARGS",
    "{'d_model': 32, 'd_ff': 64, 'd_kv': 8, 'num_heads': 4, 'num_layers': 2, 'vocab_size': 384}",
]


def config(name, *opts):
    return load_cfg(os.path.join(CONFIGS, name), opts=list(opts))


def record_layers(tower):
    """Remember each layer's input and output sequence."""
    seen = []
    layer = tower.layer

    def recording(i, seq):
        out = layer(i, seq)
        seen.append((seq, out))
        return out

    tower.layer = recording
    return seen


def tokens_of(seq, owner):
    pos = seq.positions_of(owner)
    return seq.x.gather(1, pos[..., None].expand(-1, -1, seq.width))


def step(model, batch):
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(batch)["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    opt.step()
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items())
    return got


def test_maple_with_superposed_text_context():
    cfg = config(
        "maple.yaml",
        *TINY_CLIP,
        "PROMPT.MAPLE.SOURCE",
        "superpos",
        "PROMPT.SUPERPOS.M",
        "16",
        "PROMPT.MAPLE.PROMPT_DEPTH",
        "2",
    )
    model = build_model(cfg, ["cat", "dog", "owl"])
    maple = model.prompts.methods[0]
    text_source = maple.text_sources[0]
    assert type(text_source).__name__ == "SuperPosSource" and text_source.E.shape == (2, 64, 16)
    vocab = model.backbone.tower("text").input_embeddings().weight
    assert all(any(torch.equal(c, v) for v in vocab[:49408]) for c in text_source.E[0].t()[:3])
    text_seen = record_layers(model.backbone.tower("text"))
    vision_seen = record_layers(model.backbone.tower("vision"))
    model.eval()
    model({"image": torch.randn(2, 3, 32, 32)})
    for i in range(2):
        superposed = torch.einsum("ldm,lm->ld", maple.text_sources[i].E, maple.text_sources[i].weights)
        assert torch.allclose(tokens_of(text_seen[i][0], maple.text_owner)[0], superposed)
        assert torch.allclose(tokens_of(vision_seen[i][0], maple.vision_owner)[0], maple.couplings[i](superposed))
    got = step(model, {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 2])})
    assert "prompts.methods.0.text_sources.0.E" in got and "prompts.methods.0.couplings.1.weight" in got
    groups = {g["name"]: g for g in build_param_groups(model, cfg)}
    assert {"prompts.methods.0.text_sources.0.E", "prompts.methods.0.text_sources.1.E"} <= set(
        groups["default (no weight decay)"]["param_names"]
    )
    assert "prompts.methods.0.text_sources.0.weights" in groups["default"]["param_names"]


def test_vpt_deep_with_superposed_prompts_per_layer():
    cfg = config(
        "vpt_deep_cub.yaml",
        *TINY_VIT,
        "PROMPT.VPT.SOURCE",
        "superpos",
        "PROMPT.SUPERPOS.M",
        "8",
        "PROMPT.VPT.NUM_TOKENS",
        "3",
        "PROMPT.VPT.DROPOUT",
        "0.0",
    )
    model = build_model(cfg, ["a", "b"])
    vpt = model.prompts.methods[0]
    assert len(vpt.sources) == 4 and all(s.E.shape == (3, 32, 8) for s in vpt.sources)
    seen = record_layers(model.backbone.tower("vision"))
    model.eval()
    model({"image": torch.randn(2, 3, 16, 16)})
    assert [s.length for s, _ in seen] == [1 + 3 + 4] * 4
    for i, (s, _) in enumerate(seen):
        expected = vpt.sources[i](PromptContext(), "vision")[0]
        assert torch.allclose(tokens_of(s, vpt.owner_id)[0], expected)
    got = step(model, {"image": torch.randn(2, 3, 16, 16), "label": torch.tensor([0, 1])})
    assert {f"prompts.methods.0.sources.{i}.{p}" for i in range(4) for p in ("E", "weights")} <= got


def test_vpt_deep_with_adept_offsets_on_patch_tokens_of_layers_0_to_3():
    cfg = config(
        "vpt_deep_cub.yaml",
        *TINY_VIT,
        "PROMPT.METHODS",
        "['vpt', 'adept']",
        "PROMPT.VPT.NUM_TOKENS",
        "2",
        "PROMPT.VPT.DROPOUT",
        "0.0",
        "PROMPT.ADEPT.TOWER",
        "vision",
        "PROMPT.ADEPT.NUM_TOKENS",
        "0",
        "PROMPT.ADEPT.BOTTLENECK",
        "5",
        "PROMPT.ADEPT.LAYERS",
        "[0, 1, 2, 3]",
    )
    model = build_model(cfg, ["a", "b"])
    vpt, adept = model.prompts.methods
    for mlp in adept.offsets.values():  # W_up starts at 0; move it so the offsets show
        torch.nn.init.normal_(mlp.up.weight)
        torch.nn.init.normal_(mlp.up.bias)
    tower = model.backbone.tower("vision")
    seen = record_layers(tower)
    model.eval()
    images = torch.randn(2, 3, 16, 16)
    embedded = tower.embed(images)
    model({"image": images})
    for i, (s, _) in enumerate(seen):
        previous = embedded if i == 0 else seen[i - 1][1]
        mlp = adept.offsets[str(i)]
        # sequence: [CLS, P, P, 4 patches]; at layer 0 the prompts are not in `previous` yet
        prev_patches = previous.x[:, -4:]
        assert torch.allclose(s.x[:, -4:], prev_patches + mlp.up(torch.relu(mlp.down(prev_patches))), atol=1e-6)
        assert torch.equal(s.x[:, 0], previous.x[:, 0])  # CLS not offset
        assert torch.equal(tokens_of(s, vpt.owner_id)[0], vpt.sources[i].tokens)  # prompts: VPT's own
    got = step(model, {"image": torch.randn(2, 3, 16, 16), "label": torch.tensor([0, 1])})
    assert {f"prompts.methods.1.offsets.{i}.up.weight" for i in range(4)} <= got


def test_prompt_tuning_with_residual_reparameterisation_on_t5():
    cfg = config("t5_residual.yaml", *TINY_T5, "PROMPT.RESIDUAL.HIDDEN", "8")
    model = build_model(cfg, ["no", "yes"])
    assert model.backbone.dropout_off
    model.train()
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, torch.nn.Dropout))
    pt = model.prompts.methods[0]
    source = pt.sources[0]
    seen = record_layers(model.backbone.tower("encoder"))
    model.eval()
    model({"text": ["good", "bad film"]})
    expected = source.mlp(source.tokens) + source.tokens
    assert torch.allclose(tokens_of(seen[0][0], pt.owner_id)[0], expected)
    got = step(model, {"text": ["good", "bad film"], "label": torch.tensor([1, 0])})
    assert {"prompts.methods.0.sources.0.tokens", "prompts.methods.0.sources.0.mlp.0.weight"} <= got


def test_dept_offsets_get_their_own_learning_rate():
    cfg = config("t5_dept.yaml", *TINY_T5, "PROMPT.DEPT.NUM_TOKENS", "4", "PROMPT.DEPT.RANK", "3")
    model = build_model(cfg, ["no", "yes"])
    groups = {g["name"]: g for g in build_param_groups(model, cfg)}
    assert groups["offsets"]["lr"] == 5e-3 and groups["default"]["lr"] == 0.3  # configs/t5_dept.yaml
    assert set(groups["offsets"]["param_names"]) == {"prompts.methods.0.offsets.0.A", "prompts.methods.0.offsets.0.B"}


def test_text_context_method_on_a_vision_only_backbone_is_refused_at_setup():
    cfg = config("vpt_deep_cub.yaml", *TINY_VIT, "PROMPT.METHODS", "['coop']")
    with pytest.raises(ConfigError, match=r"'coop' learns text context.*needs a 'text' tower.*\['vision'\]"):
        build_model(cfg, ["a", "b"])


def test_checkpoint_of_a_composed_model_holds_only_prompts_and_restores_it():
    opts = [*TINY_CLIP, "PROMPT.MAPLE.SOURCE", "superpos", "PROMPT.SUPERPOS.M", "8", "PROMPT.MAPLE.PROMPT_DEPTH", "2"]
    model = build_model(config("maple.yaml", *opts), ["cat", "dog"])
    for p in model.prompts.parameters():
        torch.nn.init.normal_(p)
    state = model.trainable_state_dict()
    assert state and all(k.startswith("prompts.methods.0.") for k in state)
    assert sum(v.numel() for v in state.values()) == sum(p.numel() for p in model.prompts.parameters())
    torch.manual_seed(1)
    other = build_model(config("maple.yaml", *opts), ["cat", "dog"])
    other.backbone.load_state_dict(model.backbone.state_dict())  # the same frozen weights, as from one file
    other.load_trainable_state_dict(state)
    images = {"image": torch.randn(2, 3, 32, 32)}
    model.eval(), other.eval()
    assert torch.equal(model(images)["logits"], other(images)["logits"])
