"""Dynamic prompting: exact arrangements, straight-through gradients, deep layers, learning,
parameter counts, the temperature schedule and its checkpoint state."""

import copy
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _dynamic_towers import OnePrompt, TextTower, TwoSidedWindowTower, VisionTower, WindowTower  # noqa: E402

from mmprompt.config import get_cfg  # noqa: E402
from mmprompt.errors import ConfigError  # noqa: E402
from mmprompt.prompts.base import PromptContext, PromptStack  # noqa: E402
from mmprompt.prompts.dynamic import TemperatureSchedule, straight_through_gumbel  # noqa: E402
from mmprompt.prompts.placement import split_positions  # noqa: E402
from mmprompt.tokens import TokenSeq  # noqa: E402

L = 4
TEXT_ROWS = [[3, 4, 5, 6], [7], [8, 9]]  # padded batch: EOT at 5, 2, 3


def cfg_with(**dynamic):
    cfg = get_cfg()
    for k, v in dynamic.items():
        setattr(cfg.PROMPT.DYNAMIC, k, v)
    return cfg


def vision_inputs(batch=3):
    return torch.randn(batch, 5, 3)


def towers():
    return [("vision", VisionTower(), vision_inputs()), ("text", TextTower(), TEXT_ROWS)]


def explicit_split(seq: TokenSeq, tokens: torch.Tensor, dpos) -> TokenSeq:
    """The reference ``[P_before; X; P_after]``, built per sample with torch.cat."""
    rows, masks, owners = [], [], []
    anchors = {name: a.clone() for name, a in seq.anchors.items()}
    k = tokens.shape[-2]
    for b in range(seq.batch_size):
        s, e, d = int(seq.anchors["start"][b]), int(seq.anchors["end"][b]), int(dpos[b])
        x, m = seq.x[b], seq.mask[b]
        p = (tokens[b] if tokens.dim() == 3 else tokens).to(x.dtype)
        rows.append(torch.cat([x[:s], p[:d], x[s:e], p[d:], x[e:]]))
        ones = torch.ones(k, dtype=torch.bool)
        masks.append(torch.cat([m[:s], ones[:d], m[s:e], ones[d:], m[e:]]))
        o, mine = seq.owner[b], torch.full((k,), 999)
        owners.append(torch.cat([o[:s], mine[:d], o[s:e], mine[d:], o[e:]]))
        # anchors follow the backbone's tokens: past P_before from start on, past P_after from end on
        for name, a in seq.anchors.items():
            a = int(a[b])
            anchors[name][b] = a + (d if a >= s else 0) + (k - d if a >= e else 0)
    reference = TokenSeq.from_embeddings(
        torch.stack(rows), torch.stack(masks), tower=seq.tower, anchors=anchors, meta=seq.meta
    )
    reference.owner = torch.stack(owners)  # pools that skip prompt tokens (T5, BERT mean) see them too
    return reference


def run(tower, inputs, module, ctx=None):
    ctx = ctx or PromptContext()
    tower.seen.clear()
    return tower.run(inputs, PromptStack([module]), ctx), ctx


# --------------------------------------------------------------------------- exact arrangements
@pytest.mark.parametrize("position", ["adap_pos", "adap_ins_pos"])
@pytest.mark.parametrize("training", [False, True])
def test_output_equals_the_explicit_concatenation_for_the_chosen_dpos(position, training):
    for name, tower, inputs in towers():
        module = OnePrompt(cfg_with(), name, length=L, width=tower.width, position=position)
        with torch.no_grad():
            for head in module.placement.heads:  # make the choice non-trivial and per-instance
                for p in head.parameters():
                    p.normal_()
        module.train(training)
        out, ctx = run(tower, inputs, module)
        dpos = ctx.records[f"{name}.layer0.dpos"][0]
        seq0 = tower.embed(inputs)
        reference = explicit_split(seq0, module.sources[0].tokens.detach(), dpos)
        seen = tower.seen[0]
        assert torch.equal(seen.x, reference.x) and torch.equal(seen.mask, reference.mask)
        for anchor in reference.anchors:
            assert torch.equal(seen.anchors[anchor], reference.anchors[anchor]), anchor
        tower.seen.clear()
        assert torch.equal(out, tower.pool(tower.run_layers(reference)))


def test_clip_like_text_tower_keeps_p_after_before_eot_and_pools_eot():
    tower = TextTower()
    module = OnePrompt(cfg_with(), "text", length=L, width=tower.width, position="adap_pos")
    with torch.no_grad():
        module.placement.heads[0].logits.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0]))  # dpos = 2
    module.eval()
    run(tower, TEXT_ROWS, module)
    seen = tower.seen[0]
    eot = torch.tensor([5, 2, 3]) + L
    assert torch.equal(seen.anchors["pool"], eot) and torch.equal(seen.anchors["end"], eot)
    prompt_pos = seen.positions_of(module.owner)
    assert prompt_pos.tolist() == [[1, 2, 7, 8], [1, 2, 4, 5], [1, 2, 5, 6]]  # right after each last word
    assert seen.mask.sum(1).tolist() == [6 + L, 3 + L, 4 + L]  # padding stays padding, at the end


def test_eval_and_training_without_noise_take_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    for sample in (False,):
        one_hot, index = straight_through_gumbel(logits, tau=0.5, sample=sample)
        assert index.tolist() == [1, 0]
        assert torch.equal(one_hot, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    # with noise the forward value is still exactly one-hot
    one_hot, index = straight_through_gumbel(torch.randn(64, 7), tau=0.7, sample=True)
    assert torch.equal(one_hot.sum(-1), torch.ones(64)) and set(one_hot.unique().tolist()) == {0.0, 1.0}


# --------------------------------------------------------------------------- gradients
def weighted_sum_reference(seq, tokens, one_hot):
    """``sum_j y_j A_j``: the sequence the straight-through estimator differentiates."""
    arrangements = []
    for j in range(tokens.shape[0] + 1):
        dpos = torch.full((seq.batch_size,), j)
        arrangements.append(seq.insert_at(tokens, split_positions(seq, tokens.shape[0], dpos), 99).x)
    stacked = torch.stack(arrangements, 1)  # B, l+1, N+l, D
    return (one_hot.expand(seq.batch_size, -1)[..., None, None] * stacked).sum(1)


@pytest.mark.parametrize("position", ["adap_pos", "adap_ins_pos"])
def test_logit_gradient_equals_the_weighted_sum_of_all_arrangements(position):
    for name, tower, inputs in towers():
        torch.manual_seed(1)
        module = OnePrompt(cfg_with(NOISE=False), name, length=L, width=tower.width, position=position)
        with torch.no_grad():
            for p in module.placement.heads.parameters():
                p.normal_()
        module.train()
        out, ctx = run(tower, inputs, module)
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        fast = [p.grad.clone() for p in module.placement.heads.parameters()]

        reference = copy.deepcopy(module)
        reference.zero_grad()
        head = reference.placement.heads[0]
        seq0 = tower.embed(inputs)
        feature = seq0.x.new_tensor(0)
        if position == "adap_ins_pos":
            from mmprompt.prompts.base import masked_mean

            feature = masked_mean(seq0.x, seq0.mask)
        one_hot, dpos = straight_through_gumbel(head(feature), 1.0, sample=False)
        tokens = reference.sources[0].tokens
        arranged = seq0.insert_at(tokens, split_positions(seq0, L, dpos.expand(seq0.batch_size)), 99)
        mixed = arranged.with_x(weighted_sum_reference(seq0, tokens, one_hot))
        assert torch.equal(mixed.x, arranged.x) or torch.allclose(mixed.x, arranged.x)
        ref_out = tower.pool(tower.run_layers(mixed))
        (ref_out * weights).sum().backward()
        for got, want in zip(fast, reference.placement.heads.parameters()):
            assert got.abs().sum() > 0
            torch.testing.assert_close(got, want.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(module.sources[0].tokens.grad, tokens.grad)


@pytest.mark.parametrize(
    "position,source",
    [
        ("adap_pos", "param"),
        ("adap_ins_pos", "param"),
        ("adap_len", "param"),
        ("adap_ins_len", "param"),
        ("adap_pos", "pool"),
        ("adap_ins_pos", "pool"),
        ("prefix", "pool"),
    ],
)
def test_gradients_reach_choice_pool_and_prompt_parameters(position, source):
    tower = TextTower()
    module = OnePrompt(cfg_with(POOL_SIZE=3), "text", length=L, width=tower.width, position=position, source=source)
    module.train()
    out, _ = run(tower, TEXT_ROWS, module)
    (out * torch.randn_like(out)).sum().backward()
    trainable = dict(module.named_parameters())
    assert trainable, "module has parameters"
    for name, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- length
@pytest.mark.parametrize("mode", ["surrogate", "mask"])
def test_length_keeps_the_last_l_star_tokens_as_a_prefix(mode):
    tower = TextTower()
    module = OnePrompt(cfg_with(LENGTH_MODE=mode), "text", length=L, width=tower.width, position="adap_len")
    with torch.no_grad():
        module.placement.heads[0].logits.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0]))  # l* = 3
    module.eval()
    out, ctx = run(tower, TEXT_ROWS, module)
    assert ctx.records["text.layer0.length"][0].tolist() == [3, 3, 3]
    seen = tower.seen[0]
    pos = seen.positions_of(module.owner)
    assert pos.tolist() == [[1, 2, 3, 4]] * 3
    rows = torch.arange(3)[:, None]
    p = module.sources[0].tokens.detach()
    assert torch.equal(seen.x[rows, pos][:, 0], torch.zeros(3, tower.width))  # 0 * P_before
    assert torch.equal(seen.x[rows, pos][:, 1:], p[1:].expand(3, -1, -1))  # P_after untouched
    assert seen.mask[rows, pos].tolist() == [[mode == "surrogate", True, True, True]] * 3
    if mode == "mask":
        # the dropped token gets attention weight 0: same output as a prompt of the 3 kept tokens
        short = tower.embed(TEXT_ROWS).insert(p[1:], "start", 7)
        torch.testing.assert_close(out, tower.pool(tower.run_layers(short)))


def test_mask_mode_gradient_reaches_the_length_logits():
    tower = TextTower()
    module = OnePrompt(
        cfg_with(LENGTH_MODE="mask", NOISE=False), "text", length=L, width=tower.width, position="adap_ins_len"
    )
    module.train()
    out, _ = run(tower, TEXT_ROWS, module)
    out.pow(2).sum().backward()
    assert module.placement.heads[0].linear.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- deep layers
@pytest.mark.parametrize("choice_depth", [1, 3])
def test_deep_layers_remove_and_reinsert_at_each_layers_split(choice_depth):
    tower = TextTower(depth=3)
    module = OnePrompt(
        cfg_with(CHOICE_DEPTH=choice_depth), "text", length=L, width=tower.width, position="adap_pos", deep_layers=3
    )
    with torch.no_grad():
        for i, head in enumerate(module.placement.heads):
            head.logits.zero_()
            head.logits[[4, 0, 2][i]] = 5.0
    module.eval()
    out, ctx = run(tower, TEXT_ROWS, module)
    chosen = [int(ctx.records[f"text.layer{i}.dpos"][0][0]) for i in range(3)]
    assert chosen == ([4, 4, 4] if choice_depth == 1 else [4, 0, 2])
    # each layer sees the previous layer's hidden states with its own tokens re-inserted
    seq = tower.embed(TEXT_ROWS)
    for i in range(3):
        seen = tower.seen[i]
        assert seen.length == seq.length + L  # replaced, not accumulated
        stripped = seen.remove(module.owner)
        reference = explicit_split(stripped, module.sources[i].tokens.detach(), torch.full((3,), chosen[i]))
        assert torch.equal(seen.x, reference.x) and torch.equal(seen.anchors["pool"], reference.anchors["pool"])
    # gradients reach every layer's position logits
    module.train()
    out, _ = run(tower, TEXT_ROWS, module)
    (out * torch.randn_like(out)).sum().backward()
    for head in module.placement.heads:
        assert head.logits.grad.abs().sum() > 0


# --------------------------------------------------------------------------- learning
def test_learned_position_moves_to_where_the_signal_works():
    """The toy tower only sees the 4 tokens before ``end``: prompts help only after the input
    (dpos = 0). Starting from a preference for the prefix (dpos = l), the position moves there."""
    torch.manual_seed(0)
    width, length = 8, 4
    tower = WindowTower(width, window=length)
    target = torch.randn(width)
    module = OnePrompt(cfg_with(GAMMA=0.0), "encoder", length=length, width=width, position="adap_pos")
    with torch.no_grad():
        module.placement.heads[0].logits[length] = 1.0
    stack = PromptStack([module])
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    module.train()
    for step in range(60):
        x = torch.randn(16, 6, width)
        out = tower.run(x, stack, PromptContext(step=step))
        loss = (out - target).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert int(module.placement.heads[0].logits.argmax()) == 0


def test_instance_position_learns_a_different_position_per_kind_of_input():
    """Inputs of one kind are read after themselves, the others before: the instance network
    learns dpos = 0 (prompt after the input) for the first kind and dpos = l for the second."""
    torch.manual_seed(0)
    width, length = 8, 4
    tower = TwoSidedWindowTower(width, window=length)
    target = torch.randn(width)
    module = OnePrompt(cfg_with(GAMMA=0.0), "encoder", length=length, width=width, position="adap_ins_pos")
    stack = PromptStack([module])
    opt = torch.optim.Adam(module.parameters(), lr=0.05)

    def batch(n=16):
        x = torch.randn(n, 6, width)
        kind = torch.arange(n) % 2 == 0
        x[:, :, 0] = torch.where(kind, 3.0, -3.0)[:, None]
        return x, kind

    module.train()
    for step in range(100):
        x, _ = batch()
        loss = (tower.run(x, stack, PromptContext(step=step)) - target).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    x, kind = batch()
    ctx = PromptContext()
    tower.run(x, stack, ctx)
    dpos = ctx.records["encoder.layer0.dpos"][0]
    assert (dpos[kind] == 0).all() and (dpos[~kind] == length).all(), dpos


# --------------------------------------------------------------------------- parameter counts
def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("d,l", [(768, 20), (512, 20), (16, 4)])
def test_parameter_counts_match_table_9(d, l):
    from mmprompt.prompts.placement import build_placement
    from mmprompt.prompts.sources import build_source

    cfg = cfg_with()
    assert count(build_placement("adap_pos", cfg, length=l, width=d)) == l + 1
    assert count(build_placement("adap_ins_pos", cfg, length=l, width=d)) == d * (l + 1)
    assert count(build_placement("adap_len", cfg, length=l, width=d)) == l + 1
    assert count(build_placement("adap_ins_len", cfg, length=l, width=d)) == d * (l + 1)
    with_bias = cfg_with(INSTANCE_BIAS=True)
    assert count(build_placement("adap_ins_pos", with_bias, length=l, width=d)) == d * (l + 1) + l + 1
    pool = build_source("pool", cfg, length=l, width=d)
    assert count(pool.router) == d * 8  # Po: d*k, k = 8
    assert count(pool) == 8 * l * d + d * 8
    assert count(build_placement("adap_pos", cfg_with(CHOICE_DEPTH=12), length=l, width=d)) == 12 * (l + 1)


# --------------------------------------------------------------------------- temperature
def test_temperature_schedule_values():
    sched = TemperatureSchedule(tau0=1.0, tau_min=0.5, gamma=3e-3, step_scale=10.0)
    assert sched.value(0) == 1.0
    assert sched.value(100) == pytest.approx(math.exp(-3e-3 * 100 / 10))
    assert sched.value(10**6) == 0.5
    assert sched.update(1000) == pytest.approx(max(math.exp(-0.3), 0.5))
    assert int(sched.last_step) == 1000


def test_temperature_follows_ctx_step_and_round_trips_through_a_checkpoint(tmp_path):
    cfg = cfg_with(GAMMA=1e-2, STEP_SCALE=2.0, TAU_MIN=0.1)
    tower = TextTower()
    module = OnePrompt(cfg, "text", length=L, width=tower.width, position="adap_ins_pos")
    module.train()
    run(tower, TEXT_ROWS, module, PromptContext(step=50))
    sched = module.placement.temperature
    assert float(sched.tau) == pytest.approx(math.exp(-1e-2 * 50 / 2.0))
    path = tmp_path / "ckpt.pt"
    torch.save(module.state_dict(), path)
    assert "placement.temperature.tau" in module.state_dict()
    fresh = OnePrompt(cfg_with(), "text", length=L, width=tower.width, position="adap_ins_pos")
    fresh.load_state_dict(torch.load(path))
    for key in ("tau", "last_step", "gamma", "step_scale", "tau_min", "tau0"):
        assert torch.equal(getattr(fresh.placement.temperature, key), getattr(sched, key)), key
    assert fresh.placement.temperature.value(50) == sched.value(50)
    assert fresh.placement.temperature.current == sched.current  # a resumed run continues from it


def test_bad_dynamic_settings_say_what_to_do():
    from mmprompt.prompts.placement import build_placement

    with pytest.raises(ConfigError, match="LENGTH_MODE"):
        build_placement("adap_len", cfg_with(LENGTH_MODE="zero"), length=4, width=8)
    with pytest.raises(ConfigError, match="CHOICE_DEPTH"):
        build_placement("adap_pos", cfg_with(CHOICE_DEPTH=0), length=4, width=8)
    with pytest.raises(ConfigError, match="TAU_MIN"):
        build_placement("adap_pos", cfg_with(TAU_MIN=0.0), length=4, width=8)


# --------------------------------------------------------------------------- instance feature
def test_frozen_forward_feature_is_computed_once_and_used_by_every_layer():
    from types import SimpleNamespace

    from mmprompt.prompts.base import masked_mean

    tower = TextTower(depth=2)
    cfg = cfg_with(INSTANCE_FEATURE="frozen_forward")
    module = OnePrompt(cfg, "text", length=L, width=tower.width, position="adap_ins_pos", deep_layers=2)
    stack = PromptStack([module]).attach(SimpleNamespace(tower=lambda name: tower))
    assert stack.frozen_pass
    module.eval()
    passes = []
    real_run_layers = tower.run_layers
    tower.run_layers = lambda seq, *a, **k: passes.append(a) or real_run_layers(seq, *a, **k)
    ctx = PromptContext()
    tower.run(TEXT_ROWS, stack, ctx)
    assert [p for p in passes if not p] == [()]  # exactly one prompt-free pass for the batch
    plain = real_run_layers(tower.embed(TEXT_ROWS))
    feature = ctx.cache[("dynamic.frozen_forward", "text", 0)]
    # (allclose: torch's eval-mode fast path of the encoder layer rounds differently)
    torch.testing.assert_close(feature, masked_mean(plain.x, plain.mask))
    expected = module.placement.heads[0](feature).argmax(-1)
    assert torch.equal(ctx.records["text.layer0.dpos"][0], expected)
    assert torch.equal(ctx.records["text.layer1.dpos"][0], expected)


def test_default_feature_needs_no_extra_pass():
    module = OnePrompt(cfg_with(), "text", length=L, width=12, position="adap_ins_pos")
    assert not PromptStack([module]).attach(object()).frozen_pass


# --------------------------------------------------------------------------- real backbones
def _real_backbones():
    """(label, backbone, tower name, inputs) for tiny random configs of every real adapter."""
    from _text_backbones import padded_ids, tiny_encoder_cfg, tiny_t5_cfg

    from mmprompt.build import build_backbone
    from mmprompt.config import load_cfg

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = []
    vit = build_backbone(load_cfg(os.path.join(here, "configs/_base_/tiny_vit.yaml")))
    out.append(("timm_vit", vit, "vision", torch.randn(2, 3, 32, 32)))
    clip_cfg = load_cfg(os.path.join(here, "configs/_base_/tiny_clip.yaml"))
    clip = build_backbone(clip_cfg)
    out.append(("clip_vision", clip, "vision", torch.randn(2, 3, 32, 32)))
    out.append(("clip_text", clip, "text", clip.tower("text").tokenize(["a photo of a cat", "dog", "a big red bird"])))
    texts = ["a short one", "hi", "a somewhat longer sentence than the others here"]
    t5 = build_backbone(tiny_t5_cfg())
    out.append(("t5", t5, "encoder", t5.tower("encoder").tokenize(texts)))
    bert = build_backbone(tiny_encoder_cfg())
    out.append(("bert", bert, "encoder", padded_ids(3, 10, 0, [10, 4, 7], 120)))
    return out


@pytest.fixture(scope="module")
def real_backbones():
    return _real_backbones()


@pytest.mark.parametrize("position", ["adap_pos", "adap_ins_pos"])
def test_real_backbones_output_equals_explicit_concatenation(real_backbones, position):
    for label, backbone, tower_name, inputs in real_backbones:
        backbone.eval()
        tower = backbone.tower(tower_name)
        module = OnePrompt(cfg_with(), tower_name, length=L, width=tower.width, position=position)
        with torch.no_grad():
            for p in module.placement.heads.parameters():
                p.normal_(std=0.5)
        module.eval()
        ctx = PromptContext()
        with torch.no_grad():
            out = tower.run(inputs, PromptStack([module]), ctx)
            dpos = ctx.records[f"{tower_name}.layer0.dpos"][0]
            reference = explicit_split(tower.embed(inputs), module.sources[0].tokens, dpos)
            expected = tower.pool(tower.run_layers(reference, then_pool=True))  # as run() does
        assert torch.equal(out, expected), label
        if tower_name in ("text", "encoder"):  # padded batches: P_after right after each last real token
            seq0 = tower.embed(inputs)
            assert int(seq0.mask.sum(1).min()) < int(seq0.mask.sum(1).max()), label


def test_real_backbones_gradients_reach_position_and_prompts(real_backbones):
    for label, backbone, tower_name, inputs in real_backbones:
        tower = backbone.tower(tower_name)
        module = OnePrompt(cfg_with(), tower_name, length=L, width=tower.width, position="adap_ins_pos", source="pool")
        module.train()
        out = tower.run(inputs, PromptStack([module]), PromptContext())
        (out * torch.randn_like(out)).sum().backward()
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (label, name)
        assert all(p.grad is None for p in backbone.parameters()), label


def test_clip_text_eot_pooling_follows_p_after(real_backbones):
    _, clip, _, inputs = [b for b in real_backbones if b[0] == "clip_text"][0]
    tower = clip.tower("text")
    module = OnePrompt(cfg_with(), "text", length=L, width=tower.width, position="adap_pos")
    with torch.no_grad():
        module.placement.heads[0].logits.copy_(torch.tensor([5.0, 0, 0, 0, 0]))  # dpos 0: all after
    module.eval()
    seq0 = tower.embed(inputs)
    seq = module.before_layer("text", 0, seq0, PromptContext())
    eot = seq0.anchors["pool"]
    assert torch.equal(seq.anchors["pool"], eot + L)
    ids = seq0.meta["token_ids"]
    assert torch.equal(seq.positions_of(module.owner), eot[:, None] + torch.arange(L))
    # the token pooled is still the EOT embedding, now right after the prompt
    assert torch.equal(seq.gather_anchor("pool"), seq0.gather_anchor("pool"))
    assert (ids.gather(1, eot[:, None]) == ids.max()).all()


# --------------------------------------------------------------------------- recipes
TINY_VIT = dict(embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recipe_model(name):
    """A dynamic recipe from configs/ on the tiny random version of its backbone."""
    from _text_backbones import TINY_T5

    from mmprompt.build import build_model
    from mmprompt.config import load_cfg

    path = os.path.join(ROOT, "configs", name)
    if name.startswith("maple"):
        cfg = load_cfg(
            path,
            opts=[
                "MODEL.BACKBONE.ARCH",
                os.path.join(ROOT, "configs/_base_/tiny_clip_model.json"),
                "MODEL.BACKBONE.PRETRAINED",
                "",
                "PROMPT.MAPLE.PROMPT_DEPTH",
                "2",
            ],
        )
        return (
            cfg,
            build_model(cfg, ["cat", "sea lion"]),
            {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 1])},
        )
    if name.startswith("vpt"):
        cfg = load_cfg(path, opts=["MODEL.BACKBONE.PRETRAINED", ""])
        cfg.MODEL.BACKBONE.KWARGS.update(TINY_VIT)
        return (
            cfg,
            build_model(cfg, ["a", "b", "c"]),
            {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 2])},
        )
    cfg = load_cfg(
        path, opts=["MODEL.BACKBONE.ARCH", "t5", "MODEL.BACKBONE.PRETRAINED", "", "MODEL.TEXT.TOKENIZER", "byt5"]
    )
    cfg.MODEL.BACKBONE.KWARGS.update(TINY_T5)
    return cfg, build_model(cfg, ["no", "yes"]), {"text": ["great movie", "bad"], "label": torch.tensor([1, 0])}


@pytest.mark.parametrize(
    "name,dynamic_params",
    [
        ("maple_adap_pos.yaml", lambda d, l: l + 1),
        ("vpt_deep_adap_pos_cub.yaml", lambda d, l: l + 1),
        ("t5_adap_pos.yaml", lambda d, l: l + 1),
        ("t5_adap_ins_pos.yaml", lambda d, l: d * (l + 1) + l + 1),  # the authors' Linear has a bias
        ("t5_adap_pos_ins_vec.yaml", lambda d, l: l + 1),
        ("t5_adap_ins_vec_pos.yaml", lambda d, l: d * (l + 1) + l + 1),
        ("t5_adap_len.yaml", lambda d, l: l + 1),
    ],
)
def test_dynamic_recipes_build_train_and_record(name, dynamic_params):
    cfg, model, batch = _recipe_model(name)
    placements = [m for m in model.prompts.modules() if type(m).__name__.startswith("Adaptive")]
    assert len(placements) == 1
    placement = placements[0]
    width = placement.heads[0].linear.in_features if placement.instance else None
    assert sum(p.numel() for p in placement.parameters()) == dynamic_params(width, placement.length)
    if "ins_vec" in name:
        pools = [m for m in model.prompts.modules() if type(m).__name__ == "PromptPool"]
        assert pools and pools[0].size == 8
    model.train()
    ctx = model.new_context()
    model(batch, ctx)["loss"].backward()
    for n, p in placement.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert any(key.endswith(".layer0.dpos") or key.endswith(".layer0.length") for key in ctx.records), (
        ctx.records.keys()
    )


# --------------------------------------------------------------------------- records and plots
def test_plot_positions_draws_one_png_per_layer_from_prompt_records(tmp_path):
    import json
    import subprocess

    records = {
        "vision.layer0.dpos": [[3, 3, 1, 0]],
        "vision.layer1.dpos": [[2, 2, 2, 2]],
        "encoder.layer0.length": [[5, 4]],
    }
    (tmp_path / "prompt_records.json").write_text(json.dumps(records))
    tool = os.path.join(ROOT, "tools", "plot_positions.py")
    done = subprocess.run([sys.executable, tool, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for key in records:
        png = tmp_path / "position_plots" / f"{key}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert "vision.layer1.dpos: most often 2 (100.0% of 4)" in done.stdout
    missing = subprocess.run([sys.executable, tool, str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "prompt_records.json" in missing.stderr and "Traceback" not in missing.stderr


def test_frozen_forward_without_the_models_pass_is_refused_not_replaced():
    tower = TextTower()
    cfg = cfg_with(INSTANCE_FEATURE="frozen_forward")
    for position, source in (("adap_ins_pos", "param"), ("prefix", "pool")):
        module = OnePrompt(cfg, "text", length=L, width=tower.width, position=position, source=source)
        with pytest.raises(ConfigError, match="no frozen pass"):
            run(tower, TEXT_ROWS, module)
    with pytest.raises(ConfigError, match="INSTANCE_FEATURE 'lm'"):
        OnePrompt(cfg_with(INSTANCE_FEATURE="lm"), "text", length=L, width=tower.width, position="adap_ins_pos")


def _record_layers(tower):
    seen, layer = [], tower.layer

    def recording(i, seq):
        seen.append(seq)
        return layer(i, seq)

    tower.layer = recording
    return seen


def test_vpt_deep_on_timm_vit_learns_one_position_per_layer():
    from mmprompt.build import build_model
    from mmprompt.config import load_cfg

    cfg = load_cfg(
        os.path.join(ROOT, "configs", "vpt_deep_adap_pos_cub.yaml"),
        opts=["MODEL.BACKBONE.PRETRAINED", "", "PROMPT.DYNAMIC.CHOICE_DEPTH", "2", "PROMPT.VPT.DROPOUT", "0.0"],
    )
    cfg.MODEL.BACKBONE.KWARGS.update(TINY_VIT)
    model = build_model(cfg, ["a", "b"])
    vpt = model.prompts.methods[0]
    n = vpt.length
    with torch.no_grad():
        for head, dpos in zip(vpt.placement.heads, (n, 3)):
            head.logits.zero_()
            head.logits[dpos] = 5.0
    seen = _record_layers(model.backbone.tower("vision"))
    model.eval()
    ctx = model.new_context()
    model({"image": torch.randn(2, 3, 32, 32)}, ctx)
    assert [int(ctx.records[f"vision.layer{i}.dpos"][0][0]) for i in range(2)] == [n, 3]
    patches = 16
    for i, dpos in enumerate((n, 3)):
        pos = seen[i].positions_of(vpt.owner_id)[0].tolist()
        before, after = list(range(1, 1 + dpos)), list(range(1 + dpos + patches, 1 + n + patches))
        assert pos == before + after, (i, pos)  # [CLS, P_before, patches, P_after]
        assert torch.equal(seen[i].anchors["pool"], torch.zeros(2, dtype=torch.long))  # CLS stays first and pooled
        reference = explicit_split(seen[i].remove(vpt.owner_id), vpt.sources[i].tokens, torch.full((2,), dpos))
        assert torch.equal(seen[i].x, reference.x)


def test_maple_adap_pos_splits_the_text_context_around_the_words_and_class():
    _, model, batch = _recipe_model("maple_adap_pos.yaml")
    maple = model.prompts.methods[0]
    with torch.no_grad():
        maple.text_placement.heads[0].logits.zero_()
        maple.text_placement.heads[0].logits[2] = 5.0  # dpos 2 of 4
    text = model.backbone.tower("text")
    seen = _record_layers(text)
    model.eval()
    ctx = model.new_context()
    model(batch, ctx)
    ids = seen[0].meta["token_ids"]
    first = seen[0]
    ctx_pos = first.positions_of(maple.text_owner)
    words_pos = first.positions_of(maple.fixed_words.owner_id)
    eot = first.anchors["pool"]
    # [SOT, P[:2], "a photo of", class name ".", P[2:], EOT]
    assert ctx_pos[:, :2].tolist() == [[1, 2]] * ctx_pos.shape[0]
    assert words_pos.tolist() == [[3, 4, 5]] * ctx_pos.shape[0]
    assert torch.equal(ctx_pos[:, 2:], eot[:, None] - torch.tensor([2, 1]))
    assert (ids.gather(1, (eot - ctx_pos.shape[1] - 3)[:, None]) == ids.max()).all()  # pooled token is EOT
    # the deeper text layer overwrites the same slots (the position is the input layer's)
    assert torch.equal(seen[1].positions_of(maple.text_owner), ctx_pos)
    assert torch.equal(seen[1].anchors["pool"], eot)


def test_length_mask_mode_on_real_backbones_equals_the_shorter_prompt(real_backbones):
    """Where masked tokens take no position (ViT: positions added before the prompts; BERT:
    positions count attended tokens), dropping tokens by mask equals inserting fewer tokens."""
    for label, backbone, tower_name, inputs in real_backbones:
        if label not in ("timm_vit", "bert"):
            continue
        backbone.eval()
        tower = backbone.tower(tower_name)
        module = OnePrompt(cfg_with(LENGTH_MODE="mask"), tower_name, length=L, width=tower.width, position="adap_len")
        with torch.no_grad():
            module.placement.heads[0].logits.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0]))  # l* = 2
        module.eval()
        with torch.no_grad():
            out = tower.run(inputs, PromptStack([module]), PromptContext())
            short = tower.embed(inputs).insert(module.sources[0].tokens[2:], "start", 999)
            torch.testing.assert_close(out, tower.pool(tower.run_layers(short)), rtol=1e-5, atol=1e-5, msg=label)


@pytest.mark.parametrize(
    "method,position", [("dept", "adap_ins_pos"), ("adept", "adap_pos"), ("deep_prompt", "adap_pos")]
)
def test_dynamic_positions_compose_with_offsets_and_per_layer_prompts(method, position):
    """DePT/ADePT's short prompt and per-layer deep prompts at learned positions
    (deep prompts with a position per layer), trained end to end through the task models."""
    from _text_backbones import tiny_encoder_cfg, tiny_t5_cfg

    from mmprompt.build import build_model

    key = method.upper()
    opts = ["PROMPT.METHODS", f"['{method}']", f"PROMPT.{key}.POSITION", position, "PROMPT.DYNAMIC.CHOICE_DEPTH", "2"]
    if method == "deep_prompt":
        cfg = tiny_encoder_cfg()
        opts += ["MODEL.TEXT.TOKENIZER", "byt5", "MODEL.BACKBONE.KWARGS.vocab_size", "384"]
    else:
        cfg = tiny_t5_cfg()
        cfg.MODEL.NAME = "t5_verbalizer"
        opts += [f"PROMPT.{key}.INIT", "normal"]
    cfg.merge_from_list(opts)
    model = build_model(cfg, ["no", "yes"]).train()
    ctx = model.new_context()
    model({"text": ["great movie", "bad"], "label": torch.tensor([1, 0])}, ctx)["loss"].backward()
    layers = 2 if method == "deep_prompt" else 1
    assert sorted(ctx.records) == [f"encoder.layer{i}.dpos" for i in range(layers)]
    heads = [p for n, p in model.named_parameters() if ".placement.heads." in n]
    assert len(heads) == 2 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads[:layers])


def test_frozen_forward_runs_through_a_built_task_model():
    from mmprompt.build import build_model
    from mmprompt.config import load_cfg

    cfg = load_cfg(
        os.path.join(ROOT, "configs", "_base_", "tiny_bert.yaml"),
        opts=[
            "PROMPT.METHODS",
            "['prompt_tuning']",
            "PROMPT.PROMPT_TUNING.POSITION",
            "adap_ins_pos",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "4",
            "PROMPT.DYNAMIC.INSTANCE_FEATURE",
            "frozen_forward",
        ],
    )
    model = build_model(cfg, ["a", "b"])
    out = model({"text": ["one two three", "four"], "label": torch.tensor([0, 1])})
    out["loss"].backward()
    assert model.prompts.frozen_pass
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "heads" in n)
