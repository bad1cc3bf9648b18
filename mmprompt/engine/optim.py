"""Optimizers with per-group learning rates and weight decay, and warm-up schedules.

Parameter groups come from the model itself: any submodule may declare
``param_groups() -> {group: [names relative to it]}`` (DePT's offsets get their own lr) and
``no_weight_decay() -> [names relative to it]`` (SuperPos's ``E``). ``OPTIM.GROUP_LR`` maps a
declared group, or a parameter-name prefix such as ``head``, to its learning rate.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..errors import ConfigError


def _declared(model: nn.Module, method: str) -> List[Tuple[str, object]]:
    """(module prefix, result of module.method()) for every submodule that declares it."""
    found = []
    for prefix, module in model.named_modules():
        fn = getattr(module, method, None)
        if callable(fn):
            found.append((prefix + "." if prefix else "", fn()))
    return found


def _join(prefix: str, name: str) -> str:
    return prefix + name if name else prefix.rstrip(".")


def no_weight_decay_names(model: nn.Module) -> set:
    """Full names of trainable parameters some module excludes from weight decay."""
    names = set()
    for prefix, rel_names in _declared(model, "no_weight_decay"):
        names.update(_join(prefix, n) for n in rel_names)
    return names


def _flat_group_lr(node, prefix: str = "") -> Dict[str, float]:
    """GROUP_LR entries; a dotted prefix (``prompts.methods.0``) arrives as nested nodes."""
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flat_group_lr(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = float(v)
        else:
            raise ConfigError(f"OPTIM.GROUP_LR.{prefix}{k} must be a learning rate (a number), got {v!r}.")
    return out


def build_param_groups(model: nn.Module, cfg) -> List[Dict]:
    """Trainable parameters split by (lr group, weight decay on/off), each with its own options."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise ConfigError(
            "The model has no trainable parameters: check PROMPT.METHODS and "
            "MODEL.BACKBONE.FREEZE (a frozen backbone with no prompts and no head "
            "has nothing to train)."
        )
    group_lr = _flat_group_lr(cfg.OPTIM.GROUP_LR)

    declared: Dict[str, set] = {}
    for prefix, groups in _declared(model, "param_groups"):
        if not isinstance(groups, dict):  # a library module's unrelated method of that name
            continue
        for group, rel_names in groups.items():
            declared.setdefault(group, set()).update(_join(prefix, n) for n in rel_names)

    group_of: Dict[str, str] = {}
    for group in group_lr:
        if group in declared:
            members = declared[group] & set(trainable)
        else:  # a name prefix, e.g. "head" or "prompts.methods.0"
            members = {n for n in trainable if n == group or n.startswith(group + ".")}
        if not members:
            known = sorted(declared) or ["(none declared)"]
            raise ConfigError(
                f"OPTIM.GROUP_LR.{group} matches no trainable parameter: it is neither "
                f"a group the prompt modules declare ({', '.join(known)}) nor a prefix "
                f"of a trainable parameter name (e.g. {next(iter(trainable))})."
            )
        for n in members:
            if n in group_of:
                raise ConfigError(f"Parameter {n} is in two OPTIM.GROUP_LR groups: {group_of[n]} and {group}")
            group_of[n] = group

    no_wd = no_weight_decay_names(model)
    buckets: Dict[Tuple[str, bool], List[nn.Parameter]] = {}
    names: Dict[Tuple[str, bool], List[str]] = {}
    for n, p in trainable.items():
        key = (group_of.get(n, "default"), n in no_wd)
        buckets.setdefault(key, []).append(p)
        names.setdefault(key, []).append(n)
    param_groups = []
    for (group, skip_wd), params in buckets.items():
        param_groups.append(
            {
                "params": params,
                "param_names": names[(group, skip_wd)],
                "name": group + (" (no weight decay)" if skip_wd else ""),
                "lr": group_lr.get(group, cfg.OPTIM.LR),
                "weight_decay": 0.0 if skip_wd else cfg.OPTIM.WEIGHT_DECAY,
            }
        )
    return param_groups


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    groups = build_param_groups(model, cfg)
    name = cfg.OPTIM.NAME.lower()
    if name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.OPTIM.LR,
            momentum=cfg.OPTIM.MOMENTUM,
            dampening=cfg.OPTIM.SGD_DAMPNING,
            nesterov=cfg.OPTIM.SGD_NESTEROV,
        )
    if name == "adamw":
        return torch.optim.AdamW(
            groups, lr=cfg.OPTIM.LR, betas=(cfg.OPTIM.ADAM_BETA1, cfg.OPTIM.ADAM_BETA2), eps=cfg.OPTIM.ADAM_EPS
        )
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # Fixed lr (the seed paper's 0.3): no relative step, no scaling by parameter RMS.
        return Adafactor(groups, lr=cfg.OPTIM.LR, scale_parameter=False, relative_step=False, warmup_init=False)
    raise ConfigError(f"Unknown OPTIM.NAME '{cfg.OPTIM.NAME}': use sgd, adamw or adafactor.")


class WarmupScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Warm-up then cosine / linear / constant, stepped once per optimizer step.

    In ``epoch`` units the lr is a function of completed epochs only, exactly as Dassl's
    ``ConstantWarmupScheduler``/``LinearWarmupScheduler`` wrapping ``CosineAnnealingLR(MAX_EPOCH)``
    stepped per epoch: epoch ``e >= W`` trains at ``base * (1 + cos(pi * (e - W) / MAX_EPOCH)) / 2``.
    With ``epoch_decay_span="after_warmup"`` the epoch form spans ``MAX_EPOCH - W`` epochs instead
    (KMnP/vpt's ``WarmupCosineSchedule`` stepped per epoch, lr 0 after the last one).
    In ``iter`` units it follows the usual per-step form over ``T - W`` steps.
    """

    def __init__(
        self,
        optimizer,
        *,
        schedule: str,
        unit: str,
        total: int,
        warmup: int,
        warmup_type: str,
        warmup_cons_lr: float,
        warmup_min_lr: float,
        steps_per_unit: int,
        epoch_decay_span: str = "max_epoch",
    ):
        if schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"Unknown OPTIM.LR_SCHEDULER '{schedule}': use cosine, linear or constant.")
        if warmup_type not in ("constant", "linear"):
            raise ConfigError(f"Unknown OPTIM.WARMUP_TYPE '{warmup_type}': use constant or linear.")
        if epoch_decay_span not in ("max_epoch", "after_warmup"):
            raise ConfigError(f"Unknown OPTIM.EPOCH_DECAY_SPAN '{epoch_decay_span}': use max_epoch or after_warmup.")
        self.epoch_decay_span = epoch_decay_span
        self.schedule, self.unit, self.total = schedule, unit, max(int(total), 1)
        self.warmup, self.warmup_type = max(int(warmup), 0), warmup_type
        self.warmup_cons_lr, self.warmup_min_lr = warmup_cons_lr, warmup_min_lr
        self.steps_per_unit = max(int(steps_per_unit), 1)
        super().__init__(optimizer)

    def _lr(self, base: float, t: int) -> float:
        w = self.warmup
        if t < w:
            if self.warmup_type == "constant":
                return self.warmup_cons_lr
            return self.warmup_min_lr if t == 0 else base * t / w
        if self.schedule == "constant":
            return base
        if self.unit == "epoch" and self.epoch_decay_span == "max_epoch":
            # Dassl: the successor counts from the end of warm-up over MAX_EPOCH
            progress = (t - w) / self.total
        else:
            progress = (t - w) / max(self.total - w, 1)
        progress = min(max(progress, 0.0), 1.0)
        if self.schedule == "cosine":
            return base * 0.5 * (1.0 + math.cos(math.pi * progress))
        return base * (1.0 - progress)

    def get_lr(self):
        t = self.last_epoch // self.steps_per_unit
        return [self._lr(base, t) for base in self.base_lrs]


def build_lr_scheduler(optimizer, cfg, steps_per_epoch: int, total_steps: int) -> WarmupScheduler:
    unit = cfg.OPTIM.SCHEDULER_UNIT
    if unit == "epoch":
        total, warmup, per_unit = cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WARMUP_EPOCH, steps_per_epoch
        if cfg.OPTIM.MAX_ITER > 0:
            total = math.ceil(total_steps / steps_per_epoch)
    elif unit == "iter":
        total, warmup, per_unit = total_steps, cfg.OPTIM.WARMUP_ITERS, 1
    else:
        raise ConfigError(f"Unknown OPTIM.SCHEDULER_UNIT '{unit}': use epoch or iter.")
    return WarmupScheduler(
        optimizer,
        schedule=cfg.OPTIM.LR_SCHEDULER,
        unit=unit,
        total=total,
        warmup=warmup,
        warmup_type=cfg.OPTIM.WARMUP_TYPE,
        warmup_cons_lr=cfg.OPTIM.WARMUP_CONS_LR,
        warmup_min_lr=cfg.OPTIM.WARMUP_MIN_LR,
        steps_per_unit=per_unit,
        epoch_decay_span=cfg.OPTIM.EPOCH_DECAY_SPAN,
    )
