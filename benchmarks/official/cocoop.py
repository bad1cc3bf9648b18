"""CoCoOp and zero-shot CLIP side by side with the authors' trainers.

Both sides run on the same random CLIP weights: mmprompt builds its classifier from a config
(open_clip, QuickGELU as OpenAI's CLIPs have), every LayerNorm gain/bias and every bias is
randomised and the logit scale set to the trained ln 100; that state dict is loaded into the
authors' forked ``clip/model.py`` (their ``build_model``, then cast to float32 and reloaded
strictly, which is what their ``PREC fp32`` computes: ``build_model`` stores half-precision
weights). Their ``load_clip_to_cpu`` (a download) is replaced by that model; Dassl is stubbed
(only its registry decorator and base class are touched at import).

* CoCoOp: their ``trainers/cocoop.py`` ``CustomCLIP`` (prompt learner with meta-net) against
  ``configs/cocoop.yaml`` (4 words "a photo of a") and the random-init 16-token variant; their
  ``ctx`` and ``meta_net`` weights are copied into mmprompt's. Logits in eval mode, gradients of
  the cross-entropy their training forward returns, w.r.t. ``ctx`` and every meta-net weight.
* Zero-shot CLIP: their ``trainers/zsclip.py`` ``ZeroshotCLIP`` (one template per dataset) and
  ``ZeroshotCLIP2`` (template ensemble) against ``MODEL.CLIP.ZERO_SHOT_TEMPLATES coop`` /
  ``coop_ensemble``; logits only (nothing is trained).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
import types
import warnings
from typing import Dict, List

import torch

from .common import (
    REPO,
    Result,
    checkout_on_path,
    grads_rel,
    perturb_norms_and_biases_,
    recipe,
    rel_diff,
    require_checkout,
    time_ratio,
)

if REPO not in sys.path:
    sys.path.insert(0, REPO)

# underscores, hyphens, an apostrophe, digits, accents, several words
CLASSNAMES = [
    "golden_retriever",
    "jack-o'-lantern",
    "747 airliner",
    "crème brûlée",
    "Café au lait",
    "yorkshire_terrier dog",
]
LABELS = [1, 4]
PREFIXES = ("clip", "trainers", "dassl")

# A small CLIP their build_model can read back: it derives heads as width // 64.
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}


def dassl_stubs() -> Dict[str, types.ModuleType]:
    """The names the trainers import from Dassl; none of them runs in a comparison."""

    def unused(name):
        def fail(*args, **kwargs):
            raise RuntimeError(f"dassl.{name} is stubbed in the comparison")

        return fail

    registry = types.SimpleNamespace(register=lambda *a, **k: lambda cls: cls)
    modules = {
        "dassl": {},
        "dassl.engine": {"TRAINER_REGISTRY": registry, "TrainerX": type("TrainerX", (), {})},
        "dassl.metrics": {"compute_accuracy": unused("metrics.compute_accuracy")},
        "dassl.utils": {
            "load_pretrained_weights": unused("utils.load_pretrained_weights"),
            "load_checkpoint": unused("utils.load_checkpoint"),
        },
        "dassl.optim": {
            "build_optimizer": unused("optim.build_optimizer"),
            "build_lr_scheduler": unused("optim.build_lr_scheduler"),
        },
    }
    out = {}
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        out[name] = module
    return out


def their_cfg(**cocoop):
    from yacs.config import CfgNode as CN

    cfg = CN()
    cfg.MODEL = CN({"BACKBONE": CN({"NAME": "ViT-B/16"})})
    cfg.INPUT = CN({"SIZE": (224, 224)})
    cfg.DATASET = CN({"NAME": ""})
    cfg.TRAINER = CN({"COCOOP": CN({"N_CTX": 16, "CTX_INIT": "", "PREC": "fp32"})})
    for k, v in cocoop.items():
        cfg.TRAINER.COCOOP[k] = v
    return cfg


def arch_for(size: str, tmp: str) -> str:
    if size == "base":
        return "ViT-B-16"
    path = os.path.join(tmp, "vs_official_tiny_clip.json")
    with open(path, "w") as f:
        json.dump(TINY_CLIP, f)
    return path


def ours_model(arch: str, seed: int, methods, dataset="oxford_pets", **keys):
    """mmprompt's classifier from a config, weights perturbed; ``keys`` are config overrides."""
    from mmprompt.build import build_model
    from mmprompt.config import get_cfg, merge_from_list

    cfg = get_cfg()
    merge_from_list(
        cfg,
        [
            "MODEL.NAME",
            "clip_prompt_classifier",
            "MODEL.BACKBONE.NAME",
            "open_clip",
            "MODEL.BACKBONE.ARCH",
            arch,
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "MODEL.BACKBONE.ACTIVATION",
            "quick_gelu",
            "DATASET.NAME",
            dataset,
        ],
    )
    cfg.PROMPT.METHODS = list(methods)
    merge_from_list(cfg, [str(x) for kv in keys.items() for x in kv])
    torch.manual_seed(seed)
    model = build_model(cfg, CLASSNAMES)
    clip = model.backbone.model
    perturb_norms_and_biases_(clip, seed=seed)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(100.0))
    return model


def their_clip(module_clip, state: Dict[str, torch.Tensor], maple_fork: bool, trainer: str):
    """Their CLIP on our weights, in float32."""
    state = {k: v.detach().clone() for k, v in state.items()}
    if maple_fork:
        design = {"trainer": trainer, "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
        model = module_clip.build_model(dict(state), design)
    else:
        model = module_clip.build_model(dict(state))
    model.float()
    model.load_state_dict(state, strict=True)  # build_model kept half-precision copies
    return model.eval()


def quiet():
    """Their builders print the prompts and sizes; the driver's output is the results."""
    return contextlib.redirect_stdout(io.StringIO())


def images_for(model, batch: int, seed: int) -> torch.Tensor:
    size = model.backbone.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(batch, 3, size, size, generator=g)


# ---------------------------------------------------------------------- CoCoOp
def compare_cocoop(args, flag: str, repo_path: str, maple_fork: bool) -> List[Result]:
    results = []
    variants = [
        ("cocoop.yaml (ctxv1: 'a photo of a')", {"CTX_INIT": "a photo of a", "N_CTX": 4}),
        ("cocoop N_CTX 16, random init (c16)", {"CTX_INIT": "", "N_CTX": 16}),
    ]
    with tempfile.TemporaryDirectory() as tmp, checkout_on_path(repo_path, stubs=dassl_stubs(), prefixes=PREFIXES):
        import importlib

        their_clip_pkg = importlib.import_module("clip.clip")
        cocoop = importlib.import_module("trainers.cocoop")
        arch = arch_for(args.size, tmp)
        for name, keys in variants:
            ours = ours_model(arch, args.seed, ["cocoop"], **{f"PROMPT.COCOOP.{k}": v for k, v in keys.items()})
            clip_model = their_clip(their_clip_pkg, ours.backbone.model.state_dict(), maple_fork, "CoCoOp")
            cfg = their_cfg(**keys)
            cfg.INPUT.SIZE = (clip_model.visual.input_resolution,) * 2
            with quiet():
                theirs = cocoop.CustomCLIP(cfg, CLASSNAMES, clip_model)
            for n, p in theirs.named_parameters():  # their trainer trains what is named prompt_learner
                p.requires_grad_("prompt_learner" in n)
            mine = ours.prompts.methods[0]
            with torch.no_grad():  # identical prompt parameters: theirs into ours
                for n, p in mine.named_parameters():
                    p.copy_(dict(theirs.prompt_learner.named_parameters())[n])
            images = images_for(ours, len(LABELS), args.seed)
            labels = torch.tensor(LABELS)

            ours.eval()
            theirs.eval()
            with torch.no_grad():
                ours_logits = ours({"image": images})["logits"]
                theirs_logits = theirs(images)

            def ours_step():
                ours.train()
                ours.zero_grad(set_to_none=True)
                ours({"image": images, "label": labels})["loss"].backward()

            def theirs_step():
                theirs.train()
                theirs.zero_grad(set_to_none=True)
                theirs(images, labels).backward()

            ours_step()
            theirs_step()
            g_ours = {n: p.grad for n, p in mine.named_parameters()}
            g_theirs = {n: p.grad for n, p in theirs.prompt_learner.named_parameters()}
            results.append(
                Result(
                    recipe=name,
                    compared_with=f"{flag} trainers/cocoop.py CustomCLIP (PREC fp32)",
                    logits_rel=rel_diff(ours_logits, theirs_logits),
                    grads_rel=grads_rel(g_ours, g_theirs),
                    ratio=time_ratio(ours_step, theirs_step, args.repeats),
                    note="their fp16 casts (PREC fp16: meta_net.half()) are not reproduced; fp32 compared",
                )
            )
    return results


@recipe("cocoop", "coop_repo")
def cocoop_vs_coop_repo(args) -> List[Result]:
    path = require_checkout(args.coop_repo, "--coop-repo", ["trainers/cocoop.py", "clip/model.py"])
    return compare_cocoop(args, "CoOp", path, maple_fork=False)


@recipe("cocoop (maple repo)", "maple_repo")
def cocoop_vs_maple_repo(args) -> List[Result]:
    path = require_checkout(
        args.maple_repo, "--maple-repo", ["trainers/cocoop.py", "trainers/maple.py", "clip/model.py"]
    )
    return compare_cocoop(args, "multimodal-prompt-learning", path, maple_fork=True)


# ---------------------------------------------------------------------- zero-shot CLIP
ZERO_SHOT_CASES = [  # (their trainer class, Dassl dataset name, mmprompt dataset, template set)
    ("ZeroshotCLIP", "OxfordPets", "oxford_pets", "coop"),
    ("ZeroshotCLIP", "DescribableTextures", "dtd", "coop"),
    ("ZeroshotCLIP", "EuroSAT", "eurosat", "coop"),
    ("ZeroshotCLIP2", "ImageNet", "imagenet", "coop_ensemble"),
    ("ZeroshotCLIP2", "UCF101", "ucf101", "coop_ensemble"),
]


def compare_zero_shot(args, flag: str, repo_path: str, maple_fork: bool) -> List[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp, checkout_on_path(repo_path, stubs=dassl_stubs(), prefixes=PREFIXES):
        import importlib

        their_clip_pkg = importlib.import_module("clip.clip")
        zsclip = importlib.import_module("trainers.zsclip")
        arch = arch_for(args.size, tmp)
        for trainer_name, dassl_name, dataset, template_set in ZERO_SHOT_CASES:
            ours = ours_model(arch, args.seed, [], dataset=dataset, **{"MODEL.CLIP.ZERO_SHOT_TEMPLATES": template_set})
            clip_model = their_clip(their_clip_pkg, ours.backbone.model.state_dict(), maple_fork, "CoOp")
            trainer = object.__new__(getattr(zsclip, trainer_name))  # TrainerX.__init__ builds data: skipped
            cfg = their_cfg()
            cfg.DATASET.NAME = dassl_name
            trainer.cfg = cfg
            trainer.dm = types.SimpleNamespace(dataset=types.SimpleNamespace(classnames=list(CLASSNAMES)))
            trainer.device = torch.device("cpu")
            if trainer_name == "ZeroshotCLIP2":
                # a fresh list: their build_model appends to the class attribute, so a second
                # build in one process would ensemble one template more
                trainer.templates = list(zsclip.IMAGENET_TEMPLATES_SELECT)
            zsclip.load_clip_to_cpu = lambda _cfg, model=clip_model: model
            with quiet():
                trainer.build_model()
            images = images_for(ours, len(LABELS), args.seed)
            ours.eval()

            def ours_forward():  # class text features cached after the first call, as theirs are at build
                with torch.no_grad():
                    return ours({"image": images})["logits"]

            def theirs_forward():
                with torch.no_grad():
                    return trainer.model_inference(images)

            results.append(
                Result(
                    recipe=f"zero-shot {template_set} on {dataset}",
                    compared_with=f"{flag} trainers/zsclip.py {trainer_name} (DATASET.NAME {dassl_name})",
                    logits_rel=rel_diff(ours_forward(), theirs_forward()),
                    ratio=time_ratio(ours_forward, theirs_forward, args.repeats),
                    note=f"{ours.num_templates} template(s) averaged",
                )
            )
    return results


@recipe("zsclip", "coop_repo")
def zsclip_vs_coop_repo(args) -> List[Result]:
    path = require_checkout(args.coop_repo, "--coop-repo", ["trainers/zsclip.py", "clip/model.py"])
    return compare_zero_shot(args, "CoOp", path, maple_fork=False)


@recipe("zsclip (maple repo)", "maple_repo")
def zsclip_vs_maple_repo(args) -> List[Result]:
    path = require_checkout(
        args.maple_repo, "--maple-repo", ["trainers/zsclip.py", "trainers/maple.py", "clip/model.py"]
    )
    return compare_zero_shot(args, "multimodal-prompt-learning", path, maple_fork=True)


# ---------------------------------------------------------------------- linear-probe CLIP
def lpclip_features(seed: int, classes: int = 30, dim: int = 16, counts=(20, 8, 10)):
    """Overlapping Gaussian classes, so that C matters (with 5 well-separated classes every round
    ties and keeps the same C): {split: (features, labels)}."""
    import numpy as np

    rng = np.random.RandomState(seed)
    means = rng.randn(classes, dim)
    out = {}
    for split, n in zip(("train", "val", "test"), counts):
        labels = np.repeat(np.arange(classes), n)
        out[split] = ((means[labels] + 1.5 * rng.randn(len(labels), dim)).astype(np.float32), labels)
    return out


@recipe("lpclip C search", "coop_repo")
def lpclip_vs_coop_repo(args) -> List[Result]:
    """Their linear_probe.py run as a script on features in their format, ours on the same files."""
    import re
    import subprocess

    import numpy as np

    from mmprompt.evaluation.linear_probe import accuracy, lpclip_split, search_c

    path = require_checkout(args.coop_repo, "--coop-repo", ["lpclip/linear_probe.py"])
    steps, runs, shots_list = 8, 2, (1, 2, 4, 8, 16)
    features = lpclip_features(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "clip_feat", "Synthetic")
        os.makedirs(folder)
        for split, (x, y) in features.items():
            np.savez(os.path.join(folder, split), feature_list=x, label_list=y)
        proc = subprocess.run(
            [
                sys.executable,
                os.path.join(path, "lpclip", "linear_probe.py"),
                "--dataset",
                "Synthetic",
                "--feature_dir",
                "clip_feat",
                "--num_step",
                str(steps),
                "--num_run",
                str(runs),
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"their linear_probe.py failed:\n{proc.stderr[-2000:]}")
        with open(os.path.join(tmp, "report", f"clip_feat_s{steps}r{runs}_details.txt")) as f:
            theirs = [
                (float(c), float(acc)) for c, acc in re.findall(r"weight ([0-9.e+-]+), test_acc ([0-9.]+)", f.read())
            ]
    ours = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs stops at max_iter for the large C values, theirs too
        for shots in shots_list:
            for seed in range(1, runs + 1):
                (tx, ty), (vx, vy) = lpclip_split(features["train"], features["val"], shots, seed)
                search = search_c(tx, ty, vx, vy, steps=steps)
                for r, clf in zip(search.rounds, search.classifiers):
                    ours.append((float(r.chosen), 100 * accuracy(clf, *features["test"])))
    # their report prints accuracies with 2 decimals and C in full
    ours_acc = torch.tensor([round(a, 2) for _, a in ours])
    theirs_acc = torch.tensor([a for _, a in theirs])
    chosen = {"chosen C per round": rel_diff(torch.tensor([c for c, _ in ours]), torch.tensor([c for c, _ in theirs]))}
    return [
        Result(
            recipe="tools/lpclip.py --sampling lpclip (C search)",
            compared_with="CoOp lpclip/linear_probe.py (subprocess, their report file)",
            logits_rel=rel_diff(ours_acc, theirs_acc),
            grads_rel=chosen,
            note=f"{len(theirs)} rounds ({len(shots_list)} shot counts x {runs} seeds x {steps}); "
            "'logits' = test accuracy of each round's classifier, 'grads' = the C each round keeps",
        )
    ]
