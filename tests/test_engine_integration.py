"""tools/train_net.py on the real pieces: configs/maple_adap_pos.yaml on a tiny random open_clip
CLIP and a generated OxfordPets in CoOp's layout, base-to-novel; --eval-only reproduces it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from test_engine_train import _train_net  # noqa: E402

CLASSES = ["abyssinian", "beagle", "boxer", "chihuahua"]
TINY = [
    "MODEL.BACKBONE.ARCH",
    os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "PROMPT.MAPLE.PROMPT_DEPTH",
    "2",
    "INPUT.SIZE",
    "(32, 32)",
    "DATASET.NUM_SHOTS",
    "2",
    "OPTIM.MAX_EPOCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "TRAIN.PROGRESS_BAR",
    "False",
    "TRAIN.TENSORBOARD",
    "False",
]


def make_oxford_pets(root):
    """CoOp's layout: oxford_pets/images/*.jpg + split_zhou_OxfordPets.json."""
    folder = os.path.join(root, "oxford_pets")
    os.makedirs(os.path.join(folder, "images"))
    rng = np.random.default_rng(0)
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(CLASSES):
        for part, count in (("train", 4), ("val", 2), ("test", 3)):
            for i in range(count):
                filename = f"{name}_{part}{i}.jpg"
                pixels = rng.random((40, 40, 3)) * 60 + np.array([label * 60, 255 - label * 60, 128])
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, "images", filename))
                split[part].append([filename, label, name])
    with open(os.path.join(folder, "split_zhou_OxfordPets.json"), "w") as f:
        json.dump(split, f)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("maple_adap_pos")
    make_oxford_pets(str(tmp / "data"))
    out = tmp / "run"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            os.path.join(REPO, "configs", "maple_adap_pos.yaml"),
            "--root",
            str(tmp / "data"),
            "--seed",
            "1",
            "--output-dir",
            str(out),
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.json") as f:
        return tmp, json.load(f), proc.stdout


def test_maple_adap_pos_base_to_novel_writes_base_new_hm(trained):
    tmp, metrics, stdout = trained
    assert metrics["dataset"] == "oxford_pets" and metrics["subsample_classes"] == "base"
    assert metrics["recipe"] == "maple_adap_pos"
    assert metrics["base"]["num_samples"] == 6 and metrics["new"]["num_samples"] == 6
    assert set(metrics["base"]["per_class_accuracy"]) == {"abyssinian", "beagle"}
    assert set(metrics["new"]["per_class_accuracy"]) == {"boxer", "chihuahua"}
    b, n = metrics["base"]["accuracy"], metrics["new"]["accuracy"]
    assert metrics["hm"] == pytest.approx(2 * b * n / (b + n) if b + n else 0.0)
    assert f"HM {metrics['hm']:.2f}" in stdout
    assert metrics["step"] == 2 * 1  # 2 epochs x (2 base classes x 2 shots / batch 4)
    with open(tmp / "run" / "prompt_records.json") as f:
        records = json.load(f)
    assert any(key.endswith("dpos") for key in records)  # the learned text position, for plot_positions
    saved = (tmp / "run" / "config.yaml").read_text()
    assert "maple" in saved and "adap_pos" in saved


def test_eval_only_model_dir_reproduces_the_numbers(trained):
    tmp, metrics, _ = trained
    argv = [
        "--config-file",
        os.path.join(REPO, "configs", "maple_adap_pos.yaml"),
        "--root",
        str(tmp / "data"),
        "--seed",
        "1",
        "--output-dir",
        str(tmp / "eval"),
        "--eval-only",
        "--model-dir",
        str(tmp / "run"),
        *TINY,
    ]
    assert _train_net().main(argv) == 0
    with open(tmp / "eval" / "metrics.json") as f:
        evaluated = json.load(f)
    for key in ("base", "new", "hm", "num_params"):
        assert evaluated[key] == metrics[key]


class _Killed(Exception):
    pass


def test_maple_adap_pos_resumed_mid_epoch_ends_bit_identical(trained, tmp_path):
    """The real recipe's state (dynamic temperature buffers, MaPLe prompts, SGD momentum, RNG)
    survives a stop right after a mid-epoch checkpoint."""
    import torch
    from safetensors.torch import load_file

    from mmprompt.config import load_cfg
    from mmprompt.engine.trainer import Trainer

    data = trained[0] / "data"
    opts = TINY + [
        "DATASET.ROOT",
        str(data),
        "OPTIM.MAX_EPOCH",
        "3",
        "DATALOADER.TRAIN_X.BATCH_SIZE",
        "2",
        "TRAIN.CHECKPOINT_PERIOD",
        "1",
        "TRAIN.VERBOSE",
        "False",
        "PROMPT.DYNAMIC.GAMMA",
        "0.3",
    ]

    def cfg_for(out):
        cfg = load_cfg(os.path.join(REPO, "configs", "maple_adap_pos.yaml"), opts=opts + ["OUTPUT_DIR", str(out)])
        cfg.freeze()
        return cfg

    class StoppedAfterStep3(Trainer):  # a crash right after the checkpoint of step 3 (epoch 2, batch 1)
        def save_checkpoint(self, tag, **kw):
            super().save_checkpoint(tag, **kw)
            if self.step == 3:
                raise _Killed

    uninterrupted = Trainer(cfg_for(tmp_path / "a")).train()
    with pytest.raises(_Killed):
        StoppedAfterStep3(cfg_for(tmp_path / "b")).train()
    with open(tmp_path / "b" / "checkpoints" / "last_checkpoint.json") as f:
        assert json.load(f)["model"] == "model-step3.safetensors"
    resumed = Trainer(cfg_for(tmp_path / "b")).train(resume=True)
    for key in ("base", "new", "hm", "step"):
        assert resumed[key] == uninterrupted[key]
    wa = load_file(tmp_path / "a" / "checkpoints" / "model-final.safetensors")
    wb = load_file(tmp_path / "b" / "checkpoints" / "model-final.safetensors")
    assert any("temperature" in k for k in wa)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
