"""Output directories: one run per folder, never replaced or mixed by accident.

:func:`open_run_dir` is called by ``tools/train_net.py`` after the config is validated and before
anything heavy is built. It

* takes a lock (``OUTPUT_DIR/.mmprompt.lock``, an ``flock`` held for the run's lifetime), so two
  runs cannot share a folder. The kernel drops the lock when its process dies, so the lock file of
  a killed run is simply reused;
* refuses a folder that holds another run's results (``metrics.json``, ``log.jsonl``,
  checkpoints) unless the run is ``resume`` with the same config (:func:`config_differences`:
  every key except :data:`MAY_CHANGE_ON_RESUME`, so seed, shots, dataset, subsample ... all
  count) or ``overwrite`` (the previous run's own files are removed, nothing else in the folder);
  ``eval`` may replace only an earlier evaluation of the same config and weights;
* removes what a killed run left: temp files of its atomic writes (``*.tmp<pid>``) and, when
  resuming, checkpoint files written after the last complete checkpoint (not named by
  ``last_checkpoint.json``);
* writes ``config.yaml``, except when resuming a run that has one (it stays the run's own).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import time
from typing import Dict, List, Optional

import yaml

from ..errors import ConfigError
from . import checkpoint as ckpt

LOCK_NAME = ".mmprompt.lock"
CONFIG_NAME = "config.yaml"
MODES = ("fresh", "resume", "overwrite", "eval")

# Keys that do not change what a run trains, so a resumed run may set them differently: where
# things are read from and written to, speed and logging knobs, how a bad step is handled.
MAY_CHANGE_ON_RESUME = (
    "OUTPUT_DIR",
    "DATASET.ROOT",
    "USE_CUDA",
    "MODEL.BACKBONE.CACHE_DIR",
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.PIN_MEMORY",
    "DATALOADER.TEST.BATCH_SIZE",
    "TRAIN.PROGRESS_BAR",
    "TRAIN.VERBOSE",
    "TRAIN.TENSORBOARD",
    "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_PERIOD",
    "TRAIN.DIST_BACKEND",
    "TRAIN.NONFINITE",
    "TRAIN.MAX_SKIPPED_STEPS",
    "TEST.SAVE_RECORDS",
)

_TEMP = re.compile(r"\.tmp\d+$")
# What a run writes (``overwrite`` removes these and nothing else)
_RUN_FILES = ("metrics.json", "log.jsonl", "prompt_records.json", CONFIG_NAME)
_CHECKPOINT_FILE = re.compile(r"^(model-.+\.safetensors|trainer-.+\.pt|last_checkpoint\.json)$")
_TENSORBOARD_FILE = re.compile(r"^events\.out\.tfevents\.")


def flat_config(text: str) -> Dict[str, object]:
    """``{"A.B": value}`` of a dumped config (lists for tuples, as yaml writes them)."""
    out: Dict[str, object] = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + str(k)] = v

    data = yaml.safe_load(text)
    walk(data if isinstance(data, dict) else {}, "")
    return out


def config_differences(previous_text: str, current_text: str, ignore=MAY_CHANGE_ON_RESUME) -> List[str]:
    """``KEY: run V1, now V2`` for every key both configs have and that differs (keys only one
    side has come from another mmprompt version's defaults and are not compared)."""
    old, new = flat_config(previous_text), flat_config(current_text)
    return [
        f"{k}: the run has {old[k]!r}, now {new[k]!r}"
        for k in sorted(old.keys() & new.keys())
        if k not in ignore and old[k] != new[k]
    ]


class RunLock:
    """An exclusive ``flock`` on ``OUTPUT_DIR/.mmprompt.lock`` that names its holder."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_NAME)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise ConfigError(
                    f"Another run ({holder}) is using the output dir {output_dir}. Wait for it to "
                    "finish, or choose another --output-dir."
                ) from None
            # the previous holder may have unlinked the file between our open and our flock
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            ).encode(),
        )

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: a waiting opener then sees a new inode
        except FileNotFoundError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "a process that holds its lock"


class RunDir:
    """An output dir this process owns until :meth:`close`."""

    def __init__(self, output_dir: str, lock: RunLock):
        self.output_dir, self.lock = output_dir, lock

    def close(self) -> None:
        self.lock.release()


def _results(output_dir: str) -> List[str]:
    """The results of an earlier run in ``output_dir`` (relative names), empty when none."""
    found = [n for n in ("metrics.json", "log.jsonl") if os.path.isfile(os.path.join(output_dir, n))]
    folder = ckpt.checkpoint_dir(output_dir)
    if os.path.isdir(folder) and any(_CHECKPOINT_FILE.match(n) for n in os.listdir(folder)):
        found.append("checkpoints/")
    return found


def _previous_config(output_dir: str) -> Optional[str]:
    """The config text of the run in ``output_dir``: its config.yaml, else its latest checkpoint's."""
    path = os.path.join(output_dir, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if isinstance(yaml.safe_load(text), dict):
            return text
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    try:
        pointer = ckpt.read_pointer(ckpt.checkpoint_dir(output_dir))
        if pointer:
            _, meta = ckpt.load_weights(os.path.join(ckpt.checkpoint_dir(output_dir), pointer["model"]))
            return meta.get("config")
    except Exception:  # an unreadable checkpoint: no config to compare with (the caller says so)
        return None
    return None


def _remove_temp_files(output_dir: str) -> None:
    for folder in (output_dir, ckpt.checkpoint_dir(output_dir)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if _TEMP.search(name) and os.path.isfile(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))


def _remove_orphaned_checkpoints(output_dir: str) -> List[str]:
    """Checkpoint files written after the last complete checkpoint (a kill between the writes of
    one checkpoint): trainer states and step weights the pointer does not name, epoch weights past
    its epoch. Resuming redoes those steps and writes them again."""
    folder = ckpt.checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    pointer = ckpt.read_pointer(folder) or {}
    named = {pointer.get("model"), pointer.get("trainer")}
    last_epoch = pointer.get("epoch", 0) if isinstance(pointer.get("epoch"), int) else 0
    removed = []
    for name in sorted(os.listdir(folder)):
        epoch = re.match(r"^model-epoch(\d+)\.safetensors$", name)
        orphan = name not in named and (
            (name.startswith("trainer-") and name.endswith(".pt"))
            or re.match(r"^model-step\d+\.safetensors$", name)
            or (epoch is not None and int(epoch.group(1)) > last_epoch)
        )
        if orphan:
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed


def _remove_run_files(output_dir: str, keep_checkpoints: bool) -> None:
    for name in _RUN_FILES:
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            os.remove(path)
    folders = [("tensorboard", _TENSORBOARD_FILE)] + ([] if keep_checkpoints else [("checkpoints", _CHECKPOINT_FILE)])
    for sub, pattern in folders:
        folder = os.path.join(output_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if pattern.match(name) or _TEMP.search(name):
                os.remove(os.path.join(folder, name))
        if not os.listdir(folder):
            os.rmdir(folder)


def _make_dir(output_dir: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError(f"The output dir {output_dir} is a file. Choose another --output-dir (OUTPUT_DIR).")
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write-test{os.getpid()}")
        with open(probe, "w") as f:
            f.write("x")
        os.remove(probe)
    except ValueError as e:  # e.g. a NUL character in the path
        raise ConfigError(f"The output dir {output_dir!r} is not a usable path ({e}).") from None
    except OSError as e:
        why = {
            errno.ENOSPC: "the disk is full",
            errno.EROFS: "it is on a read-only file system",
            errno.ENOTDIR: "a file is in the way",
            errno.EEXIST: "a file is in the way",
        }.get(e.errno, e.strerror or str(e))
        raise ConfigError(
            f"Cannot write to the output dir {output_dir}: {why} ({e.filename or output_dir}). "
            "Choose another --output-dir (OUTPUT_DIR)."
        ) from None


def open_run_dir(cfg, mode: str, eval_weights: Optional[str] = None) -> RunDir:
    """Lock ``cfg.OUTPUT_DIR`` for a run of ``mode`` (one of :data:`MODES`) and make it ready.

    ``eval_weights``: for ``eval``, the weights file to be evaluated (a repeat of the same
    evaluation may replace the earlier one's results).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    output_dir = cfg.OUTPUT_DIR
    if not output_dir:
        raise ConfigError("OUTPUT_DIR is empty; set --output-dir.")
    _make_dir(output_dir)
    lock = RunLock(output_dir)
    try:
        _remove_temp_files(output_dir)
        config_text = cfg.dump()
        results = _results(output_dir)
        previous = _previous_config(output_dir) if results else None
        if results and mode == "fresh":
            raise ConfigError(
                f"The output dir {output_dir} already holds a run ({', '.join(results)}). Use --resume to "
                "continue it, --overwrite to replace it, or another --output-dir."
            )
        if results and mode == "resume":
            if previous is None:
                raise ConfigError(
                    f"--resume: the run in {output_dir} has no readable config.yaml or checkpoint "
                    "config to check this config against. Use --overwrite to start it again, or "
                    "another --output-dir."
                )
            diffs = config_differences(previous, config_text)
            if diffs:
                raise ConfigError(
                    f"--resume: the run in {output_dir} was made with another config:\n  "
                    + "\n  ".join(diffs)
                    + f"\nResume with the run's own config ({os.path.join(output_dir, CONFIG_NAME)}), use "
                    "another --output-dir, or --overwrite to replace the run."
                )
            removed = _remove_orphaned_checkpoints(output_dir)
            if removed:
                print(
                    f"--resume: removed {', '.join(removed)}, written after the last complete checkpoint "
                    "of the killed run.",
                    flush=True,
                )
        if results and mode == "eval" and not _same_evaluation(output_dir, previous, config_text, eval_weights):
            raise ConfigError(
                f"The output dir {output_dir} already holds results ({', '.join(results)}) of another run or "
                "evaluation. Use another --output-dir, or --overwrite to replace its results (checkpoints stay)."
            )
        keep_checkpoints = mode == "eval" or eval_weights is not None
        init = cfg.MODEL.INIT_WEIGHTS
        if results and mode == "overwrite" and not keep_checkpoints and init and _inside(output_dir, init):
            raise ConfigError(
                f"--overwrite would delete MODEL.INIT_WEIGHTS {init}, which is in the run it "
                "replaces. Copy it elsewhere first, or use another --output-dir."
            )
        if results and mode in ("overwrite", "eval"):
            _remove_run_files(output_dir, keep_checkpoints=keep_checkpoints)
        if not (mode == "resume" and previous is not None and os.path.isfile(os.path.join(output_dir, CONFIG_NAME))):
            ckpt.write_text_atomic(os.path.join(output_dir, CONFIG_NAME), config_text)
    except BaseException:
        lock.release()
        raise
    return RunDir(output_dir, lock)


def _inside(folder: str, path: str) -> bool:
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    return path.startswith(folder + os.sep)


def _same_evaluation(output_dir: str, previous: Optional[str], config_text: str, weights: Optional[str]) -> bool:
    """Whether the results in ``output_dir`` are an evaluation of this config and these weights
    (replacing them loses nothing: they would be computed again identically)."""
    if previous is None or weights is None or os.path.isdir(ckpt.checkpoint_dir(output_dir)):
        return False
    try:
        with open(os.path.join(output_dir, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return False
    return (
        isinstance(metrics, dict)
        and metrics.get("eval_only") is True
        and metrics.get("weights") == os.path.abspath(weights)
        and not config_differences(previous, config_text)
    )
