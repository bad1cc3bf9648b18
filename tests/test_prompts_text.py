"""Prompt tuning, SuperPos and Residual sources, DePT and ADePT offsets on a fake text encoder."""

import math

import pytest
import torch
from _fake_backbone import check_training_step, fake_encoder, fake_vit, images, scalar_loss, tokens_at

from mmprompt.build import build_prompts
from mmprompt.config import get_cfg
from mmprompt.errors import ConfigError, MMPromptError
from mmprompt.prompts.base import PromptContext

TEXTS = ["a b c", "d e"]


def cfg_for(method, node, **kw):
    cfg = get_cfg()
    cfg.PROMPT.METHODS = [method]
    for k, v in kw.items():
        cfg.PROMPT[node][k] = v
    return cfg


def encode(backbone, stack, texts=TEXTS):
    backbone.clear_records()
    return backbone.tower("encoder").run(texts, stack, PromptContext())


def test_prompt_tuning_prefix_from_first_vocabulary_tokens():
    backbone = fake_encoder()
    stack = build_prompts(cfg_for("prompt_tuning", "PROMPT_TUNING", NUM_TOKENS=5), backbone)
    pt = stack.methods[0]
    emb = backbone.tower("encoder").token_embedding.weight
    assert torch.equal(pt.sources[0].tokens, emb[:5])
    encode(backbone, stack)
    seen = backbone.tower("encoder").seen
    assert [s.length for s in seen] == [5 + 5] * 3
    assert seen[0].positions_of(pt.owner_id)[1].tolist() == [1, 2, 3, 4, 5]
    assert torch.equal(tokens_at(seen[0], pt.owner_id)[1], pt.sources[0].tokens)
    assert not seen[1].has(0) or torch.equal(seen[1].owner, seen[0].owner)  # shallow: no new tokens later
    grads = check_training_step(backbone, stack, lambda: scalar_loss(encode(backbone, stack)))
    assert set(grads) == {"methods.0.sources.0.tokens"}


def test_prompt_tuning_sampled_vocab_and_text_inits():
    backbone = fake_encoder()
    emb = backbone.tower("encoder").token_embedding.weight
    stack = build_prompts(cfg_for("prompt_tuning", "PROMPT_TUNING", NUM_TOKENS=4, INIT="sampled_vocab"), backbone)
    tokens = stack.methods[0].sources[0].tokens
    assert all(any(torch.equal(t, e) for e in emb) for t in tokens)
    stack = build_prompts(
        cfg_for("prompt_tuning", "PROMPT_TUNING", NUM_TOKENS=2, INIT="text", INIT_TEXT="great movie"), backbone
    )
    ids = [backbone.tower("encoder").word_id(w) for w in ["great", "movie"]]
    assert torch.equal(stack.methods[0].sources[0].tokens, emb[ids])


def test_prompt_tuning_vocab_init_on_a_vision_tower_is_refused():
    cfg = cfg_for("prompt_tuning", "PROMPT_TUNING", TOWER="vision")
    with pytest.raises(ConfigError, match="needs a text tower with a vocabulary"):
        build_prompts(cfg, fake_vit())


def test_superpos_tokens_are_per_token_superpositions_of_shared_vocabulary_columns():
    backbone = fake_encoder(width=12)
    cfg = cfg_for("prompt_tuning", "PROMPT_TUNING", NUM_TOKENS=3, SOURCE="superpos")
    cfg.PROMPT.SUPERPOS.M = 10
    stack = build_prompts(cfg, backbone)
    source = stack.methods[0].sources[0]
    emb = backbone.tower("encoder").token_embedding.weight
    assert source.E.shape == (3, 12, 10) and source.weights.shape == (3, 10)
    assert torch.equal(source.E[0], source.E[2])  # the same m sampled tokens for every prompt token
    columns = source.E[0].t()
    assert len({tuple(c.tolist()) for c in columns}) == 10  # m distinct vocabulary embeddings
    assert all(any(torch.equal(c, e) for e in emb) for c in columns)
    assert abs(source.weights.std().item() - 1 / math.sqrt(10)) < 0.15
    encode(backbone, stack)
    placed = tokens_at(backbone.tower("encoder").seen[0], stack.methods[0].owner_id)[0]
    assert torch.allclose(placed, torch.stack([source.E[i] @ source.weights[i] for i in range(3)]))
    assert stack.methods[0].no_weight_decay() == ["sources.0.E"]
    grads = check_training_step(backbone, stack, lambda: scalar_loss(encode(backbone, stack)))
    assert set(grads) == {"methods.0.sources.0.E", "methods.0.sources.0.weights"}
    assert not torch.equal(source.E[0], source.E[2])  # tuned separately per token


def test_superpos_softmax_variant():
    backbone = fake_encoder()
    cfg = cfg_for("prompt_tuning", "PROMPT_TUNING", NUM_TOKENS=2, SOURCE="superpos")
    cfg.PROMPT.SUPERPOS.M = 6
    cfg.PROMPT.SUPERPOS.SOFTMAX = True
    source = build_prompts(cfg, backbone).methods[0].sources[0]
    out = source(PromptContext(), "encoder")[0]
    assert torch.allclose(out[1], source.E[1] @ source.weights[1].softmax(-1))


def test_residual_source_mlp_with_layernorm_and_skip():
    backbone = fake_encoder(width=12)
    cfg = cfg_for("prompt_tuning", "PROMPT_TUNING", NUM_TOKENS=4, SOURCE="residual")
    cfg.PROMPT.RESIDUAL.HIDDEN = 5
    stack = build_prompts(cfg, backbone)
    source = stack.methods[0].sources[0]
    emb = backbone.tower("encoder").token_embedding.weight
    assert torch.equal(source.tokens, emb[:4])
    P = source.tokens
    expected = (
        torch.nn.functional.layer_norm(
            source.mlp[2](torch.relu(source.mlp[0](P))), (12,), source.mlp[3].weight, source.mlp[3].bias
        )
        + P
    )
    encode(backbone, stack)
    assert torch.allclose(tokens_at(backbone.tower("encoder").seen[0], stack.methods[0].owner_id)[0], expected)
    grads = check_training_step(backbone, stack, lambda: scalar_loss(encode(backbone, stack)))
    assert {n.split(".")[4] for n in grads} == {"tokens", "mlp"}


def test_dept_offsets_content_tokens_by_position_and_prepends_short_prompt():
    backbone = fake_encoder(width=12)
    cfg = cfg_for("dept", "DEPT", NUM_TOKENS=2, RANK=3, MAX_LEN=8)
    stack = build_prompts(cfg, backbone)
    dept = stack.methods[0]
    off = dept.offsets["0"]
    assert off.A.shape == (8, 3) and off.B.shape == (3, 12) and torch.count_nonzero(off.B) == 0
    with torch.no_grad():
        off.B.normal_()
    embedded = backbone.tower("encoder").embed(TEXTS)
    encode(backbone, stack)
    seq = backbone.tower("encoder").seen[0]
    assert off.scale == pytest.approx(8 / math.sqrt(3))  # the authors' lora_alpha / sqrt(r)
    AB = off.scale * off.A @ off.B
    owner = dept.prompt.owner_id
    # [SOT, P, P, a+AB0, b+AB1, c+AB2, EOT] and [SOT, P, P, d+AB0, e+AB1, EOT, pad]: SOT/EOT/pad untouched
    assert seq.positions_of(owner)[0].tolist() == [1, 2]
    assert torch.allclose(seq.x[0, 3:6], embedded.x[0, 1:4] + AB[:3])
    assert torch.allclose(seq.x[1, 3:5], embedded.x[1, 1:3] + AB[:2])
    assert torch.equal(seq.x[:, 0], embedded.x[:, 0]) and torch.equal(seq.x[0, 6], embedded.x[0, 4])
    assert torch.equal(seq.x[1, 5:], embedded.x[1, 3:])
    assert dept.param_groups() == {"offsets": ["offsets.0.A", "offsets.0.B"]}
    grads = check_training_step(backbone, stack, lambda: scalar_loss(encode(backbone, stack)))
    assert set(grads) == {"methods.0.prompt.sources.0.tokens", "methods.0.offsets.0.A", "methods.0.offsets.0.B"}


def test_dept_input_longer_than_max_len_is_a_clear_error():
    stack = build_prompts(cfg_for("dept", "DEPT", NUM_TOKENS=1, RANK=2, MAX_LEN=2), fake_encoder())
    with pytest.raises(MMPromptError, match="PROMPT.DEPT.MAX_LEN"):
        encode(fake_encoder(), stack, ["a b c"])


def test_adept_token_shared_offsets_zero_at_start_and_same_token_same_offset():
    backbone = fake_encoder(width=12)
    stack = build_prompts(cfg_for("adept", "ADEPT", NUM_TOKENS=3, BOTTLENECK=4, DROPOUT=0.0), backbone)
    adept = stack.methods[0]
    mlp = adept.offsets["0"]
    assert torch.count_nonzero(mlp.up.weight) == 0
    embedded = backbone.tower("encoder").embed(["a b a", "b"])
    encode(backbone, stack, ["a b a", "b"])
    seq = backbone.tower("encoder").seen[0]
    assert torch.equal(seq.x[0, 4:7], embedded.x[0, 1:4])  # W_up = 0, b2 = 0: no offset yet
    with torch.no_grad():
        mlp.up.weight.normal_()
        mlp.up.bias.normal_()
    encode(backbone, stack, ["a b a", "b"])
    seq = backbone.tower("encoder").seen[0]
    expected = embedded.x[0, 1:4] + mlp.up(torch.relu(mlp.down(embedded.x[0, 1:4])))
    assert torch.allclose(seq.x[0, 4:7], expected)
    assert torch.allclose(seq.x[0, 4], seq.x[0, 6])  # token-shared: "a" gets one offset anywhere
    assert torch.allclose(seq.x[1, 4], seq.x[0, 5])  # "b" at another position, same offset
    assert torch.equal(seq.x[:, 0], embedded.x[:, 0])  # SOT untouched
    assert torch.equal(tokens_at(seq, adept.prompt.owner_id)[0], adept.prompt.sources[0].tokens)  # prompts untouched
    assert adept.param_groups()["offsets"] == [
        "offsets.0.down.weight",
        "offsets.0.down.bias",
        "offsets.0.up.weight",
        "offsets.0.up.bias",
    ]
    check_training_step(backbone, stack, lambda: scalar_loss(encode(backbone, stack)))


def test_offsets_token_sets_and_layers():
    backbone = fake_encoder(width=12, depth=3)
    stack = build_prompts(cfg_for("adept", "ADEPT", NUM_TOKENS=0, TOKENS="backbone", LAYERS=[1, 2]), backbone)
    adept = stack.methods[0]
    assert adept.prompt is None and sorted(adept.offsets) == ["1", "2"]
    for m in adept.offsets.values():
        torch.nn.init.normal_(m.up.bias)
    encode(backbone, stack)
    seen = backbone.tower("encoder").seen
    assert seen[0].length == 5  # no prompt
    plain = backbone.tower("encoder").blocks[0](seen[0].x, src_key_padding_mask=~seen[0].mask)
    bias = adept.offsets["1"].up.bias
    # layer 1 sees layer 0's output + b2 on every backbone token but padding
    assert torch.allclose(seen[1].x[0], plain[0] + bias)
    assert torch.allclose(seen[1].x[1, :4], plain[1, :4] + bias) and torch.equal(seen[1].x[1, 4], plain[1, 4])
    with pytest.raises(ConfigError, match=r"LAYERS has \[5\]"):
        build_prompts(cfg_for("adept", "ADEPT", LAYERS=[5]), backbone)
    with pytest.raises(ConfigError, match="TOKENS 'cls'"):
        build_prompts(cfg_for("dept", "DEPT", TOKENS="cls"), backbone)


def test_offsets_on_vision_patches_leave_cls_alone():
    backbone = fake_vit()
    cfg = cfg_for("dept", "DEPT", NUM_TOKENS=0, TOWER="vision", RANK=2, MAX_LEN=4)
    stack = build_prompts(cfg, backbone)
    torch.nn.init.normal_(stack.methods[0].offsets["0"].B)
    x = images()
    embedded = backbone.tower("vision").embed(x)
    backbone.clear_records()
    backbone.tower("vision").run(x, stack, PromptContext())
    seq = backbone.tower("vision").seen[0]
    off = stack.methods[0].offsets["0"]
    assert torch.equal(seq.x[:, 0], embedded.x[:, 0])
    assert torch.allclose(seq.x[:, 1:], embedded.x[:, 1:] + off.scale * off.A @ off.B)
