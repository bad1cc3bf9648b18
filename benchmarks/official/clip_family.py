"""MaPLe, IVLP, VPT-in-CLIP and CoOp side by side with the authors' trainers, on identical CLIP weights.

For each recipe both sides get the same random CLIP ViT-B/16 (``--size tiny``: the same
architecture with 4 layers per tower and 32 px images; the widths stay 768 / 512, which MaPLe's
code hard-codes), with every LayerNorm gain and bias and every bias randomised and the trained
logit scale ln 100:

* theirs: the trainer module's own ``load_clip_to_cpu(cfg)`` (its ``design_details``, their forked
  ``clip/model.py`` ``build_model``) reading a state-dict file of those weights through a stubbed
  ``clip._download``, ``.float()`` as their trainers do for ``PREC fp32``, then the trainer's
  ``CustomCLIP(cfg, classnames, clip_model)``. ``cfg.TRAINER.*`` comes from the authors' trainer
  yaml (plus the ``scripts/coop/main.sh`` arguments for CoOp) over their ``train.py`` defaults;
* ours: ``build_model`` of the mmprompt recipe config on the same weights (QuickGELU, as the
  authors' CLIP always builds).

Every prompt parameter gets random values on our side (so a swapped layer would show: MaPLe's deep
couplings start as equal copies) and is copied to theirs. Compared: the logits and the gradient of
the cross-entropy w.r.t. every prompt parameter, at float32.

What is stubbed and why: Dassl (only its registry and trainer base class are imported by the
trainer modules), ``clip._download`` (returns the weights file), and for the duration of their
build and forward ``torch.Tensor.half`` (their code casts prompts and the first coupling to fp16
with ``.half()`` even when ``PREC`` is fp32, an artifact of their fp16 CLIP; mmprompt matches their
fp32 computation) and ``torch.Tensor.cuda`` (the VPT trainer moves its fixed text features to the
GPU inside ``forward``; everything here runs on the CPU).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import tempfile
import types
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

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

#: awkward class names: underscores, hyphens and an apostrophe, digits, accents, multi-word, and a
#: name that ends with a full stop (CLIP's tokenizer merges "inc.." into one token: CoOp's name
#: slice and mmprompt's class_end must agree on it)
CLASSNAMES = ["sea_lion", "jack-o'-lantern", "Boeing 737-200", "café au lait", "great white shark", "acme inc."]
LABELS = [0, 3]  # one image per label

#: --size tiny: layers per tower and image size; the widths stay ViT-B/16's
TINY_LAYERS, TINY_IMAGE = 4, 32

MAPLE_REPO_FILES = (
    "trainers/maple.py",
    "trainers/independentVL.py",
    "trainers/vpt.py",
    "clip/model.py",
    "configs/trainers/MaPLe",
)
COOP_REPO_FILES = ("trainers/coop.py", "clip/model.py", "configs/trainers/CoOp")

#: TRAINER.* defaults of the authors' train.py (extend_cfg), under their trainer yamls
THEIR_DEFAULTS = {
    "MAPLE": {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9},
    "IVLP": {
        "N_CTX_VISION": 2,
        "N_CTX_TEXT": 2,
        "CTX_INIT": "a photo of a",
        "PREC": "fp16",
        "PROMPT_DEPTH_VISION": 9,
        "PROMPT_DEPTH_TEXT": 9,
    },
    "VPT": {"N_CTX_VISION": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH_VISION": 1},
    "COOP": {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"},
}
DEPTH_KEYS = ("PROMPT_DEPTH", "PROMPT_DEPTH_VISION", "PROMPT_DEPTH_TEXT")


@dataclass
class Spec:
    """One recipe: our config (+ overrides) against their trainer module, yaml and arguments."""

    name: str
    ours: str  # configs/<ours>
    repo_flag: str  # maple_repo or coop_repo
    trainer: str  # module under their trainers/
    node: str  # their TRAINER.<node>
    yaml: str  # their configs/trainers/... file
    their_args: Dict[str, object] = field(default_factory=dict)  # e.g. main.sh's CoOp arguments
    our_opts: Sequence[str] = ()
    note: str = ""


SPECS = [
    Spec(
        "maple (base-to-novel)", "maple.yaml", "maple_repo", "maple", "MAPLE", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"
    ),
    Spec(
        "maple_cross_datasets",
        "maple_cross_datasets.yaml",
        "maple_repo",
        "maple",
        "MAPLE",
        "MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
    ),
    Spec("ivlp (2+2ctx)", "ivlp.yaml", "maple_repo", "independentVL", "IVLP", "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml"),
    Spec(
        "ivlp_language_only",
        "ivlp_language_only.yaml",
        "maple_repo",
        "independentVL",
        "IVLP",
        "IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml",
    ),
    Spec("vpt_clip (deep vision)", "vpt_clip.yaml", "maple_repo", "vpt", "VPT", "VPT/vit_b16_c2_ep5_batch4_4.yaml"),
    Spec(
        "coop (end, 16 ctx)",
        "coop.yaml",
        "coop_repo",
        "coop",
        "COOP",
        "CoOp/vit_b16.yaml",
        {"CLASS_TOKEN_POSITION": "end", "N_CTX": 16, "CSC": False},
    ),
    Spec(
        "coop_middle",
        "coop_middle.yaml",
        "coop_repo",
        "coop",
        "COOP",
        "CoOp/vit_b16.yaml",
        {"CLASS_TOKEN_POSITION": "middle", "N_CTX": 16, "CSC": False},
    ),
    Spec(
        "coop front",
        "coop.yaml",
        "coop_repo",
        "coop",
        "COOP",
        "CoOp/vit_b16.yaml",
        {"CLASS_TOKEN_POSITION": "front", "N_CTX": 16, "CSC": False},
        our_opts=("PROMPT.COOP.CLASS_TOKEN_POSITION", "front"),
    ),
    Spec(
        "coop_csc",
        "coop_csc.yaml",
        "coop_repo",
        "coop",
        "COOP",
        "CoOp/vit_b16.yaml",
        {"CLASS_TOKEN_POSITION": "end", "N_CTX": 16, "CSC": True},
    ),
    Spec(
        "coop_csc middle",
        "coop_csc.yaml",
        "coop_repo",
        "coop",
        "COOP",
        "CoOp/vit_b16.yaml",
        {"CLASS_TOKEN_POSITION": "middle", "N_CTX": 16, "CSC": True},
        our_opts=("PROMPT.COOP.CLASS_TOKEN_POSITION", "middle"),
    ),
    Spec(
        "coop_ctxv1",
        "coop_ctxv1.yaml",
        "coop_repo",
        "coop",
        "COOP",
        "CoOp/vit_b16_ctxv1.yaml",
        {"CLASS_TOKEN_POSITION": "end", "N_CTX": 16, "CSC": False},
    ),
    Spec(
        "coop_ctxv1 csc (generic, as CoOp)",
        "coop_ctxv1.yaml",
        "coop_repo",
        "coop",
        "COOP",
        "CoOp/vit_b16_ctxv1.yaml",
        {"CLASS_TOKEN_POSITION": "end", "N_CTX": 16, "CSC": True},
        our_opts=("PROMPT.COOP.CSC", "True"),
    ),
]


# ---------------------------------------------------------------------- their side
class _Stub:
    def __init__(self, what: str):
        self.what = what

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} is stubbed: the comparison only builds the model")


def _dassl_stubs() -> Dict[str, types.ModuleType]:
    """What the trainer modules import from Dassl: a registry decorator and names never called."""
    registry = types.SimpleNamespace(register=lambda *a, **k: lambda cls: cls)
    modules = {
        name: types.ModuleType(name)
        for name in ("dassl", "dassl.engine", "dassl.metrics", "dassl.utils", "dassl.optim")
    }
    modules["dassl.engine"].TRAINER_REGISTRY = registry
    modules["dassl.engine"].TrainerX = type("TrainerX", (), {})
    modules["dassl.metrics"].compute_accuracy = _Stub("dassl.metrics.compute_accuracy")
    modules["dassl.utils"].load_pretrained_weights = _Stub("dassl.utils.load_pretrained_weights")
    modules["dassl.utils"].load_checkpoint = _Stub("dassl.utils.load_checkpoint")
    modules["dassl.optim"].build_optimizer = _Stub("dassl.optim.build_optimizer")
    modules["dassl.optim"].build_lr_scheduler = _Stub("dassl.optim.build_lr_scheduler")
    return modules


@contextlib.contextmanager
def their_fp32():
    """``.half()`` keeps a tensor as it is, ``.cuda()`` leaves it on the CPU (see module docstring)."""
    half, cuda = torch.Tensor.half, torch.Tensor.cuda
    torch.Tensor.half = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.half, torch.Tensor.cuda = half, cuda


def _namespace(d: dict):
    return types.SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in d.items()})


def their_trainer_values(checkout: str, spec: Spec, layers: int) -> Dict[str, object]:
    """TRAINER.<node>: train.py defaults, their yaml, the script arguments; depths capped at ``layers``."""
    import yaml

    with open(os.path.join(checkout, "configs", "trainers", spec.yaml)) as f:
        from_yaml = (yaml.safe_load(f) or {}).get("TRAINER", {}).get(spec.node, {})
    values = {**THEIR_DEFAULTS[spec.node], **from_yaml, **spec.their_args, "PREC": "fp32"}
    return {k: min(v, layers) if k in DEPTH_KEYS else v for k, v in values.items()}


def build_theirs(
    checkout: str,
    spec: Spec,
    values: Dict[str, object],
    weights_file: str,
    image_size: int,
    classnames: Sequence[str] = CLASSNAMES,
):
    with checkout_on_path(checkout, stubs=_dassl_stubs(), prefixes=("clip", "trainers", "dassl")):
        module = importlib.import_module(f"trainers.{spec.trainer}")
    module.clip._download = lambda url, root=None: weights_file
    cfg = _namespace(
        {
            "MODEL": {"BACKBONE": {"NAME": "ViT-B/16"}, "INIT_WEIGHTS": ""},
            "INPUT": {"SIZE": (image_size, image_size)},
            "TRAINER": {spec.node: values},
        }
    )
    with their_fp32(), contextlib.redirect_stdout(io.StringIO()):
        clip_model = module.load_clip_to_cpu(cfg).float()
        model = module.CustomCLIP(cfg, list(classnames), clip_model)
    return model.float().eval()


def their_logits(model, images: torch.Tensor) -> torch.Tensor:
    with their_fp32():
        return model(images)


def their_prompt_params(spec: Spec, model) -> Dict[str, torch.nn.Parameter]:
    """Their prompt parameters under our parameter names (prompts.methods.0.<name>)."""
    pre = "prompts.methods.0."
    out = {}
    if spec.node == "MAPLE":
        pl = model.prompt_learner
        out[pre + "text_sources.0.tokens"] = pl.ctx
        for i, p in enumerate(pl.compound_prompts_text):
            out[pre + f"text_sources.{i + 1}.tokens"] = p
        for i, lin in enumerate([pl.proj, *pl.compound_prompt_projections]):
            out[pre + f"couplings.{i}.weight"], out[pre + f"couplings.{i}.bias"] = lin.weight, lin.bias
        return out
    if spec.node == "COOP":
        return {pre + "source.tokens": model.prompt_learner.ctx}
    if spec.node == "IVLP":
        out[pre + "text_sources.0.tokens"] = model.prompt_learner.ctx
        for i, block in enumerate(model.text_encoder.transformer.resblocks):
            if getattr(block, "add_prompt", False):
                out[pre + f"text_sources.{i}.tokens"] = block.VPT_shallow
    visual = model.image_encoder
    if getattr(visual, "VPT_shallow", False) is True:
        out[pre + "vision_sources.0.tokens"] = visual.VPT
        for i, block in enumerate(visual.transformer.resblocks):
            if getattr(block, "add_prompt", False):
                out[pre + f"vision_sources.{i}.tokens"] = block.VPT_shallow
    return out


# ---------------------------------------------------------------------- our side and the weights
_WEIGHTS: Dict[str, Tuple[str, dict]] = {}
_TMP = tempfile.TemporaryDirectory(prefix="mmprompt_clip_family_")


def arch_for(size: str) -> str:
    if size == "base":
        return "ViT-B-16"
    path = os.path.join(_TMP.name, "tiny_vit_b16_widths.json")
    if not os.path.isfile(path):
        spec = {
            "embed_dim": 512,
            "vision_cfg": {"image_size": TINY_IMAGE, "layers": TINY_LAYERS, "width": 768, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": TINY_LAYERS},
        }
        with open(path, "w") as f:
            json.dump(spec, f)
    return path


def shared_weights(size: str, seed: int) -> Tuple[str, dict]:
    """(file, state dict) of one random CLIP per size: norms and biases perturbed, logit scale ln 100."""
    key = f"{size}-{seed}"
    if key not in _WEIGHTS:
        from mmprompt.backbones.open_clip import create_open_clip

        torch.manual_seed(seed)
        clip = create_open_clip(arch_for(size), "", activation="quick_gelu").model
        perturb_norms_and_biases_(clip, seed=seed)
        with torch.no_grad():
            clip.logit_scale.fill_(math.log(100.0))
        state = {k: v.detach().clone() for k, v in clip.state_dict().items()}
        path = os.path.join(_TMP.name, f"clip_{key}.pt")
        torch.save(state, path)
        _WEIGHTS[key] = (path, state)
    return _WEIGHTS[key]


def build_ours(spec: Spec, size: str, layers: int, state: dict, classnames: Sequence[str] = CLASSNAMES):
    """The recipe's model on random weights of the same architecture (its own QuickGELU setting
    stays: clip_vit_b16.yaml says quick_gelu), then the shared weights loaded into it."""
    from mmprompt.build import build_model
    from mmprompt.config import load_cfg

    opts = ["MODEL.BACKBONE.ARCH", arch_for(size), "MODEL.BACKBONE.PRETRAINED", "", *spec.our_opts]
    cfg = load_cfg(os.path.join(REPO, "configs", spec.ours), opts=opts)
    for key in ("PROMPT_DEPTH", "PROMPT_DEPTH_VISION"):
        cfg.PROMPT.MAPLE[key] = min(cfg.PROMPT.MAPLE[key], layers)
    model = build_model(cfg, list(classnames))
    model.backbone.model.load_state_dict(state)
    return model.train()  # train mode: class texts are re-encoded every pass, as theirs


def randomise_prompts_(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                std = p.shape[-1] ** -0.5 if name.endswith("weight") else 0.02 if name.endswith("tokens") else 0.1
                p.copy_(torch.randn(p.shape, generator=g) * std)


# ---------------------------------------------------------------------- the comparison
@dataclass
class Pair:
    """Both sides of one recipe on the same weights, their prompt parameters equal."""

    ours: torch.nn.Module
    theirs: torch.nn.Module
    our_params: Dict[str, torch.nn.Parameter]  # trainable, by our names
    their_params: Dict[str, torch.nn.Parameter]  # theirs, under our names
    values: Dict[str, object]  # their TRAINER.<node>
    layers: int
    image_size: int


def aligned_pair(
    spec: Spec, checkout: str, args, classnames: Sequence[str] = CLASSNAMES, ours_only: Sequence[str] = ()
) -> Pair:
    """Build both sides of ``spec`` (``args.size``, ``args.seed``) for ``classnames``; our random
    prompt values are copied to theirs. ``ours_only``: trainable parameters of ours with no
    counterpart (a method the authors' model lacks, e.g. adap_pos's position logits)."""
    layers = TINY_LAYERS if args.size == "tiny" else 12
    image_size = TINY_IMAGE if args.size == "tiny" else 224
    weights_file, state = shared_weights(args.size, args.seed)
    values = their_trainer_values(checkout, spec, layers)
    ours = build_ours(spec, args.size, layers, state, classnames)
    theirs = build_theirs(checkout, spec, values, weights_file, image_size, classnames)
    randomise_prompts_(ours, args.seed)
    our_params = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    shared = {n: p for n, p in our_params.items() if n not in ours_only}
    their_params = their_prompt_params(spec, theirs)
    if set(shared) != set(their_params):
        raise RuntimeError(
            f"{spec.name}: prompt parameters differ: ours only {sorted(set(shared) - set(their_params))}, "
            f"theirs only {sorted(set(their_params) - set(shared))}"
        )
    with torch.no_grad():
        for name, p in their_params.items():
            if p.numel() != our_params[name].numel():
                raise RuntimeError(
                    f"{spec.name}: {name} has {our_params[name].numel()} values here, {p.numel()} in theirs"
                )
            p.copy_(our_params[name].reshape(p.shape))
    for p in theirs.parameters():
        p.requires_grad_(False)
    for p in their_params.values():
        p.requires_grad_(True)
    return Pair(ours, theirs, our_params, their_params, values, layers, image_size)


def compare(spec: Spec, checkout: str, args) -> Result:
    pair = aligned_pair(spec, checkout, args)
    ours, theirs, our_params, their_params = pair.ours, pair.theirs, pair.our_params, pair.their_params
    values, layers, image_size = pair.values, pair.layers, pair.image_size

    g = torch.Generator().manual_seed(args.seed + 2)
    images = torch.randn(len(LABELS), 3, image_size, image_size, generator=g)
    labels = torch.tensor(LABELS)

    def ours_step():
        logits = ours({"image": images})["logits"]
        F.cross_entropy(logits, labels).backward()
        return logits

    def theirs_step():
        logits = their_logits(theirs, images)
        F.cross_entropy(logits, labels).backward()
        return logits

    for p in [*our_params.values(), *their_params.values()]:
        p.grad = None
    our_logits, their_logits_ = ours_step(), theirs_step()
    grads = grads_rel(
        {n: p.grad for n, p in our_params.items()},
        {n: p.grad.reshape(our_params[n].shape) for n, p in their_params.items()},
    )
    ratio = time_ratio(ours_step, theirs_step, repeats=args.repeats)
    capped = args.size == "tiny" and any(k in DEPTH_KEYS for k in values)
    depth_note = f"tiny: prompt depths capped at the {layers} layers; " if capped else ""
    trainer_values = ", ".join(
        f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}" for k, v in values.items() if k != "PREC"
    )
    return Result(
        recipe=f"{spec.name} [configs/{spec.ours}{' ' + ' '.join(spec.our_opts) if spec.our_opts else ''}]",
        compared_with=(
            f"{'muzairkhattak/multimodal-prompt-learning' if spec.repo_flag == 'maple_repo' else 'KaiyangZhou/CoOp'} "
            f"trainers/{spec.trainer}.py CustomCLIP, configs/trainers/{spec.yaml} (TRAINER.{spec.node}: {trainer_values})"
        ),
        logits_rel=rel_diff(our_logits, their_logits_),
        grads_rel=_short_names(grads),
        ratio=ratio,
        note=depth_note + "their .half() casts removed (fp32 throughout)" + (f"; {spec.note}" if spec.note else ""),
    )


def _short_names(grads: Dict[str, float]) -> Dict[str, float]:
    return {k.replace("prompts.methods.0.", ""): v for k, v in grads.items()}


def _register(spec: Spec):
    files = MAPLE_REPO_FILES if spec.repo_flag == "maple_repo" else COOP_REPO_FILES
    flag = "--" + spec.repo_flag.replace("_", "-")

    @recipe(spec.name, spec.repo_flag)
    def run(args, spec=spec):
        checkout = require_checkout(getattr(args, spec.repo_flag), flag, files)
        return [compare(spec, checkout, args)]

    return run


for _spec in SPECS:
    _register(_spec)
