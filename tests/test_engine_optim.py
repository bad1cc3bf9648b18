"""Optimizer parameter groups and warm-up schedules."""

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _engine_doubles  # noqa: E402

from mmprompt.config import get_cfg  # noqa: E402
from mmprompt.engine.optim import build_lr_scheduler, build_optimizer  # noqa: E402
from mmprompt.errors import ConfigError  # noqa: E402


def make(opts=()):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.NAME", "engine_test_model", *opts])
    model = _engine_doubles.TinyModel(cfg, ["a", "b", "c"])
    return cfg, model


def groups_by_param(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in optimizer.param_groups for p in g["params"]}


def test_declared_no_weight_decay_and_group_lr():
    cfg, model = make(["OPTIM.WEIGHT_DECAY", "0.01", "OPTIM.LR", "0.1", "OPTIM.GROUP_LR.offsets", "0.5"])
    opt = build_optimizer(model, cfg)
    g = groups_by_param(opt, model)
    assert set(g) == {"prompts.methods.0.E", "prompts.methods.0.offset"}  # frozen backbone left out
    assert g["prompts.methods.0.E"]["weight_decay"] == 0.0 and g["prompts.methods.0.E"]["lr"] == 0.1
    assert g["prompts.methods.0.offset"]["weight_decay"] == 0.01 and g["prompts.methods.0.offset"]["lr"] == 0.5
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


def test_group_lr_by_name_prefix_and_unknown_group():
    cfg, model = make(["OPTIM.GROUP_LR.prompts.methods.0.E", "0.3"])
    g = groups_by_param(build_optimizer(model, cfg), model)
    assert g["prompts.methods.0.E"]["lr"] == 0.3 and g["prompts.methods.0.offset"]["lr"] == cfg.OPTIM.LR
    cfg, model = make(["OPTIM.GROUP_LR.head", "0.3"])
    with pytest.raises(ConfigError, match=r"OPTIM.GROUP_LR.head matches no trainable parameter.*offsets"):
        build_optimizer(model, cfg)


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_adamw_and_adafactor_take_the_groups(name):
    cfg, model = make(["OPTIM.NAME", name, "OPTIM.LR", "0.3", "OPTIM.GROUP_LR.offsets", "0.01"])
    opt = build_optimizer(model, cfg)
    g = groups_by_param(opt, model)
    assert g["prompts.methods.0.E"]["weight_decay"] == 0.0 and g["prompts.methods.0.offset"]["lr"] == 0.01
    if name == "adafactor":
        assert g["prompts.methods.0.E"]["lr"] == 0.3
        assert not opt.defaults["relative_step"] and not opt.defaults["scale_parameter"]
    before = model.prompts.methods[0].E.detach().clone()
    model({"text": ["1 2 3 4"], "label": torch.tensor([0])})["loss"].backward()
    opt.step()
    assert not torch.equal(before, model.prompts.methods[0].E)


def test_unknown_optimizer_is_a_config_error():
    cfg, model = make(["OPTIM.NAME", "lamb"])
    with pytest.raises(ConfigError, match="sgd, adamw or adafactor"):
        build_optimizer(model, cfg)


def lrs(cfg, steps_per_epoch, total_steps):
    _, model = make()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.OPTIM.LR)
    sched = build_lr_scheduler(opt, cfg, steps_per_epoch, total_steps)
    out = []
    for _ in range(total_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_epoch_schedule_is_dassls_constant_warmup_then_cosine():
    cfg, _ = make(
        [
            "OPTIM.LR",
            "0.0035",
            "OPTIM.MAX_EPOCH",
            "5",
            "OPTIM.WARMUP_EPOCH",
            "1",
            "OPTIM.WARMUP_TYPE",
            "constant",
            "OPTIM.WARMUP_CONS_LR",
            "1e-5",
        ]
    )
    got = lrs(cfg, steps_per_epoch=2, total_steps=10)
    expected_epoch = [1e-5] + [0.0035 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 5)) for e in range(1, 5)]
    assert got == pytest.approx([lr for lr in expected_epoch for _ in range(2)])


def test_iter_schedules_linear_warmup_then_linear_or_constant():
    cfg, _ = make(
        [
            "OPTIM.LR",
            "1.0",
            "OPTIM.SCHEDULER_UNIT",
            "iter",
            "OPTIM.WARMUP_ITERS",
            "2",
            "OPTIM.WARMUP_MIN_LR",
            "0.1",
            "OPTIM.LR_SCHEDULER",
            "linear",
        ]
    )
    assert lrs(cfg, steps_per_epoch=3, total_steps=6) == pytest.approx([0.1, 0.5, 1.0, 0.75, 0.5, 0.25])
    cfg.merge_from_list(["OPTIM.LR_SCHEDULER", "constant"])
    assert lrs(cfg, steps_per_epoch=3, total_steps=6) == pytest.approx([0.1, 0.5, 1, 1, 1, 1])
    cfg.merge_from_list(["OPTIM.LR_SCHEDULER", "step"])
    with pytest.raises(ConfigError, match="cosine, linear or constant"):
        lrs(cfg, 3, 6)
