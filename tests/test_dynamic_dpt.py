"""Dynamic prompting's options for the seed paper's released code (Xianjun-Yang/DPT): the rotated
arrangement ``[P[j:]; X; P[:j]]`` and its straight-through gradient, the compounding temperature,
the frozen-output instance feature, the uniform logit / pool inits, the pool router's activation,
sampling in evaluation, and the recipes that select them. The side-by-side check against the
authors' code itself is benchmarks/official/dpt.py; these tests pin the behaviour without it."""

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _dynamic_towers import OnePrompt, TextTower, VisionTower  # noqa: E402

from mmprompt.config import get_cfg, load_cfg  # noqa: E402
from mmprompt.errors import ConfigError  # noqa: E402
from mmprompt.prompts.base import PromptContext, PromptStack, masked_mean  # noqa: E402
from mmprompt.prompts.dynamic import TaskLogits, TemperatureSchedule, insert_split, straight_through_gumbel  # noqa: E402
from mmprompt.tokens import TokenSeq  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = 4
TEXT_ROWS = [[3, 4, 5, 6], [7], [8, 9]]  # padded batch: EOT at 5, 2, 3


def cfg_with(**dynamic):
    cfg = get_cfg()
    for k, v in dynamic.items():
        setattr(cfg.PROMPT.DYNAMIC, k, v)
    return cfg


def dpt_cfg(**more):
    return cfg_with(ARRANGEMENT="dpt", **more)


def explicit_rotated(seq: TokenSeq, tokens: torch.Tensor, j) -> torch.Tensor:
    """The authors' ``[P[j:]; X[:eos]; P[:j]; X[eos:]]`` per sample with torch.cat (hidden states).

    ``start`` / ``end`` bound the content: tokens before ``start`` (CLS, SOT) stay in front, the
    token at ``end`` (EOT, </s>) and the padding after it follow the suffix.
    """
    rows = []
    for b in range(seq.batch_size):
        s, e, jb = int(seq.anchors["start"][b]), int(seq.anchors["end"][b]), int(j[b])
        x = seq.x[b]
        p = (tokens[b] if tokens.dim() == 3 else tokens).to(x.dtype)
        rows.append(torch.cat([x[:s], p[jb:], x[s:e], p[:jb], x[e:]]))
    return torch.stack(rows)


def forced(module, j):
    """Task-level logits that pick ``j`` (no noise in eval mode)."""
    with torch.no_grad():
        for head in module.placement.heads:
            head.logits.zero_()
            head.logits[j] = 5.0
    return module


def run(tower, inputs, module, ctx=None):
    ctx = ctx or PromptContext()
    tower.seen.clear()
    return tower.run(inputs, PromptStack([module]), ctx), ctx


# --------------------------------------------------------------------------- the rotated arrangement
@pytest.mark.parametrize("j", range(L + 1))
def test_rotated_arrangement_layout_for_every_choice(j):
    """Token t >= j right after SOT, in order; tokens t < j right before each sample's EOT; the
    records say how many tokens precede the input (l - j)."""
    tower = TextTower()
    module = forced(OnePrompt(dpt_cfg(), "text", length=L, width=tower.width, position="adap_pos"), j)
    module.eval()
    out, ctx = run(tower, TEXT_ROWS, module)
    seq0 = tower.embed(TEXT_ROWS)
    p = module.sources[0].tokens.detach()
    seen = tower.seen[0]
    assert torch.equal(seen.x, explicit_rotated(seq0, p, [j] * 3))
    eot = torch.tensor([5, 2, 3])
    expected = [list(range(1, 1 + L - j)) + list(range(e + L - j, e + L)) for e in eot.tolist()]
    assert seen.positions_of(module.owner).tolist() == expected
    assert torch.equal(seen.anchors["pool"], eot + L) and torch.equal(seen.anchors["end"], eot + L)
    assert seen.mask.sum(1).tolist() == [6 + L, 3 + L, 4 + L]  # padding stays padding, at the end
    assert ctx.records["text.layer0.dpos"][0].tolist() == [L - j] * 3
    # j = 0 is plain prefix prompt tuning [P; X], j = l puts the whole prompt before EOT
    if j == 0:
        assert torch.equal(seen.x, seq0.insert(p, "start", 99).x)
    if j == L:
        assert torch.equal(seen.x, seq0.insert(p, "end", 99).x)


def test_rotated_arrangement_on_t5_puts_the_suffix_before_eos_per_sample():
    from _text_backbones import tiny_t5_cfg

    from mmprompt.build import build_backbone

    t5 = build_backbone(tiny_t5_cfg()).eval()
    tower = t5.tower("encoder")
    tokens = tower.tokenize(["a short one", "hi", "a somewhat longer sentence"])
    module = OnePrompt(dpt_cfg(), "encoder", length=L, width=tower.width, position="adap_ins_pos")
    with torch.no_grad():
        for p in module.placement.heads.parameters():
            p.normal_(std=0.5)
    module.eval()
    ctx = PromptContext()
    with torch.no_grad():
        out = tower.run_layers(tower.embed(tokens), PromptStack([module]), ctx)
        tokens_before = ctx.records["encoder.layer0.dpos"][0]
        seq0 = tower.embed(tokens)
        j = L - tokens_before
        reference = TokenSeq.from_embeddings(
            explicit_rotated(seq0, module.sources[0].tokens, j),
            seq0.insert_at(module.sources[0].tokens, torch.zeros(3, L, dtype=torch.long), 99).mask,
            tower="encoder",
        )
        expected = tower.run_layers(reference)
    assert len(set(j.tolist())) > 1  # the instances chose differently
    eos = seq0.anchors["end"]
    ids = tokens[0]
    assert (ids.gather(1, eos[:, None]) == 1).all()  # the end anchor is each sample's </s>
    torch.testing.assert_close(out.x, expected.x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("choice_depth", [1, 3])
def test_rotated_deep_layers_keep_or_rearrange_their_own_tokens(choice_depth):
    tower = TextTower(depth=3)
    module = OnePrompt(
        dpt_cfg(CHOICE_DEPTH=choice_depth), "text", length=L, width=tower.width, position="adap_pos", deep_layers=3
    )
    with torch.no_grad():
        for i, head in enumerate(module.placement.heads):
            head.logits.zero_()
            head.logits[[1, 4, 2][i]] = 5.0
    module.eval()
    run(tower, TEXT_ROWS, module)
    chosen = [1, 1, 1] if choice_depth == 1 else [1, 4, 2]
    for i in range(3):
        seen = tower.seen[i]
        stripped = seen.remove(module.owner)
        reference = explicit_rotated(stripped, module.sources[i].tokens.detach(), [chosen[i]] * 3)
        assert torch.equal(seen.x, reference), i


# --------------------------------------------------------------------------- its gradient
def rotated_weighted_sum(seq, tokens, one_hot):
    """``sum_j y_j A_j`` over the authors' candidate arrangements, built one by one."""
    B, k = seq.batch_size, tokens.shape[-2]
    arrangements = [insert_split(seq, tokens, torch.full((B,), j), 99, rotate=True).x for j in range(k + 1)]
    return (one_hot.expand(B, -1)[..., None, None] * torch.stack(arrangements, 1)).sum(1)


@pytest.mark.parametrize("position", ["adap_pos", "adap_ins_pos"])
@pytest.mark.parametrize("source", ["param", "pool"])
def test_rotated_gradient_equals_the_direct_sum_over_candidates(position, source):
    """The one-gather forward with the backward's closed form gives the same gradients (choice
    logits or instance network, prompt, pool) as differentiating the explicit weighted sum."""
    for name, tower, inputs in [("vision", VisionTower(), torch.randn(3, 5, 3)), ("text", TextTower(), TEXT_ROWS)]:
        torch.manual_seed(3)
        module = OnePrompt(
            dpt_cfg(NOISE=False, POOL_SIZE=3, INSTANCE_BIAS=True),
            name,
            length=L,
            width=tower.width,
            position=position,
            source=source,
        )
        with torch.no_grad():
            for p in module.placement.heads.parameters():
                p.normal_()
        module.train()
        out, _ = run(tower, inputs, module)
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        fast = {n: p.grad.clone() for n, p in module.named_parameters()}
        module.zero_grad()

        seq0 = tower.embed(inputs)
        ctx = PromptContext(features={name: masked_mean(seq0.x, seq0.mask)})
        tokens = module.sources[0](ctx, name)
        head = module.placement.heads[0]
        one_hot, index = straight_through_gumbel(head(ctx.features[name]), 1.0, sample=False)
        mixed = insert_split(seq0, tokens, index.expand(seq0.batch_size), 99, rotate=True)
        mixed = mixed.with_x(rotated_weighted_sum(seq0, tokens, one_hot))
        (tower.pool(tower.run_layers(mixed)) * weights).sum().backward()
        for n, p in module.named_parameters():
            assert fast[n].abs().sum() > 0, (name, n)
            torch.testing.assert_close(fast[n], p.grad, rtol=1e-4, atol=1e-6, msg=f"{name} {n}")


def test_rotated_choice_gradient_matches_finite_differences():
    """d loss / d y_j by central differences of the explicit ``sum_j y_j A_j`` (float64) equals
    the gradient the one-gather path gives the choice, up to the per-sample constant the
    softmax Jacobian cancels."""
    torch.manual_seed(0)
    tower = TextTower().double()
    seq0 = tower.embed(TEXT_ROWS)
    seq0 = seq0.with_x(seq0.x.detach())
    tokens = torch.randn(3, L, tower.width, dtype=torch.float64)
    weights = torch.randn(3, tower.width, dtype=torch.float64)
    index = torch.tensor([0, 2, 4])
    y = torch.zeros(3, L + 1, dtype=torch.float64).scatter_(1, index[:, None], 1.0).requires_grad_()

    def loss(seq):
        return (tower.pool(tower.run_layers(seq)) * weights).sum()

    arranged = insert_split(seq0, tokens, index, 99, choice=y, rotate=True)
    fast = torch.autograd.grad(loss(arranged), y)[0]
    eps = 1e-6
    numeric = torch.zeros_like(fast)
    template = insert_split(seq0, tokens, index, 99, rotate=True)
    with torch.no_grad():
        for b in range(3):
            for j in range(L + 1):
                up, down = y.detach().clone(), y.detach().clone()
                up[b, j] += eps
                down[b, j] -= eps
                numeric[b, j] = (
                    loss(template.with_x(rotated_weighted_sum(seq0, tokens, up)))
                    - loss(template.with_x(rotated_weighted_sum(seq0, tokens, down)))
                ) / (2 * eps)
    centred = lambda g: g - g.mean(1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(centred(fast), centred(numeric), rtol=1e-6, atol=1e-7)
    assert centred(fast).abs().max() > 1e-3


# --------------------------------------------------------------------------- temperature
@pytest.mark.parametrize("gamma,s,tau_min", [(3e-5, 10.0, 0.5), (3e-3, 1.0, 0.5), (1e-4, 0.1, 0.2)])
def test_compound_temperature_equals_the_authors_loop(gamma, s, tau_min):
    """``tau <- max(tau * exp(-gamma * t / s), tau_min)`` after every optimizer step t (the
    authors' scripts), against the closed form used for any step (resumed runs too)."""
    sched = TemperatureSchedule(1.0, tau_min, gamma, s, kind="compound")
    tau = 1.0
    assert sched.value(0) == 1.0
    for step in range(1, 3001):
        tau = max(tau * math.exp(-gamma * step / s), tau_min)
        assert sched.value(step) == pytest.approx(tau, rel=1e-12), step


def test_compound_reaches_the_floor_after_680_steps_closed_form_after_231050():
    compound = TemperatureSchedule(1.0, 0.5, 3e-5, 10.0, kind="compound")
    closed = TemperatureSchedule(1.0, 0.5, 3e-5, 10.0, kind="closed_form")
    assert compound.value(679) > 0.5 and compound.value(680) == 0.5
    assert closed.value(231049) > 0.5 and closed.value(231050) == 0.5
    assert closed.value(680) == pytest.approx(math.exp(-3e-5 * 680 / 10))


def test_the_straight_through_backward_uses_the_scheduled_temperature():
    cfg = dpt_cfg(SCHEDULE="compound", GAMMA=1e-3, STEP_SCALE=2.0, NOISE=False)
    tower = TextTower()
    module = OnePrompt(cfg, "text", length=L, width=tower.width, position="adap_pos")
    module.train()
    run(tower, TEXT_ROWS, module, PromptContext(step=40))
    assert float(module.placement.temperature.tau) == pytest.approx(math.exp(-1e-3 * 40 * 41 / 4))


def test_bad_option_values_say_what_to_choose():
    from mmprompt.prompts.placement import build_placement
    from mmprompt.prompts.sources import build_source

    for key, bad, build in [
        ("ARRANGEMENT", "rotated", "adap_pos"),
        ("SCHEDULE", "exp", "adap_pos"),
        ("LOGIT_INIT", "normal", "adap_pos"),
        ("INSTANCE_FEATURE", "lm", "adap_ins_pos"),
    ]:
        with pytest.raises(ConfigError, match=f"PROMPT.DYNAMIC.{key} '{bad}' is unknown; choose one of"):
            build_placement(build, cfg_with(**{key: bad}), length=4, width=8)
    for key, bad in [("POOL_ACTIVATION", "gelu"), ("POOL_INIT", "normal")]:
        with pytest.raises(ConfigError, match=f"PROMPT.DYNAMIC.{key} '{bad}' is unknown"):
            build_source("pool", cfg_with(**{key: bad}), length=4, width=8)


# --------------------------------------------------------------------------- inits and the pool
def test_task_logit_init_zeros_or_uniform_in_range():
    assert torch.equal(TaskLogits(21).logits, torch.zeros(21))
    torch.manual_seed(0)
    for bound in (0.5, 0.1):
        logits = TaskLogits(2001, "uniform", bound).logits.detach()
        assert logits.abs().max() <= bound and logits.abs().max() > 0.95 * bound
        assert abs(float(logits.mean())) < 0.05 * bound  # centred, not one-sided
    from mmprompt.prompts.placement import build_placement

    placement = build_placement("adap_pos", cfg_with(LOGIT_INIT="uniform"), length=20, width=8)
    assert placement.heads[0].logits.abs().max() <= 0.5 and placement.heads[0].logits.std() > 0.1


@pytest.mark.parametrize("activation", ["relu", "tanh", "none"])
def test_pool_router_activation_init_and_bias(activation):
    from mmprompt.prompts.sources import build_source

    torch.manual_seed(0)
    cfg = cfg_with(POOL_ACTIVATION=activation, POOL_INIT="uniform", INSTANCE_BIAS=True, POOL_SIZE=3)
    pool = build_source("pool", cfg, length=L, width=8)
    assert pool.prompts.shape == (3, L, 8) and pool.prompts.abs().max() <= 0.5
    assert pool.router.linear.bias is not None
    feature = torch.randn(5, 8)
    raw = pool.router.linear(feature)
    expected = {"relu": torch.relu(raw), "tanh": torch.tanh(raw), "none": raw}[activation]
    ctx = PromptContext(features={"text": feature})
    torch.testing.assert_close(pool.mixing_weights(ctx, "text"), torch.softmax(expected, -1))


# --------------------------------------------------------------------------- evaluation noise
def test_eval_noise_samples_the_choice_in_evaluation_only_when_asked():
    tower = TextTower()
    for eval_noise in (False, True):
        module = OnePrompt(dpt_cfg(EVAL_NOISE=eval_noise), "text", length=L, width=tower.width, position="adap_ins_pos")
        module.eval()
        choices = set()
        for seed in range(12):
            torch.manual_seed(seed)
            _, ctx = run(tower, TEXT_ROWS, module)
            choices.add(tuple(ctx.records["text.layer0.dpos"][0].tolist()))
        assert (len(choices) > 1) == eval_noise, choices


# --------------------------------------------------------------------------- the frozen-output feature
@pytest.fixture(scope="module")
def t5():
    from _text_backbones import tiny_t5_cfg

    from mmprompt.build import build_backbone

    return build_backbone(tiny_t5_cfg(dropout_rate=0.3))


def frozen_output_feature(t5, tokens, **dynamic):
    tower = t5.tower("encoder")
    module = OnePrompt(
        dpt_cfg(INSTANCE_FEATURE="frozen_output", **dynamic),
        "encoder",
        length=L,
        width=tower.width,
        position="adap_ins_pos",
    )
    stack = PromptStack([module]).attach(t5)
    assert stack.frozen_pass
    module.eval()
    ctx = PromptContext()
    with torch.no_grad():
        tower.run_layers(tower.embed(tokens), stack, ctx)
    return ctx.cache[("dynamic.frozen_output", "encoder", int(dynamic.get("FEATURE_LENGTH", 0)))]


def test_frozen_output_is_the_unmasked_mean_after_the_final_norm(t5):
    """The authors' ``torch.mean(encoder_last_hidden_state, 1)`` over inputs padded to
    max_seq_length: T5's own encoder (final norm included) on the padded ids, mean over every
    position, padding included."""
    t5.eval()
    tower = t5.tower("encoder")
    ids, mask = tower.tokenize(["a short one", "hi", "a somewhat longer sentence than the others"])
    pad_to = ids.shape[1] + 17
    feature = frozen_output_feature(t5, (ids, mask), FEATURE_LENGTH=pad_to)
    padded = torch.nn.functional.pad(ids, (0, pad_to - ids.shape[1]))
    padded_mask = torch.nn.functional.pad(mask.long(), (0, pad_to - ids.shape[1]))
    with torch.no_grad():
        library = t5.model.encoder(input_ids=padded, attention_mask=padded_mask).last_hidden_state
    torch.testing.assert_close(feature, library.mean(1), rtol=1e-5, atol=1e-6)
    masked = (library * padded_mask[..., None]).sum(1) / padded_mask.sum(1, keepdim=True)
    assert (feature - masked).abs().max() > 1e-3  # padding counts
    # FEATURE_LENGTH 0: the mean over the batch's own padded length
    own = frozen_output_feature(t5, (ids, mask))
    with torch.no_grad():
        unpadded = t5.model.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(own, unpadded.mean(1), rtol=1e-5, atol=1e-6)


def test_frozen_output_runs_in_the_backbones_mode_frozen_forward_in_eval(t5):
    tower = t5.tower("encoder")
    tokens = tower.tokenize(["a short one", "hi"])
    t5.eval()
    calm = frozen_output_feature(t5, tokens)
    t5.train()  # dropout 0.3 on: the authors' pass runs in the PLM's own mode
    try:
        torch.manual_seed(0)
        noisy = frozen_output_feature(t5, tokens)
        assert (noisy - calm).abs().max() > 1e-3
        # frozen_forward switches the whole backbone (the library modules too) to eval
        module = OnePrompt(
            cfg_with(INSTANCE_FEATURE="frozen_forward"), "encoder", length=L, width=tower.width, position="adap_ins_pos"
        )
        stack = PromptStack([module]).attach(t5)
        features = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            ctx = PromptContext()
            with torch.no_grad():
                tower.run_layers(tower.embed(tokens), stack, ctx)
            features.append(ctx.cache[("dynamic.frozen_forward", "encoder", 0)])
        assert torch.equal(features[0], features[1])
        assert t5.training and t5.model.encoder.training  # restored
    finally:
        t5.eval()


def test_frozen_output_needs_a_tower_exposing_its_final_norm():
    from types import SimpleNamespace

    tower = TextTower()
    module = OnePrompt(
        cfg_with(INSTANCE_FEATURE="frozen_output"), "text", length=L, width=tower.width, position="adap_ins_pos"
    )
    stack = PromptStack([module]).attach(SimpleNamespace(tower=lambda name: tower))
    with pytest.raises(ConfigError, match="final norm"):
        tower.run(TEXT_ROWS, stack, PromptContext())
    bare = OnePrompt(
        cfg_with(INSTANCE_FEATURE="frozen_output"), "text", length=L, width=tower.width, position="adap_ins_pos"
    )
    with pytest.raises(ConfigError, match="no frozen pass"):
        tower.run(TEXT_ROWS, PromptStack([bare]), PromptContext())


# --------------------------------------------------------------------------- recipes
DPT_CODE = dict(
    ARRANGEMENT="dpt",
    SCHEDULE="compound",
    LOGIT_INIT="uniform",
    INIT_RANGE=0.5,
    EVAL_NOISE=True,
    TAU0=1.0,
    TAU_MIN=0.5,
    GAMMA=3e-5,
    STEP_SCALE=10.0,
)


@pytest.mark.parametrize(
    "name,extra",
    [
        ("t5_adap_pos.yaml", {}),
        ("t5_adap_len.yaml", dict(LENGTH_MODE="surrogate")),
        (
            "t5_adap_ins_pos.yaml",
            dict(INSTANCE_FEATURE="frozen_output", FEATURE_LENGTH=480, INSTANCE_BIAS=True, INSTANCE_RELU=True),
        ),
        (
            "t5_adap_ins_vec.yaml",
            dict(
                INSTANCE_FEATURE="frozen_output",
                FEATURE_LENGTH=480,
                INSTANCE_BIAS=True,
                POOL_ACTIVATION="tanh",
                POOL_INIT="",
                POOL_SIZE=8,
            ),
        ),
        (
            "t5_adap_pos_ins_vec.yaml",
            dict(
                INSTANCE_FEATURE="frozen_output",
                FEATURE_LENGTH=480,
                INSTANCE_BIAS=True,
                POOL_ACTIVATION="none",
                POOL_INIT="uniform",
                POOL_SIZE=8,
            ),
        ),
        (
            "t5_adap_ins_vec_pos.yaml",
            dict(
                INSTANCE_FEATURE="frozen_output",
                FEATURE_LENGTH=480,
                INSTANCE_BIAS=True,
                POOL_ACTIVATION="none",
                POOL_INIT="uniform",
                POOL_SIZE=8,
            ),
        ),
    ],
)
def test_t5_recipes_default_to_the_authors_code(name, extra):
    cfg = load_cfg(os.path.join(ROOT, "configs", name))
    for key, value in {**DPT_CODE, **extra}.items():
        assert getattr(cfg.PROMPT.DYNAMIC, key) == value, key
    assert cfg.PROMPT.PROMPT_TUNING.NUM_TOKENS == 20 and cfg.PROMPT.PROMPT_TUNING.INIT == "vocab"
    assert cfg.MODEL.TEXT.MAX_LENGTH == 480  # OpenPrompt's max_seq_length in the authors' scripts
    # the scripts' training: Adafactor 0.3, no decay, 500 warm-up steps from 0, 8 x 4 per step,
    # 20,000 steps, their clip 1.0 on summed micro-batch gradients = 0.25 on the averaged ones
    o, t = cfg.OPTIM, cfg.TRAIN
    assert (o.NAME, o.LR, o.WEIGHT_DECAY, o.MAX_ITER, o.WARMUP_ITERS, o.WARMUP_MIN_LR) == (
        "adafactor",
        0.3,
        0.0,
        20000,
        500,
        0.0,
    )
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, t.GRAD_ACCUM_STEPS, t.GRAD_CLIP_NORM) == (8, 4, 0.25)


def test_adap_ins_vec_recipe_trains_its_pool_from_vocabulary_windows():
    """k pool members from the first k * l vocabulary rows (the authors' init), tanh router with
    bias on the frozen-output feature, prefix placement; trained through the T5 verbalizer."""
    from _text_backbones import TINY_T5

    from mmprompt.build import build_model

    cfg = load_cfg(
        os.path.join(ROOT, "configs", "t5_adap_ins_vec.yaml"),
        opts=[
            "MODEL.BACKBONE.ARCH",
            "t5",
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "MODEL.TEXT.TOKENIZER",
            "byt5",
            "MODEL.TEXT.MAX_LENGTH",
            "64",
            "PROMPT.DYNAMIC.FEATURE_LENGTH",
            "64",
        ],
    )
    cfg.MODEL.BACKBONE.KWARGS.update(TINY_T5)
    model = build_model(cfg, ["no", "yes"])
    pool = model.prompts.methods[0].sources[0]
    vocab = model.backbone.model.get_input_embeddings().weight
    k, length = pool.size, pool.length
    assert torch.equal(pool.prompts.detach(), vocab[: k * length].reshape(k, length, -1))
    assert pool.router.activation == "tanh" and pool.router.linear.bias is not None
    model.train()
    ctx = model.new_context()
    model({"text": ["great movie", "bad"], "label": torch.tensor([1, 0])}, ctx)["loss"].backward()
    assert pool.prompts.grad.abs().sum() > 0 and pool.router.linear.weight.grad.abs().sum() > 0
    assert list(ctx.records) == ["encoder.pool.top"]


@pytest.mark.parametrize("name", ["maple_adap_pos.yaml", "vpt_deep_adap_pos_cub.yaml"])
def test_vision_recipes_follow_the_papers_text(name):
    d = load_cfg(os.path.join(ROOT, "configs", name)).PROMPT.DYNAMIC
    assert (d.ARRANGEMENT, d.SCHEDULE, d.LOGIT_INIT, d.EVAL_NOISE) == ("paper", "compound", "uniform", False)


def test_defaults_keep_mmprompts_choices():
    """Configs that do not name the options (the demo recipes, shipped zoo checkpoints) keep
    the behaviour they were trained with."""
    d = get_cfg().PROMPT.DYNAMIC
    assert (
        d.ARRANGEMENT,
        d.SCHEDULE,
        d.LOGIT_INIT,
        d.EVAL_NOISE,
        d.INSTANCE_FEATURE,
        d.POOL_ACTIVATION,
        d.POOL_INIT,
        d.INSTANCE_BIAS,
    ) == ("paper", "closed_form", "zeros", False, "embed_mean", "relu", "", False)
