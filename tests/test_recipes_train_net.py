"""The vision recipes end to end through tools/train_net.py on tiny random backbones: VPT-deep over
a CUB prepared from a miniature official download (VPT's layout), CoOp over a generated
OxfordPets (CoOp's layout). MaPLe + adaptive position is in test_engine_integration.py."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from test_data_fgvc import make_cub, make_flowers, prepare  # noqa: E402
from test_engine_integration import make_oxford_pets  # noqa: E402

COMMON = [
    "DATASET.NUM_SHOTS",
    "2",
    "OPTIM.MAX_EPOCH",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE",
    "4",
    "TRAIN.PROGRESS_BAR",
    "False",
    "TRAIN.TENSORBOARD",
    "False",
    "INPUT.SIZE",
    "(32, 32)",
]
TINY_VIT = [
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "MODEL.BACKBONE.KWARGS",
    "{'embed_dim': 64, 'depth': 2, 'num_heads': 2, 'img_size': 32, 'patch_size': 8}",
]
TINY_CLIP = [
    "MODEL.BACKBONE.ARCH",
    os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
    "MODEL.BACKBONE.PRETRAINED",
    "",
]


def train_net(config, root, out, *opts):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            os.path.join(REPO, "configs", config),
            "--root",
            str(root),
            "--seed",
            "1",
            "--output-dir",
            str(out),
            *COMMON,
            *opts,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def test_vpt_deep_cub_recipe_trains_and_tests(tmp_path):
    make_cub(str(tmp_path / "data"))
    prepare(tmp_path / "data", "cub")
    metrics = train_net("vpt_deep_cub.yaml", tmp_path / "data", tmp_path / "run", *TINY_VIT)
    assert metrics["dataset"] == "cub" and metrics["methods"] == ["vpt"]
    assert metrics["test"]["num_samples"] > 0 and 0 <= metrics["test"]["accuracy"] <= 100
    assert metrics["num_params"]["trainable"] == 2 * 10 * 64 + 64 * 3 + 3  # deep prompts + head


def test_vpt_shallow_flowers_recipe_trains_with_vpts_head_and_schedule(tmp_path):
    make_flowers(str(tmp_path / "data"))
    prepare(tmp_path / "data", "flowers")
    # VPT's warm-up starts at lr 0 for the whole first epoch; 0 warm-up epochs here so the step moves
    metrics = train_net(
        "vpt_shallow_flowers.yaml", tmp_path / "data", tmp_path / "run", *TINY_VIT, "OPTIM.WARMUP_EPOCH", "0"
    )
    assert metrics["dataset"] == "flowers" and metrics["methods"] == ["vpt"]
    assert metrics["test"]["num_samples"] > 0 and 0 <= metrics["test"]["accuracy"] <= 100
    assert metrics["num_params"]["trainable"] == 10 * 64 + 64 * 3 + 3  # shallow prompts + head


@pytest.mark.parametrize("config", ["coop.yaml", "vpt_deep_adap_pos_cub.yaml"])
def test_clip_and_dynamic_vision_recipes_train(tmp_path, config):
    if config == "coop.yaml":
        make_oxford_pets(str(tmp_path / "data"))
        metrics = train_net(config, tmp_path / "data", tmp_path / "run", *TINY_CLIP, "PROMPT.COOP.N_CTX", "4")
        assert metrics["methods"] == ["coop"] and metrics["dataset"] == "oxford_pets"
    else:
        make_cub(str(tmp_path / "data"))
        prepare(tmp_path / "data", "cub")
        metrics = train_net(config, tmp_path / "data", tmp_path / "run", *TINY_VIT)
        assert os.path.isfile(tmp_path / "run" / "prompt_records.json")
    assert metrics["test"]["num_samples"] > 0
