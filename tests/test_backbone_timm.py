"""The timm ViT adapter: equal to timm's own forward, anchors under insertion, masks, freezing,
weights and errors."""

import pytest
import torch
from torch import nn

import mmprompt.backbones._hub as hub
from mmprompt.backbones.timm_vit import TimmViT, create_timm_vit, resolve_timm_name
from mmprompt.build import build_backbone
from mmprompt.config import load_cfg
from mmprompt.errors import ConfigError, OfflineError
from mmprompt.tokens import new_owner_id

TINY = dict(embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8)


def tiny(**overrides) -> TimmViT:
    return create_timm_vit("vit_base_patch16_224", "", {**TINY, **overrides}).eval()


def images(b=2):
    return torch.randn(b, 3, 32, 32)


def test_no_prompt_forward_equals_timm_features_and_logits():
    bb = tiny(num_classes=5)
    x = images()
    vit = bb.model
    feats = bb.tower("vision").run(x)
    assert torch.allclose(feats, vit.forward_head(vit.forward_features(x), pre_logits=True), atol=1e-6)
    assert torch.allclose(bb.classify(feats), vit(x), atol=1e-6)
    assert feats.shape == (2, bb.tower("vision").feature_dim)


def test_avg_pool_model_equals_timm_and_ignores_prompts():
    bb = tiny(global_pool="avg", num_classes=3)
    tower, vit, x = bb.tower("vision"), bb.model, images()
    assert torch.allclose(bb.classify(tower.run(x)), vit(x), atol=1e-6)
    seq = tower.embed(x).insert(torch.randn(4, 64), "start", new_owner_id())
    out = tower.run_layers(seq)
    own = out.x[:, out.owner[0] == 0]  # CLS + patches, prompts left out
    expected = vit.forward_head(vit.norm(own), pre_logits=True)
    assert torch.allclose(tower.pool(out), expected, atol=1e-6)


def test_embed_anchors():
    bb = tiny()
    seq = bb.tower("vision").embed(images())
    assert seq.length == 1 + 16
    assert seq.anchors["start"].tolist() == [1, 1]
    assert seq.anchors["end"].tolist() == [17, 17]
    assert seq.anchors["pool"].tolist() == [0, 0]


def test_register_tokens_are_prefix_tokens():
    bb = tiny(reg_tokens=2, num_classes=4)
    tower, x = bb.tower("vision"), images()
    seq = tower.embed(x)
    assert seq.anchors["start"].tolist() == [3, 3]  # CLS, 2 registers, then patches
    assert torch.allclose(bb.classify(tower.run(x)), bb.model(x), atol=1e-6)


def test_insert_at_start_keeps_cls_pooled():
    bb = tiny()
    tower, vit, x = bb.tower("vision"), bb.model, images()
    k = 3
    seq = tower.embed(x).insert(torch.randn(k, 64), "start", new_owner_id())
    assert seq.anchors["pool"].tolist() == [0, 0]
    assert seq.anchors["end"].tolist() == [17 + k] * 2
    out = tower.run_layers(seq)
    pooled = tower.pool(out)
    assert torch.allclose(pooled, vit.norm(out.x[:, 0]), atol=1e-6)
    # the prompts reached the CLS state, so the check above is not vacuous
    assert not torch.allclose(pooled, tower.run(x), atol=1e-3)


def test_masked_inserted_tokens_change_nothing():
    bb = tiny()
    tower, x = bb.tower("vision"), images()
    plain = tower.pool(tower.run_layers(tower.embed(x)))
    k = 4
    seq = tower.embed(x).insert(torch.randn(k, 64) * 10, "start", new_owner_id(), mask=torch.zeros(k, dtype=torch.bool))
    masked = tower.pool(tower.run_layers(seq))
    assert torch.allclose(masked, plain, atol=1e-6)
    visible = tower.pool(tower.run_layers(tower.embed(x).insert(torch.randn(k, 64) * 10, "start", new_owner_id())))
    assert not torch.allclose(visible, plain, atol=1e-3)


def test_frozen_backbone_gets_no_gradients():
    bb = tiny().freeze()
    tower = bb.tower("vision")
    prompt = nn.Parameter(torch.randn(2, 64))
    owner = new_owner_id()

    class Deep:
        def before_layer(self, name, i, seq, ctx):
            return seq.insert(prompt, "start", owner) if i == 0 else seq.replace(owner, prompt)

    tower.run(images(), Deep()).pow(2).mean().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.parameters())
    assert not any(p.requires_grad for p in bb.parameters())


def test_build_from_config_is_frozen_and_reports_size():
    cfg = load_cfg("configs/_base_/tiny_vit.yaml")
    bb = build_backbone(cfg)
    assert isinstance(bb, TimmViT) and bb.frozen
    assert bb.info() == {"vision": {"width": 64, "layers": 2}}
    assert not hasattr(bb.model.head, "weight")  # no unused timm head (num_classes=0)


def test_deprecated_name_is_mapped_through_timm():
    assert resolve_timm_name("vit_base_patch16_224_in21k") == "vit_base_patch16_224.augreg_in21k"
    bb = create_timm_vit("vit_base_patch16_224_in21k", "", TINY)
    assert bb.arch == "vit_base_patch16_224.augreg_in21k"


def test_unknown_arch_suggests_close_names():
    with pytest.raises(ConfigError, match="vit_base_patch16_224") as e:
        create_timm_vit("vit_bse_patch16_224", "", TINY)
    assert "Unknown timm architecture" in str(e.value)


def test_bad_kwargs_and_pretrained_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="KWARGS"):
        create_timm_vit("vit_base_patch16_224", "", {**TINY, "no_such_arg": 1})
    with pytest.raises(ConfigError, match="file not found"):
        create_timm_vit("vit_base_patch16_224", str(tmp_path / "missing.pth"), TINY)
    with pytest.raises(ConfigError, match="augreg_in21k"):  # lists the real tags
        create_timm_vit("vit_base_patch16_224", "no_such_tag", TINY)


def test_local_weights_file_is_loaded_and_an_unused_head_dropped(tmp_path):
    src = tiny(num_classes=1000)  # a file with an ImageNet head, into a backbone without one
    path = tmp_path / "tiny_vit.pth"
    torch.save(src.model.state_dict(), path)
    loaded = create_timm_vit("vit_base_patch16_224", str(path), TINY)
    own = loaded.model.state_dict()
    assert "head.weight" not in own
    for name, value in own.items():
        assert torch.equal(value, src.model.state_dict()[name]), name


def test_weights_file_of_another_model_is_a_config_error(tmp_path):
    path = tmp_path / "wider.safetensors"
    from safetensors.torch import save_file

    save_file(tiny(embed_dim=32).model.state_dict(), str(path))
    with pytest.raises(ConfigError, match="do not fit timm") as e:
        create_timm_vit("vit_base_patch16_224", str(path), TINY)
    assert "of another shape" in str(e.value)
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="missing in the file"):
        create_timm_vit("vit_base_patch16_224", str(tmp_path / "other.pth"), TINY)


def test_offline_pretrained_tag_is_offline_error():
    # tests run with HF_HUB_OFFLINE=1: timm looks in its cache only, finds nothing
    with pytest.raises(OfflineError) as e:
        create_timm_vit("vit_base_patch16_224_in21k", "timm", TINY)
    msg = str(e.value)
    assert "vit_base_patch16_224.augreg_in21k" in msg and "MODEL.BACKBONE.PRETRAINED" in msg


def test_offline_weights_in_the_hub_cache_are_used(tmp_path):
    """HF_HUB_OFFLINE with the weights already cached: timm loads them, no network needed."""
    from safetensors.torch import save_file

    src = tiny()
    snapshot = tmp_path / "models--timm--vit_base_patch16_224.augreg_in21k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file(src.model.state_dict(), str(snapshot / "model.safetensors"))
    (tmp_path / "models--timm--vit_base_patch16_224.augreg_in21k" / "refs").mkdir()
    (tmp_path / "models--timm--vit_base_patch16_224.augreg_in21k" / "refs" / "main").write_text("0123abcd")
    loaded = create_timm_vit("vit_base_patch16_224_in21k", "timm", TINY, cache_dir=str(tmp_path))
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, src.model.state_dict()[name]), name


def test_unreachable_hub_fails_before_the_library_retries(monkeypatch):
    import timm

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "host_reachable", lambda url: False)

    def must_not_download(*args, **kwargs):
        raise AssertionError("timm was asked to download without a network")

    monkeypatch.setattr(timm, "create_model", must_not_download)
    with pytest.raises(OfflineError, match="no connection to huggingface.co"):
        create_timm_vit("vit_base_patch16_224", "augreg_in21k", TINY)


@pytest.mark.slow
def test_full_size_vit_b16_forward_backward():
    bb = create_timm_vit("vit_base_patch16_224_in21k", "", {}).freeze()
    n = sum(p.numel() for p in bb.parameters())
    assert 85.5e6 < n < 86.5e6  # ViT-B/16 without a classifier head: 85.8M
    tower = bb.tower("vision")
    prompt = nn.Parameter(torch.zeros(10, 768))
    owner = new_owner_id()

    class Shallow:
        def before_layer(self, name, i, seq, ctx):
            return seq.insert(prompt, "start", owner) if i == 0 else seq

    feats = tower.run(torch.randn(2, 3, 224, 224), Shallow())
    assert feats.shape == (2, 768)
    feats.pow(2).mean().backward()
    assert prompt.grad is not None and all(p.grad is None for p in bb.parameters())
