"""Checks of a whole merged config, run before anything heavy (model, data) is built.

:func:`validate_config` raises one :class:`ConfigError` listing every problem it finds: numbers
that are not finite or out of range, names no registry or option list knows, a dataset root that
does not exist, a prompt method left with nothing to train. Types are already checked when the
config is merged (:mod:`mmprompt.config.config`); what is checked here is whether the values can
work together. Option lists that belong to a module (optimizers, precisions, transforms) are asked
of that module, so they are written down once.
"""

from __future__ import annotations

import math
import os
from typing import Callable, List

from ..errors import ConfigError, MMPromptError

SUBSAMPLE = ("all", "base", "new")
TEST_SPLITS = ("test", "val")
FINAL_MODELS = ("last_step", "best_val")
OPTIMIZERS = ("sgd", "adamw", "adafactor")
SCHEDULERS = ("cosine", "linear", "constant")
SCHEDULER_UNITS = ("epoch", "iter")
WARMUP_TYPES = ("constant", "linear")
DIST_BACKENDS = ("auto", "nccl", "gloo")
NONFINITE = ("stop", "skip")

# prompt length keys of each method's config node: at least one of them must be > 0 for the
# method to have anything to train (DePT / ADePT train their offsets even without a prompt)
TRAINED_SIZES = {
    "vpt": ("NUM_TOKENS",),
    "coop": ("N_CTX",),
    "maple": ("N_CTX",),
    "prompt_tuning": ("NUM_TOKENS",),
    "ptuning_v2": ("NUM_TOKENS",),
    "dept": ("NUM_TOKENS", "RANK"),
    "adept": ("NUM_TOKENS", "BOTTLENECK"),
}


def validate_config(cfg, *, training: bool = True) -> None:
    """Raise one ConfigError naming every problem of ``cfg`` (``training``: also what only a
    training run needs, e.g. epochs and something to train)."""
    problems = config_problems(cfg, training=training)
    if problems:
        raise ConfigError(
            f"The config has {len(problems)} problem{'s' * (len(problems) > 1)}:\n  - " + "\n  - ".join(problems)
        )


def config_problems(cfg, *, training: bool = True) -> List[str]:
    problems: List[str] = []
    _finite_numbers(cfg, "", problems)
    _optim(cfg, training, problems)
    _train(cfg, problems)
    _data(cfg, training, problems)
    _model(cfg, training, problems)
    return problems


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite_numbers(node, prefix: str, problems: List[str]) -> None:
    for key, value in node.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            _finite_numbers(value, full + ".", problems)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{full} is {value}: every number must be finite")
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            problems.append(f"{full} {value} does not fit in 64 bits")
        elif isinstance(value, str) and "\x00" in value:
            problems.append(f"{full} {value!r} contains a NUL character")
        elif isinstance(value, (list, tuple)) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            problems.append(f"{full} {list(value)} holds a NaN or infinite number")


def _check(problems: List[str], key: str, value, ok: Callable[[object], bool], want: str) -> None:
    if _is_number(value) and math.isfinite(value) and not ok(value):  # non-finite ones are reported once, above
        problems.append(f"{key} must be {want}, got {value!r}")


def _one_of(problems: List[str], key: str, value: str, options, lower: bool = False) -> None:
    if (value.lower() if lower else value) not in options:
        problems.append(f"{key} must be one of {', '.join(options)}; got {value!r}")


def _repeated(problems: List[str], key: str, values, why: str) -> None:
    seen = [v for i, v in enumerate(values) if v in list(values)[:i]]
    if seen:
        problems.append(
            f"{key} lists {', '.join(map(repr, dict.fromkeys(seen)))} more than once ({why}); give each once"
        )


def _registered(problems: List[str], registry, key: str, name: str) -> None:
    try:
        registry.get(name)
    except MMPromptError as e:
        problems.append(f"{key}: {e}")


def _optim(cfg, training: bool, problems: List[str]) -> None:
    o = cfg.OPTIM
    _one_of(problems, "OPTIM.NAME", o.NAME, OPTIMIZERS, lower=True)
    _one_of(problems, "OPTIM.LR_SCHEDULER", o.LR_SCHEDULER, SCHEDULERS)
    _one_of(problems, "OPTIM.SCHEDULER_UNIT", o.SCHEDULER_UNIT, SCHEDULER_UNITS)
    _one_of(problems, "OPTIM.WARMUP_TYPE", o.WARMUP_TYPE, WARMUP_TYPES)
    for key in ("LR", "WEIGHT_DECAY", "WARMUP_CONS_LR", "WARMUP_MIN_LR"):
        _check(problems, f"OPTIM.{key}", o[key], lambda v: v >= 0, ">= 0")
    _check(problems, "OPTIM.MOMENTUM", o.MOMENTUM, lambda v: 0 <= v < 1, "in [0, 1)")
    _check(problems, "OPTIM.SGD_DAMPNING", o.SGD_DAMPNING, lambda v: 0 <= v <= 1, "in [0, 1]")
    for key in ("ADAM_BETA1", "ADAM_BETA2"):
        _check(problems, f"OPTIM.{key}", o[key], lambda v: 0 <= v < 1, "in [0, 1)")
    _check(problems, "OPTIM.ADAM_EPS", o.ADAM_EPS, lambda v: v > 0, "> 0")
    _check(problems, "OPTIM.MAX_ITER", o.MAX_ITER, lambda v: v >= 0, ">= 0 (0 = train for OPTIM.MAX_EPOCH epochs)")
    _check(problems, "OPTIM.WARMUP_ITERS", o.WARMUP_ITERS, lambda v: v >= 0, ">= 0")
    if training and o.MAX_ITER <= 0:
        _check(problems, "OPTIM.MAX_EPOCH", o.MAX_EPOCH, lambda v: v >= 1, ">= 1 (or set OPTIM.MAX_ITER > 0)")
    _group_lrs(o.GROUP_LR, "OPTIM.GROUP_LR.", problems)


def _group_lrs(node, prefix: str, problems: List[str]) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _group_lrs(value, f"{prefix}{key}.", problems)
        elif not _is_number(value):
            problems.append(f"{prefix}{key} must be a learning rate (a number), got {value!r}")
        else:
            _check(problems, f"{prefix}{key}", value, lambda v: v >= 0, ">= 0")


def _train(cfg, problems: List[str]) -> None:
    t = cfg.TRAIN
    import torch

    from ..engine.trainer import resolve_precision

    # the device the trainer will pick (mmprompt.engine.distributed.init_distributed)
    device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
    try:
        resolve_precision(t.PRECISION, device, cfg.MODEL.BACKBONE.FREEZE)
    except ConfigError as e:
        problems.append(str(e))
    _one_of(problems, "TRAIN.DIST_BACKEND", t.DIST_BACKEND, DIST_BACKENDS)
    _one_of(problems, "TRAIN.NONFINITE", t.NONFINITE, NONFINITE)
    for key, low in (
        ("GRAD_ACCUM_STEPS", 1),
        ("PRINT_FREQ", 1),
        ("CHECKPOINT_PERIOD", 0),
        ("EVAL_PERIOD", 0),
        ("EARLY_STOP_PATIENCE", 0),
        ("MAX_SKIPPED_STEPS", 0),
    ):
        _check(problems, f"TRAIN.{key}", t[key], lambda v, low=low: v >= low, f">= {low}")
    _check(problems, "TRAIN.GRAD_CLIP_NORM", t.GRAD_CLIP_NORM, lambda v: v >= 0, ">= 0 (0 = no clipping)")
    s = cfg.TEST
    _one_of(problems, "TEST.SPLIT", s.SPLIT, TEST_SPLITS)
    _one_of(problems, "TEST.FINAL_MODEL", s.FINAL_MODEL, FINAL_MODELS)
    if s.EVALUATOR:
        from ..registry import EVALUATORS

        _registered(problems, EVALUATORS, "TEST.EVALUATOR", s.EVALUATOR)


def _data(cfg, training: bool, problems: List[str]) -> None:
    from ..registry import DATASETS

    d = cfg.DATASET
    if not d.NAME:
        problems.append("DATASET.NAME is empty: set it to a dataset (or use --dataset-config-file)")
    else:
        _registered(problems, DATASETS, "DATASET.NAME", d.NAME)
    _repeated(problems, "DATASET.TEST_DATASETS", d.TEST_DATASETS, "its results would be written over each other")
    for name in d.TEST_DATASETS:
        if not isinstance(name, str):
            problems.append(f"DATASET.TEST_DATASETS holds {name!r}, not a dataset name")
        else:
            _registered(problems, DATASETS, "DATASET.TEST_DATASETS", name)
    if not any(_reads_root(DATASETS, name) for name in [d.NAME, *d.TEST_DATASETS]):
        pass  # e.g. BBC News, which ships with a package: a missing ROOT would be a false refusal
    elif not d.ROOT:
        problems.append("DATASET.ROOT is empty: set it (or --root) to the folder holding the datasets")
    elif not os.path.isdir(os.path.expanduser(d.ROOT)):
        problems.append(f"DATASET.ROOT {d.ROOT} is not a folder that exists")
    if d.TEXT.DATA_DIR and not os.path.isdir(os.path.expanduser(d.TEXT.DATA_DIR)):
        problems.append(f"DATASET.TEXT.DATA_DIR {d.TEXT.DATA_DIR} is not a folder that exists")
    _one_of(problems, "DATASET.SUBSAMPLE_CLASSES", d.SUBSAMPLE_CLASSES, SUBSAMPLE, lower=True)
    _check(problems, "DATASET.NUM_SHOTS", d.NUM_SHOTS, lambda v: v >= -1, ">= 1 for few-shot, or -1 / 0 for all items")
    dl = cfg.DATALOADER
    _check(problems, "DATALOADER.NUM_WORKERS", dl.NUM_WORKERS, lambda v: v >= 0, ">= 0 (0 = load in the main process)")
    _check(problems, "DATALOADER.TRAIN_X.BATCH_SIZE", dl.TRAIN_X.BATCH_SIZE, lambda v: v >= 1, ">= 1")
    _check(problems, "DATALOADER.TEST.BATCH_SIZE", dl.TEST.BATCH_SIZE, lambda v: v >= 1, ">= 1")
    _input(cfg, problems)


def _reads_root(registry, name) -> bool:
    """Whether the dataset ``name`` reads DATASET.ROOT: a builder that never does says so with
    ``reads_root = False``; unknown names count as reading it (they are reported on their own)."""
    try:
        return getattr(registry.get(name), "reads_root", True) if isinstance(name, str) and name else True
    except MMPromptError:
        return True


def _numbers(value) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)


def _input(cfg, problems: List[str]) -> None:
    i = cfg.INPUT
    before = len(problems)
    size = list(i.SIZE)
    if size and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        problems.append(
            f"INPUT.SIZE must be (height, width), two whole numbers > 0; got {i.SIZE} "
            f"(or () to follow the backbone's input size)"
        )
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        value = list(i[key])
        if value and value != ["auto"] and (not _numbers(value) or len(value) != 3):
            problems.append(f"INPUT.{key} must be 3 numbers (one per channel) or empty (auto); got {value}")
    std = list(i.PIXEL_STD)
    if _numbers(std) and any(v <= 0 for v in std):
        problems.append(f"INPUT.PIXEL_STD must be > 0 (images are divided by it); got {std}")
    scale = list(i.RRCROP_SCALE)
    if not (_numbers(scale) and len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
        problems.append(
            f"INPUT.RRCROP_SCALE must be (min, max) area fractions with 0 < min <= max <= 1; got {i.RRCROP_SCALE}"
        )
    # 0 = the backbone's own resize (mmprompt.data.build.resolve_preprocess)
    _check(problems, "INPUT.TEST_RESIZE_RATIO", i.TEST_RESIZE_RATIO, lambda v: v >= 0, ">= 0 (0 = the backbone's)")
    _check(problems, "INPUT.RESIZE_SIZE", i.RESIZE_SIZE, lambda v: v >= 0, ">= 0 (0 = from SIZE)")
    if len(problems) == before:  # the rest (interpolation, transform names, a size the backbone
        # cannot take) as the transform builder and the backbone's preprocess metadata see it
        from ..data.build import build_transform, check_input_size

        checks = [
            lambda: build_transform(cfg, True),
            lambda: build_transform(cfg, False),
            lambda: check_input_size(cfg),
        ]
        for check in checks:
            try:
                check()
            except ConfigError as e:
                if str(e) not in problems:
                    problems.append(str(e))


def _model(cfg, training: bool, problems: List[str]) -> None:
    from ..registry import BACKBONES, MODELS, PLACEMENTS, PROMPT_SOURCES, PROMPTS

    m = cfg.MODEL
    _registered(problems, MODELS, "MODEL.NAME", m.NAME)
    _registered(problems, BACKBONES, "MODEL.BACKBONE.NAME", m.BACKBONE.NAME)
    _check(problems, "MODEL.HEAD.DROPOUT", m.HEAD.DROPOUT, lambda v: 0 <= v < 1, "in [0, 1)")
    _check(problems, "MODEL.HEAD.NUM_CLASSES", m.HEAD.NUM_CLASSES, lambda v: v >= 0, ">= 0 (0 = from the dataset)")
    _check(problems, "MODEL.TEXT.MAX_LENGTH", m.TEXT.MAX_LENGTH, lambda v: v >= 1, ">= 1")
    if m.INIT_WEIGHTS and not os.path.isfile(m.INIT_WEIGHTS):
        problems.append(f"MODEL.INIT_WEIGHTS {m.INIT_WEIGHTS} is not a file")
    _repeated(problems, "PROMPT.METHODS", cfg.PROMPT.METHODS, "both copies would read the same config node")
    for name in cfg.PROMPT.METHODS:
        if not isinstance(name, str):
            problems.append(f"PROMPT.METHODS holds {name!r}, not a method name")
            continue
        before = len(problems)
        _registered(problems, PROMPTS, "PROMPT.METHODS", name)
        node_name = name.upper()
        if len(problems) > before or node_name not in cfg.PROMPT:
            continue
        node = cfg.PROMPT[node_name]
        for key in ("SOURCE",):
            if key in node:
                _registered(problems, PROMPT_SOURCES, f"PROMPT.{node_name}.{key}", node[key])
        for key in ("POSITION", "VISION_POSITION"):
            if key in node:
                _registered(problems, PLACEMENTS, f"PROMPT.{node_name}.{key}", node[key])
        sizes = [k for k in TRAINED_SIZES.get(name, ()) if k in node]
        for key in sizes:
            _check(problems, f"PROMPT.{node_name}.{key}", node[key], lambda v: v >= 0, ">= 0")
        if training and sizes and all(_is_number(node[k]) and node[k] == 0 for k in sizes):
            problems.append(
                f"PROMPT.{node_name}: {' and '.join(f'{k} 0' for k in sizes)} leaves the {name} method "
                "with nothing to train; set a length >= 1, or remove it from PROMPT.METHODS"
            )
    _clip_prompt_sizes(cfg, problems)
    dyn = cfg.PROMPT.DYNAMIC
    for key in ("TAU0", "TAU_MIN", "STEP_SCALE"):
        _check(problems, f"PROMPT.DYNAMIC.{key}", dyn[key], lambda v: v > 0, "> 0")
    _check(problems, "PROMPT.DYNAMIC.GAMMA", dyn.GAMMA, lambda v: v >= 0, ">= 0")
    _check(problems, "PROMPT.DYNAMIC.POOL_SIZE", dyn.POOL_SIZE, lambda v: v >= 1, ">= 1")
    _check(problems, "PROMPT.DYNAMIC.CHOICE_DEPTH", dyn.CHOICE_DEPTH, lambda v: v >= 1, ">= 1")
    _check(problems, "PROMPT.SUPERPOS.M", cfg.PROMPT.SUPERPOS.M, lambda v: v >= 1, ">= 1")
    _check(problems, "PROMPT.RESIDUAL.HIDDEN", cfg.PROMPT.RESIDUAL.HIDDEN, lambda v: v >= 1, ">= 1")


def _clip_prompt_sizes(cfg, problems: List[str]) -> None:
    """CLIP prompt sizes against what an open_clip architecture's config states, so they are found
    before the model (some 20 s at ViT-B/16) is built: MaPLe's depths against the towers' layers
    (:meth:`MaPLe.depths`, the rule its setup applies), and a CoOp / MaPLe text context that leaves
    no room for a class name in the text tower's positions. What depends on the class names (a
    long name pushing EOT past the last position) is found at the first forward pass."""
    methods = [m for m in ("coop", "maple") if m in cfg.PROMPT.METHODS]
    if cfg.MODEL.BACKBONE.NAME != "open_clip" or not methods:
        return
    from ..backbones.open_clip import architecture_sizes
    from ..prompts.coop import coop_context_length
    from ..prompts.maple import MaPLe

    try:
        sizes = architecture_sizes(cfg.MODEL.BACKBONE.ARCH, dict(cfg.MODEL.BACKBONE.KWARGS))
        if sizes is None:
            return
        if "maple" in methods:
            MaPLe.from_config(cfg).depths(sizes)
    except ConfigError as e:
        problems.append(str(e))
        return
    except MMPromptError:  # open_clip not installed: building the model says so
        return
    room = sizes["context_length"] - 4  # SOT, at least one class-name token, the "." CoOp/MaPLe add, EOT
    contexts = {"coop": coop_context_length(cfg.PROMPT.COOP.CTX_INIT, cfg.PROMPT.COOP.N_CTX)}
    if cfg.PROMPT.MAPLE.MODE in ("maple", "deep_language", "ivlp"):
        contexts["maple"] = cfg.PROMPT.MAPLE.N_CTX
    for method in methods:
        n_ctx = contexts.get(method)
        if n_ctx is not None and n_ctx > room:
            problems.append(
                f"PROMPT.{method.upper()}.N_CTX gives {n_ctx} context tokens, more than the {room} the text "
                f"tower's {sizes['context_length']} positions leave beside SOT, a class name, its '.' and EOT; "
                f"use at most {room} (fewer for long class names)"
            )
