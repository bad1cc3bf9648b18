#!/usr/bin/env python
"""Training-step cost of dynamic prompting next to fixed prompt tuning, measured side by side.

    python benchmarks/dynamic_overhead.py [--reps 10] [--threads 1] [--clock cpu|wall] [--quick] [--breakdown]

For a tiny random BERT and the packaged all-MiniLM-L6-v2 (BERT layout, 6 layers, width 384,
offline), it times one training step (forward, backward, optimizer step) of prompt tuning with
l = 20 tokens on pre-tokenized padded batches:

* ``fixed``: the plain prefix prompt (the baseline);
* ``adap_pos``, ``adap_ins_pos``, ``adap_len``, ``adap_ins_vec`` (pool source, prefix),
  ``adap_ins_vec_pos`` (pool source + instance position): mmprompt's dynamic prompting, one
  backbone forward, one batched gather, the straight-through gradient computed in backward;
  ``adap_pos_dpt``, ``adap_ins_pos_dpt``: the same with ``ARRANGEMENT dpt`` (the authors' code's
  rotated prompt, whose choice gradient needs (l, l) products instead of prefix sums);
* ``naive_ins_pos``: the same instance-level position computed the direct way: a second,
  prompt-free forward of the frozen model for the instance feature, and a Python loop over
  samples and positions building the one-hot-weighted sum of all l+1 arrangements.

Times are the thread's CPU time by default (one torch thread), so other processes on a
shared machine do not inflate them; ``--clock wall`` for elapsed time. Variants run interleaved (each round runs every variant once, in a shuffled order);
the median step time per variant is reported, and its ratio to ``fixed`` is the median over
rounds of the round's ratio (each variant against the fixed step of the same round, so a machine
that runs faster or slower for a while shifts both). Targets: <= 1.03x for task-level, <= 1.10x
for instance-level variants.
"""

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mmprompt.build import build_backbone, build_prompts  # noqa: E402
from mmprompt.config import load_cfg  # noqa: E402
from mmprompt.prompts.base import PromptContext, masked_mean  # noqa: E402
from mmprompt.prompts.dynamic import AdaptivePosition, straight_through_gumbel  # noqa: E402
from mmprompt.tokens import TokenSeq  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LENGTH = 20
VARIANTS = {  # name: (SOURCE, POSITION, level[, PROMPT.DYNAMIC overrides])
    "fixed": ("param", "prefix", "-"),
    "adap_pos": ("param", "adap_pos", "task"),
    "adap_len": ("param", "adap_len", "task"),
    "adap_ins_pos": ("param", "adap_ins_pos", "instance"),
    "adap_ins_vec": ("pool", "prefix", "instance"),
    "adap_ins_vec_pos": ("pool", "adap_ins_pos", "instance"),
    "adap_pos_dpt": ("param", "adap_pos", "task", {"ARRANGEMENT": "dpt"}),
    "adap_ins_pos_dpt": ("param", "adap_ins_pos", "instance", {"ARRANGEMENT": "dpt"}),
}
#: with --breakdown: adap_pos with its choice frozen (drawn and placed, no gradient), which
#: separates the choice and the split insertion from the exact choice gradient
BREAKDOWN = {"adap_pos_frozen": ("param", "adap_pos", "task")}
WORDS = (
    "the market rose sharply after the central bank said it would hold rates while the "
    "football club signed a striker and the film won prizes at the festival"
).split()


def texts(batch, max_words, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(max_words // 3, max_words))) for _ in range(batch)]


class Setup:
    """One backbone, pre-tokenized padded inputs, labels and a head shared by all variants."""

    def __init__(self, name, cfg_file, batch, max_words, classes=5):
        self.name = name
        self.cfg = load_cfg(os.path.join(ROOT, cfg_file))
        self.backbone = build_backbone(self.cfg).eval()
        self.tower = self.backbone.tower("encoder")
        self.inputs = self.tower.tokenize(texts(batch, max_words))
        self.labels = torch.arange(batch) % classes
        self.classes = classes

    def prompts(self, source, position, dynamic=None):
        cfg = self.cfg.clone()
        cfg.defrost()
        for key, value in (dynamic or {}).items():
            setattr(cfg.PROMPT.DYNAMIC, key, value)
        cfg.PROMPT.METHODS = ["prompt_tuning"]
        cfg.PROMPT.PROMPT_TUNING.NUM_TOKENS = LENGTH
        cfg.PROMPT.PROMPT_TUNING.SOURCE = source
        cfg.PROMPT.PROMPT_TUNING.POSITION = position
        cfg.PROMPT.PROMPT_TUNING.INIT = "normal"
        return build_prompts(cfg, self.backbone).train()


def prompt_step(setup, stack, head, opt, step):
    ctx = PromptContext(step=step)
    feats = setup.tower.run(setup.inputs, stack, ctx)
    loss = F.cross_entropy(head(feats), setup.labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class NaiveInstancePosition(nn.Module):
    """adap_ins_pos the direct way: feature from a second frozen forward, then per sample and
    per position the weighted sum of the l+1 concatenations (same values and gradients)."""

    def __init__(self, width):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(LENGTH, width) * 0.02)
        self.position = nn.Linear(width, LENGTH + 1, bias=False)

    def step(self, setup, head, opt):
        tower = setup.tower
        with torch.no_grad():
            plain = tower.run_layers(tower.embed(setup.inputs))
            feature = masked_mean(plain.x, plain.mask)
        seq = tower.embed(setup.inputs)
        one_hot, _ = straight_through_gumbel(F.relu(self.position(feature)), 1.0, sample=True)
        rows, masks, owners = [], [], []
        p, on = self.tokens, torch.ones(LENGTH, dtype=torch.bool)
        mine = torch.full((LENGTH,), 7)
        for b in range(seq.batch_size):
            s, e = int(seq.anchors["start"][b]), int(seq.anchors["end"][b])
            x = seq.x[b]
            mixed = 0
            for j in range(LENGTH + 1):
                mixed = mixed + one_hot[b, j] * torch.cat([x[:s], p[:j], x[s:e], p[j:], x[e:]])
            rows.append(mixed)
            m, o = seq.mask[b], seq.owner[b]
            masks.append(torch.cat([m[:s], on, m[s:e], m[e:]]))  # all prompt tokens attend
            owners.append(torch.cat([o[:s], mine, o[s:e], o[e:]]))  # (only the count matters)
        anchors = {k: v + LENGTH * (v >= seq.anchors["end"]).long() for k, v in seq.anchors.items()}
        new = TokenSeq.from_embeddings(
            torch.stack(rows), torch.stack(masks), tower=seq.tower, anchors=anchors, meta=seq.meta
        )
        new.owner = torch.stack(owners)
        feats = tower.pool(tower.run_layers(new))
        loss = F.cross_entropy(head(feats), setup.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# With one torch thread all work runs on this thread; its CPU time does not count the time other
# processes on a shared machine take from it, which wall time would.
CLOCK = time.thread_time


def frozen_choice(stack):
    """``stack`` with its learned positions frozen: they still draw and place, with no gradient."""
    for module in stack.modules():
        if isinstance(module, AdaptivePosition):
            module.heads.requires_grad_(False)
    return stack


def bench(setup, reps, warmup, breakdown=False):
    torch.manual_seed(0)
    width = setup.tower.width
    runners = {}
    variants = dict(VARIANTS, **(BREAKDOWN if breakdown else {}))
    for name, (source, position, _, *dynamic) in variants.items():
        stack = setup.prompts(source, position, *dynamic)
        if name in BREAKDOWN:
            stack = frozen_choice(stack)
        head = nn.Linear(width, setup.classes)
        trainable = [p for p in list(stack.parameters()) + list(head.parameters()) if p.requires_grad]
        opt = torch.optim.SGD(trainable, lr=0.01)
        counter = iter(range(10**9))
        runners[name] = lambda s=stack, h=head, o=opt, c=counter: prompt_step(setup, s, h, o, next(c))
    naive = NaiveInstancePosition(width)
    naive_head = nn.Linear(width, setup.classes)
    naive_opt = torch.optim.SGD(list(naive.parameters()) + list(naive_head.parameters()), lr=0.01)
    runners["naive_ins_pos"] = lambda: naive.step(setup, naive_head, naive_opt)

    times = {name: [] for name in runners}
    order = list(runners)
    rng = random.Random(0)
    for rnd in range(warmup + reps):
        rng.shuffle(order)
        for name in order:
            t0 = CLOCK()
            runners[name]()
            dt = CLOCK() - t0
            if rnd >= warmup:
                times[name].append(dt)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    # round by round against the fixed step of the same round
    ratio = {name: statistics.median(t / f for t, f in zip(ts, times["fixed"])) for name, ts in times.items()}
    seq_len = setup.inputs[0].shape[1]
    print(
        f"\n{setup.name}: width {width}, {setup.tower.num_layers} layers, batch {setup.labels.numel()}, "
        f"padded length {seq_len} + {LENGTH} prompt tokens; median of {reps} interleaved rounds"
    )
    print(f"{'variant':18s} {'level':9s} {'ms/step':>9s} {'vs fixed':>9s} {'target':>7s}")
    for name in list(variants) + ["naive_ins_pos"]:
        level = variants[name][2] if name in variants else "instance"
        target = {"task": "1.03", "instance": "1.10"}.get(level, "") if name in VARIANTS else ""
        print(f"{name:18s} {level:9s} {1000 * med[name]:9.2f} {ratio[name]:8.3f}x {target:>7s}")
    speedup = statistics.median(n / a for n, a in zip(times["naive_ins_pos"], times["adap_ins_pos"]))
    print(f"speed-up of adap_ins_pos over the naive implementation: {speedup:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=10, help="timed rounds per backbone")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this thread's CPU time (robust on a shared machine, needs --threads 1); wall: elapsed time",
    )
    parser.add_argument("--quick", action="store_true", help="the tiny backbone only (a smoke run)")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also adap_pos with its choice frozen (drawn and placed, no gradient): what the exact gradient costs",
    )
    args = parser.parse_args()
    global CLOCK
    torch.set_num_threads(args.threads)
    if args.clock == "wall" or args.threads != 1:
        CLOCK = time.perf_counter
    print(
        f"torch {torch.__version__}, {args.threads} CPU thread(s), {'thread CPU' if CLOCK is time.thread_time else 'wall'} "
        f"time, l = {LENGTH}"
    )
    setups = [("tiny BERT (random)", "configs/_base_/tiny_bert.yaml", 16, 24)]
    if not args.quick:
        setups.append(("all-MiniLM-L6-v2", "configs/_base_/minilm.yaml", 8, 48))
    for name, cfg_file, batch, words in setups:
        bench(Setup(name, cfg_file, batch, words), args.reps, args.warmup, args.breakdown)


if __name__ == "__main__":
    main()
