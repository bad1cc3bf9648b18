"""Bad inputs to the command-line tools exit non-zero with one clear line, never a traceback."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VIT = os.path.join(ROOT, "configs", "_base_", "tiny_vit.yaml")


def model_info(*args, timeout=120):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "model_info.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    return proc


def assert_clean_failure(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_unknown_key(tmp_path):
    assert_clean_failure(
        model_info("--config-file", TINY_VIT, "MODEL.BACKBONE.ARC", "x"),
        "Unknown config key MODEL.BACKBONE.ARC",
        "MODEL.BACKBONE.ARCH",
    )


def test_wrong_type():
    assert_clean_failure(
        model_info("--config-file", TINY_VIT, "MODEL.BACKBONE.FREEZE", "sometimes"),
        "MODEL.BACKBONE.FREEZE",
        "expects bool",
    )


def test_base_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    assert_clean_failure(model_info("--config-file", str(tmp_path / "a.yaml")), "cycle")


def test_missing_config_file():
    assert_clean_failure(model_info("--config-file", "configs/nope.yaml"), "not found")


def test_unknown_architecture():
    assert_clean_failure(
        model_info("--config-file", TINY_VIT, "MODEL.BACKBONE.ARCH", "vit_tiny_patch16_2244"), "vit_tiny_patch16_224"
    )


def test_unknown_prompt_method():
    assert_clean_failure(model_info("--config-file", TINY_VIT, "PROMPT.METHODS", "['vtp']"), "'vpt'")


@pytest.mark.parametrize(
    "backbone,arch,pretrained",
    [
        ("timm_vit", "vit_base_patch16_224", "True"),
        ("open_clip", "ViT-B-16", "openai"),
    ],
)
def test_offline_pretrained_tag_fails_fast_and_says_what_to_do(backbone, arch, pretrained):
    proc = model_info(
        "--config-file",
        TINY_VIT,
        "MODEL.BACKBONE.NAME",
        backbone,
        "MODEL.BACKBONE.ARCH",
        arch,
        "MODEL.BACKBONE.PRETRAINED",
        pretrained,
        "MODEL.NAME",
        "clip_prompt_classifier" if backbone == "open_clip" else "image_classifier",
        "MODEL.BACKBONE.KWARGS",
        "{}",
        timeout=60,
    )
    assert_clean_failure(proc, "MODEL.BACKBONE.PRETRAINED")
