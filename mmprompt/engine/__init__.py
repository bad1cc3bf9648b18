"""Training and evaluation: the :class:`Trainer` (hooks, loop, evaluation), optimizers with
per-group options and warm-up schedules (:mod:`.optim`), checkpoints (:mod:`.checkpoint`),
torchrun/DDP helpers (:mod:`.distributed`) and run logs (:mod:`.logger`)."""

from .trainer import Trainer

__all__ = ["Trainer"]
