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


def method_signature(cfg) -> Dict[str, str]:
    """What must match for weights to be loadable into a model built from ``cfg``."""
    arch = cfg.MODEL.BACKBONE.ARCH
    if arch.endswith(".json") or os.sep in arch:  # a config file: where it lives does not matter
        arch = os.path.basename(arch.rstrip(os.sep))
    return {"model": cfg.MODEL.NAME, "methods": json.dumps(list(cfg.PROMPT.METHODS)),
            "backbone": f"{cfg.MODEL.BACKBONE.NAME}:{arch}"}


def save_weights(path: str, state: Dict[str, torch.Tensor], cfg, config_text: Optional[str] = None,
                 **info) -> None:
    """``config_text``: ``cfg.dump()`` when the caller has it already (dumping takes ~0.1 s)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    metadata = {"format": FORMAT, "config": config_text or cfg.dump(), **method_signature(cfg),
                **{k: str(v) for k, v in info.items()}}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    if not os.path.isfile(path):
        raise MMPromptError(f"No checkpoint at {path}.")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise MMPromptError(f"{path} is not a readable safetensors checkpoint ({e}). "
                            "Was the download or the save cut short?") from None
    return state, metadata


def check_fits_config(metadata: Dict[str, str], cfg, path: str) -> None:
    """A checkpoint of another method or backbone fails here with both sides named."""
    mine = method_signature(cfg)
    theirs = {k: metadata.get(k) for k in mine}
    diffs = [f"{k}: checkpoint {theirs[k]} vs config {mine[k]}" for k in mine
             if theirs[k] is not None and theirs[k] != mine[k]]
    if diffs:
        raise MMPromptError(f"The checkpoint {path} was trained with another setup:\n  " + "\n  ".join(diffs)
                            + "\nUse the config it was trained with (stored in the checkpoint and in its "
                            "run's config.yaml), or a checkpoint of this method.")


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
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
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


def load_trainer_state(path: str) -> Dict[str, object]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MMPromptError(f"Trainer state {path} is missing; cannot resume from it.") from None


def write_pointer(folder: str, record: Dict[str, object]) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(record, f)
    _atomic(os.path.join(folder, POINTER), write)


def read_pointer(folder: str) -> Optional[Dict[str, object]]:
    path = os.path.join(folder, POINTER)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
