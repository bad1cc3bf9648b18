#!/usr/bin/env python
"""mmprompt's prompt tuning side by side with HF PEFT's (``PromptTuningConfig``), in one run.

    python benchmarks/vs_peft.py                      # frozen all-MiniLM-L6-v2, BBC News 16-shot
    python benchmarks/vs_peft.py --steps 100 --num-tokens 20 --lr 0.03 --seed 2

Both sides get the same things:

* the same frozen model: PEFT wraps a copy of the very ``BertModel`` mmprompt's backbone holds
  (``get_peft_model(..., PromptTuningConfig(task_type=FEATURE_EXTRACTION))``), dropout off in both;
* the same head on the same feature: a copy of mmprompt's linear head on the masked mean of the
  article's own tokens (sentence-transformers pooling; the virtual tokens are left out on both sides);
* the same number of virtual tokens and the same initial values (mmprompt's sampled-vocabulary
  init is copied into PEFT's prompt embedding), the same optimizer (the library's AdamW built
  from the same config), the same batches in the same order, the same tokenizer call;
* the same step function (forward, cross-entropy, backward, optimizer step), so the ratio
  measures the two models, not two training loops.

Timing is interleaved: every step runs one mmprompt step and one PEFT step, alternating which
goes first; the first ``--warmup`` steps are not timed; the median is reported, both as wall
time and as the process's CPU time (all threads), which other jobs on a shared machine disturb
far less than wall time. Peak memory is
the peak of live CPU tensor bytes during one training step, from the PyTorch profiler's memory
events (``profile_memory=True``: every allocation and free of the CPU allocator, summed in time
order); ``tracemalloc`` would miss tensors, which torch allocates outside Python's allocator.
Accuracy is on the fixed BBC News test split after the same number of steps.

One semantic difference remains and is printed: PEFT puts the virtual tokens before [CLS]
(position 0), mmprompt after it (its ``prefix`` placement, the ``start`` anchor).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mmprompt.errors import ConfigError, MMPromptError  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(REPO, "configs", "demo", "prompt_tuning.yaml")

#: what mmprompt runs that PEFT's prompt tuning has no setting for, with the config that runs it
PEFT_CANNOT = [
    (
        "learned insertion position, task level (split [P_before; x; P_after] at a learned dpos)",
        "configs/demo/adap_pos.yaml",
    ),
    ("learned insertion position per instance (Linear d -> l+1 on the input)", "configs/demo/adap_ins_pos.yaml"),
    (
        "instance-conditioned prompt pool / learned prompt length",
        "configs/t5_adap_pos_ins_vec.yaml, PROMPT_TUNING.POSITION adap_len",
    ),
    (
        "prompts after [CLS] or before [SEP] (PEFT always prepends at position 0)",
        "PROMPT_TUNING.POSITION prefix/suffix/middle",
    ),
    (
        "SuperPos / Residual token sources and ADePT/DePT offsets composed with any prompt",
        "configs/demo/superpos.yaml, configs/demo/adept.yaml",
    ),
    (
        "deep prompts as hidden states on encoders whose layers ignore past_key_values (T5)",
        "configs/demo/deep_prompt.yaml, DEEP_PROMPT on t5",
    ),
    (
        "P-tuning v2 key/value prefixes in T5's encoder layers (PEFT's prefix tuning passes past_key_values to "
        "the model, and T5 hands them to its decoder only)",
        "PROMPT.METHODS [ptuning_v2] on t5",
    ),
]


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(hidden.dtype)[..., None]
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)


class PeftPromptClassifier(nn.Module):
    """PEFT prompt tuning on a copy of mmprompt's frozen encoder, with a copy of its head.

    ``forward(batch)`` takes the same batch dicts and returns ``{"logits", "loss"}`` like
    mmprompt's model, so both run through one step function.
    """

    def __init__(self, mm_model, num_tokens: int):
        super().__init__()
        from peft import PromptTuningConfig, TaskType, get_peft_model

        tower = mm_model.tower
        self.tokenizer = tower.tokenizer.get()
        self.max_length = mm_model.max_length or tower.tokenizer.max_length
        self.num_tokens = num_tokens
        base = copy.deepcopy(mm_model.backbone.model)
        self.peft = get_peft_model(
            base, PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=num_tokens)
        )
        with torch.no_grad():
            self.prompt_embedding.copy_(mm_prompt_tokens(mm_model))
        self.head = copy.deepcopy(mm_model.head)
        for p in self.head.parameters():
            p.requires_grad_(True)

    @property
    def prompt_embedding(self) -> torch.Tensor:
        return self.peft.prompt_encoder[self.peft.active_adapter].embedding.weight

    def train(self, mode: bool = True):
        super().train(mode)
        self.peft.base_model.train(False)  # as mmprompt's MODEL.BACKBONE.DROPOUT_OFF: frozen model without dropout
        return self

    def forward(self, batch: Dict, ctx=None) -> Dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(batch["text"]), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        out = self.peft(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        feature = masked_mean(out.last_hidden_state[:, self.num_tokens :], enc["attention_mask"])
        logits = self.head(feature)
        result = {"logits": logits}
        if "label" in batch:
            result["loss"] = F.cross_entropy(logits, batch["label"])
        return result


def mm_prompt_tokens(mm_model) -> torch.Tensor:
    """The one (l, d) soft prompt of a prompt-tuning model."""
    found = [(n, p) for n, p in mm_model.prompts.named_parameters() if p.requires_grad]
    if len(found) != 1 or found[0][1].dim() != 2:
        raise ConfigError(
            "vs_peft compares plain prompt tuning: PROMPT.METHODS [prompt_tuning] with "
            f"SOURCE param and a static POSITION; this config trains {[n for n, _ in found]}."
        )
    return found[0][1]


def train_step(model: nn.Module, batch: Dict, optimizer) -> float:
    """One optimizer step, identical for both sides."""
    out = model(batch, ctx=model.new_context()) if hasattr(model, "new_context") else model(batch)
    out["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if hasattr(model, "step"):
        model.step += 1
    return float(out["loss"].detach())


def peak_step_bytes(model: nn.Module, batch: Dict, optimizer) -> int:
    """Peak of live CPU tensor bytes during one training step (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_step(model, batch, optimizer)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints a start/stop line to stderr on every use."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@torch.no_grad()
def evaluate_interleaved(models: Dict[str, nn.Module], items, batch_size: int):
    """Test accuracy (%) of each model and the CPU seconds its forward passes took, batch by
    batch in alternating order."""
    correct = {name: 0 for name in models}
    cpu = {name: 0.0 for name in models}
    for m in models.values():
        m.eval()
    for j, i in enumerate(range(0, len(items), batch_size)):
        chunk = items[i : i + batch_size]
        labels = torch.tensor([d.label for d in chunk])
        for name in list(models) if j % 2 == 0 else list(models)[::-1]:
            start = time.process_time()
            logits = models[name]({"text": [d.text for d in chunk]})["logits"]
            cpu[name] += time.process_time() - start
            correct[name] += int((logits.argmax(1) == labels).sum())
    for m in models.values():
        m.train()
    return {name: 100.0 * c / len(items) for name, c in correct.items()}, cpu


def batches(cfg, items, steps: int) -> List[Dict]:
    """``steps`` training batches from the library's loader, epoch after epoch."""
    from mmprompt.data.build import build_loader

    loader = build_loader(cfg, items, is_train=True)
    out: List[Dict] = []
    while len(out) < steps:
        for batch in loader:
            out.append(batch)
            if len(out) == steps:
                break
    return out


def compare(
    cfg, steps: int, warmup: int = 2, memory_repeats: int = 3, test_items: Optional[int] = None, progress: bool = False
) -> Dict:
    """Train mmprompt's and PEFT's prompt tuning side by side; timings, memory and accuracy."""
    from mmprompt.build import build_model
    from mmprompt.data.build import build_dataset
    from mmprompt.engine.optim import build_optimizer

    if steps <= warmup:
        raise ConfigError(f"--steps ({steps}) must be larger than --warmup ({warmup}) to time anything.")
    torch.manual_seed(max(cfg.SEED, 0))
    dataset = build_dataset(cfg)
    mm = build_model(cfg, list(dataset.classnames))
    num_tokens = mm_prompt_tokens(mm).shape[0]
    peft_side = PeftPromptClassifier(mm, num_tokens)
    models = {"mmprompt": mm.train(), "peft": peft_side.train()}
    optimizers = {name: build_optimizer(m, cfg) for name, m in models.items()}
    trainable = {name: sum(p.numel() for p in m.parameters() if p.requires_grad) for name, m in models.items()}
    same_init = torch.equal(mm_prompt_tokens(mm).detach(), peft_side.prompt_embedding.detach())

    train_batches = batches(cfg, dataset.train_x, steps)
    times: Dict[str, List[float]] = {"mmprompt": [], "peft": []}
    losses: Dict[str, List[float]] = {"mmprompt": [], "peft": []}
    cpu_times: Dict[str, List[float]] = {"mmprompt": [], "peft": []}
    for i, batch in enumerate(train_batches):
        order = ["mmprompt", "peft"] if i % 2 == 0 else ["peft", "mmprompt"]
        for name in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            losses[name].append(train_step(models[name], batch, optimizers[name]))
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
        if progress:
            print(
                f"  step {i + 1}/{steps}: loss mmprompt {losses['mmprompt'][-1]:.4f}  peft {losses['peft'][-1]:.4f}",
                flush=True,
            )

    # Memory after training, on the same batch for both, alternating; the largest of the repeats.
    memory = {"mmprompt": 0, "peft": 0}
    for r in range(memory_repeats):
        for name in ["mmprompt", "peft"] if r % 2 == 0 else ["peft", "mmprompt"]:
            memory[name] = max(memory[name], peak_step_bytes(models[name], train_batches[0], optimizers[name]))

    # every k-th article: the test split is ordered by class, so a head slice would hold one class
    test = dataset.test[:: max(1, len(dataset.test) // test_items)][:test_items] if test_items else dataset.test
    acc, eval_cpu = evaluate_interleaved(models, test, cfg.DATALOADER.TEST.BATCH_SIZE)

    step_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    step_cpu_ms = {name: 1000 * statistics.median(t) for name, t in cpu_times.items()}
    p = sum(acc.values()) / 200.0
    return {
        "steps": steps,
        "timed_steps": steps - warmup,
        "batch_size": cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
        "num_virtual_tokens": num_tokens,
        "max_length": cfg.MODEL.TEXT.MAX_LENGTH,
        "same_init": same_init,
        "trainable_params": trainable,
        "step_ms_median": step_ms,
        "step_time_ratio": step_ms["mmprompt"] / step_ms["peft"],
        "step_cpu_ms_median": step_cpu_ms,
        "step_cpu_ratio": step_cpu_ms["mmprompt"] / step_cpu_ms["peft"],
        "peak_step_bytes": memory,
        "peak_memory_ratio": memory["mmprompt"] / memory["peft"],
        "test_accuracy": acc,
        "test_items": len(test),
        # one standard error of a test accuracy near these values: the noise a single run has
        "accuracy_std_error": 100.0 * math.sqrt(max(p * (1 - p), 1e-12) / len(test)),
        "eval_cpu_seconds": eval_cpu,
        "eval_cpu_ratio": eval_cpu["mmprompt"] / eval_cpu["peft"],
        "final_loss": {name: l[-1] for name, l in losses.items()},
    }


def report(r: Dict) -> str:
    mb = {k: v / 2**20 for k, v in r["peak_step_bytes"].items()}
    diff = r["test_accuracy"]["mmprompt"] - r["test_accuracy"]["peft"]
    lines = [
        f"prompt tuning, {r['num_virtual_tokens']} virtual tokens, frozen encoder, {r['steps']} steps of "
        f"batch {r['batch_size']} (max length {r['max_length']}), same init: {r['same_init']}",
        f"trainable parameters: mmprompt {r['trainable_params']['mmprompt']:,}  peft {r['trainable_params']['peft']:,}",
        "",
        "                         mmprompt        PEFT     ratio (mmprompt/PEFT)",
        f"train step, wall (ms)  {r['step_ms_median']['mmprompt']:10.1f}  {r['step_ms_median']['peft']:10.1f}"
        f"     {r['step_time_ratio']:.3f}x   (median of {r['timed_steps']} interleaved steps each)",
        f"train step, CPU (ms)   {r['step_cpu_ms_median']['mmprompt']:10.1f}  {r['step_cpu_ms_median']['peft']:10.1f}"
        f"     {r['step_cpu_ratio']:.3f}x   (process CPU time, all threads: robust to a shared machine)",
        f"peak step memory (MiB) {mb['mmprompt']:10.1f}  {mb['peft']:10.1f}     {r['peak_memory_ratio']:.3f}x"
        "   (live CPU tensor bytes, torch profiler memory events)",
        f"test accuracy (%)      {r['test_accuracy']['mmprompt']:10.2f}  {r['test_accuracy']['peft']:10.2f}"
        f"     diff {diff:+.2f} pts; one standard error on {r['test_items']} articles = {r['accuracy_std_error']:.2f} pts",
        f"test pass, CPU (s)     {r['eval_cpu_seconds']['mmprompt']:10.2f}  {r['eval_cpu_seconds']['peft']:10.2f}"
        f"     {r['eval_cpu_ratio']:.3f}x   (interleaved by batch; PEFT's BertModel also runs its unused pooler)",
        "",
        "Placement: PEFT prepends the virtual tokens before [CLS]; mmprompt's prefix puts them right after it.",
        "What PEFT's prompt tuning cannot do and mmprompt does (config that runs it):",
    ]
    lines += [f"  - {what}: {where}" for what, where in PEFT_CANNOT]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config-file", default=DEFAULT_CONFIG, help="an mmprompt prompt-tuning config (default: the demo's)"
    )
    p.add_argument(
        "--steps", type=int, default=50, help="training steps of each side (default 50 = the demo's 10 epochs)"
    )
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--shots", type=int, default=None, help="DATASET.NUM_SHOTS (default: the config's, 16)")
    p.add_argument("--num-tokens", type=int, default=None, help="virtual tokens (default: the config's, 20)")
    p.add_argument("--lr", type=float, default=None, help="OPTIM.LR of both (default: the config's)")
    p.add_argument("--seed", type=int, default=1, help="seed of the init, the few-shot sample and the batch order")
    p.add_argument(
        "--test-items", type=int, default=None, help="evaluate on N test articles spread over the split (default: all)"
    )
    p.add_argument("--json", default="", help="also write the numbers to this JSON file")
    p.add_argument("--progress", action="store_true", help="print the loss of both sides at every step")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    return p


def load_config(args):
    from mmprompt.config import load_cfg

    opts = ["SEED", str(args.seed), "USE_CUDA", "False"]
    if args.shots is not None:
        opts += ["DATASET.NUM_SHOTS", str(args.shots)]
    if args.num_tokens is not None:
        opts += ["PROMPT.PROMPT_TUNING.NUM_TOKENS", str(args.num_tokens)]
    if args.lr is not None:
        opts += ["OPTIM.LR", str(args.lr)]
    cfg = load_cfg(args.config_file, opts=opts + list(args.opts))
    if list(cfg.PROMPT.METHODS) != ["prompt_tuning"] or cfg.PROMPT.PROMPT_TUNING.SOURCE != "param":
        raise ConfigError(
            f"{args.config_file} is not plain prompt tuning (PROMPT.METHODS [prompt_tuning], "
            "SOURCE param): PEFT's PromptTuningConfig has nothing else to compare with."
        )
    if cfg.PROMPT.PROMPT_TUNING.POSITION != "prefix":
        raise ConfigError("PEFT only prepends prompts; compare with PROMPT.PROMPT_TUNING.POSITION prefix.")
    cfg.freeze()
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import peft  # noqa: F401
    except ImportError:
        raise MMPromptError(
            "benchmarks/vs_peft.py needs HF PEFT: pip install peft (or pip install -e '.[peft]')."
        ) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cfg = load_config(args)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, peft {peft.__version__}; "
        f"{cfg.MODEL.BACKBONE.ARCH} on {cfg.DATASET.NAME}, {cfg.DATASET.NUM_SHOTS} shots/class, seed {cfg.SEED}",
        flush=True,
    )
    result = compare(cfg, args.steps, args.warmup, test_items=args.test_items, progress=args.progress)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    run_cli(main)
