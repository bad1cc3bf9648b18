#!/usr/bin/env python
"""One training step of the CLIP prompt recipes, mmprompt against the authors' trainer models.

    python benchmarks/clip_train_step.py --maple-repo ~/src/multimodal-prompt-learning \\
        --coop-repo ~/src/CoOp [--classes 19,100,500] [--repeats 5] [--recipes maple,coop] \\
        [--size base|tiny] [--device cpu|cuda] [--precision fp32|bf16|amp] [--threads N] [--clock cpu]

A step is what a trainer does per batch: forward, cross-entropy, backward, optimizer step (SGD,
momentum 0.9, the recipes' optimizer), at batch 4 (the recipes' batch size) over C classes, with
CLIP ViT-B/16 (``--size tiny``: 4 layers per tower, 32 px, for a quick look). Recipes:

* ``maple``: configs/maple.yaml vs trainers/maple.py (N_CTX 2, depth 9);
* ``maple_adap_pos``: configs/maple_adap_pos.yaml (N_CTX 4, depth 9, learned position) vs the same
  MaPLe trainer with N_CTX 4 and that recipe's init phrase: the authors' MaPLe has no learned
  position, so it is the model adap_pos extends. For the gradient check the position logits force
  the choice "all 4 tokens before the class name" (MaPLe's layout); the timed steps sample it;
* ``coop``: configs/coop.yaml (16 tokens, class token at the end) vs KaiyangZhou/CoOp trainers/coop.py;
* ``vpt_clip``: configs/vpt_clip.yaml (deep vision prompts) vs trainers/vpt.py. Its class texts are
  fixed: both sides encode them once, so the step is the image tower's on both.

Both sides get the same random weights and the same prompt values (the harness of
``benchmarks/vs_official.py``: ``benchmarks/official/clip_family.py``). Before timing, one step's
gradients of every shared prompt parameter are compared and must agree (max relative difference
1e-4 at fp32, 3e-2 under 16-bit autocast), else the script exits with status 1. Then the two
sides' steps run interleaved (which goes first alternates), ``--repeats`` times after one warm-up,
and the median step time of each is printed with the ratio ours / theirs. ``--clock cpu`` times
the thread's CPU time on one torch thread, so other processes on a shared machine do not inflate
the times (default ``wall``: elapsed time, all threads; CUDA steps are synchronised). Class names are the first
C of open_clip's ImageNet class names (ImageNet's base classes are the first 500).

Memory, per side: on CUDA the peak allocated memory of a step (``torch.cuda.max_memory_allocated``);
on CPU the bytes of the tensors autograd saves for the backward pass during the forward (distinct
storages, through ``torch.autograd.graph.saved_tensors_hooks``, not counting the model's own
weights, which are saved by reference) -- a step's activation memory, which is what grows with the
classes; weights and optimizer state are the same on both sides.

mmprompt's advantage comes from the text tower running only up to the batch's last EOT
(``MODEL.BACKBONE.TRIM_TEXT``, exact: ``tests/test_text_trimming.py``) where the authors' code runs
all 77 positions for every class at every step, and from computing no rows no one reads
(``MODEL.BACKBONE.SKIP_UNUSED_ROWS``, exact: ``tests/test_row_savings.py``): each tower's last layer
for the pooled token only, and no outputs for deep prompts the next layer replaces (the only
saving in ``vpt_clip``'s image-tower step; ``benchmarks/row_savings.py`` times it on and off).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.official import clip_family as cf  # noqa: E402
from benchmarks.official.common import CheckoutError, rel_diff, require_checkout  # noqa: E402

BATCH = 4
#: recipe: (the harness's spec, the flag of the checkout it needs, our-only parameters, SGD lr)
RECIPES = {
    "maple": (
        cf.Spec("maple", "maple.yaml", "maple_repo", "maple", "MAPLE", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
        (),
        0.0035,
    ),
    "maple_adap_pos": (
        cf.Spec(
            "maple_adap_pos",
            "maple_adap_pos.yaml",
            "maple_repo",
            "maple",
            "MAPLE",
            "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
            {"N_CTX": 4, "CTX_INIT": "for sure this is a photo of"},
        ),
        ("prompts.methods.0.text_placement.heads.0.logits",),
        0.0035,
    ),
    "coop": (
        cf.Spec(
            "coop",
            "coop.yaml",
            "coop_repo",
            "coop",
            "COOP",
            "CoOp/vit_b16.yaml",
            {"CLASS_TOKEN_POSITION": "end", "N_CTX": 16, "CSC": False},
        ),
        (),
        0.002,
    ),
    "vpt_clip": (
        cf.Spec("vpt_clip", "vpt_clip.yaml", "maple_repo", "vpt", "VPT", "VPT/vit_b16_c2_ep5_batch4_4.yaml"),
        (),
        0.0025,
    ),
}
REPO_FILES = {"maple_repo": cf.MAPLE_REPO_FILES, "coop_repo": cf.COOP_REPO_FILES}
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "amp": torch.float16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--maple-repo", metavar="DIR", help="checkout of muzairkhattak/multimodal-prompt-learning")
    p.add_argument("--coop-repo", metavar="DIR", help="checkout of KaiyangZhou/CoOp")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    p.add_argument("--classes", default="19,100,500", help="comma-separated class counts")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per side (after one warm-up)")
    p.add_argument("--size", choices=("base", "tiny"), default="base")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        choices=tuple(AUTOCAST),
        default="fp32",
        help="fp32, or autocast to bf16 / fp16 (amp, with mmprompt's GradScaler-free step)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: this thread's CPU time, on one torch thread (CPU only)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes.split(",") if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipes {unknown}; choose from {', '.join(RECIPES)}")
    try:
        args.class_counts = [int(c) for c in args.classes.split(",")]
    except ValueError:
        p.error(f"--classes takes comma-separated integers, got {args.classes!r}")
    if any(not 2 <= c <= 1000 for c in args.class_counts):
        p.error("--classes: each count must be between 2 and 1000 (ImageNet's class names)")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is visible here")
    if args.clock == "cpu" and args.device != "cpu":
        p.error("--clock cpu times the CPU thread; on a GPU use the wall clock")
    if args.clock == "cpu" and args.threads not in (0, 1):
        p.error("--clock cpu measures one thread's CPU time, so torch runs on one thread: drop --threads")
    if args.precision == "amp" and not args.device.startswith("cuda"):
        p.error("--precision amp computes in float16, which needs --device cuda (use bf16 on the CPU)")
    return args


def classnames(n: int) -> List[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES[:n])


@contextlib.contextmanager
def saved_bytes(record: Dict[str, int], model: torch.nn.Module):
    """Sum, into ``record["bytes"]``, the storage bytes autograd saves for backward in the block,
    leaving out ``model``'s own parameters and buffers (saved by reference, they take no memory
    of the step)."""
    seen = {(t.untyped_storage().data_ptr(), t.device) for t in (*model.parameters(), *model.buffers())}

    def pack(t):
        try:
            storage = t.untyped_storage()
            key = (storage.data_ptr(), t.device)
            if key not in seen:
                seen.add(key)
                record["bytes"] += storage.nbytes()
        except RuntimeError:  # tensors without storage (e.g. some views of wrappers)
            pass
        return t

    record["bytes"] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def force_prefix_choice(ours) -> None:
    """adap_pos: position logits that make "every token before the input" (MaPLe's layout) the
    choice whatever the Gumbel noise."""
    for name, p in ours.named_parameters():
        if name.endswith("text_placement.heads.0.logits"):
            with torch.no_grad():
                p.zero_()
                p[-1] = 50.0


class Side:
    """One side's model, prompt parameters and optimizer; ``step`` is one training step."""

    def __init__(
        self,
        model: torch.nn.Module,
        forward: Callable,
        params: Dict[str, torch.nn.Parameter],
        lr: float,
        device,
        autocast,
    ):
        self.model, self.forward, self.params = model, forward, params
        self.optim = torch.optim.SGD(params.values(), lr=lr, momentum=0.9)
        self.device, self.autocast = device, autocast
        self.memory: List[int] = []

    def step(self, images, labels, measure_memory: bool = False):
        self.optim.zero_grad(set_to_none=True)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        record = {"bytes": 0}
        saving = saved_bytes(record, self.model) if measure_memory and not cuda else contextlib.nullcontext()
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        with saving, autocast:
            logits = self.forward(images)
        F.cross_entropy(logits.float(), labels).backward()
        self.optim.step()
        if cuda:
            torch.cuda.synchronize(self.device)
            if measure_memory:
                self.memory.append(torch.cuda.max_memory_allocated(self.device))
        elif measure_memory:
            self.memory.append(record["bytes"])
        return logits


def grads(side: Side) -> Dict[str, torch.Tensor]:
    return {n: p.grad.detach().reshape(-1).clone() for n, p in side.params.items() if p.grad is not None}


def run_one(name: str, checkout: str, n_classes: int, args, device) -> str:
    spec, ours_only, lr = RECIPES[name]
    pair = cf.aligned_pair(spec, checkout, args, classnames(n_classes), ours_only=ours_only)
    if name == "maple_adap_pos":
        force_prefix_choice(pair.ours)
    ours_model, theirs_model = pair.ours.to(device), pair.theirs.to(device)
    if hasattr(theirs_model, "embeddings"):  # trainers/vpt.py keeps its fixed text features outside the module tree
        emb = theirs_model.embeddings
        emb.fixed_embeddings = emb.fixed_embeddings.to(device)
    autocast = AUTOCAST[args.precision]

    def theirs_forward(images):
        with cf.their_fp32():
            return theirs_model(images)

    ours = Side(
        ours_model, lambda images: ours_model({"image": images})["logits"], pair.our_params, lr, device, autocast
    )
    theirs = Side(theirs_model, theirs_forward, pair.their_params, lr, device, autocast)
    g = torch.Generator().manual_seed(args.seed + 2)
    images = torch.randn(BATCH, 3, pair.image_size, pair.image_size, generator=g).to(device)
    labels = torch.randint(0, n_classes, (BATCH,), generator=g).to(device)

    # the check: one step from identical prompts, gradients compared before the optimizers move them
    ours.step(images, labels, measure_memory=True)
    theirs.step(images, labels, measure_memory=True)
    ours_grads, theirs_grads = grads(ours), grads(theirs)
    diffs = {n: rel_diff(ours_grads[n], theirs_grads[n]) for n in theirs_grads}
    worst = max(diffs.values())
    tolerance = 1e-4 if autocast is None else 3e-2
    if name == "maple_adap_pos":  # from now on the position is sampled, as in training
        pair.ours.prompts.methods[0].text_placement.heads[0].logits.data.zero_()

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    times = {"ours": [], "theirs": []}
    for i in range(args.repeats + 1):  # the first round warms up
        order = [("ours", ours), ("theirs", theirs)]
        for key, side in order if i % 2 == 0 else order[::-1]:
            t0 = clock()
            side.step(images, labels)
            if i:
                times[key].append(clock() - t0)
    t_ours, t_theirs = statistics.median(times["ours"]), statistics.median(times["theirs"])
    unit = "peak" if device.type == "cuda" else "saved for backward"
    verdict = "grads agree" if worst <= tolerance else "GRADS DIFFER"
    line = (
        f"{name} {n_classes} classes: ours {t_ours * 1e3:.0f} ms, theirs {t_theirs * 1e3:.0f} ms "
        f"(median of {args.repeats}); memory ({unit}) ours {ours.memory[0] / 2**20:.0f} MiB, theirs "
        f"{theirs.memory[0] / 2**20:.0f} MiB; {verdict} (max rel {worst:.1e}); ratio {t_ours / t_theirs:.2f}x"
    )
    if worst > tolerance:
        raise GradientMismatch(line + "\n    " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items() if v > tolerance))
    return line


class GradientMismatch(Exception):
    pass


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads or args.clock == "cpu":
        torch.set_num_threads(args.threads or 1)
    device = torch.device(args.device)
    checkouts = {}
    try:
        for flag in ("maple_repo", "coop_repo"):
            if getattr(args, flag):
                checkouts[flag] = require_checkout(getattr(args, flag), "--" + flag.replace("_", "-"), REPO_FILES[flag])
    except CheckoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    recipes = args.recipes.split(",")
    missing = sorted({RECIPES[r][0].repo_flag for r in recipes} - set(checkouts))
    if missing:
        print(
            "error: give " + ", ".join("--" + m.replace("_", "-") + " DIR" for m in missing) + " (checkouts of "
            "the authors' repositories) for the recipes "
            + ", ".join(r for r in recipes if RECIPES[r][0].repo_flag in missing),
            file=sys.stderr,
        )
        return 2
    print(
        f"# CLIP ViT-B/16{' (tiny: 4 layers, 32 px)' if args.size == 'tiny' else ''}, batch {BATCH}, "
        f"{args.device}, {args.precision}, {torch.get_num_threads()} threads, {args.clock} clock; one step = forward + "
        f"cross-entropy + backward + SGD step",
        flush=True,
    )
    failed = 0
    for name in recipes:
        for n in args.class_counts:
            try:
                print(run_one(name, checkouts[RECIPES[name][0].repo_flag], n, args, device), flush=True)
            except GradientMismatch as e:
                print(str(e), flush=True)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
