"""tools/train_net.py on bad input: a clear message, a non-zero exit, no traceback."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from test_engine_train import _train_net, run_inprocess, write_config  # noqa: E402

from mmprompt.utils.cli import run_cli  # noqa: E402


def cli(argv, capsys):
    """Run train_net's main through run_cli, as the script does; (exit code, stderr)."""
    main = _train_net().main
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err


def test_missing_config_file_from_the_real_script():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--root", "/tmp"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--config-file is required" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_dataset(tmp_path, capsys):
    code, err = cli(
        ["--config-file", write_config(tmp_path), "--root", str(tmp_path), "DATASET.NAME", "oxford_pet"], capsys
    )
    assert code == 2 and "Unknown dataset 'oxford_pet'" in err and "oxford_pets" in err


def test_eval_only_without_weights(tmp_path, capsys):
    code, err = cli(["--config-file", write_config(tmp_path), "--root", str(tmp_path), "--eval-only"], capsys)
    assert code == 2 and "--eval-only needs weights" in err and "--model-dir" in err


def test_eval_only_with_a_run_that_has_no_such_epoch(tmp_path, capsys):
    cfg = write_config(tmp_path)
    run_inprocess(cfg, tmp_path, tmp_path / "run", "OPTIM.MAX_EPOCH", "1")
    code, err = cli(
        [
            "--config-file",
            cfg,
            "--root",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "e"),
            "--eval-only",
            "--model-dir",
            str(tmp_path / "run"),
            "--load-epoch",
            "7",
        ],
        capsys,
    )
    assert code == 2 and "No model-epoch7.safetensors" in err and "model-epoch1.safetensors" in err


def test_checkpoint_from_another_method(tmp_path, capsys):
    cfg = write_config(tmp_path)
    run_inprocess(cfg, tmp_path, tmp_path / "run", "OPTIM.MAX_EPOCH", "1")
    code, err = cli(
        [
            "--config-file",
            cfg,
            "--root",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "e"),
            "--eval-only",
            "--model-dir",
            str(tmp_path / "run"),
            "PROMPT.METHODS",
            "['vpt']",
        ],
        capsys,
    )
    assert code == 2 and "trained with another setup" in err and "methods" in err and "vpt" in err


def test_checkpoint_that_does_not_fit_the_model(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    cfg = write_config(tmp_path)
    run_inprocess(cfg, tmp_path, tmp_path / "run", "OPTIM.MAX_EPOCH", "1")
    bad = tmp_path / "bad.safetensors"
    state = load_file(tmp_path / "run" / "checkpoints" / "model-final.safetensors")
    state["prompts.methods.0.offset"] = state["prompts.methods.0.offset"][:2].clone()
    save_file(state, str(bad))
    code, err = cli(
        [
            "--config-file",
            cfg,
            "--root",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "e"),
            "--eval-only",
            "--model-dir",
            str(bad),
        ],
        capsys,
    )
    assert code == 2 and "shape of prompts.methods.0.offset: checkpoint (2,) vs model (4,)" in err


def test_resume_without_checkpoint_starts_fresh_and_odd_overrides_fail(tmp_path, capsys):
    cfg = write_config(tmp_path)
    metrics = run_inprocess(cfg, tmp_path, tmp_path / "run", "OPTIM.MAX_EPOCH", "1", flags=["--resume"])
    assert metrics["step"] == 6
    assert "no checkpoint" in capsys.readouterr().out
    code, err = cli(["--config-file", cfg, "--root", str(tmp_path), "OPTIM.LR"], capsys)
    assert code == 2 and "KEY VALUE" in err


def test_best_val_without_a_val_split_fails_before_training(tmp_path, capsys):
    code, err = cli(
        [
            "--config-file",
            write_config(tmp_path),
            "--root",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "run"),
            "TEST.FINAL_MODEL",
            "best_val",
            "TRAIN.EVAL_PERIOD",
            "0",
        ],
        capsys,
    )
    assert code == 2 and "need validation" in err
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
