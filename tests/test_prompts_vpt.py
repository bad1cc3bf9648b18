"""VPT shallow/deep and P-tuning v2 on a recording fake tower: where tokens land at each layer."""

import math

import pytest
import torch
from _fake_backbone import check_training_step, fake_encoder, fake_vit, images, scalar_loss, tokens_at
from torch import nn

from mmprompt.build import build_prompts
from mmprompt.config import get_cfg
from mmprompt.errors import ConfigError
from mmprompt.prompts.base import PromptContext


def vpt_cfg(**vpt):
    cfg = get_cfg()
    cfg.PROMPT.METHODS = ["vpt"]
    cfg.PROMPT.VPT.DROPOUT = 0.0
    for k, v in vpt.items():
        cfg.PROMPT.VPT[k] = v
    return cfg


def run_vision(backbone, stack, batch=2):
    backbone.clear_records()
    return backbone.tower("vision").run(images(batch), stack, PromptContext())


def test_vpt_shallow_inserts_once_after_cls():
    backbone = fake_vit()
    stack = build_prompts(vpt_cfg(NUM_TOKENS=3), backbone)
    vpt = stack.methods[0]
    backbone.eval()
    run_vision(backbone, stack)
    seen = backbone.tower("vision").seen
    assert [s.length for s in seen] == [1 + 3 + 4] * 3  # CLS + prompts + 4 patches, every layer
    assert seen[0].owner[0].tolist() == [0, vpt.owner_id, vpt.owner_id, vpt.owner_id, 0, 0, 0, 0]
    assert torch.equal(tokens_at(seen[0], vpt.owner_id), vpt.sources[0].tokens[None].expand(2, -1, -1))
    # shallow: later layers receive the previous layer's outputs at the prompt slots, not new tokens
    out0 = backbone.tower("vision").blocks[0](seen[0].x, src_key_padding_mask=~seen[0].mask)
    assert torch.equal(seen[1].x, out0)
    assert len(vpt.sources) == 1
    assert int(seen[0].anchors["pool"][0]) == 0 and int(seen[0].anchors["start"][0]) == 4


def test_vpt_deep_replaces_at_every_layer_up_to_depth():
    backbone = fake_vit(depth=4)
    stack = build_prompts(vpt_cfg(NUM_TOKENS=2, DEEP=True, DEPTH=3), backbone)
    vpt = stack.methods[0]
    backbone.eval()
    run_vision(backbone, stack)
    seen = backbone.tower("vision").seen
    assert len(vpt.sources) == 3
    assert [s.length for s in seen] == [1 + 2 + 4] * 4  # replaced, never accumulated
    for i in range(3):
        assert seen[i].positions_of(vpt.owner_id)[0].tolist() == [1, 2]
        assert torch.equal(tokens_at(seen[i], vpt.owner_id), vpt.sources[i].tokens[None].expand(2, -1, -1))
    # after DEPTH the last prompts flow through: layer 3 sees layer 2's outputs at the slots
    out2 = backbone.tower("vision").blocks[2](seen[2].x, src_key_padding_mask=~seen[2].mask)
    assert torch.equal(seen[3].x, out2)


def test_vpt_deep_default_depth_is_every_layer_and_xavier_bound():
    backbone = fake_vit(width=16, depth=3)
    stack = build_prompts(vpt_cfg(NUM_TOKENS=50, DEEP=True), backbone)
    vpt = stack.methods[0]
    assert vpt.depth == 3
    bound = math.sqrt(6.0 / (3 * 4**2 + 16))  # fake tower patch size 4
    for s in vpt.sources:
        assert s.tokens.abs().max() <= bound and s.tokens.abs().max() > 0.8 * bound


def test_vpt_dropout_acts_on_prompts_in_train_only():
    backbone = fake_vit()
    stack = build_prompts(vpt_cfg(NUM_TOKENS=40, DROPOUT=0.5), backbone)
    vpt = stack.methods[0]
    stack.train()
    run_vision(backbone, stack)
    placed = tokens_at(backbone.tower("vision").seen[0], vpt.owner_id)
    assert (placed == 0).float().mean() > 0.3
    stack.eval()
    run_vision(backbone, stack)
    assert torch.equal(tokens_at(backbone.tower("vision").seen[0], vpt.owner_id)[0], vpt.sources[0].tokens)


def test_vpt_trains_only_prompts_and_head_backbone_unchanged():
    backbone = fake_vit()
    backbone.train()
    stack = build_prompts(vpt_cfg(NUM_TOKENS=2, DEEP=True), backbone)
    head = nn.Linear(16, 5)
    labels = torch.tensor([1, 3])
    grads = check_training_step(
        backbone, stack, lambda: nn.functional.cross_entropy(head(run_vision(backbone, stack)), labels), head
    )
    assert set(grads) == {f"methods.0.sources.{i}.tokens" for i in range(3)}


def test_vpt_depth_beyond_tower_is_refused():
    with pytest.raises(ConfigError, match="PROMPT.VPT.DEPTH = 9 but the vision tower has 3 layers"):
        build_prompts(vpt_cfg(DEEP=True, DEPTH=9), fake_vit())


def test_vpt_on_missing_tower_names_the_towers():
    with pytest.raises(ConfigError, match=r"'vision' tower.*has only \['encoder'\]"):
        build_prompts(vpt_cfg(), fake_encoder())


def deep_prompt_cfg(**kw):
    cfg = get_cfg()
    cfg.PROMPT.METHODS = ["deep_prompt"]
    cfg.PROMPT.DEEP_PROMPT.DROPOUT = 0.0
    for k, v in kw.items():
        cfg.PROMPT.DEEP_PROMPT[k] = v
    return cfg


def test_deep_prompt_replaces_hidden_states_at_every_layer_of_an_encoder():
    backbone = fake_encoder(depth=3)
    stack = build_prompts(deep_prompt_cfg(NUM_TOKENS=3), backbone)
    deep = stack.methods[0]
    tower = backbone.tower("encoder")
    tower.run(["a b c", "d"], stack, PromptContext())
    assert [s.length for s in tower.seen] == [3 + 5] * 3
    for i, s in enumerate(tower.seen):
        assert s.positions_of(deep.owner_id)[1].tolist() == [1, 2, 3]
        assert torch.equal(tokens_at(s, deep.owner_id)[0], deep.sources[i].tokens)
    grads = check_training_step(backbone, stack, lambda: scalar_loss(tower.run(["a b", "c"], stack, PromptContext())))
    assert len(grads) == 3


def test_deep_prompt_reparameterisation_produces_every_layer_from_one_prompt():
    backbone = fake_encoder(width=12, depth=3)
    stack = build_prompts(deep_prompt_cfg(NUM_TOKENS=2, REPARAM=True, REPARAM_HIDDEN=7), backbone)
    deep = stack.methods[0]
    tower = backbone.tower("encoder")
    tower.run(["a b"], stack, PromptContext())
    expected = deep.projection(deep.sources[0].tokens)  # (2, 3 * 12)
    for i, s in enumerate(tower.seen):
        assert torch.allclose(tokens_at(s, deep.owner_id)[0], expected[:, 12 * i : 12 * (i + 1)])
    assert len(deep.sources) == 1
    check_training_step(backbone, stack, lambda: scalar_loss(tower.run(["a"], stack, PromptContext())))
