"""Checkpoints: trainable weights in safetensors (with the config in its metadata), the trainer
state in a ``weights_only``-loadable torch file, both written atomically.

Layout under ``OUTPUT_DIR/checkpoints``::

    model-epoch3.safetensors   trainable parameters and prompt buffers after epoch 3 (+ config)
    model-final.safetensors    the weights the final test used (last epoch or best val)
    trainer-<tag>.pt           optimizer, scheduler, epoch/iteration/step, RNG states (latest only)
    last_checkpoint.json       which model/trainer pair ``--resume`` continues from

A crash between two writes leaves the previous ``last_checkpoint.json`` valid, because the pointer
is replaced only after both files it names are complete.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import MMPromptError

FORMAT = "mmprompt-checkpoint-v1"
POINTER = "last_checkpoint.json"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic(path, write)


def method_signature(cfg) -> Dict[str, str]:
    """What must match for weights to be loadable into a model built from ``cfg``."""
    arch = cfg.MODEL.BACKBONE.ARCH
    if arch.endswith(".json") or os.sep in arch:  # a config file: where it lives does not matter
        arch = os.path.basename(arch.rstrip(os.sep))
    return {
        "model": cfg.MODEL.NAME,
        "methods": json.dumps(list(cfg.PROMPT.METHODS)),
        "backbone": f"{cfg.MODEL.BACKBONE.NAME}:{arch}",
    }


def save_weights(path: str, state: Dict[str, torch.Tensor], cfg, config_text: Optional[str] = None, **info) -> None:
    """``config_text``: ``cfg.dump()`` when the caller has it already (dumping takes ~0.1 s)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    metadata = {
        "format": FORMAT,
        "config": config_text or cfg.dump(),
        **method_signature(cfg),
        **{k: str(v) for k, v in info.items()},
    }
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    if not os.path.isfile(path):
        raise MMPromptError(f"No checkpoint at {path}.")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise MMPromptError(
            f"{path} is not a readable safetensors checkpoint ({e}). Was the download or the save cut short?"
        ) from None
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise MMPromptError(
            f"{path} holds NaN or infinite values in {', '.join(sorted(bad)[:5])}"
            f"{' ...' if len(bad) > 5 else ''}: these weights are unusable (the run that saved "
            "them diverged). Use an earlier checkpoint of that run."
        )
    return state, metadata


def check_fits_config(metadata: Dict[str, str], cfg, path: str) -> None:
    """A checkpoint of another method or backbone fails here with both sides named."""
    mine = method_signature(cfg)
    theirs = {k: metadata.get(k) for k in mine}
    diffs = [
        f"{k}: checkpoint {theirs[k]} vs config {mine[k]}"
        for k in mine
        if theirs[k] is not None and theirs[k] != mine[k]
    ]
    if diffs:
        raise MMPromptError(
            f"The checkpoint {path} was trained with another setup:\n  "
            + "\n  ".join(diffs)
            + "\nUse the config it was trained with (stored in the checkpoint and in its "
            "run's config.yaml), or a checkpoint of this method."
        )


def weights_path(model_dir: str, epoch: Optional[int] = None) -> str:
    """The weights file ``--model-dir [--load-epoch]`` points at (a run dir, its checkpoints
    folder, or a .safetensors file)."""
    if os.path.isfile(model_dir):
        return model_dir
    folder = checkpoint_dir(model_dir) if os.path.isdir(checkpoint_dir(model_dir)) else model_dir
    if not os.path.isdir(folder):
        raise MMPromptError(f"--model-dir {model_dir} does not exist.")
    name = f"model-epoch{epoch}.safetensors" if epoch is not None else "model-final.safetensors"
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        available = sorted(f for f in os.listdir(folder) if f.startswith("model-") and f.endswith(".safetensors"))
        hint = f" Available: {', '.join(available)}." if available else " It holds no model-*.safetensors files."
        raise MMPromptError(f"No {name} in {folder}.{hint}")
    return path


# ---- trainer state -------------------------------------------------------------------------


def rng_state() -> Dict[str, object]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, object]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_trainer_state(path: str, state: Dict[str, object]) -> None:
    _atomic(path, lambda tmp: torch.save(state, tmp))


# what every trainer state holds (the trainer writes more; these are what resuming reads)
TRAINER_STATE_KEYS = {
    "epoch": int,
    "iter": int,
    "step": int,
    "optimizer": dict,
    "scheduler": dict,
    "rng": list,
    "best": dict,
    "seed": int,
}


def load_trainer_state(path: str) -> Dict[str, object]:
    """The trainer state at ``path``, checked: loaded with ``weights_only`` (no code runs), every
    key resuming needs present with its type."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MMPromptError(
            f"Trainer state {path} is missing; cannot resume from it. Start the run again with --overwrite."
        ) from None
    except Exception as e:  # truncated zip, pickle refused by weights_only, not a torch file at all
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise MMPromptError(
            f"Trainer state {path} is unreadable ({type(e).__name__}: {first}): truncated, "
            "corrupt or not written by mmprompt. Start the run again with --overwrite."
        ) from None
    if not isinstance(state, dict):
        raise MMPromptError(f"Trainer state {path} holds a {type(state).__name__}, not mmprompt's trainer state.")
    wrong = [
        f"{k} (missing)" if k not in state else f"{k} ({type(state[k]).__name__}, not {t.__name__})"
        for k, t in TRAINER_STATE_KEYS.items()
        if k not in state or not isinstance(state[k], t) or (t is int and isinstance(state[k], bool))
    ]
    if wrong:
        raise MMPromptError(
            f"Trainer state {path} is incomplete: {', '.join(wrong)}. It was not written by "
            "this version of mmprompt's trainer; start the run again with --overwrite."
        )
    return state


def write_pointer(folder: str, record: Dict[str, object]) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)

    _atomic(os.path.join(folder, POINTER), write)


_POINTER_FILES = {
    "model": re.compile(r"^model-[A-Za-z0-9_.-]+\.safetensors$"),
    "trainer": re.compile(r"^trainer-[A-Za-z0-9_.-]+\.pt$"),
}


def read_pointer(folder: str) -> Optional[Dict[str, object]]:
    """``last_checkpoint.json`` of ``folder`` (None when there is none), checked: it names two
    files of this folder and the epoch / iteration / step they hold."""
    path = os.path.join(folder, POINTER)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MMPromptError(
            f"{path} is corrupt ({e}). Delete it to resume from scratch, or start the run again with --overwrite."
        ) from None
    problems = []
    if not isinstance(record, dict):
        problems.append(f"it holds a {type(record).__name__}, not an object")
    else:
        for key, pattern in _POINTER_FILES.items():
            if not isinstance(record.get(key), str) or not pattern.match(record[key]):
                problems.append(f"{key} {record.get(key)!r} is not a {key} file name of this folder")
        for key in ("epoch", "iter", "step"):
            if isinstance(record.get(key), bool) or not isinstance(record.get(key), int) or record[key] < 0:
                problems.append(f"{key} {record.get(key)!r} is not a count")
    if problems:
        raise MMPromptError(
            f"{path} is corrupt: {'; '.join(problems)}. Delete it to resume from scratch, or "
            "start the run again with --overwrite."
        )
    return record
