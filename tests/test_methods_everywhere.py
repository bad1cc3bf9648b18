"""Every backbone-agnostic method trains on every tower of every backbone.

This is the README's methods x backbones table, checked: for each (tower, method) the task
model builds from a config, one training step gives gradients to the method's parameters and to
nothing in the backbone, the backbone's weights stay bit-identical, and the prompt tokens are
really in the sequence (the output differs from the prompt-free model's).
"""

import os

import pytest
import torch

from mmprompt.build import build_model
from mmprompt.config import load_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)  # tiny_clip.yaml names its model JSON relative to the repo root

# (label, base config, tower, batch)
TOWERS = [
    ("timm_vit", "tiny_vit.yaml", "vision", lambda: {"image": torch.randn(2, 3, 32, 32)}),
    ("clip_image", "tiny_clip.yaml", "vision", lambda: {"image": torch.randn(2, 3, 32, 32)}),
    ("clip_text", "tiny_clip.yaml", "text", lambda: {"image": torch.randn(2, 3, 32, 32)}),
    ("t5", "tiny_t5.yaml", "encoder", lambda: {"text": ["a short one", "a longer input text here"]}),
    ("bert", "tiny_bert.yaml", "encoder", lambda: {"text": ["a short one", "a longer input text here"]}),
]

# (label, PROMPT.METHODS, overrides with {T} for the tower)
METHODS = [
    ("vpt_shallow", ["vpt"], ["PROMPT.VPT.TOWER", "{T}", "PROMPT.VPT.NUM_TOKENS", "3", "PROMPT.VPT.INIT", "normal"]),
    (
        "vpt_deep",
        ["vpt"],
        [
            "PROMPT.VPT.TOWER",
            "{T}",
            "PROMPT.VPT.NUM_TOKENS",
            "3",
            "PROMPT.VPT.DEEP",
            "True",
            "PROMPT.VPT.INIT",
            "normal",
        ],
    ),
    (
        "prompt_tuning",
        ["prompt_tuning"],
        [
            "PROMPT.PROMPT_TUNING.TOWER",
            "{T}",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "3",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
        ],
    ),
    (
        "superpos",
        ["prompt_tuning"],
        [
            "PROMPT.PROMPT_TUNING.TOWER",
            "{T}",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "3",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.SOURCE",
            "superpos",
            "PROMPT.SUPERPOS.M",
            "8",
        ],
    ),
    (
        "residual",
        ["prompt_tuning"],
        [
            "PROMPT.PROMPT_TUNING.TOWER",
            "{T}",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "3",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.SOURCE",
            "residual",
            "PROMPT.RESIDUAL.HIDDEN",
            "8",
        ],
    ),
    ("deep_prompt", ["deep_prompt"], ["PROMPT.DEEP_PROMPT.TOWER", "{T}", "PROMPT.DEEP_PROMPT.NUM_TOKENS", "3"]),
    (
        "dept",
        ["dept"],
        [
            "PROMPT.DEPT.TOWER",
            "{T}",
            "PROMPT.DEPT.NUM_TOKENS",
            "3",
            "PROMPT.DEPT.INIT",
            "normal",
            "PROMPT.DEPT.RANK",
            "2",
            "PROMPT.DEPT.MAX_LEN",
            "80",
            "PROMPT.DEPT.LAYERS",
            "[0, 1]",
        ],
    ),
    (
        "adept",
        ["adept"],
        [
            "PROMPT.ADEPT.TOWER",
            "{T}",
            "PROMPT.ADEPT.NUM_TOKENS",
            "3",
            "PROMPT.ADEPT.INIT",
            "normal",
            "PROMPT.ADEPT.BOTTLENECK",
            "2",
            "PROMPT.ADEPT.LAYERS",
            "[0, 1]",
        ],
    ),
    (
        "adap_pos",
        ["prompt_tuning"],
        [
            "PROMPT.PROMPT_TUNING.TOWER",
            "{T}",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "3",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.POSITION",
            "adap_pos",
        ],
    ),
    (
        "adap_ins_pos",
        ["prompt_tuning"],
        [
            "PROMPT.PROMPT_TUNING.TOWER",
            "{T}",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "3",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.POSITION",
            "adap_ins_pos",
        ],
    ),
    (
        "adap_len",
        ["prompt_tuning"],
        [
            "PROMPT.PROMPT_TUNING.TOWER",
            "{T}",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "3",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.POSITION",
            "adap_len",
        ],
    ),
    (
        "pool_adap_pos",
        ["prompt_tuning"],
        [
            "PROMPT.PROMPT_TUNING.TOWER",
            "{T}",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "3",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.SOURCE",
            "pool",
            "PROMPT.PROMPT_TUNING.POSITION",
            "adap_pos",
        ],
    ),
]

CLASSES = ["alpha", "beta", "gamma"]


def build(base, methods, opts):
    cfg = load_cfg(os.path.join(ROOT, "configs", "_base_", base), opts=["PROMPT.METHODS", repr(methods), *opts])
    torch.manual_seed(0)
    return build_model(cfg, CLASSES)


@pytest.mark.parametrize("method,methods,opts", METHODS, ids=[m[0] for m in METHODS])
@pytest.mark.parametrize("label,base,tower,batch", TOWERS, ids=[t[0] for t in TOWERS])
def test_method_trains_on_tower(label, base, tower, batch, method, methods, opts):
    check_trains(label, base, tower, batch, method, methods, opts)


# P-tuning v2's key/value prefixes need a tower whose attention takes extra keys/values: the text
# encoders (tests/test_prompts_prefix.py checks that the others refuse it)
KV_PREFIX = ("ptuning_v2", ["ptuning_v2"], ["PROMPT.PTUNING_V2.TOWER", "{T}", "PROMPT.PTUNING_V2.NUM_TOKENS", "3"])


@pytest.mark.parametrize("label,base,tower,batch", [t for t in TOWERS if t[0] in ("t5", "bert")], ids=["t5", "bert"])
def test_key_value_prefixes_train_on_the_text_encoders(label, base, tower, batch):
    check_trains(label, base, tower, batch, *KV_PREFIX)


def check_trains(label, base, tower, batch, method, methods, opts):
    model = build(base, methods, [o.replace("{T}", tower) for o in opts])
    plain = build(base, [], [])
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()}, strict=False)
    data = batch()
    data["label"] = torch.tensor([0, 2])
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = [p for p in model.prompts.parameters() if p.requires_grad]
    assert trainable, f"{method} on {label} has no trainable prompt parameters"

    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(data)
    out["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    optimizer.step()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, frozen[k]), k

    model.eval()
    plain.eval()
    with torch.no_grad():
        assert not torch.allclose(model(data)["logits"], plain(data)["logits"])
