"""What the trainer needs from a task model."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from ..errors import MMPromptError
from ..prompts.base import PromptContext, PromptStack


class PromptModel(nn.Module):
    """A frozen backbone, a :class:`PromptStack` and (optionally) a head.

    ``forward(batch, ctx=None)`` takes a batch dict from the data loader and returns a dict with
    ``logits`` (B, C) and, when the batch has ``label``, ``loss``. Only parameters with
    ``requires_grad`` are trainable; checkpoints hold just those.
    """

    def __init__(self, backbone, prompts: PromptStack):
        super().__init__()
        self.backbone = backbone
        self.prompts = prompts
        self.step = 0  # optimizer steps taken; the trainer advances it, schedules read it

    def new_context(self) -> PromptContext:
        return PromptContext(step=self.step)

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names or self._is_prompt_buffer(k)}

    def _is_prompt_buffer(self, key: str) -> bool:
        # Buffers of prompt modules (e.g. a temperature schedule's state) belong to the run.
        return key.startswith("prompts.") and key not in dict(self.named_parameters())

    def load_trainable_state_dict(self, state: Dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load trainable weights; a checkpoint of another model says which keys/shapes differ."""
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shape = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or shape:
            lines = [f"The {source} does not fit this model (is it from another method or config?)."]
            if missing:
                lines.append(f"  missing in checkpoint ({len(missing)}): {_short(missing)}")
            if unexpected:
                lines.append(f"  not in this model ({len(unexpected)}): {_short(unexpected)}")
            for k in shape[:10]:
                lines.append(f"  shape of {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
            raise MMPromptError("\n".join(lines))
        self.load_state_dict(state, strict=False)

    def num_params(self) -> Dict[str, object]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        per_module: Dict[str, int] = {}
        for n, p in self.named_parameters():
            if p.requires_grad:
                key = ".".join(n.split(".")[:3]) if n.startswith("prompts.") else n.split(".")[0]
                per_module[key] = per_module.get(key, 0) + p.numel()
        return {"total": total, "trainable": trainable, "trainable_per_module": per_module}


def _short(keys: List[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n})" if len(keys) > n else "")
