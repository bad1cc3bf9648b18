"""DePT and ADePT as their authors' code computes them, pinned without that code: DePT's
``lora_alpha / sqrt(r)`` offset scaling, ADePT's bottleneck dropout and down-projection init, the
text init both use (HF peft's TEXT: the phrase's ids with special tokens, repeated), and the
recipes' defaults and parameter budgets."""

import math
import os

import pytest
import torch
from _fake_backbone import EOT, SOT, fake_encoder, fake_vit
from _text_backbones import tiny_t5_cfg

from mmprompt.build import build_model, build_prompts
from mmprompt.config import get_cfg, load_cfg
from mmprompt.errors import ConfigError
from mmprompt.prompts.offsets import PositionOffsets, TokenSharedOffsets, dept_scale

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
PHRASE = "Classify this text is postive or not:"


def cfg_for(method, node, **kw):
    cfg = get_cfg()
    cfg.PROMPT.METHODS = [method]
    for k, v in kw.items():
        cfg.PROMPT[node][k] = v
    return cfg


def test_dept_defaults_are_the_authors():
    c = get_cfg().PROMPT.DEPT
    assert (c.ALPHA, c.SCALING, c.INIT, c.INIT_TEXT) == (8.0, "alpha_sqrt_rank", "text_repeat", PHRASE)
    a = get_cfg().PROMPT.ADEPT
    assert (a.DROPOUT, a.DOWN_INIT, a.INIT, a.INIT_TEXT) == (0.1, "adept", "text_repeat", PHRASE)


def test_dept_scalings():
    assert dept_scale("alpha_sqrt_rank", 8.0, 45) == pytest.approx(8 / math.sqrt(45))  # 1.1926
    assert dept_scale("alpha_rank", 8.0, 45) == pytest.approx(8 / 45)
    assert dept_scale("none", 8.0, 45) == 1.0
    with pytest.raises(ConfigError, match="PROMPT.DEPT.SCALING 'sqrt'"):
        dept_scale("sqrt", 8.0, 45)
    with pytest.raises(ConfigError, match="SCALING"):
        build_prompts(cfg_for("dept", "DEPT", NUM_TOKENS=0, RANK=2, MAX_LEN=8, SCALING="lora"), fake_encoder())


def test_dept_scaling_multiplies_the_offsets_and_both_gradients():
    """x + s A B: the forward offset and the gradients of A and B are s times the plain ones, the
    factor by which the authors' B gradient differs from an unscaled A B."""
    torch.manual_seed(0)
    plain = PositionOffsets(8, 3, 6, scale=1.0)
    scaled = PositionOffsets(8, 3, 6, scale=8 / math.sqrt(3))
    with torch.no_grad():
        plain.B.normal_()
        scaled.A.copy_(plain.A)
        scaled.B.copy_(plain.B)
    x = torch.randn(2, 5, 6)
    sel = torch.tensor([[True, True, True, False, False], [False, True, True, True, True]])
    outs = []
    for m in (plain, scaled):
        out = m(x, sel)
        (out * torch.arange(30.0).view(1, 5, 6)).sum().backward()
        outs.append(out - x)
    s = scaled.scale
    assert torch.allclose(outs[1], s * outs[0], atol=1e-6)
    assert torch.allclose(scaled.B.grad, s * plain.B.grad, rtol=1e-5)
    assert torch.allclose(scaled.A.grad, s * plain.A.grad, rtol=1e-5)
    assert torch.allclose(outs[0][1, 1], (plain.A @ plain.B)[0], atol=1e-6)  # the j-th selected token gets row j


def test_text_repeat_init_repeats_the_phrase_with_its_special_tokens():
    backbone = fake_encoder(width=12)
    tower = backbone.tower("encoder")
    stack = build_prompts(cfg_for("dept", "DEPT", NUM_TOKENS=10, RANK=2, MAX_LEN=8, INIT_TEXT="is it"), backbone)
    unit = [SOT, tower.word_id("is"), tower.word_id("it"), EOT]  # as the tokenizer encodes it
    ids = (unit * 3)[:10]
    assert torch.equal(stack.methods[0].prompt.sources[0].tokens, tower.token_embedding.weight[ids])
    # shorter prompt than the phrase: cut
    stack = build_prompts(cfg_for("adept", "ADEPT", NUM_TOKENS=3, BOTTLENECK=2, INIT_TEXT="is it"), backbone)
    assert torch.equal(stack.methods[0].prompt.sources[0].tokens, tower.token_embedding.weight[unit[:3]])


def test_text_repeat_init_on_t5_includes_the_eos():
    """T5's tokenizer appends </s> (id 1), so the authors' repeated unit is the phrase + </s>."""
    cfg = tiny_t5_cfg()
    cfg.MODEL.NAME = "t5_verbalizer"
    cfg.merge_from_list(
        [
            "PROMPT.METHODS",
            "['dept']",
            "PROMPT.DEPT.NUM_TOKENS",
            "7",
            "PROMPT.DEPT.RANK",
            "2",
            "PROMPT.DEPT.MAX_LEN",
            "64",
            "PROMPT.DEPT.INIT_TEXT",
            "ab",
        ]
    )
    model = build_model(cfg, ["no", "yes"])
    emb = model.backbone.model.get_input_embeddings().weight
    a, b, eos = ord("a") + 3, ord("b") + 3, 1  # ByT5: byte + 3; </s> = 1
    ids = [a, b, eos, a, b, eos, a]
    assert torch.equal(model.prompts.methods[0].prompt.sources[0].tokens, emb[ids])


def test_text_repeat_init_needs_a_phrase_and_a_vocabulary():
    with pytest.raises(ConfigError, match="'text_repeat' needs INIT_TEXT"):
        build_prompts(cfg_for("dept", "DEPT", NUM_TOKENS=4, RANK=2, MAX_LEN=8, INIT_TEXT=""), fake_encoder())
    with pytest.raises(ConfigError, match="needs a text tower with a vocabulary"):
        build_prompts(cfg_for("adept", "ADEPT", NUM_TOKENS=4, BOTTLENECK=2, TOWER="vision"), fake_vit())


def test_adept_down_projection_init_is_the_authors_u_one_over_sqrt_r():
    torch.manual_seed(0)
    d, r = 768, 19
    m = TokenSharedOffsets(d, r)
    bound = 1 / math.sqrt(r)  # kaiming_uniform(a=sqrt(5)) of their (d, r) A: fan_in = r
    w = m.down.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert torch.count_nonzero(m.down.bias) == 0
    assert torch.count_nonzero(m.up.weight) == 0 and torch.count_nonzero(m.up.bias) == 0
    linear = TokenSharedOffsets(d, r, down_init="linear")  # nn.Linear: U(+-1/sqrt(d)), 6.4x smaller here
    assert linear.down.weight.abs().max() <= 1 / math.sqrt(d) and torch.count_nonzero(linear.down.bias) > 0
    with pytest.raises(ConfigError, match="PROMPT.ADEPT.DOWN_INIT 'kaiming'"):
        TokenSharedOffsets(d, r, down_init="kaiming")


def test_adept_dropout_acts_on_the_bottleneck_in_training_only():
    torch.manual_seed(0)
    m = TokenSharedOffsets(8, 16, dropout=0.1)
    with torch.no_grad():
        m.up.weight.normal_()
    x = torch.randn(3, 5, 8)
    sel = torch.ones(3, 5, dtype=torch.bool)
    m.train()
    torch.manual_seed(1)
    got = m(x, sel)
    torch.manual_seed(1)
    hidden = torch.nn.functional.dropout(m.down(x), p=0.1, training=True)
    assert torch.allclose(got, x + m.up(torch.relu(hidden)))
    assert (hidden == 0).any()  # some of the 240 bottleneck units dropped
    m.eval()
    assert torch.allclose(m(x, sel), x + m.up(torch.relu(m.down(x))))
    off = TokenSharedOffsets(8, 16, dropout=0.0).train()
    assert torch.equal(off(x, sel), off(x, sel))


def test_adept_node_reaches_the_offset_network():
    stack = build_prompts(
        cfg_for("adept", "ADEPT", NUM_TOKENS=0, BOTTLENECK=3, DROPOUT=0.25, DOWN_INIT="linear"), fake_encoder(width=12)
    )
    m = stack.methods[0].offsets["0"]
    assert m.dropout.p == 0.25 and torch.count_nonzero(m.down.bias) > 0


@pytest.mark.parametrize(
    "config,scale,group_lr,steps",
    [("t5_dept.yaml", 8 / math.sqrt(45), 5e-3, 40000), ("t5_adept.yaml", None, 1e-4, 30000)],
)
def test_dept_adept_recipes_train_as_the_authors_train_py(config, scale, group_lr, steps):
    cfg = load_cfg(os.path.join(CONFIGS, config))
    o = cfg.OPTIM
    assert (o.NAME, o.LR, o.GROUP_LR.offsets, o.WEIGHT_DECAY) == ("adamw", 0.3, group_lr, 0.0)
    assert (o.ADAM_BETA1, o.ADAM_BETA2, o.ADAM_EPS) == (0.9, 0.999, 1e-6)  # transformers' AdamW defaults
    assert (o.LR_SCHEDULER, o.SCHEDULER_UNIT, o.WARMUP_ITERS, o.WARMUP_MIN_LR, o.MAX_ITER) == (
        "linear",
        "iter",
        500,
        0.0,
        steps,
    )
    assert cfg.TRAIN.GRAD_CLIP_NORM == 1.0 and cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32
    assert cfg.MODEL.TEXT.MAX_LENGTH == 256
    node = cfg.PROMPT.DEPT if config == "t5_dept.yaml" else cfg.PROMPT.ADEPT
    assert (node.INIT, node.INIT_TEXT, node.TOKENS) == ("text_repeat", PHRASE, "backbone")
    if scale is not None:
        assert dept_scale(node.SCALING, node.ALPHA, node.RANK) == pytest.approx(scale)
    else:
        assert (node.DROPOUT, node.DOWN_INIT, node.NUM_TOKENS, node.BOTTLENECK) == (0.1, "adept", 60, 19)
