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

    ``step`` counts optimizer steps; schedules read it (dynamic prompting's Gumbel temperature).
    Who advances it (the contract of :meth:`forward_context`):

    * the :class:`~mmprompt.engine.Trainer` sets it after every optimizer step and passes its own
      ``ctx`` to ``forward``, so nothing else counts;
    * in a plain PyTorch loop (``forward`` without ``ctx``) every training-mode forward pass with
      gradients enabled counts as one step: the pass runs at ``step`` and leaves ``step + 1``;
    * :meth:`follow_optimizer` counts the optimizer's steps instead (gradient accumulation,
      several forward passes per step).

    ``save_pretrained`` / :func:`mmprompt.from_pretrained` (and the Trainer's checkpoints) store
    and restore it with the schedules' buffers, so a reloaded model continues the schedule.
    """

    def __init__(self, backbone, prompts: PromptStack):
        super().__init__()
        self.backbone = backbone
        self.prompts = prompts
        self.step = 0  # optimizer steps taken (see the class docstring for who advances it)
        self.count_forward_steps = True
        self.cfg = None  # the config the model was built from (set by mmprompt.build.build_model)
        self.classnames: Optional[List[str]] = None

    def new_context(self) -> PromptContext:
        return PromptContext(step=self.step)

    def forward_context(self, ctx: Optional[PromptContext]) -> PromptContext:
        """The context of one forward pass: the caller's ``ctx`` (the Trainer's), else a new one at
        ``step``; a new one in a training-mode pass with gradients advances ``step`` by one (unless
        :meth:`follow_optimizer` counts steps)."""
        if ctx is not None:
            return ctx
        ctx = self.new_context()
        if self.count_forward_steps and self.training and torch.is_grad_enabled():
            self.step += 1
        return ctx

    def follow_optimizer(self, optimizer: torch.optim.Optimizer):
        """Count ``optimizer.step()`` calls as this model's steps instead of training forward
        passes; returns the hook handle (``handle.remove()`` goes back to counting passes)."""
        model = self

        def advance(*_):
            model.step += 1

        class _Handle:
            def __init__(self, inner):
                self.inner = inner

            def remove(self):
                self.inner.remove()
                model.count_forward_steps = True

        self.count_forward_steps = False
        return _Handle(optimizer.register_step_post_hook(advance))

    def save_pretrained(self, directory: str) -> str:
        """Write the trainable weights (safetensors, with the config and ``step`` in its metadata),
        ``config.yaml`` and a ``README.md`` model card to ``directory``; see
        :func:`mmprompt.api.save_pretrained`. Returns the weights file's path."""
        from ..api import save_pretrained

        return save_pretrained(self, directory)

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
