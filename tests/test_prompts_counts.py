"""Trainable parameter counts at full size equal the papers'.

The fast tests size the prompt modules on towers that only have the full-size widths and depths
(no weights, no forward); the slow ones build the real full-size backbones from the configs, one
through ``tools/model_info.py``.
"""

import json
import os
import runpy
import sys

import pytest
from torch import nn

from mmprompt.backbones.base import TokenBackbone, TokenTower
from mmprompt.build import build_prompts
from mmprompt.config import load_cfg

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIGS = os.path.join(ROOT, "configs")


class ShapeTower(TokenTower):
    """A tower that only knows its width and depth: enough to size prompt parameters."""

    def __init__(self, name, width, layers):
        super().__init__()
        self.name, self._width, self._layers = name, width, layers

    @property
    def width(self):
        return self._width

    @property
    def num_layers(self):
        return self._layers


class ShapeBackbone(TokenBackbone):
    def __init__(self, **towers):
        super().__init__()
        self.towers = nn.ModuleDict({n: ShapeTower(n, w, l) for n, (w, l) in towers.items()})


def trainable(stack):
    return sum(p.numel() for p in stack.parameters() if p.requires_grad)


def method_cfg(name, *opts):
    return load_cfg(os.path.join(CONFIGS, name), opts=list(opts))


# CLIP ViT-B/16: text width 512, vision width 768, 12 layers each; T5-base encoder: 768 x 12
CLIP_B16 = dict(text=(512, 12), vision=(768, 12))
T5_BASE = dict(encoder=(768, 12))


def test_maple_vit_b16_nctx2_depth9_is_3_55M():
    # the phrase init needs a tokenizer; it does not change the count
    stack = build_prompts(method_cfg("maple.yaml", "PROMPT.MAPLE.CTX_INIT", ""), ShapeBackbone(**CLIP_B16))
    # 9 text prompts of 2x512, 9 couplings Linear(512 -> 768) with bias
    assert trainable(stack) == 9 * 2 * 512 + 9 * (512 * 768 + 768) == 3_555_072


@pytest.mark.parametrize(
    "config, opts, expected",
    [
        ("t5_dept.yaml", ["PROMPT.DEPT.INIT", "normal"], 40 * 768 + 256 * 45 + 45 * 768),  # 76,800
        ("t5_adept.yaml", ["PROMPT.ADEPT.INIT", "normal"], 60 * 768 + 768 * 19 + 19 + 19 * 768 + 768),  # 76,051
        ("t5_prompt_tuning.yaml", ["PROMPT.PROMPT_TUNING.INIT", "normal"], 100 * 768),  # 76,800
    ],
)
def test_t5_base_budget_of_dept_adept_and_prompt_tuning(config, opts, expected):
    stack = build_prompts(method_cfg(config, *opts), ShapeBackbone(**T5_BASE))
    assert trainable(stack) == expected
    assert expected in (76_800, 76_051)


def test_maple_repository_baselines_counts():
    # the authors' recipes: VPT 8 vision tokens, language-only 4 text tokens, IVLP 2 + 2; all 12 layers
    counts = {
        name: trainable(
            build_prompts(method_cfg(f"{name}.yaml", "PROMPT.MAPLE.CTX_INIT", ""), ShapeBackbone(**CLIP_B16))
        )
        for name in ("vpt_clip", "ivlp_language_only", "ivlp")
    }
    assert counts == {"vpt_clip": 12 * 8 * 768, "ivlp_language_only": 12 * 4 * 512, "ivlp": 12 * 2 * (768 + 512)}


def model_info(capsys, *args):
    argv = sys.argv
    sys.argv = ["model_info.py", *args]
    try:
        runpy.run_path(os.path.join(ROOT, "tools", "model_info.py"), run_name="__main__")
    except SystemExit as e:
        assert not e.code, capsys.readouterr()
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


@pytest.mark.slow
def test_maple_count_on_full_open_clip_vit_b16_through_model_info(capsys):
    info = model_info(capsys, "--config-file", os.path.join(CONFIGS, "maple.yaml"), "MODEL.BACKBONE.PRETRAINED", "")
    assert info["backbone"] == {"vision": {"width": 768, "layers": 12}, "text": {"width": 512, "layers": 12}}
    assert info["trainable"] == 3_555_072


@pytest.mark.slow
def test_dept_count_on_full_t5_base_through_model_info(capsys):
    # ADePT's and prompt tuning's counts on the same widths are checked above without the weights.
    # The recipe's prompt init reads its phrase through a tokenizer; offline, ByT5's (no files) stands in.
    info = model_info(
        capsys,
        "--config-file",
        os.path.join(CONFIGS, "t5_dept.yaml"),
        "MODEL.BACKBONE.PRETRAINED",
        "",
        "MODEL.TEXT.TOKENIZER",
        "byt5",
    )
    assert info["backbone"] == {"encoder": {"width": 768, "layers": 12}}
    assert info["trainable"] == 76_800
