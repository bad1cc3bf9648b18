"""The open_clip adapter: image and text towers equal encode_image / encode_text, the EOT anchor
follows insertions, masks hide switched-off tokens, freezing, weights and errors."""

import pytest
import torch
from torch import nn

import mmprompt.backbones._hub as hub
from mmprompt.backbones.open_clip import OpenCLIP, create_open_clip
from mmprompt.build import build_backbone
from mmprompt.config import load_cfg
from mmprompt.errors import ConfigError, OfflineError
from mmprompt.tokens import new_owner_id

TINY_JSON = "configs/_base_/tiny_clip_model.json"
SOT, EOT = 49406, 49407
TEXTS = ["a photo of a cat.", "dog", "a blurry photo of the big red car on a road."]


@pytest.fixture(scope="module")
def clip() -> OpenCLIP:
    torch.manual_seed(0)
    return create_open_clip(TINY_JSON).eval()


def images(b=2):
    return torch.randn(b, 3, 32, 32)


def word_ids(clip, text):
    ids, mask = clip.tokenize([text])
    return [i for i in ids[0][mask[0]].tolist() if i not in (SOT, EOT)]


def padded(rows, length=77):
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, : len(row)] = torch.as_tensor(row)
    return out


def test_image_tower_equals_encode_image(clip):
    x = images()
    vision = clip.tower("vision")
    vision.skip_unused_rows = False
    try:
        assert torch.equal(vision.run(x), clip.model.encode_image(x))  # ln_pre deferred, same ops
    finally:
        vision.skip_unused_rows = True
    # by default the last layer runs on the class token alone: its own matrix products, which
    # round float32 sums in another order (tests/test_row_savings.py)
    torch.testing.assert_close(vision.run(x), clip.model.encode_image(x), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def clip_random_norms() -> OpenCLIP:
    """Gains and biases away from 1 / 0, so a misplaced normalisation cannot hide."""
    torch.manual_seed(1)
    bb = create_open_clip(TINY_JSON).eval()
    with torch.no_grad():
        for m in bb.model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn_like(m.weight))
                m.bias.copy_(0.3 * torch.randn_like(m.bias))
    return bb


def test_layer0_vision_prompts_pass_through_ln_pre(clip_random_norms):
    """[CLS, patches, P] concatenated *before* ln_pre, as the CLIP fork of MaPLe/IVLP/VPT does:
    written out here with the library's modules."""
    visual = clip_random_norms.model.visual
    vision = clip_random_norms.tower("vision")
    assert vision.deferred_input_norm
    x, prompts = images(), torch.randn(3, 64)
    seq = vision.embed(x).insert(prompts, "end", new_owner_id())
    ours = vision.pool(vision.run_layers(seq))
    with torch.no_grad():
        tokens = visual.conv1(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([visual.class_embedding.expand(2, 1, -1), tokens], 1) + visual.positional_embedding
        before_ln = torch.cat([tokens, prompts.expand(2, -1, -1)], 1)
        expected = visual.ln_post(visual.transformer(visual.ln_pre(before_ln))[:, 0]) @ visual.proj
        # prompts inserted after ln_pre instead (mmprompt before this was fixed): not the same
        after_ln = torch.cat([visual.ln_pre(tokens), prompts.expand(2, -1, -1)], 1)
        misplaced = visual.ln_post(visual.transformer(after_ln)[:, 0]) @ visual.proj
    assert torch.allclose(ours, expected, atol=1e-5)
    assert not torch.allclose(misplaced, expected, atol=1e-2)


def test_text_tower_equals_encode_text(clip):
    ids, mask = clip.tokenize(TEXTS)
    text = clip.tower("text")
    assert torch.allclose(text.run((ids, mask)), clip.model.encode_text(ids), atol=1e-6)
    assert torch.allclose(text.run(TEXTS), clip.model.encode_text(ids), atol=1e-6)  # raw strings work too


def test_text_embed_anchors_and_mask(clip):
    ids, mask = clip.tokenize(TEXTS)
    seq = clip.tower("text").embed((ids, mask))
    eot = ids.argmax(-1)
    assert seq.anchors["start"].tolist() == [1, 1, 1]
    assert seq.anchors["end"].tolist() == eot.tolist() == seq.anchors["pool"].tolist()
    # trimmed after the batch's last EOT; the padding kept (after shorter texts' EOT) is switched off
    assert seq.length == int(eot.max()) + 1
    assert torch.equal(seq.mask, mask[:, : seq.length]) and not mask[:, seq.length :].any()
    assert int(mask[1].sum()) == 3  # SOT dog EOT


def test_tokenize_contract(clip):
    text = clip.tower("text")
    ids, mask = text.tokenize("a cat")
    assert ids.shape == mask.shape == (1, 77) and mask.dtype == torch.bool
    assert {SOT, EOT, 0} <= text.special_token_ids()
    assert text.input_embeddings() is clip.model.token_embedding
    assert text.deferred_position


def test_pool_anchor_follows_eot_after_insertion_before_end(clip):
    text = clip.tower("text")
    ids, mask = text.tokenize(TEXTS)
    seq = text.embed((ids, mask))
    k = 4
    moved = seq.insert(torch.randn(k, 64), "end", new_owner_id())
    assert moved.anchors["pool"].tolist() == (ids.argmax(-1) + k).tolist()
    eot_embedding = clip.model.token_embedding.weight[EOT]
    assert torch.equal(moved.gather_anchor("pool"), eot_embedding.expand(len(TEXTS), -1))


@pytest.mark.parametrize("where", ["start", "end"])
def test_inserted_word_embeddings_equal_the_longer_text(clip, where):
    """Positions are deferred to layer 0, so inserting the embeddings of words gives exactly the
    text that has those words: the EOT pooling picks the same token as encode_text does."""
    text = clip.tower("text")
    ids, mask = text.tokenize(TEXTS)
    extra = word_ids(clip, "very small")
    rows = []
    for t in TEXTS:
        words = word_ids(clip, t)
        rows.append([SOT] + (extra + words if where == "start" else words + extra) + [EOT])
    expected = clip.model.encode_text(padded(rows))
    for trim in (True, False):
        text.trim_text = trim
        seq = text.embed((ids, mask)).insert(clip.model.token_embedding.weight[extra], where, new_owner_id())
        # untrimmed, the sequence is beyond the context: trailing padding is trimmed at layer 0
        assert seq.length == (int(ids.argmax(-1).max()) + 1 if trim else 77) + len(extra)
        assert torch.allclose(text.pool(text.run_layers(seq)), expected, atol=1e-6)
    text.trim_text = True


def test_switched_off_text_tokens_get_no_attention(clip):
    text = clip.tower("text")
    ids, mask = text.tokenize(TEXTS)
    plain = text.run((ids, mask))
    owner = new_owner_id()

    def at_layer1(masked):
        class Insert:
            def before_layer(self, name, i, seq, ctx):
                if i != 1:
                    return seq
                tokens = torch.randn(3, 64) * 10
                return seq.insert(tokens, "start", owner, mask=None if not masked else torch.zeros(3, dtype=torch.bool))

        return Insert()

    assert torch.allclose(text.run((ids, mask), at_layer1(True)), plain, atol=1e-6)
    assert not torch.allclose(text.run((ids, mask), at_layer1(False)), plain, atol=1e-3)


def test_switched_off_tokens_before_sot_stay_finite(clip):
    """A switched-off token at position 0 sees no visible token under the causal mask; it must
    not turn into NaN (which would reach every token through its value)."""
    text = clip.tower("text")
    ids, mask = text.tokenize(TEXTS)
    owner = new_owner_id()

    class BeforeSot:
        def before_layer(self, name, i, seq, ctx):
            return seq.insert(torch.randn(2, 64), 0, owner, mask=torch.zeros(2, dtype=torch.bool)) if i == 1 else seq

    out = text.run((ids, mask), BeforeSot())
    assert torch.isfinite(out).all()
    assert torch.allclose(out, text.run((ids, mask)), atol=1e-6)


def test_switched_off_image_tokens_get_no_attention(clip):
    vision = clip.tower("vision")
    x = images()
    plain = vision.run(x)
    k = 5
    seq = vision.embed(x).insert(
        torch.randn(k, 64) * 10, "start", new_owner_id(), mask=torch.zeros(k, dtype=torch.bool)
    )
    assert seq.anchors["pool"].tolist() == [0, 0]
    assert torch.allclose(vision.pool(vision.run_layers(seq)), plain, atol=1e-6)
    seen = vision.embed(x).insert(torch.randn(k, 64) * 10, "start", new_owner_id())
    assert not torch.allclose(vision.pool(vision.run_layers(seen)), plain, atol=1e-3)


@pytest.mark.parametrize("variant", ["custom_text", "custom_blocks"])
def test_other_open_clip_layouts_equal_the_library(variant, tmp_path):
    """CustomTextCLIP (text modules under model.text) and open_clip's custom attention blocks
    (their own Attention, which takes the 3-D additive masks too)."""
    import json

    kwargs = {}
    arch = TINY_JSON
    if variant == "custom_text":
        kwargs["force_custom_text"] = True
    else:
        with open(TINY_JSON) as f:
            cfg = json.load(f)
        cfg["vision_cfg"]["block_type"] = cfg["text_cfg"]["block_type"] = "custom"
        cfg["vision_cfg"]["qk_norm"] = cfg["text_cfg"]["qk_norm"] = True
        arch = str(tmp_path / "tiny_clip_custom_blocks.json")
        with open(arch, "w") as f:
            json.dump(cfg, f)
    bb = create_open_clip(arch, "", kwargs).eval()
    if variant == "custom_blocks":
        assert type(bb.model.transformer.resblocks[0]).__name__ == "CustomResidualAttentionBlock"
    else:
        assert type(bb.model).__name__ == "CustomTextCLIP"
    ids, mask = bb.tokenize(TEXTS)
    x = images()
    text, vision = bb.tower("text"), bb.tower("vision")
    assert torch.allclose(text.run((ids, mask)), bb.model.encode_text(ids), atol=1e-6)
    assert torch.allclose(vision.run(x), bb.model.encode_image(x), atol=1e-6)
    owner = new_owner_id()

    class SwitchedOff:
        def before_layer(self, name, i, seq, ctx):
            return (
                seq.insert(torch.randn(3, 64), "start", owner, mask=torch.zeros(3, dtype=torch.bool)) if i == 1 else seq
            )

    assert torch.allclose(text.run((ids, mask), SwitchedOff()), bb.model.encode_text(ids), atol=1e-6)
    assert torch.allclose(vision.run(x, SwitchedOff()), bb.model.encode_image(x), atol=1e-6)


def test_eot_beyond_context_is_a_clear_error(clip):
    text = clip.tower("text")
    long_text = " ".join(["cat"] * 70)
    seq = text.embed(text.tokenize([long_text])).insert(torch.randn(10, 64), "start", new_owner_id())
    with pytest.raises(ConfigError, match="context length 77"):
        text.run_layers(seq)


def test_frozen_backbone_gets_no_gradients(clip):
    bb = create_open_clip(TINY_JSON).freeze()
    text_prompt = nn.Parameter(torch.randn(2, 64) * 0.02)
    image_prompt = nn.Parameter(torch.randn(2, 64) * 0.02)
    owner = new_owner_id()

    class Shallow:
        def before_layer(self, name, i, seq, ctx):
            if i:
                return seq
            return seq.insert(text_prompt if name == "text" else image_prompt, "start", owner)

    t = bb.tower("text").run(TEXTS, Shallow())
    v = bb.tower("vision").run(images(), Shallow())
    (v @ t.t()).pow(2).mean().backward()
    assert text_prompt.grad is not None and image_prompt.grad is not None
    assert all(p.grad is None for p in bb.parameters())


def test_build_from_config(clip):
    bb = build_backbone(load_cfg("configs/_base_/tiny_clip.yaml"))
    assert isinstance(bb, OpenCLIP) and bb.frozen
    assert bb.info() == {"vision": {"width": 64, "layers": 2}, "text": {"width": 64, "layers": 2}}
    assert bb.tower("vision").feature_dim == bb.tower("text").feature_dim == 32


def test_local_checkpoint_file_is_loaded(clip, tmp_path):
    path = tmp_path / "tiny_clip.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = create_open_clip(TINY_JSON, str(path), activation="gelu").eval()
    ids, _ = clip.tokenize(TEXTS)
    assert torch.equal(loaded.model.encode_text(ids), clip.model.encode_text(ids))


@pytest.fixture
def fake_openai_tag(monkeypatch, tmp_path):
    """The tiny architecture gets an 'openai' tag (QuickGELU, as open_clip's real one) whose
    download is a file of random weights: what an offline user copies from the tag."""
    import open_clip

    torch.manual_seed(2)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(create_open_clip(TINY_JSON, activation="quick_gelu").model.state_dict(), path)
    real_cfg = open_clip.get_pretrained_cfg
    monkeypatch.setattr(
        open_clip,
        "get_pretrained_cfg",
        lambda name, tag: (
            {"hf_hub": "timm/tiny_clip.openai/", "quick_gelu": True} if tag == "openai" else real_cfg(name, tag)
        ),
    )
    monkeypatch.setattr(open_clip, "download_pretrained", lambda cfg, cache_dir=None: str(path))
    return str(path)


def test_file_saved_from_the_openai_tag_gives_the_tags_logits_with_quick_gelu(fake_openai_tag):
    tag = create_open_clip(TINY_JSON, "openai").eval()  # auto follows the tag: QuickGELU
    from_file = create_open_clip(TINY_JSON, fake_openai_tag, activation="quick_gelu").eval()
    with_gelu = create_open_clip(TINY_JSON, fake_openai_tag, activation="gelu").eval()
    assert tag.activation == from_file.activation == "quick_gelu" and with_gelu.activation == "gelu"
    x = images()
    ids, _ = tag.tokenize(TEXTS)
    for bb in (from_file, with_gelu):
        same = torch.equal(bb.tower("vision").run(x), tag.tower("vision").run(x)) and torch.equal(
            bb.tower("text").run(TEXTS), tag.tower("text").run(TEXTS)
        )
        assert same == (bb is from_file)


def test_activation_must_be_stated_for_a_file_and_agree_with_a_tag(fake_openai_tag):
    with pytest.raises(ConfigError, match="does not say which activation.*ACTIVATION quick_gelu for OpenAI"):
        create_open_clip(TINY_JSON, fake_openai_tag)
    with pytest.raises(
        ConfigError, match="tag 'openai' was trained with quick_gelu but MODEL.BACKBONE.ACTIVATION is gelu"
    ):
        create_open_clip(TINY_JSON, "openai", activation="gelu")
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.ACTIVATION"):
        create_open_clip(TINY_JSON, "", {"force_quick_gelu": True})
    with pytest.raises(ConfigError, match="'swish' is not one of auto, quick_gelu, gelu"):
        create_open_clip(TINY_JSON, "", activation="swish")
    assert create_open_clip(TINY_JSON).activation == "gelu"  # random weights: the architecture's own


def test_clip_vit_b16_recipes_state_openai_quick_gelu():
    cfg = load_cfg("configs/_base_/clip_vit_b16.yaml")
    assert (cfg.MODEL.BACKBONE.PRETRAINED, cfg.MODEL.BACKBONE.ACTIVATION) == ("openai", "quick_gelu")


def test_unknown_arch_suggests_close_names():
    with pytest.raises(ConfigError, match="ViT-B-16") as e:
        create_open_clip("ViT-B-61")
    assert "Unknown open_clip architecture" in str(e.value)


def test_non_vit_and_bad_tags_are_config_errors():
    with pytest.raises(ConfigError, match="ResNet"):
        create_open_clip("RN50")
    with pytest.raises(ConfigError, match="laion2b_s34b_b88k"):  # names the real tags
        create_open_clip("ViT-B-16", "no_such_tag")
    with pytest.raises(ConfigError, match="not found"):
        create_open_clip("configs/_base_/no_such_model.json")


def test_offline_pretrained_tag_is_offline_error():
    # tests run with HF_HUB_OFFLINE=1: open_clip looks in the hub cache only, finds nothing
    with pytest.raises(OfflineError) as e:
        create_open_clip("ViT-B-16", "openai")
    msg = str(e.value)
    assert "'ViT-B-16' tag 'openai'" in msg and "MODEL.BACKBONE.PRETRAINED" in msg


def test_unreachable_hub_fails_before_the_library_retries(monkeypatch):
    import open_clip

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "host_reachable", lambda url: False)

    def must_not_download(*args, **kwargs):
        raise AssertionError("open_clip was asked to download without a network")

    monkeypatch.setattr(open_clip, "download_pretrained", must_not_download)
    with pytest.raises(OfflineError, match="no connection to huggingface.co"):
        create_open_clip("ViT-B-16", "laion2b_s34b_b88k")


@pytest.mark.slow
def test_full_size_vit_b16_clip_forward_backward():
    bb = create_open_clip("ViT-B-16").freeze()
    n = sum(p.numel() for p in bb.parameters())
    assert abs(n - 149.6e6) < 0.1e6
    prompt_t = nn.Parameter(torch.zeros(4, 512))
    prompt_v = nn.Parameter(torch.zeros(4, 768))
    owner = new_owner_id()

    class Shallow:
        def before_layer(self, name, i, seq, ctx):
            if i:
                return seq
            return seq.insert(prompt_t if name == "text" else prompt_v, "start", owner)

    t = bb.tower("text").run(["a photo of a cat.", "a photo of a dog."], Shallow())
    v = bb.tower("vision").run(torch.randn(2, 3, 224, 224), Shallow())
    assert t.shape == v.shape == (2, 512)
    (v @ t.t()).pow(2).mean().backward()
    assert prompt_t.grad is not None and prompt_v.grad is not None
    assert all(p.grad is None for p in bb.parameters())
