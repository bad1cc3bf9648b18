"""Trainer end to end on the engine test doubles (tests/_engine_doubles.py)."""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "_engine_run.py")
sys.path.insert(0, HERE)
import _engine_doubles  # noqa: E402,F401

CONFIG = """
MODEL:
  NAME: engine_test_model
  HEAD:
    DROPOUT: {dropout}
DATASET:
  NAME: engine_test_blobs
DATALOADER:
  NUM_WORKERS: 0
  TRAIN_X:
    BATCH_SIZE: 8
  TEST:
    BATCH_SIZE: 16
OPTIM:
  NAME: sgd
  LR: 0.05
  MAX_EPOCH: 3
  WARMUP_EPOCH: 1
  WARMUP_TYPE: constant
TRAIN:
  CHECKPOINT_PERIOD: 2
  PROGRESS_BAR: false
  TENSORBOARD: false
"""


def _train_net():
    spec = importlib.util.spec_from_file_location("train_net", os.path.join(REPO, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(tmp_path, dropout=0.1):
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG.format(dropout=dropout))
    return str(path)


def run_inprocess(cfg_file, root, out, *opts, flags=()):
    argv = ["--config-file", cfg_file, "--root", str(root), "--output-dir", str(out), *flags, *opts]
    assert _train_net().main(argv) == 0
    return load_metrics(out)


def run_subprocess(args, env=None, **kw):
    env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, RUNNER, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def load_metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def load_final(out):
    with safe_open(os.path.join(out, "checkpoints", "model-final.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def comparable(metrics):
    return {k: v for k, v in metrics.items() if k not in ("weights", "eval_only")}


def test_resume_after_sigkill_mid_epoch_equals_uninterrupted(tmp_path):
    cfg = write_config(tmp_path)
    base_opts = ["DATASET.SUBSAMPLE_CLASSES", "base"]
    uninterrupted = run_inprocess(cfg, tmp_path, tmp_path / "a", *base_opts)

    out = tmp_path / "b"
    marker = tmp_path / "blocked"
    args = ["--config-file", cfg, "--root", str(tmp_path), "--output-dir", str(out), *base_opts]
    # 3 steps per epoch, a checkpoint every 2 steps: the run is frozen in the forward of step 6
    # (epoch 2, batch 3), after the mid-epoch checkpoint at step 4 (epoch 2, batch 1).
    proc = run_subprocess(args, env={"ENGINE_TEST_BLOCK_AT_STEP": "5", "ENGINE_TEST_BLOCK_FILE": str(marker)})
    try:
        deadline = time.time() + 90
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[1] if proc.poll() is not None else "the run never reached step 5"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(out / "checkpoints" / "last_checkpoint.json") as f:
        pointer = json.load(f)
    assert (pointer["step"], pointer["epoch"], pointer["iter"]) == (4, 1, 1)
    assert not (out / "metrics.json").exists()

    resumed = run_subprocess(args + ["--resume"])
    try:
        stdout, stderr = resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.wait()
    assert resumed.returncode == 0, stderr
    assert "Resumed from" in stdout
    assert comparable(load_metrics(out)) == comparable(uninterrupted)
    weights_a, _ = load_final(tmp_path / "a")
    weights_b, _ = load_final(out)
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert torch.equal(weights_a[k], weights_b[k]), k


def test_ddp_two_processes_equal_one_process(tmp_path):
    cfg = write_config(tmp_path, dropout=0.0)
    single = run_inprocess(cfg, tmp_path, tmp_path / "one")
    proc = run_subprocess(
        [
            "--config-file",
            cfg,
            "--root",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "two"),
            "--num-gpus",
            "2",
            "USE_CUDA",
            "False",
        ]
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # SIGTERM first: torchrun forwards it to its workers
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, stderr
    double = load_metrics(tmp_path / "two")
    assert double["test"]["num_samples"] == single["test"]["num_samples"] == 40
    assert double["test"]["accuracy"] == pytest.approx(single["test"]["accuracy"])
    w1, _ = load_final(tmp_path / "one")
    w2, _ = load_final(tmp_path / "two")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6)
    assert single["step"] == double["step"] == 18


def test_eval_only_reproduces_base_new_hm_and_cross(tmp_path):
    cfg = write_config(tmp_path)
    opts = ["DATASET.SUBSAMPLE_CLASSES", "base", "DATASET.TEST_DATASETS", "['engine_test_blobs_shifted']"]
    trained = run_inprocess(cfg, tmp_path, tmp_path / "run", *opts)
    assert {"base", "new", "hm", "cross"} <= set(trained)
    assert len(trained["base"]["per_class_accuracy"]) == 4 and len(trained["new"]["per_class_accuracy"]) == 4
    b, n = trained["base"]["accuracy"], trained["new"]["accuracy"]
    assert trained["hm"] == pytest.approx(2 * b * n / (b + n))
    assert trained["cross"]["engine_test_blobs_shifted"]["num_samples"] == 24

    evaluated = run_inprocess(
        cfg, tmp_path, tmp_path / "eval", *opts, flags=["--eval-only", "--model-dir", str(tmp_path / "run")]
    )
    for key in ("base", "new", "hm", "cross"):
        assert evaluated[key] == trained[key]
    epoch1 = run_inprocess(
        cfg,
        tmp_path,
        tmp_path / "eval1",
        *opts,
        flags=["--eval-only", "--model-dir", str(tmp_path / "run"), "--load-epoch", "1"],
    )
    assert epoch1["weights"].endswith("model-epoch1.safetensors")


def test_checkpoint_holds_only_trainable_parameters_buffers_and_config(tmp_path):
    cfg = write_config(tmp_path)
    run_inprocess(cfg, tmp_path, tmp_path / "run")
    weights, meta = load_final(tmp_path / "run")
    assert set(weights) == {"prompts.methods.0.E", "prompts.methods.0.offset", "prompts.methods.0.temperature"}
    # the temperature buffer follows model.step, advanced once per optimizer step: the last
    # training forward ran at step 17 of 18
    assert weights["prompts.methods.0.temperature"].item() == pytest.approx(math.exp(-0.02 * 17))
    assert "engine_test_model" in meta["config"] and meta["model"] == "engine_test_model"
    state = torch.load(tmp_path / "run" / "checkpoints" / "trainer-epoch3.pt", weights_only=True)
    assert state["step"] == 18 and state["epoch"] == 3
    files = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    # mid-epoch weights and older trainer states are removed once a newer checkpoint exists
    assert files == [
        "last_checkpoint.json",
        "model-epoch1.safetensors",
        "model-epoch2.safetensors",
        "model-epoch3.safetensors",
        "model-final.safetensors",
        "trainer-epoch3.pt",
    ]
    assert os.path.isfile(tmp_path / "run" / "config.yaml")


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    cfg = write_config(tmp_path, dropout=0.0)
    big = run_inprocess(cfg, tmp_path, tmp_path / "big")
    small = run_inprocess(
        cfg, tmp_path, tmp_path / "small", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAIN.GRAD_ACCUM_STEPS", "2"
    )
    assert big["step"] == small["step"] == 18
    w_big, _ = load_final(tmp_path / "big")
    w_small, _ = load_final(tmp_path / "small")
    for k in w_big:
        torch.testing.assert_close(w_big[k], w_small[k], rtol=1e-5, atol=1e-6)


def test_early_stopping_and_best_val(tmp_path):
    cfg = write_config(tmp_path)
    metrics = run_inprocess(
        cfg,
        tmp_path,
        tmp_path / "run",
        "OPTIM.LR",
        "0.0",
        "OPTIM.WARMUP_EPOCH",
        "-1",
        "TRAIN.EARLY_STOP_PATIENCE",
        "1",
        "TEST.FINAL_MODEL",
        "best_val",
    )
    assert metrics["stopped_early"] and metrics["step"] == 12 and metrics["best_val_epoch"] == 1
    assert os.path.isfile(tmp_path / "run" / "checkpoints" / "model-best.safetensors")


def test_logs_records_and_bf16_autocast(tmp_path):
    cfg = write_config(tmp_path)
    metrics = run_inprocess(
        cfg, tmp_path, tmp_path / "run", "TRAIN.PRECISION", "bf16", "TRAIN.PRINT_FREQ", "1", "TRAIN.TENSORBOARD", "True"
    )
    assert metrics["test"]["num_samples"] == 40
    with open(tmp_path / "run" / "log.jsonl") as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 19))
    assert train[5]["lr"] == pytest.approx(1e-5) and train[6]["lr"] == pytest.approx(0.05)  # constant warm-up
    assert sum(r["kind"] == "val" for r in records) == 3
    assert os.listdir(tmp_path / "run" / "tensorboard")
    with open(tmp_path / "run" / "prompt_records.json") as f:
        prompt_records = json.load(f)
    assert len(prompt_records["position"]) == 2 and len(prompt_records["position"][0]) == 40


def test_seeded_cpu_runs_are_bit_identical(tmp_path):
    cfg = write_config(tmp_path)
    run_inprocess(cfg, tmp_path, tmp_path / "a")
    run_inprocess(cfg, tmp_path, tmp_path / "b")
    wa, _ = load_final(tmp_path / "a")
    wb, _ = load_final(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_max_iter_stops_mid_epoch_with_an_iter_schedule_and_a_drawn_seed(tmp_path):
    cfg = write_config(tmp_path)
    metrics = run_inprocess(
        cfg,
        tmp_path,
        tmp_path / "run",
        "OPTIM.MAX_ITER",
        "4",
        "OPTIM.SCHEDULER_UNIT",
        "iter",
        "OPTIM.WARMUP_ITERS",
        "2",
        "TRAIN.PRINT_FREQ",
        "1",
        "SEED",
        "-1",
    )
    assert metrics["step"] == 4 and metrics["seed"] >= 0
    with open(tmp_path / "run" / "log.jsonl") as f:
        lrs = [json.loads(line)["lr"] for line in f if '"train"' in line]
    assert lrs == pytest.approx([1e-5, 1e-5, 0.05, 0.025])  # constant warm-up, then cosine to 0 at step 4
