"""The CoCoOp and zero-shot CLIP recipes through tools/train_net.py on a tiny random CLIP and a
generated OxfordPets in CoOp's layout."""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from test_engine_cli import cli  # noqa: E402
from test_engine_integration import CLASSES, make_oxford_pets  # noqa: E402
from test_engine_train import _train_net  # noqa: E402

from mmprompt.config import get_cfg, merge_from_file  # noqa: E402
from mmprompt.registry import DATASETS  # noqa: E402

TINY = [
    "MODEL.BACKBONE.ARCH",
    os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "INPUT.SIZE",
    "(32, 32)",
    "DATALOADER.NUM_WORKERS",
    "0",
    "TRAIN.PROGRESS_BAR",
    "False",
    "TRAIN.TENSORBOARD",
    "False",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cocoop_data")
    make_oxford_pets(str(root))
    return root


def train_net(config, data, out, *opts):
    argv = [
        "--config-file",
        os.path.join(REPO, "configs", config),
        "--root",
        str(data),
        "--seed",
        "1",
        "--output-dir",
        str(out),
        *TINY,
        *opts,
    ]
    assert _train_net().main(argv) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


@pytest.mark.slow  # trains, then builds the model again for the new classes
def test_cocoop_recipe_base_to_novel(data, tmp_path):
    # the recipe's fp16 needs a GPU; on this CPU it runs in fp32
    metrics = train_net(
        "cocoop.yaml",
        data,
        tmp_path / "run",
        "DATASET.NUM_SHOTS",
        "2",
        "OPTIM.MAX_EPOCH",
        "1",
        "TRAIN.PRECISION",
        "fp32",
    )
    assert metrics["methods"] == ["cocoop"] and metrics["subsample_classes"] == "base"
    assert metrics["step"] == 2 * len(CLASSES) // 2  # batch 1: one step per base-class shot
    assert metrics["base"]["num_samples"] > 0 and metrics["new"]["num_samples"] > 0 and "hm" in metrics
    assert metrics["num_params"]["trainable"] == 4 * 64 + (32 * 2 + 2) + (2 * 64 + 64)  # ctx + meta-net


@pytest.mark.parametrize("config, templates", [("zsclip.yaml", 1), ("zsclip_ensemble.yaml", 8)])
def test_zero_shot_recipes_evaluate_without_weights(data, tmp_path, config, templates):
    metrics = train_net(config, data, tmp_path / "run", "--eval-only")
    assert metrics["eval_only"] and metrics["weights"] is None and metrics["methods"] == []
    assert metrics["num_params"]["trainable"] == 0
    assert metrics["test"]["num_samples"] == 3 * len(CLASSES) and 0 <= metrics["test"]["accuracy"] <= 100
    cfg = get_cfg()
    merge_from_file(cfg, os.path.join(REPO, "configs", config))
    assert cfg.MODEL.CLIP.ZERO_SHOT_TEMPLATES == ("coop" if templates == 1 else "coop_ensemble")


def test_zero_shot_training_says_to_evaluate(data, tmp_path, capsys):
    code, err = cli(
        [
            "--config-file",
            os.path.join(REPO, "configs", "zsclip.yaml"),
            "--root",
            str(data),
            "--output-dir",
            str(tmp_path / "run"),
            *TINY,
        ],
        capsys,
    )
    assert code == 2 and "nothing to train" in err and "--eval-only" in err


def test_recipe_values_are_the_authors():
    cfg = get_cfg()
    merge_from_file(cfg, os.path.join(REPO, "configs", "cocoop.yaml"))
    assert (cfg.PROMPT.COCOOP.N_CTX, cfg.PROMPT.COCOOP.CTX_INIT) == (4, "a photo of a")
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WARMUP_EPOCH) == ("sgd", 0.002, 10, 1)
    assert (cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR) == ("constant", 1e-5)
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATASET.NUM_SHOTS, cfg.DATASET.SUBSAMPLE_CLASSES) == (1, 16, "base")
    assert cfg.TRAIN.PRECISION == "fp16"
    cross = get_cfg()
    merge_from_file(cross, os.path.join(REPO, "configs", "cocoop_cross_dataset.yaml"))
    assert (cross.DATASET.NAME, cross.DATASET.SUBSAMPLE_CLASSES, cross.PROMPT.METHODS) == (
        "imagenet",
        "all",
        ["cocoop"],
    )
    assert len(cross.DATASET.TEST_DATASETS) == 14 and all(name in DATASETS for name in cross.DATASET.TEST_DATASETS)
