"""Output dirs, resuming, checkpoints and non-finite values through tools/train_net.py.

Nothing of a run is lost: a finished run is never replaced without --overwrite, a resume with
another config is refused before anything is written, two runs cannot share a folder, and a
broken checkpoint or trainer state is one message. NaN or inf values stop the run (or skip the
step when asked) with a message naming the step and the last good checkpoint.
"""

import json
import os
import shutil

import _fault_doubles  # noqa: F401  (registers fault_test_model)
import pytest
import torch
from _sandbox import _tree, call, refused, sandbox  # noqa: F401  (sandbox is a fixture)
from safetensors.torch import load_file, save_file
from test_engine_train import write_config

from mmprompt.engine.run_dir import LOCK_NAME, RunLock


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 3-epoch run (and its config), copied into each case's sandbox."""
    import _sandbox

    folder = tmp_path_factory.mktemp("finished")
    cfg = write_config(folder)
    argv = ["--config-file", cfg, "--root", folder, "--output-dir", folder / "run"]
    assert _sandbox.call_cli(_sandbox.tool("train_net").main, [str(a) for a in argv]) == 0
    return folder


def setup(box, finished_run, name="run"):
    """The sandbox's copy of the finished run; (config file, run dir)."""
    shutil.copy(finished_run / "cfg.yaml", box.root / "cfg.yaml")
    shutil.copytree(finished_run / "run", box.root / name)
    return str(box.root / "cfg.yaml"), box.root / name


def train(capsys, box, cfg, out, *opts, flags=()):
    return call(capsys, "train_net", ["--config-file", cfg, "--root", box.root, "--output-dir", out, *flags, *opts])


def metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- the output dir


def test_rerun_into_a_finished_run_is_refused(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    before = _tree(str(run))
    refused(train(capsys, sandbox, cfg, run), "already holds a run", "--resume", "--overwrite")
    assert _tree(str(run)) == before


def test_overwrite_replaces_only_the_runs_own_files(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    (run / "notes.txt").write_text("mine")
    outcome = train(capsys, sandbox, cfg, run, "OPTIM.MAX_EPOCH", "1", flags=["--overwrite"])
    assert outcome.code == 0, outcome.err
    assert metrics(run)["step"] == 6 and (run / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(run / "checkpoints")) == [
        "last_checkpoint.json",
        "model-epoch1.safetensors",
        "model-final.safetensors",
        "trainer-epoch1.pt",
    ]


@pytest.mark.parametrize(
    "flags,pairs,needle",
    [
        (["--seed", "2"], [], "SEED: the run has 1, now 2"),
        ([], ["DATASET.NUM_SHOTS", "4"], "DATASET.NUM_SHOTS: the run has -1, now 4"),
        ([], ["DATASET.NAME", "engine_test_blobs_shifted"], "DATASET.NAME"),
        ([], ["DATASET.SUBSAMPLE_CLASSES", "base"], "DATASET.SUBSAMPLE_CLASSES"),
        ([], ["OPTIM.LR", "0.1"], "OPTIM.LR: the run has 0.05, now 0.1"),
    ],
)
def test_resume_with_another_config_is_refused_and_changes_nothing(sandbox, capsys, finished_run, flags, pairs, needle):
    cfg, run = setup(sandbox, finished_run)
    before = _tree(str(run))
    refused(
        train(capsys, sandbox, cfg, run, *pairs, flags=["--resume", *flags]),
        "made with another config",
        needle,
        "config.yaml",
    )
    assert _tree(str(run)) == before


def test_resume_may_change_speed_and_logging_keys_and_keeps_config_yaml(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    config_before = (run / "config.yaml").read_text()
    outcome = train(
        capsys, sandbox, cfg, run, "DATALOADER.TEST.BATCH_SIZE", "5", "TRAIN.PRINT_FREQ", "1", flags=["--resume"]
    )
    assert outcome.code == 0, outcome.err
    assert (run / "config.yaml").read_text() == config_before


def test_resume_and_overwrite_or_eval_only_together_are_refused(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    refused(train(capsys, sandbox, cfg, run, flags=["--resume", "--overwrite"]), "cannot be combined with --overwrite")
    refused(
        train(capsys, sandbox, cfg, run, flags=["--resume", "--eval-only", "--model-dir", run]),
        "cannot be combined with --eval-only",
    )


def test_a_locked_output_dir_is_refused(sandbox, capsys, finished_run):
    cfg, _ = setup(sandbox, finished_run)
    out = sandbox.root / "busy"
    out.mkdir()
    lock = RunLock(str(out))  # another run holds it (a second open file description conflicts)
    try:
        refused(train(capsys, sandbox, cfg, out), "Another run (pid", f"is using the output dir {out}")
    finally:
        lock.release()
    assert not (out / "metrics.json").exists()


def test_a_stale_lock_and_temp_files_of_a_killed_run_are_cleaned(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    (run / LOCK_NAME).write_text('{"pid": 999999, "host": "gone", "started": "then"}')  # no process holds it
    (run / "metrics.json.tmp4242").write_text("{")
    (run / "checkpoints" / "model-epoch3.safetensors.tmp4242").write_bytes(b"half")
    (run / "checkpoints" / "trainer-step99.pt").write_bytes(b"orphan")
    (run / "checkpoints" / "model-step99.safetensors").write_bytes(b"orphan")
    (run / "checkpoints" / "model-epoch7.safetensors").write_bytes(b"orphan")
    outcome = train(capsys, sandbox, cfg, run, flags=["--resume"])
    assert outcome.code == 0, outcome.err
    assert "removed model-epoch7.safetensors, model-step99.safetensors, trainer-step99.pt" in outcome.out
    assert sorted(os.listdir(run / "checkpoints")) == [
        "last_checkpoint.json",
        "model-epoch1.safetensors",
        "model-epoch2.safetensors",
        "model-epoch3.safetensors",
        "model-final.safetensors",
        "trainer-epoch3.pt",
    ]
    assert not any(n.endswith(".tmp4242") for n in os.listdir(run)) and not (run / LOCK_NAME).exists()


@pytest.mark.parametrize("blocker", ["output_is_a_file", "parent_is_a_file"])
def test_an_output_dir_that_cannot_be_made_fails_before_building(sandbox, capsys, finished_run, blocker):
    cfg, _ = setup(sandbox, finished_run)
    (sandbox.root / "f").write_text("in the way")
    out = sandbox.root / "f" if blocker == "output_is_a_file" else sandbox.root / "f" / "run"
    refused(train(capsys, sandbox, cfg, out), str(out), "Choose another --output-dir")


def test_read_only_output_dir(sandbox, capsys, finished_run):
    cfg, _ = setup(sandbox, finished_run)
    out = sandbox.root / "ro"
    out.mkdir()
    os.chmod(out, 0o555)
    if os.access(out, os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    refused(train(capsys, sandbox, cfg, out), "Cannot write to the output dir")


def test_eval_only_into_a_training_run_is_refused_unless_overwrite_which_keeps_checkpoints(
    sandbox, capsys, finished_run
):
    cfg, run = setup(sandbox, finished_run)
    before = _tree(str(run))
    refused(train(capsys, sandbox, cfg, run, flags=["--eval-only", "--model-dir", run]), "already holds results")
    assert _tree(str(run)) == before
    outcome = train(capsys, sandbox, cfg, run, flags=["--eval-only", "--model-dir", run, "--overwrite"])
    assert outcome.code == 0, outcome.err
    assert metrics(run)["eval_only"] is True and (run / "checkpoints" / "model-final.safetensors").exists()


def test_the_same_evaluation_may_run_again_another_one_may_not(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    out = sandbox.root / "ev"
    assert train(capsys, sandbox, cfg, out, flags=["--eval-only", "--model-dir", run]).code == 0
    first = metrics(out)
    assert train(capsys, sandbox, cfg, out, flags=["--eval-only", "--model-dir", run]).code == 0
    assert metrics(out)["test"] == first["test"]
    refused(
        train(capsys, sandbox, cfg, out, flags=["--eval-only", "--model-dir", run, "--load-epoch", "1"]),
        "already holds results",
    )


def test_overwrite_never_deletes_the_init_weights_it_needs(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    init = run / "checkpoints" / "model-final.safetensors"
    refused(
        train(capsys, sandbox, cfg, run, "MODEL.INIT_WEIGHTS", init, flags=["--overwrite"]),
        "would delete MODEL.INIT_WEIGHTS",
    )
    assert init.exists()


def test_resume_without_any_readable_config_is_refused(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    (run / "config.yaml").write_bytes(b"\xff\xfe")
    shutil.rmtree(run / "checkpoints")
    refused(train(capsys, sandbox, cfg, run, flags=["--resume"]), "no readable config.yaml")


# ---------------------------------------------------------------- checkpoints and trainer states

POINTERS = {
    "not_json": ("{not json", "is corrupt"),
    "not_utf8": (b"\xff\xfe\x00", "is corrupt"),
    "a_list": ("[1, 2]", "holds a list"),
    "escaping_names": (
        '{"model": "../../outside/x.safetensors", "trainer": "/etc/passwd", "epoch": 1, "iter": 0, "step": 6}',
        "is not a model file name of this folder",
    ),
    "missing_counts": (
        '{"model": "model-epoch3.safetensors", "trainer": "trainer-epoch3.pt"}',
        "epoch None is not a count",
    ),
    "negative_step": (
        '{"model": "model-epoch3.safetensors", "trainer": "trainer-epoch3.pt", "epoch": 3, "iter": 0, "step": -4}',
        "step -4 is not a count",
    ),
}


@pytest.mark.parametrize("case", sorted(POINTERS))
def test_corrupt_last_checkpoint_json(sandbox, capsys, finished_run, case):
    cfg, run = setup(sandbox, finished_run)
    raw, needle = POINTERS[case]
    pointer = run / "checkpoints" / "last_checkpoint.json"
    pointer.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    refused(train(capsys, sandbox, cfg, run, flags=["--resume"]), "last_checkpoint.json", needle)


def _trainer_state(run):
    return run / "checkpoints" / "trainer-epoch3.pt"


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _write_state(path, case):
    state = torch.load(path, weights_only=True)
    if case == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 3])
    elif case == "not_torch":
        path.write_text("hello")
    elif case == "malicious":
        torch.save({"payload": Evil()}, path)
    elif case == "a_list":
        torch.save([1, 2, 3], path)
    elif case == "missing_optimizer":
        del state["optimizer"]
        torch.save(state, path)
    elif case == "step_is_text":
        state["step"] = "six"
        torch.save(state, path)
    elif case == "other_optimizer":
        state["optimizer_name"] = "AdamW"
        torch.save(state, path)
    elif case == "optimizer_groups_changed":
        state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]
        torch.save(state, path)
    elif case == "malformed_rng":
        state["rng"] = [{"torch": "not a state"}]
        torch.save(state, path)


TRAINER_STATES = {
    "truncated": "is unreadable",
    "not_torch": "is unreadable",
    "malicious": "is unreadable",
    "a_list": "holds a list",
    "missing_optimizer": "optimizer (missing)",
    "step_is_text": "step (str, not int)",
    "other_optimizer": "holds the state of a AdamW optimizer",
    "optimizer_groups_changed": "does not fit this run",
    "malformed_rng": "random states",
}


@pytest.mark.parametrize("case", sorted(TRAINER_STATES))
def test_broken_trainer_state_on_resume(sandbox, capsys, finished_run, case):
    cfg, run = setup(sandbox, finished_run)
    _write_state(_trainer_state(run), case)
    refused(train(capsys, sandbox, cfg, run, flags=["--resume"]), "trainer-epoch3.pt", TRAINER_STATES[case])
    assert not (sandbox.root / "pwned").exists()


def test_missing_trainer_state_on_resume(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    _trainer_state(run).unlink()
    refused(train(capsys, sandbox, cfg, run, flags=["--resume"]), "is missing; cannot resume")


@pytest.mark.parametrize("damage", ["nan", "inf", "truncated", "empty"])
def test_broken_weights_are_refused_on_eval(sandbox, capsys, finished_run, damage):
    cfg, run = setup(sandbox, finished_run)
    weights = run / "checkpoints" / "model-final.safetensors"
    if damage in ("nan", "inf"):
        state = load_file(str(weights))
        state["prompts.methods.0.E"] = torch.full_like(state["prompts.methods.0.E"], float(damage))
        save_file(state, str(weights))
        needle = "holds NaN or infinite values in prompts.methods.0.E"
    else:
        raw = weights.read_bytes()
        weights.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"")
        needle = "is not a readable safetensors checkpoint"
    refused(train(capsys, sandbox, cfg, sandbox.root / "ev", flags=["--eval-only", "--model-dir", weights]), needle)
    assert not (sandbox.root / "ev" / "metrics.json").exists()


def test_nan_weights_in_init_weights_are_refused_before_training(sandbox, capsys, finished_run):
    cfg, run = setup(sandbox, finished_run)
    weights = run / "checkpoints" / "model-epoch1.safetensors"
    state = load_file(str(weights))
    state["prompts.methods.0.offset"][0] = float("nan")
    save_file(state, str(weights))
    refused(
        train(capsys, sandbox, cfg, sandbox.root / "new", "MODEL.INIT_WEIGHTS", weights),
        "NaN or infinite values in prompts.methods.0.offset",
    )


# ---------------------------------------------------------------- non-finite values


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(sandbox, capsys, finished_run, monkeypatch):
    cfg, _ = setup(sandbox, finished_run)
    monkeypatch.setenv("FAULT_NAN_LOSS_AT", "7")  # the second step of epoch 2
    out = sandbox.root / "nan"
    err = refused(
        train(capsys, sandbox, cfg, out, "MODEL.NAME", "fault_test_model"),
        "NaN or inf in the training loss or its gradient at optimizer step 8 (epoch 2, iteration 2)",
        "model-epoch1.safetensors (step 6)",
        "--resume",
    ).err
    assert "Traceback" not in err and not (out / "metrics.json").exists()
    for name in os.listdir(out / "checkpoints"):  # nothing non-finite was ever saved
        if name.endswith(".safetensors"):
            assert all(torch.isfinite(t).all() for t in load_file(str(out / "checkpoints" / name)).values())


def test_nan_loss_before_any_checkpoint_says_so(sandbox, capsys, finished_run, monkeypatch):
    cfg, _ = setup(sandbox, finished_run)
    monkeypatch.setenv("FAULT_NAN_LOSS_AT", "0")
    refused(
        train(capsys, sandbox, cfg, sandbox.root / "nan0", "MODEL.NAME", "fault_test_model"),
        "optimizer step 1 (epoch 1, iteration 1)",
        "No checkpoint was saved before it",
    )


def test_skip_mode_drops_bad_steps_and_counts_them(sandbox, capsys, finished_run, monkeypatch):
    cfg, _ = setup(sandbox, finished_run)
    monkeypatch.setenv("FAULT_NAN_LOSS_AT", "3,4")
    out = sandbox.root / "skip"
    outcome = train(capsys, sandbox, cfg, out, "MODEL.NAME", "fault_test_model", "TRAIN.NONFINITE", "skip")
    assert outcome.code == 0, outcome.err
    assert metrics(out)["skipped_steps"] == 2 and metrics(out)["step"] == 18
    assert "skipped optimizer step 4 (epoch 1, iteration 4)" in outcome.err + outcome.out


def test_skip_mode_stops_after_too_many_skips_in_a_row(sandbox, capsys, finished_run, monkeypatch):
    cfg, _ = setup(sandbox, finished_run)
    monkeypatch.setenv("FAULT_NAN_LOSS_AT", "all")
    refused(
        train(
            capsys,
            sandbox,
            cfg,
            sandbox.root / "allnan",
            "MODEL.NAME",
            "fault_test_model",
            "TRAIN.NONFINITE",
            "skip",
            "TRAIN.MAX_SKIPPED_STEPS",
            "3",
        ),
        "for 4 steps in a row (all skipped)",
    )


def test_diverging_weights_stop_the_run(sandbox, capsys, finished_run):
    cfg, _ = setup(sandbox, finished_run)
    refused(
        train(
            capsys,
            sandbox,
            cfg,
            sandbox.root / "big",
            "OPTIM.LR",
            "1e38",
            "OPTIM.WARMUP_EPOCH",
            "-1",
            "OPTIM.MOMENTUM",
            "0.0",
        ),
        "NaN or inf in",
    )


def test_nan_logits_stop_validation_and_evaluation(sandbox, capsys, finished_run, monkeypatch):
    cfg, _ = setup(sandbox, finished_run)
    monkeypatch.setenv("FAULT_NAN_EVAL", "1")
    refused(
        train(capsys, sandbox, cfg, sandbox.root / "v", "MODEL.NAME", "fault_test_model"),
        "NaN or inf logits for 16 of 16 evaluation samples",
    )
    run = sandbox.root / "t"
    refused(
        train(capsys, sandbox, cfg, run, "MODEL.NAME", "fault_test_model", "TRAIN.EVAL_PERIOD", "0"),
        "NaN or inf logits for 40 of 40",
    )
    assert not (run / "metrics.json").exists()
    refused(
        train(
            capsys,
            sandbox,
            cfg,
            sandbox.root / "e",
            "MODEL.NAME",
            "fault_test_model",
            "TRAIN.EVAL_PERIOD",
            "0",
            flags=["--eval-only", "--model-dir", run],
        ),
        "NaN or inf logits for 40 of 40",
    )


def test_nan_in_the_yaml_is_caught_by_validation(sandbox, capsys, finished_run):
    cfg, _ = setup(sandbox, finished_run)
    text = open(cfg).read().replace("LR: 0.05", "LR: .nan")
    open(cfg, "w").write(text)
    refused(train(capsys, sandbox, cfg, sandbox.root / "x"), "OPTIM.LR is nan")
    assert not (sandbox.root / "x").exists()


def test_fp16_skips_a_nan_step_as_amp_does_even_in_stop_mode(sandbox, capsys, finished_run, monkeypatch):
    cfg, _ = setup(sandbox, finished_run)
    monkeypatch.setenv("FAULT_NAN_LOSS_AT", "3")
    # Users get fp16 / amp only on CUDA; the GradScaler's skipping is the same on any device, so
    # this test lets amp (fp16 autocast + GradScaler) run on the CPU.
    from mmprompt.engine import trainer as trainer_module

    cpu_amp = trainer_module.Precision("amp", autocast=torch.float16, grad_scaler=True)
    monkeypatch.setattr(trainer_module, "resolve_precision", lambda *args, **kwargs: cpu_amp)
    out = sandbox.root / "fp16"
    outcome = train(
        capsys, sandbox, cfg, out, "MODEL.NAME", "fault_test_model", "TRAIN.PRECISION", "amp", "USE_CUDA", "False"
    )
    assert outcome.code == 0, outcome.err
    # the GradScaler skipped the NaN step (and any step whose gradients overflowed its scale)
    assert metrics(out)["skipped_steps"] >= 1 and metrics(out)["step"] == 18


def test_ctrl_c_during_the_final_test_then_resume_gives_the_uninterrupted_results(
    sandbox, capsys, finished_run, monkeypatch
):
    from mmprompt.engine.trainer import Trainer

    cfg, _ = setup(sandbox, finished_run)
    out = sandbox.root / "int"
    real_test = Trainer.test

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "test", interrupted)
    outcome = train(capsys, sandbox, cfg, out)
    assert outcome.code == 130 and "interrupted" in outcome.err and "Traceback" not in outcome.err
    assert not (out / "metrics.json").exists() and (out / "checkpoints" / "model-final.safetensors").exists()
    monkeypatch.setattr(Trainer, "test", real_test)
    refused(train(capsys, sandbox, cfg, out), "already holds a run", "--resume")  # nothing lost by a plain rerun
    outcome = train(capsys, sandbox, cfg, out, flags=["--resume"])
    assert outcome.code == 0, outcome.err
    comparable = lambda m: {k: v for k, v in m.items() if k != "weights"}  # noqa: E731
    assert comparable(metrics(out)) == comparable(metrics(finished_run / "run"))
