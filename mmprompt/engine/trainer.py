"""The trainer: Dassl/CoOp's loop with hooks, for any task model and prompt method.

Hooks a subclass may override: :meth:`build_data`, :meth:`build_model`, :meth:`build_optimizer`,
:meth:`forward_backward`, :meth:`after_epoch`, :meth:`test`. The trainer never looks inside the
model: it needs ``forward(batch, ctx) -> {"logits", "loss"}``, ``new_context()``, ``step``,
``trainable_state_dict()`` / ``load_trainable_state_dict()`` (see :class:`PromptModel`).

Reproducibility: the data order of an epoch is a function of (SEED, epoch), each item's random
augmentation a function of (SEED, epoch, index), and the RNG states, optimizer, scheduler, model
step and prompt buffers are checkpointed, so ``--resume`` after a kill ends bit-identical to an
uninterrupted CPU run, with or without loader workers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..build import build_model
from ..errors import ConfigError, MMPromptError, NonFiniteError
from . import checkpoint as ckpt
from . import distributed as du
from .logger import RunLogger
from .optim import build_lr_scheduler, build_optimizer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def harmonic_mean(base: float, new: float) -> float:
    from ..evaluation.metrics import harmonic_mean as hm

    return hm(base, new)


def to_device(batch: Dict, device: torch.device) -> Dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``autocast`` dtype (None = fp32), ``backbone_dtype`` the frozen backbone's
    weights are cast to (None = kept in fp32), and whether a GradScaler scales the loss."""

    name: str
    autocast: Optional[torch.dtype] = None
    backbone_dtype: Optional[torch.dtype] = None
    grad_scaler: bool = False


def resolve_precision(precision: str, device: torch.device, backbone_frozen: bool = True) -> Precision:
    """TRAIN.PRECISION for this device, checked before anything is built.

    Dassl's ``PREC`` values: ``fp32``; ``amp`` = fp16 autocast + GradScaler; ``fp16`` = the frozen
    backbone's weights in half precision (as CoOp's CLIP loading gives) with the prompts kept and
    trained in fp32, under fp16 autocast (so fp32 prompt tokens meet fp16 weights) + GradScaler.
    Besides them ``bf16`` (autocast) and ``auto`` (bf16 autocast on GPUs that support it, else
    amp on GPU, fp32 on CPU).
    """
    name = precision.lower()
    if name == "auto":
        if device.type != "cuda":
            return Precision("fp32")
        name = "bf16" if torch.cuda.is_bf16_supported() else "amp"
    if name in ("fp32", "float32"):
        return Precision("fp32")
    if name in ("bf16", "bfloat16"):
        return Precision("bf16", autocast=torch.bfloat16)
    if name in ("fp16", "float16", "amp"):
        if device.type != "cuda":
            raise ConfigError(
                f"TRAIN.PRECISION {precision} computes in float16, which needs a CUDA GPU; this run is "
                f"on {device.type} (no GPU, or USE_CUDA False). Use TRAIN.PRECISION fp32 (or bf16)."
            )
        if name == "amp":
            return Precision("amp", autocast=torch.float16, grad_scaler=True)
        if not backbone_frozen:
            raise ConfigError(
                "TRAIN.PRECISION fp16 keeps the frozen backbone's weights in half precision, but "
                "MODEL.BACKBONE.FREEZE is False (its weights would train in fp16). Use TRAIN.PRECISION amp."
            )
        return Precision("fp16", autocast=torch.float16, backbone_dtype=torch.float16, grad_scaler=True)
    raise ConfigError(f"Unknown TRAIN.PRECISION '{precision}': use auto, fp32, fp16, amp or bf16.")


def cast_backbone(model, precision: Precision):
    """The model with its frozen backbone in ``precision.backbone_dtype`` (prompts, heads untouched)."""
    if precision.backbone_dtype is not None:
        model.backbone.to(precision.backbone_dtype)
    return model


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.cfg_text = cfg.dump()
        self.output_dir = cfg.OUTPUT_DIR
        self.device = du.init_distributed(cfg.TRAIN.DIST_BACKEND, cfg.USE_CUDA)
        self.world, self.rank = du.world_size(), du.rank()
        self.is_main = self.rank == 0
        self.step = 0
        self.run_info: Dict[str, object] = {}  # what the caller wants in metrics.json (e.g. the recipe file)
        # SEED < 0: a random seed, drawn once (the same on every rank) and reported in metrics.json
        self.seed = cfg.SEED if cfg.SEED >= 0 else du.gather_objects(random.SystemRandom().randrange(2**31))[0]
        seed_everything(self.seed)
        self.precision = resolve_precision(cfg.TRAIN.PRECISION, self.device, cfg.MODEL.BACKBONE.FREEZE)
        self.autocast_dtype = self.precision.autocast
        self.build_data()
        self.build_model()
        if self.is_main:
            os.makedirs(self.output_dir, exist_ok=True)
        self.logger = RunLogger(self.output_dir, enabled=self.is_main, tensorboard=cfg.TRAIN.TENSORBOARD)
        self.ckpt_dir = ckpt.checkpoint_dir(self.output_dir)

    # ------------------------------------------------------------------ building (hooks)

    def build_data(self) -> None:
        from ..data.build import build_dataset

        self.dataset = build_dataset(self.cfg)
        self.classnames = list(self.dataset.classnames)
        self.check_eval_data()

    def check_eval_data(self) -> None:
        """Fail now, not after training, when the final evaluation could not run: the split
        TEST.SPLIT names must have items and every DATASET.TEST_DATASETS target must be readable
        (each is read here once and dropped; the random state is left as it was)."""
        cfg = self.cfg
        if cfg.TEST.NO_TEST:
            return
        split = cfg.TEST.SPLIT
        if split not in ("test", "val"):
            raise ConfigError(f"TEST.SPLIT must be test or val, got '{split}'.")
        if not getattr(self.dataset, split):
            raise MMPromptError(
                f"The dataset {cfg.DATASET.NAME} has no {split} split to evaluate (TEST.SPLIT "
                f"{split}); set TEST.SPLIT to a split it has, or TEST.NO_TEST True."
            )
        if cfg.TEST.MAIN_METRIC:
            self._probe_main_metric()
        from ..data.build import build_test_dataset

        saved = ckpt.rng_state()
        try:
            for name in cfg.DATASET.TEST_DATASETS:
                try:
                    target = build_test_dataset(cfg, name)
                except MMPromptError as e:
                    raise MMPromptError(f"DATASET.TEST_DATASETS target {name}: {e}") from None
                if not target.test:
                    raise MMPromptError(f"DATASET.TEST_DATASETS target {name} has no test split to evaluate.")
        finally:
            ckpt.set_rng_state(saved)

    def build_model(self) -> None:
        self.model = cast_backbone(build_model(self.cfg, self.classnames).to(self.device), self.precision)
        self.ddp_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=self.cfg.TRAIN.FIND_UNUSED_PARAMETERS
            )

    def build_optimizer(self) -> None:
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scheduler = build_lr_scheduler(self.optimizer, self.cfg, self.steps_per_epoch, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision.grad_scaler else None

    def build_train_loader(self) -> None:
        """The data helper's loader, re-batched by :class:`EpochBatchSampler` so the order of an
        epoch depends on (SEED, epoch) only and each rank gets its slice of every global batch."""
        from ..data.build import build_loader

        if not self.dataset.train_x:
            raise MMPromptError(f"The dataset {self.cfg.DATASET.NAME} has no training items.")
        base = build_loader(self.cfg, self.dataset.train_x, is_train=True)
        self._train_items = du.EpochSeededDataset(base.dataset, self.seed)
        self.train_sampler = du.EpochBatchSampler(
            len(base.dataset),
            self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
            shuffle=True,
            seed=self.seed,
            world=self.world,
            rank=self.rank,
            drop_last=self.cfg.DATALOADER.TRAIN_X.DROP_LAST,
        )
        self._train_base = base

    def _train_loader_for(self, epoch: int, skip: int):
        self.train_sampler.set_epoch(epoch, skip)
        self._train_items.epoch = epoch
        base = self._train_base
        return torch.utils.data.DataLoader(
            self._train_items,
            batch_sampler=self.train_sampler,
            collate_fn=base.collate_fn,
            num_workers=base.num_workers,
            pin_memory=base.pin_memory,
            worker_init_fn=base.worker_init_fn,
            generator=torch.Generator().manual_seed(self.seed * 7919 + epoch),
        )

    def _eval_loader(self, cfg, items):
        from ..data.build import build_loader

        base = build_loader(cfg, items, is_train=False)
        if self.world == 1:
            return base
        return torch.utils.data.DataLoader(
            base.dataset,
            batch_size=base.batch_size,
            sampler=du.ShardSampler(len(base.dataset), self.world, self.rank),
            collate_fn=base.collate_fn,
            num_workers=base.num_workers,
            pin_memory=base.pin_memory,
            worker_init_fn=base.worker_init_fn,
            generator=torch.Generator().manual_seed(0),
        )

    # ------------------------------------------------------------------ training

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward_backward(self, batch: Dict, loss_scale: float) -> torch.Tensor:
        """One micro-batch: forward, loss, backward (scaled for accumulation); the loss."""
        ctx = self.model.new_context()
        with self._autocast():
            try:
                out = self.ddp_model(batch, ctx=ctx)
            except RuntimeError as e:
                if "find_unused_parameters" not in str(e):
                    raise
                raise ConfigError(
                    "DDP found trainable parameters that got no gradient in a step (this "
                    "method does not use all of them every time). Set "
                    "TRAIN.FIND_UNUSED_PARAMETERS True."
                ) from None
        loss = out["loss"]
        if loss is None or not torch.is_tensor(loss):
            raise MMPromptError(f"{type(self.model).__name__}.forward returned no loss for a training batch.")
        scaled = loss.float() * loss_scale
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach()

    def optimizer_step(self, bad_loss: bool = False) -> bool:
        """One optimizer step from the accumulated gradients; False when it was skipped.

        A non-finite loss (``bad_loss``, this process's) or gradient is decided on by all ranks
        together. Without a GradScaler it stops the run (TRAIN.NONFINITE stop, the default:
        :class:`NonFiniteError` is raised before the weights change) or skips the update (skip).
        The fp16 GradScaler skips such steps by itself and lowers its scale, as AMP does. Either
        way more than TRAIN.MAX_SKIPPED_STEPS skips in a row stop the run.
        """
        clip = self.cfg.TRAIN.GRAD_CLIP_NORM
        skipped = False
        if self.scaler is not None:
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self._trainable, clip)
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale  # it lowers the scale exactly when it skipped
        else:
            if self._any_rank(bad_loss or not _all_finite(p.grad for p in self._trainable)):
                if self.cfg.TRAIN.NONFINITE == "stop":
                    raise NonFiniteError(self._nonfinite_message("the training loss or its gradient"))
                skipped = True
            else:
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(self._trainable, clip)
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._skipped_in_a_row = self._skipped_in_a_row + 1 if skipped else 0
        self.skipped_steps += int(skipped)
        if self._skipped_in_a_row > self.cfg.TRAIN.MAX_SKIPPED_STEPS:
            raise NonFiniteError(
                self._nonfinite_message(
                    f"every step's loss or gradient for {self._skipped_in_a_row} steps in a row (all skipped)"
                )
            )
        if not skipped and not _all_finite(self._trainable):
            raise NonFiniteError(self._nonfinite_message("the weights after the update", saved_nothing=True))
        self.step += 1
        self.model.step = self.step  # dynamic prompting's temperature reads it
        with warnings.catch_warnings():
            # a skipped step still advances the schedule, as with AMP; torch warns when the
            # first optimizer step is the one skipped
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        return not skipped

    def _any_rank(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def _nonfinite_message(self, what: str, saved_nothing: bool = False) -> str:
        where = f"optimizer step {self.step + 1} (epoch {self._epoch + 1}, iteration {self._iter + 1})"
        pointer = None
        try:
            pointer = ckpt.read_pointer(self.ckpt_dir)
        except MMPromptError:
            pass
        if pointer:
            last = (
                f"The last good checkpoint is {os.path.join(self.ckpt_dir, pointer['model'])} (step "
                f"{pointer['step']}): --resume continues from it (add TRAIN.NONFINITE skip to drop bad steps)"
            )
        else:
            last = "No checkpoint was saved before it"
        done = "nothing of this step was saved" if saved_nothing else "the weights were not updated with it"
        return (
            f"NaN or inf in {what} at {where}; {done}. {last}. Or lower "
            "OPTIM.LR, set TRAIN.GRAD_CLIP_NORM or use TRAIN.PRECISION fp32, and start again with --overwrite."
        )

    def _plan(self) -> None:
        accum = self.cfg.TRAIN.GRAD_ACCUM_STEPS
        if accum < 1:
            raise ConfigError(f"TRAIN.GRAD_ACCUM_STEPS must be >= 1, got {accum}.")
        self.accum = accum
        if self.cfg.TEST.FINAL_MODEL not in ("last_step", "best_val"):
            raise ConfigError(f"Unknown TEST.FINAL_MODEL '{self.cfg.TEST.FINAL_MODEL}': use last_step or best_val.")
        if self.cfg.TEST.FINAL_MODEL == "best_val" or self.cfg.TRAIN.EARLY_STOP_PATIENCE > 0:
            if not self.dataset.val or self.cfg.TRAIN.EVAL_PERIOD <= 0:
                raise ConfigError(
                    "TEST.FINAL_MODEL best_val and TRAIN.EARLY_STOP_PATIENCE need validation: "
                    f"a val split (the dataset {self.cfg.DATASET.NAME} has "
                    f"{len(self.dataset.val)} val items) and TRAIN.EVAL_PERIOD >= 1."
                )
        self.batches_per_epoch = len(self.train_sampler)
        if self.batches_per_epoch == 0:
            raise MMPromptError(
                f"The training split ({len(self.dataset.train_x)} items) gives no batch of "
                f"{self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE} that splits evenly over {self.world} "
                "processes; lower DATALOADER.TRAIN_X.BATCH_SIZE."
            )
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / accum)
        if self.cfg.OPTIM.MAX_ITER > 0:
            self.total_steps = self.cfg.OPTIM.MAX_ITER
            self.max_epoch = math.ceil(self.total_steps / self.steps_per_epoch)
        else:
            self.max_epoch = self.cfg.OPTIM.MAX_EPOCH
            self.total_steps = self.max_epoch * self.steps_per_epoch

    def train(self, resume: bool = False) -> Dict:
        self.build_train_loader()
        self._plan()
        self.build_optimizer()
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.step, self.start_epoch, self.start_iter = 0, 0, 0
        self.best = {"metric": None, "epoch": None, "bad_evals": 0}
        self.stopped_early = False
        self.skipped_steps, self._skipped_in_a_row, self._bad_loss_in_group = 0, 0, False
        self._epoch, self._iter = self.start_epoch, 0
        if resume:
            self.resume_from_last()
        if self.world > 1 and self.step == 0:
            seed_everything(self.seed + self.rank)  # weights are equal (DDP broadcast); noise differs
        self.model.step = self.step
        for epoch in range(self.start_epoch, self.max_epoch):
            if self.step >= self.total_steps:
                break
            self.run_epoch(epoch, self.start_iter if epoch == self.start_epoch else 0)
            if self.after_epoch(epoch):
                break
        return self.after_train()

    def run_epoch(self, epoch: int, skip: int) -> None:
        self.model.train()
        loader = self._train_loader_for(epoch, skip)
        bar = tqdm(
            total=self.batches_per_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{self.max_epoch}",
            disable=not (self.is_main and self.cfg.TRAIN.PROGRESS_BAR),
            dynamic_ncols=True,
            leave=False,
        )
        period = self.cfg.TRAIN.CHECKPOINT_PERIOD
        self._epoch_losses, self._epoch_lr = [], float("nan")
        for i, batch in enumerate(loader, start=skip):
            self._epoch, self._iter = epoch, i
            group_start = (i // self.accum) * self.accum
            group_size = min(self.accum, self.batches_per_epoch - group_start)
            is_step = i + 1 == group_start + group_size
            sync = contextlib.nullcontext() if is_step or self.ddp_model is self.model else self.ddp_model.no_sync()
            with sync:
                loss = self.forward_backward(to_device(batch, self.device), 1.0 / group_size)
            lr = self.optimizer.param_groups[0]["lr"]
            loss_value = float(loss)
            self._bad_loss_in_group = self._bad_loss_in_group or not math.isfinite(loss_value)
            if is_step:
                if not self.optimizer_step(self._bad_loss_in_group) and self.is_main:
                    tqdm.write(
                        f"skipped optimizer step {self.step} (epoch {epoch + 1}, iteration {i + 1}): "
                        f"NaN or inf in the loss or gradient ({self.skipped_steps} skipped so far)"
                    )
                self._bad_loss_in_group = False
            if math.isfinite(loss_value):
                self._epoch_losses.append(loss_value)
            self._epoch_lr = lr
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            if (i + 1) % self.cfg.TRAIN.PRINT_FREQ == 0 or i + 1 == self.batches_per_epoch:
                self.logger.log("train", self.step, {"loss": loss_value, "lr": lr}, epoch=epoch + 1, iter=i + 1)
            if self.step >= self.total_steps:
                break
            if is_step and period > 0 and self.step % period == 0 and i + 1 < self.batches_per_epoch:
                self.save_checkpoint(f"step{self.step}", epoch=epoch, next_iter=i + 1)
        bar.close()

    def after_epoch(self, epoch: int) -> bool:
        """Validate, track the best epoch, checkpoint; True to stop (early stopping)."""
        stop = False
        period = self.cfg.TRAIN.EVAL_PERIOD
        losses = self._epoch_losses  # this process's share of each batch
        line = (
            f"epoch {epoch + 1}/{self.max_epoch}: loss {sum(losses) / max(len(losses), 1):.4f}, "
            f"lr {self._epoch_lr:.2e}, step {self.step}"
        )
        if period > 0 and self.dataset.val and (epoch + 1) % period == 0:
            metrics = self.evaluate(self.cfg, self.model, self.dataset.val, self.classnames)
            main = metrics[self.main_metric(self.cfg)]
            if not math.isfinite(main):
                self._epoch, self._iter = epoch, self.batches_per_epoch - 1
                raise NonFiniteError(self._nonfinite_message(f"the validation {self.main_metric(self.cfg)}"))
            line += f", val {self.main_metric(self.cfg)} {main:.2f}"
            self.logger.log("val", self.step, _scalars(metrics), epoch=epoch + 1)
            if self.best["metric"] is None or main > self.best["metric"]:
                self.best.update(metric=main, epoch=epoch + 1, bad_evals=0)
                if self.is_main and self.cfg.TEST.FINAL_MODEL == "best_val":
                    os.makedirs(self.ckpt_dir, exist_ok=True)
                    ckpt.save_weights(
                        os.path.join(self.ckpt_dir, "model-best.safetensors"),
                        self.model.trainable_state_dict(),
                        self.cfg,
                        self.cfg_text,
                        epoch=epoch + 1,
                        step=self.step,
                    )
            else:
                self.best["bad_evals"] += 1
            patience = self.cfg.TRAIN.EARLY_STOP_PATIENCE
            stop = patience > 0 and self.best["bad_evals"] >= patience
            self.stopped_early = stop
        self.save_checkpoint(f"epoch{epoch + 1}", epoch=epoch + 1, next_iter=0, keep_weights=True)
        if self.is_main and self.cfg.TRAIN.VERBOSE:
            tqdm.write(line + (" (early stop)" if stop else ""))
        return stop

    def after_train(self) -> Dict:
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            best = os.path.join(self.ckpt_dir, "model-best.safetensors")
            du.barrier()
            if os.path.isfile(best):
                state, _ = ckpt.load_weights(best)
                self.model.load_trainable_state_dict(state, source=best)
        if self.is_main:
            ckpt.save_weights(
                os.path.join(self.ckpt_dir, "model-final.safetensors"),
                self.model.trainable_state_dict(),
                self.cfg,
                self.cfg_text,
                step=self.step,
            )
        extra = {"step": self.step, "stopped_early": self.stopped_early, "skipped_steps": self.skipped_steps}
        if self.best["epoch"] is not None:
            extra.update(best_val_epoch=self.best["epoch"], best_val_metric=self.best["metric"])
        if self.cfg.TEST.NO_TEST:
            return extra
        return self.test(extra)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, tag: str, *, epoch: int, next_iter: int, keep_weights: bool = False) -> None:
        rng_states = du.gather_objects(ckpt.rng_state())
        if not self.is_main:
            return
        os.makedirs(self.ckpt_dir, exist_ok=True)
        previous = ckpt.read_pointer(self.ckpt_dir)
        model_file, trainer_file = f"model-{tag}.safetensors", f"trainer-{tag}.pt"
        ckpt.save_weights(
            os.path.join(self.ckpt_dir, model_file),
            self.model.trainable_state_dict(),
            self.cfg,
            self.cfg_text,
            epoch=epoch,
            step=self.step,
        )
        state = {
            "epoch": epoch,
            "iter": next_iter,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng_states,
            "best": dict(self.best),
            "world_size": self.world,
            "seed": self.seed,
            "optimizer_name": type(self.optimizer).__name__,
            "skipped_steps": self.skipped_steps,
        }
        ckpt.save_trainer_state(os.path.join(self.ckpt_dir, trainer_file), state)
        ckpt.write_pointer(
            self.ckpt_dir,
            {
                "model": model_file,
                "trainer": trainer_file,
                "epoch": epoch,
                "iter": next_iter,
                "step": self.step,
                "keep_weights": keep_weights,
            },
        )
        if previous:  # the previous trainer state, and weights that were only for resuming
            stale = [previous["trainer"]] + ([] if previous.get("keep_weights") else [previous["model"]])
            for name in stale:
                if name not in (model_file, trainer_file):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(self.ckpt_dir, name))

    def resume_from_last(self) -> None:
        pointer = ckpt.read_pointer(self.ckpt_dir)
        if pointer is None:
            if self.is_main:
                print(f"--resume: no checkpoint in {self.ckpt_dir} yet, starting from scratch.", flush=True)
            return
        weights = os.path.join(self.ckpt_dir, pointer["model"])
        state_dict, meta = ckpt.load_weights(weights)
        ckpt.check_fits_config(meta, self.cfg, weights)
        self.model.load_trainable_state_dict(state_dict, source=weights)
        trainer_file = os.path.join(self.ckpt_dir, pointer["trainer"])
        state = ckpt.load_trainer_state(trainer_file)
        saved_optimizer = state.get("optimizer_name", type(self.optimizer).__name__)
        if saved_optimizer != type(self.optimizer).__name__:
            raise MMPromptError(
                f"{trainer_file} holds the state of a {saved_optimizer} optimizer, this run builds "
                f"{type(self.optimizer).__name__} (OPTIM.NAME changed?). Resume with the run's own "
                "config, or start again with --overwrite."
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
            raise MMPromptError(
                f"The optimizer or scheduler state in {trainer_file} does not fit this run "
                f"({type(e).__name__}: {e}): were the trainable parameters or OPTIM changed, or "
                "the checkpoint copied from another run? Start again with --overwrite."
            ) from None
        self.step, self.start_epoch, self.start_iter = state["step"], state["epoch"], state["iter"]
        self.best = dict(state["best"])
        # a drawn random seed (SEED < 0) stays
        self.seed = self.train_sampler.seed = self._train_items.seed = state["seed"]
        self.skipped_steps = int(state.get("skipped_steps", 0))
        rng = state["rng"]
        if len(rng) == self.world:
            try:
                ckpt.set_rng_state(rng[self.rank])
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise MMPromptError(
                    f"The random states in {trainer_file} are malformed ({type(e).__name__}: {e}); "
                    "it was not written by mmprompt's trainer. Start again with --overwrite."
                ) from None
        elif self.is_main:
            print(
                f"--resume: the checkpoint was written by {len(rng)} processes, this run has {self.world}; "
                "random states start afresh.",
                flush=True,
            )
        if self.is_main:
            print(
                f"Resumed from {weights} (epoch {self.start_epoch + (self.start_iter > 0)}, step {self.step}).",
                flush=True,
            )

    def load_weights(self, model_dir: str, epoch: Optional[int] = None) -> str:
        path = ckpt.weights_path(model_dir, epoch)
        state, meta = ckpt.load_weights(path)
        ckpt.check_fits_config(meta, self.cfg, path)
        self.model.load_trainable_state_dict(state, source=path)
        self.step = self.model.step = int(meta.get("step", 0))
        return path

    # ------------------------------------------------------------------ evaluation

    def _probe_main_metric(self) -> None:
        """TEST.MAIN_METRIC checked against what the evaluator returns for one made-up sample, so a
        typo fails before training. Evaluators that need more than logits and labels (task
        metadata) cannot be probed; their check comes with the first evaluation."""
        evaluator = self._build_evaluator(self.dataset, self.classnames)
        try:
            evaluator.process(torch.zeros(1, len(self.classnames)), torch.zeros(1, dtype=torch.long), meta={})
            probe = evaluator.evaluate()
        except Exception:  # needs task metadata: checked at the first evaluation instead
            return
        _check_main_metric(self.cfg.TEST.MAIN_METRIC, probe, type(evaluator).__name__)

    def evaluator_name(self, dataset) -> str:
        return self.cfg.TEST.EVALUATOR or getattr(dataset, "evaluator_name", "") or "classification"

    def main_metric(self, cfg, evaluator=None) -> str:
        if cfg.TEST.MAIN_METRIC:
            return cfg.TEST.MAIN_METRIC
        if evaluator is None:
            evaluator = self._build_evaluator(self.dataset, self.classnames)
        return evaluator.main_metric

    def _build_evaluator(self, dataset, classnames):
        from ..evaluation.evaluators import build_evaluator

        return build_evaluator(self.evaluator_name(dataset), classnames=classnames)

    @torch.no_grad()
    def evaluate(self, cfg, model, items, classnames, dataset=None, records: Optional[Dict] = None) -> Dict:
        """Metrics of ``model`` on ``items``; outputs of all ranks are gathered first, so every rank
        returns the same numbers. ``records`` collects what prompt modules record per batch."""
        evaluator = self._build_evaluator(dataset if dataset is not None else self.dataset, classnames)
        was_training = model.training
        model.eval()
        logits, labels, metas, rec = [], [], [], {}
        for batch in self._eval_loader(cfg, items):
            ctx = model.new_context()
            with self._autocast():
                out = model(to_device(batch, self.device), ctx=ctx)
            logits.append(out["logits"].float().cpu())
            labels.append(batch["label"].cpu())
            metas.append(
                {
                    k: v
                    for k, v in batch.items()
                    if k not in ("label", "image") and not (torch.is_tensor(v) and v.dim() > 1)
                }
            )
            for key, values in ctx.records.items():
                for j, v in enumerate(values):
                    rec.setdefault(key, {}).setdefault(j, []).append(v.float().cpu().reshape(-1))
        model.train(was_training)
        parts = du.gather_objects((logits, labels, metas))
        bad = sum(int((~torch.isfinite(lg)).any(dim=-1).sum()) for part in parts for lg in part[0])
        if bad:
            total = sum(lg.shape[0] for part in parts for lg in part[0])
            raise NonFiniteError(
                f"The model gave NaN or inf logits for {bad} of {total} evaluation samples (step "
                f"{self.step}): its weights are unusable, and any metric of them would be "
                "meaningless. Evaluate an earlier checkpoint, or train again with a lower OPTIM.LR."
            )
        for part_logits, part_labels, part_metas in parts:
            for lg, lb, mt in zip(part_logits, part_labels, part_metas):
                evaluator.process(lg, lb, meta={**mt, "label": lb})
        if records is not None:
            for part in du.gather_objects(rec):
                for key, per_entry in part.items():
                    for j, values in per_entry.items():
                        records.setdefault(key, {}).setdefault(j, []).extend(values)
        result = evaluator.evaluate()
        _check_main_metric(cfg.TEST.MAIN_METRIC, result, type(evaluator).__name__)
        return result

    def _variant(self, **changes):
        """A copy of the config with some DATASET keys changed, its dataset and the trained
        weights in a model built for that dataset's classes."""
        from ..data.build import build_dataset

        cfg = self.cfg.clone()
        cfg.defrost()
        for key, value in changes.items():
            setattr(cfg.DATASET, key, value)
        cfg.freeze()
        saved = ckpt.rng_state()
        # build from the same random state as the trained model, so that randomly initialised
        # (test-size) backbones are equal too
        seed_everything(self.seed)
        dataset = build_dataset(cfg)
        model = cast_backbone(build_model(cfg, list(dataset.classnames)).to(self.device), self.precision)
        ckpt.set_rng_state(saved)
        model.load_trainable_state_dict(self.model.trainable_state_dict(), source="trained weights")
        model.step = self.model.step
        return cfg, dataset, model

    def test(self, extra: Optional[Dict] = None) -> Dict:
        """The final evaluation: the test split; for base-trained runs also the new classes and
        HM; every cross-dataset target. Writes metrics.json (and prompt_records.json)."""
        cfg = self.cfg
        split = cfg.TEST.SPLIT
        if split not in ("test", "val"):
            raise ConfigError(f"TEST.SPLIT must be test or val, got '{split}'.")
        items = self.dataset.test if split == "test" else self.dataset.val
        if not items:
            raise MMPromptError(f"The dataset {cfg.DATASET.NAME} has no {split} split to evaluate.")
        records: Dict = {}
        metrics = self.evaluate(
            cfg, self.model, items, self.classnames, records=records if cfg.TEST.SAVE_RECORDS else None
        )
        main = self.main_metric(cfg)
        results = {
            "dataset": cfg.DATASET.NAME,
            "model": cfg.MODEL.NAME,
            "methods": list(cfg.PROMPT.METHODS),
            "seed": self.seed,
            "num_shots": cfg.DATASET.NUM_SHOTS,
            "subsample_classes": cfg.DATASET.SUBSAMPLE_CLASSES,
            "split": split,
            "main_metric": main,
            "num_params": self.model.num_params(),
            split: metrics,
            **self.run_info,
            **(extra or {}),
        }
        self.logger.log(split, self.step, _scalars(metrics), dataset=cfg.DATASET.NAME)
        if cfg.DATASET.SUBSAMPLE_CLASSES.lower() == "base" and cfg.TEST.BASE_TO_NOVEL:
            new_cfg, new_data, new_model = self._variant(SUBSAMPLE_CLASSES="new")
            new_items = new_data.test if split == "test" else new_data.val
            new_metrics = self.evaluate(new_cfg, new_model, new_items, list(new_data.classnames), dataset=new_data)
            del new_model
            results["base"], results["new"] = metrics, new_metrics
            results["hm"] = harmonic_mean(metrics[main], new_metrics[main])
            self.logger.log(
                "base_to_new", self.step, {"base": metrics[main], "new": new_metrics[main], "hm": results["hm"]}
            )
        targets = list(cfg.DATASET.TEST_DATASETS)
        if targets:
            results["cross"] = {}
            for name in targets:
                # read in full with all its classes, as build_test_dataset does
                x_cfg, x_data, x_model = self._variant(NAME=name, SUBSAMPLE_CLASSES="all", NUM_SHOTS=-1)
                x_metrics = self.evaluate(x_cfg, x_model, x_data.test, list(x_data.classnames), dataset=x_data)
                del x_model
                results["cross"][name] = x_metrics
                self.logger.log("cross", self.step, _scalars(x_metrics), dataset=name)
        if self.is_main:
            _write_json(os.path.join(self.output_dir, "metrics.json"), results)
            if records:
                _write_json(os.path.join(self.output_dir, "prompt_records.json"), _records_json(records))
        return results

    def close(self) -> None:
        self.logger.close()


def _check_main_metric(name: str, metrics: Dict, evaluator: str) -> None:
    if name and name not in metrics:
        raise ConfigError(
            f"TEST.MAIN_METRIC {name} is not a metric of the {evaluator}; it gives "
            f"{', '.join(k for k, v in metrics.items() if isinstance(v, (int, float)))}."
        )


def _all_finite(tensors) -> bool:
    """Whether every given tensor (None entries aside) is free of NaN and inf, with one sync."""
    checks = [torch.isfinite(t).all() for t in tensors if t is not None]
    return bool(torch.stack(checks).all()) if checks else True


def _scalars(metrics: Dict) -> Dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _records_json(records: Dict) -> Dict[str, List[List[float]]]:
    """{key: [values of entry 0 over the test set, values of entry 1, ...]}; the entries are the
    successive calls of ``ctx.record(key, ...)`` in one forward pass (one per layer for a
    module that records at every layer)."""
    return {key: [torch.cat(per_entry[j]).tolist() for j in sorted(per_entry)] for key, per_entry in records.items()}


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
