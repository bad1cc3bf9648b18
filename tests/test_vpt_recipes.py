"""VPT as KMnP/vpt computes it, pinned without their code: the prompt init bound from the model's
real patch size, the prompt-dropout default, their classifier head (init, no decay on its bias),
their epoch schedule, and the five FGVC recipes' hyperparameters (configs/vpt_*_<task>.yaml)."""

import math
import os

import pytest
import torch

from mmprompt.backbones.timm_vit import create_timm_vit
from mmprompt.build import build_model, build_prompts
from mmprompt.config import get_cfg, load_cfg
from mmprompt.engine.optim import WarmupScheduler, build_param_groups
from mmprompt.errors import ConfigError
from mmprompt.models.image_classifier import init_head_
from mmprompt.prompts.sources import xavier_bound

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
TINY_VIT = [
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "MODEL.BACKBONE.KWARGS",
    "{'embed_dim': 32, 'depth': 2, 'num_heads': 2, 'img_size': 32, 'patch_size': 8}",
]
# task: (their configs/prompt/<task>.yaml BASE_LR, WEIGHT_DECAY)
FGVC = {
    "cub": (0.1, 0.01),
    "nabirds": (0.1, 0.01),
    "flowers": (0.001, 0.0001),
    "dogs": (0.001, 0.0001),
    "cars": (0.001, 0.0001),
}


def vpt_cfg(**vpt):
    cfg = get_cfg()
    cfg.PROMPT.METHODS = ["vpt"]
    for k, v in vpt.items():
        cfg.PROMPT.VPT[k] = v
    return cfg


@pytest.mark.parametrize("patch,img", [(14, 28), (16, 32), ((8, 16), 32)])
def test_xavier_bound_comes_from_the_timm_models_real_patch_size(patch, img):
    backbone = create_timm_vit(
        "vit_base_patch16_224", "", dict(embed_dim=32, depth=1, num_heads=2, img_size=img, patch_size=patch)
    )
    tower = backbone.tower("vision")
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    assert tower.patch_size == (ph, pw)
    torch.manual_seed(0)
    stack = build_prompts(vpt_cfg(NUM_TOKENS=64), backbone)
    tokens = stack.methods[0].sources[0].tokens
    bound = math.sqrt(6.0 / (3 * ph * pw + 32))  # VPT: sqrt(6 / (3 * prod(patch) + prompt_dim))
    assert tokens.abs().max() <= bound and tokens.abs().max() > 0.98 * bound  # 2048 uniform draws
    assert tokens.mean().abs() < 0.1 * bound


def test_xavier_bound_forms():
    assert xavier_bound(768, 16) == xavier_bound(768, (16, 16)) == math.sqrt(6 / (3 * 256 + 768))
    assert xavier_bound(768, 14) == pytest.approx(math.sqrt(6 / (3 * 196 + 768)))
    assert xavier_bound(64, None) == xavier_bound(64, 16)  # towers without patches: VPT's ViT-B/16


def test_prompt_dropout_default_is_the_authors_zero():
    assert get_cfg().PROMPT.VPT.DROPOUT == 0.0


def test_vpt_head_init_is_kaiming_fan_out_with_a_one_percent_prior():
    torch.manual_seed(0)
    head = init_head_(torch.nn.Linear(384, 500), "vpt")
    assert torch.equal(head.bias, torch.full((500,), -math.log(99.0)))
    assert head.weight.std().item() == pytest.approx(math.sqrt(2.0 / 500), rel=0.02)  # fan_out = classes
    assert head.weight.mean().abs() < 0.003
    plain = init_head_(torch.nn.Linear(384, 500), "default")
    assert plain.bias.abs().max() <= 1 / math.sqrt(384)  # nn.Linear's own
    with pytest.raises(ConfigError, match="MODEL.HEAD.INIT 'xavier'"):
        init_head_(torch.nn.Linear(2, 2), "xavier")


def test_vpt_recipe_head_bias_gets_no_weight_decay_and_prompts_do():
    cfg = load_cfg(os.path.join(CONFIGS, "vpt_deep_cub.yaml"), opts=TINY_VIT)
    model = build_model(cfg, [str(i) for i in range(5)])
    assert torch.allclose(model.head.bias, torch.full((5,), -math.log(99.0)))
    decay = {n: g["weight_decay"] for g in build_param_groups(model, cfg) for n in g["param_names"]}
    assert decay["head.bias"] == 0.0
    assert decay["head.weight"] == 0.01 and decay["prompts.methods.0.sources.0.tokens"] == 0.01
    cfg.merge_from_list(["MODEL.HEAD.BIAS_WEIGHT_DECAY", "True"])
    decay = {
        n: g["weight_decay"] for g in build_param_groups(build_model(cfg, ["a", "b"]), cfg) for n in g["param_names"]
    }
    assert decay["head.bias"] == 0.01


def test_after_warmup_epoch_schedule_is_vpts_warmup_cosine():
    """KMnP/vpt's WarmupCosineSchedule(warmup 10, total 100) stepped once per epoch: lr factor
    e / 10 for e < 10 (0 in the first epoch), then 0.5 (1 + cos(pi (e - 10) / 90))."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    steps_per_epoch = 3
    sched = WarmupScheduler(
        opt,
        schedule="cosine",
        unit="epoch",
        total=100,
        warmup=10,
        warmup_type="linear",
        warmup_cons_lr=0.0,
        warmup_min_lr=0.0,
        steps_per_unit=steps_per_epoch,
        epoch_decay_span="after_warmup",
    )
    for epoch in range(100):
        theirs = epoch / 10 if epoch < 10 else 0.5 * (1 + math.cos(math.pi * (epoch - 10) / 90))
        for _ in range(steps_per_epoch):
            assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * theirs, abs=1e-12), epoch
            opt.step()
            sched.step()
    with pytest.raises(ConfigError, match="EPOCH_DECAY_SPAN"):
        WarmupScheduler(
            opt,
            schedule="cosine",
            unit="epoch",
            total=10,
            warmup=1,
            warmup_type="linear",
            warmup_cons_lr=0.0,
            warmup_min_lr=0.0,
            steps_per_unit=1,
            epoch_decay_span="half",
        )


@pytest.mark.parametrize("task", sorted(FGVC))
def test_fgvc_recipes_carry_the_authors_hyperparameters(task):
    lr, wd = FGVC[task]
    for kind, deep, dropout in (("shallow", False, 0.0), ("deep", True, 0.1)):
        cfg = load_cfg(os.path.join(CONFIGS, f"vpt_{kind}_{task}.yaml"))
        assert cfg.DATASET.NAME == task and cfg.PROMPT.METHODS == ["vpt"]
        v = cfg.PROMPT.VPT
        assert (v.DEEP, v.DEPTH, v.NUM_TOKENS, v.DROPOUT, v.INIT) == (deep, 0, 10, dropout, "xavier")
        o = cfg.OPTIM
        assert (o.NAME, o.MOMENTUM, o.LR, o.WEIGHT_DECAY) == ("sgd", 0.9, lr, wd)
        assert (o.MAX_EPOCH, o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_MIN_LR) == (100, 10, "linear", 0.0)
        assert (o.LR_SCHEDULER, o.SCHEDULER_UNIT, o.EPOCH_DECAY_SPAN) == ("cosine", "epoch", "after_warmup")
        assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 128
        assert (cfg.MODEL.HEAD.INIT, cfg.MODEL.HEAD.BIAS_WEIGHT_DECAY) == ("vpt", False)
        assert (cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.ARCH, cfg.MODEL.BACKBONE.PRETRAINED) == (
            "timm_vit",
            "vit_base_patch16_224",
            "orig_in21k",
        )
