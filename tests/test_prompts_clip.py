"""CoOp and MaPLe (all modes) on a fake CLIP with a text and a vision tower."""

import pytest
import torch
from _fake_backbone import EOT, SOT, check_training_step, fake_clip, fake_vit, images, tokens_at

from mmprompt.build import build_prompts
from mmprompt.config import get_cfg
from mmprompt.errors import ConfigError, MMPromptError
from mmprompt.prompts.base import PromptContext

CLASSES = ["cat", "big dog", "owl"]


def clip_logits(backbone, stack, classnames=CLASSES, batch=2):
    """CLIP-style forward: text tower over the class prompts, vision over images, one context."""
    backbone.clear_records()
    ctx = PromptContext()
    text = backbone.tower("text").run(classnames, stack, ctx)
    vision = backbone.tower("vision").run(images(batch), stack, ctx)
    text = torch.nn.functional.normalize(text[:, :8], dim=-1)  # fake towers: compare 8 shared dims
    vision = torch.nn.functional.normalize(vision[:, :8], dim=-1)
    return vision @ text.t()


def loss_fn(backbone, stack):
    return lambda: torch.nn.functional.cross_entropy(clip_logits(backbone, stack), torch.tensor([0, 2]))


def coop_cfg(**kw):
    cfg = get_cfg()
    cfg.PROMPT.METHODS = ["coop"]
    for k, v in kw.items():
        cfg.PROMPT.COOP[k] = v
    return cfg


def words(backbone, text):
    return [backbone.tower("text").word_id(w) for w in text.split()]


@pytest.mark.parametrize(
    "position, expected",
    [
        ("end", ["SOT", "C", "C", "C", "C", "cls", "cls", "EOT"]),
        ("middle", ["SOT", "C", "C", "cls", "cls", "C", "C", "EOT"]),
        ("front", ["SOT", "cls", "cls", "C", "C", "C", "C", "EOT"]),
    ],
)
def test_coop_class_token_positions(position, expected):
    backbone = fake_clip()
    stack = build_prompts(coop_cfg(N_CTX=4, CLASS_TOKEN_POSITION=position), backbone)
    coop = stack.methods[0]
    clip_logits(backbone, stack)
    seq = backbone.tower("text").seen[0]
    row = seq.owner[1].tolist()  # "big dog": two class words
    assert ["C" if o == coop.owner_id else "?" for o in row] == ["C" if e == "C" else "?" for e in expected]
    assert int(seq.anchors["pool"][1]) == 7  # EOT moved behind the 4 context tokens
    assert torch.equal(tokens_at(seq, coop.owner_id), coop.source.tokens[None].expand(3, -1, -1))
    assert all(s.length == seq.length for s in backbone.tower("text").seen)  # shallow: inserted once
    assert not any(s.has(coop.owner_id) for s in backbone.tower("vision").seen)


def test_coop_init_from_phrase_and_gradients():
    backbone = fake_clip()
    stack = build_prompts(coop_cfg(N_CTX=4, CTX_INIT="a photo of a"), backbone)
    coop = stack.methods[0]
    emb = backbone.tower("text").token_embedding.weight
    assert torch.equal(coop.source.tokens, emb[words(backbone, "a photo of a")])
    assert coop.fixed_words is None
    grads = check_training_step(backbone, stack, loss_fn(backbone, stack))
    assert set(grads) == {"methods.0.source.tokens"}


def test_coop_class_specific_context_one_row_per_class():
    backbone = fake_clip()
    cfg = coop_cfg(N_CTX=2, CSC=True)
    cfg.MODEL.HEAD.NUM_CLASSES = 3
    stack = build_prompts(cfg, backbone)
    coop = stack.methods[0]
    assert coop.source.tokens.shape == (6, 12)
    clip_logits(backbone, stack)
    placed = tokens_at(backbone.tower("text").seen[0], coop.owner_id)
    assert torch.equal(placed, coop.source.tokens.reshape(3, 2, 12))
    with pytest.raises(MMPromptError, match="3 classes but the text tower got 2"):
        clip_logits(backbone, stack, ["cat", "dog"])


def test_coop_csc_without_class_count_is_refused():
    with pytest.raises(ConfigError, match="MODEL.HEAD.NUM_CLASSES"):
        build_prompts(coop_cfg(CSC=True), fake_clip())


def test_text_context_methods_on_vision_only_backbone_are_refused():
    for cfg in (coop_cfg(), maple_cfg()):
        with pytest.raises(ConfigError, match=r"needs a 'text' tower.*has only \['vision'\]"):
            build_prompts(cfg, fake_vit())


def maple_cfg(**kw):
    cfg = get_cfg()
    cfg.PROMPT.METHODS = ["maple"]
    cfg.PROMPT.MAPLE.PROMPT_DEPTH = 2
    for k, v in kw.items():
        cfg.PROMPT.MAPLE[k] = v
    return cfg


def test_maple_text_context_fixed_words_and_coupled_vision_prompts_per_layer():
    backbone = fake_clip(width_text=12, width_vision=16, depth=3)
    stack = build_prompts(maple_cfg(), backbone)
    maple = stack.methods[0]
    backbone.eval()
    clip_logits(backbone, stack)
    text_seen, vision_seen = backbone.tower("text").seen, backbone.tower("vision").seen
    emb = backbone.tower("text").token_embedding.weight
    # layer 0: [SOT, ctx("a photo"), "of a" as fixed words, class, EOT]
    ids = words(backbone, "of a")
    row = text_seen[0]
    assert row.owner[0, 1:3].tolist() == [maple.text_owner] * 2
    assert torch.equal(row.x[0, 3:5], emb[ids])
    assert torch.equal(maple.text_sources[0].tokens, emb[words(backbone, "a photo")])
    for i in range(3):
        assert text_seen[i].length == text_seen[0].length and vision_seen[i].length == 1 + 4 + 2
    for i in range(2):  # prompted layers: text tokens are the layer's own, vision = coupling(text)
        assert torch.equal(tokens_at(text_seen[i], maple.text_owner)[0], maple.text_sources[i].tokens)
        expected = maple.couplings[i](maple.text_sources[i].tokens)
        assert vision_seen[i].positions_of(maple.vision_owner)[0].tolist() == [5, 6]  # after the patches
        assert torch.allclose(tokens_at(vision_seen[i], maple.vision_owner)[0], expected)
    assert maple.couplings[0].in_features == 12 and maple.couplings[0].out_features == 16
    grads = check_training_step(backbone, stack, loss_fn(backbone, stack))
    assert set(grads) == {
        "methods.0.text_sources.0.tokens",
        "methods.0.text_sources.1.tokens",
        "methods.0.couplings.0.weight",
        "methods.0.couplings.0.bias",
        "methods.0.couplings.1.weight",
        "methods.0.couplings.1.bias",
    }


def test_maple_coupling_runs_once_per_forward():
    backbone = fake_clip()
    stack = build_prompts(maple_cfg(), backbone)
    calls = []
    for f in stack.methods[0].couplings:
        f.register_forward_hook(lambda *a: calls.append(1))
    clip_logits(backbone, stack)
    assert len(calls) == 2  # one per prompted layer, not one per layer call


@pytest.mark.parametrize(
    "mode, text, vision, coupled",
    [
        ("deep_vision", False, True, False),
        ("deep_language", True, False, False),
        ("ivlp", True, True, False),
    ],
)
def test_maple_ablation_modes(mode, text, vision, coupled):
    backbone = fake_clip()
    stack = build_prompts(maple_cfg(MODE=mode, N_CTX_VISION=3), backbone)
    maple = stack.methods[0]
    clip_logits(backbone, stack)
    assert bool(len(maple.couplings)) == coupled
    assert backbone.tower("text").seen[0].has(maple.text_owner) == text
    assert backbone.tower("vision").seen[0].has(maple.vision_owner) == vision
    if vision:
        for i in range(2):
            assert torch.equal(
                tokens_at(backbone.tower("vision").seen[i], maple.vision_owner)[0], maple.vision_sources[i].tokens
            )
        assert maple.vision_sources[0].tokens.shape == (3, 16)
    check_training_step(backbone, stack, loss_fn(backbone, stack))


def test_maple_deep_vision_needs_no_text_tower():
    stack = build_prompts(maple_cfg(MODE="deep_vision"), fake_vit())
    assert len(stack.methods[0].vision_sources) == 2


def test_maple_bad_depth_and_mode_messages():
    with pytest.raises(ConfigError, match="PROMPT_DEPTH = 7; it must be between 1 and 3"):
        build_prompts(maple_cfg(PROMPT_DEPTH=7), fake_clip())
    with pytest.raises(ConfigError, match="MODE 'vpt' is not one of"):
        build_prompts(maple_cfg(MODE="vpt"), fake_clip())
    with pytest.raises(ConfigError, match="has 2 tokens but 3 context tokens"):
        build_prompts(maple_cfg(N_CTX=3, CTX_INIT="a photo"), fake_clip())


def test_fake_text_tower_layout():
    backbone = fake_clip()
    seq = backbone.tower("text").embed(["cat"])
    ids, _ = backbone.tower("text").tokenize(["cat"])
    assert ids[0].tolist()[0] == SOT and ids[0].tolist()[-1] == EOT and seq.length == 3


def test_coop_ctx_init_rule_one_token_per_word_and_generic_context():
    """CoOp's code: with CTX_INIT, n_ctx = the phrase's word count whatever N_CTX says (its ctxv1
    recipes keep N_CTX 16), "_" reads as a space, and the context is generic even with CSC."""
    backbone = fake_clip()
    cfg = coop_cfg(N_CTX=16, CTX_INIT="a_photo of a", CSC=True)
    cfg.MODEL.HEAD.NUM_CLASSES = 3
    coop = build_prompts(cfg, backbone).methods[0]
    emb = backbone.tower("text").token_embedding.weight
    assert coop.n_ctx == 4 and not coop.csc
    assert torch.equal(coop.source.tokens, emb[words(backbone, "a photo of a")])
    random = build_prompts(coop_cfg(N_CTX=5), backbone).methods[0]
    assert random.source.tokens.shape == (5, 12) and abs(float(random.source.tokens.detach().std()) - 0.02) < 0.01
    with pytest.raises(ConfigError, match="has 2 tokens but 3 context tokens"):
        build_prompts(coop_cfg(CTX_INIT="a  photo"), backbone)  # split(" ") counts 3 words, as CoOp


def test_maple_ctx_init_only_up_to_4_tokens_else_random_without_fixed_words():
    backbone = fake_clip()
    emb = backbone.tower("text").token_embedding.weight
    phrase = "for sure this is a photo of"
    four = build_prompts(maple_cfg(N_CTX=4, CTX_INIT=phrase), backbone).methods[0]
    assert torch.equal(four.text_sources[0].tokens, emb[words(backbone, "for sure this is")])
    assert four.fixed_words.ids.tolist() == words(backbone, "a photo of")
    five = build_prompts(maple_cfg(N_CTX=5, CTX_INIT=phrase), backbone).methods[0]
    assert five.fixed_words is None and five.text_sources[0].tokens.shape == (5, 12)
    assert not any(
        torch.allclose(five.text_sources[0].tokens[i], emb[w]) for i, w in enumerate(words(backbone, phrase)[:5])
    )
    stack = build_prompts(maple_cfg(N_CTX=5, CTX_INIT=phrase), backbone)
    clip_logits(backbone, stack)
    seq = backbone.tower("text").seen[0]  # "cat": [SOT, ctx x5, cat, EOT], no fixed words
    assert seq.owner[0, :8].tolist() == [0] + [stack.methods[0].text_owner] * 5 + [0, 0]
    assert int(seq.anchors["pool"][0]) == 7


def test_maple_deep_couplings_start_as_copies_of_one_linear():
    maple = build_prompts(maple_cfg(PROMPT_DEPTH=3), fake_clip(depth=3)).methods[0]
    first, deep = maple.couplings[0], list(maple.couplings[1:])
    assert len(deep) == 2
    assert all(torch.equal(d.weight, deep[0].weight) and torch.equal(d.bias, deep[0].bias) for d in deep)
    assert not torch.equal(first.weight, deep[0].weight)  # the layer-0 coupling is a Linear of its own
    assert deep[0].weight.data_ptr() != deep[1].weight.data_ptr()  # copies, trained separately


def test_ivlp_vision_and_text_depths_and_lengths_differ():
    backbone = fake_clip(depth=3)
    stack = build_prompts(
        maple_cfg(MODE="ivlp", N_CTX=2, N_CTX_VISION=3, PROMPT_DEPTH=1, PROMPT_DEPTH_VISION=3), backbone
    )
    maple = stack.methods[0]
    assert (maple.text_depth, maple.vision_depth) == (1, 3)
    assert len(maple.text_sources) == 1 and len(maple.vision_sources) == 3
    backbone.eval()
    clip_logits(backbone, stack)
    text_seen, vision_seen = backbone.tower("text").seen, backbone.tower("vision").seen
    assert not torch.equal(tokens_at(text_seen[1], maple.text_owner)[0], maple.text_sources[0].tokens)  # flowed on
    for i in range(3):
        assert torch.equal(tokens_at(vision_seen[i], maple.vision_owner)[0], maple.vision_sources[i].tokens)
    with pytest.raises(ConfigError, match="PROMPT_DEPTH_VISION = 4; it must be between 1 and 3"):
        build_prompts(maple_cfg(MODE="deep_vision", PROMPT_DEPTH_VISION=4), fake_clip(depth=3))
