"""Dynamic prompting side by side with the seed paper's code (Xianjun-Yang/DPT).

    python benchmarks/vs_official.py --dpt-repo ~/src/DPT --only dpt [--size tiny]

The authors' dynamic prompts are OpenPrompt templates on T5 (``openprompt/prompts/
soft_adaptive.py`` and siblings, trained by ``tutorial/adap_*_main.py``). Each comparison builds
one of mmprompt's T5 recipes named after the paper (``configs/t5_adap_pos.yaml``,
``t5_adap_ins_pos.yaml``, ``t5_adap_ins_vec.yaml``, ``t5_adap_pos_ins_vec.yaml``,
``t5_adap_ins_vec_pos.yaml``) and the
authors' template around the *same* ``T5ForConditionalGeneration`` object (random T5 v1.1 base
weights, every norm gain and bias perturbed, dropout 0), copies mmprompt's prompt, position and
pool parameters into the template, and runs both on the same awkward texts:

* theirs: ``template.process_batch`` on OpenPrompt's batch (inputs padded to ``max_seq_length``,
  the decoder input ``<pad> <extra_id_0> </s>``), then the PLM on the keys of its ``forward``
  and ``template.post_processing_outputs`` -- the three lines of OpenPrompt's
  ``PromptModel.forward``, called directly because ``openprompt/pipeline_base.py`` needs
  transformers-4-only APIs (``generation_utils``, ``AdamW``);
* ours: the recipe's prompt stack through mmprompt's T5 tower (``tower.encode``), the encoder
  states and mask into the same model's decoder with the same decoder input.

Compared: the LM logits at ``<extra_id_0>`` (what OpenPrompt's verbalizer reads) and the
gradients of a cross-entropy over two label-word ids w.r.t. the prompt, the position logits or
instance network, and the pool. The choice is forced to agree rather than switched off (their
templates always sample): both sides draw their Gumbel noise from the same seeded generator
state, with noise tensors of the same size, so they pick the same j; task-level rows use seeds
that give j = 0, a middle j and j = l. Both sides use the temperature their schedules give
after ``STEP`` optimizer steps (theirs: the scripts' loop, see :func:`dpt_temperature`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from .common import (
    Result,
    checkout_on_path,
    grads_rel,
    perturb_norms_and_biases_,
    recipe,
    rel_diff,
    require_checkout,
    time_ratio,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MUST_HAVE = (
    "openprompt/prompt_base.py",
    "openprompt/prompts/soft_adaptive.py",
    "openprompt/prompts/soft_ins_pos_adaptive.py",
    "tutorial/global_var.py",
)
TEMPLATE_FILES = (
    "soft_adaptive",
    "soft_ins_pos_adaptive",
    "soft_ins_vec_adaptive",
    "soft_pos_ins_vec_adaptive",
    "soft_ins_vec_pos_adaptive",
)

# Underscores, hyphens, digits, apostrophes, accents, multi-word; different lengths (padding).
TEXTS = [
    "L'été à Zürich: naïve café-au-lait_2 at 3 o'clock",
    "state-of-the-art",
    "it's New_York's 42nd street, São Paulo & Łódź!",
    "Ünïcödé — dash–and “quotes”, x²",
]
LABELS = [1, 0, 1, 0]
CLASSNAMES = ["no way", "yes_indeed"]  # t5_verbalizer needs label words; the comparison reads LM logits
TINY_T5 = dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, vocab_size=384)
SIZES = {"base": ("google/t5-base-lm-adapt", {}, 480), "tiny": ("t5", TINY_T5, 96)}
# The authors' scripts (tutorial/adap_*_main.py): ANNEAL_RATE, --aneal default, temp_min, temperature
DPT_GAMMA, DPT_ANEAL, DPT_TAU_MIN, DPT_TAU0 = 3e-5, 10.0, 0.5, 1.0
STEP = 300  # optimizer steps before the compared pass (temperature below 1)


# ---------------------------------------------------------------------- their code
def load_dpt(repo: str) -> types.SimpleNamespace:
    """The authors' template modules, imported from the checkout.

    ``openprompt``, ``openprompt.data_utils`` and ``openprompt.prompts`` become bare packages over
    their folders: their ``__init__`` files import every dataset processor, trainer and pipeline
    (the ``datasets`` library, transformers-4-only APIs), none of which the templates use. What the
    templates import is theirs: ``prompt_base.Template``, ``openprompt.utils``,
    ``data_utils/utils.py``, the manual template/verbalizer, ``tutorial/global_var.py``.
    """

    def package(name, *parts):
        module = types.ModuleType(name)
        module.__path__ = [os.path.join(repo, *parts)]
        return module

    spec = importlib.util.spec_from_file_location("global_var", os.path.join(repo, "tutorial", "global_var.py"))
    global_var = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(global_var)
    stubs = {
        "openprompt": package("openprompt", "openprompt"),
        "openprompt.data_utils": package("openprompt.data_utils", "openprompt", "data_utils"),
        "openprompt.prompts": package("openprompt.prompts", "openprompt", "prompts"),
        "global_var": global_var,
    }
    path_before = list(sys.path)
    with checkout_on_path(repo, stubs=stubs, prefixes=("openprompt",)):
        data = importlib.import_module("openprompt.data_utils.utils")
        stubs["openprompt.data_utils"].InputExample = data.InputExample
        stubs["openprompt.data_utils"].InputFeatures = data.InputFeatures
        base = importlib.import_module("openprompt.prompt_base")
        stubs["openprompt"].Template, stubs["openprompt"].Verbalizer = base.Template, base.Verbalizer
        prompts = stubs["openprompt.prompts"]
        prompts.ManualTemplate = importlib.import_module("openprompt.prompts.manual_template").ManualTemplate
        prompts.ManualVerbalizer = importlib.import_module("openprompt.prompts.manual_verbalizer").ManualVerbalizer
        modules = {name: importlib.import_module(f"openprompt.prompts.{name}") for name in TEMPLATE_FILES}
        signature = importlib.import_module("openprompt.utils").signature
    # their files append their own machine's folders (/nfs/...) to sys.path
    sys.path[:] = [p for p in sys.path if p in path_before]
    global_var._init()
    return types.SimpleNamespace(global_var=global_var, signature=signature, **modules)


@contextlib.contextmanager
def tensors_stay_put():
    """soft_adaptive.py creates its parameters with ``.cuda()``; both sides run on the CPU here, so
    ``Tensor.cuda`` returns the tensor itself while a template is built."""
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda


def dpt_temperature(steps: int) -> float:
    """The temperature the authors' scripts use after ``steps`` optimizer steps: their loop
    ``temp = max(temp * exp(-ANNEAL_RATE * glb_step / aneal), temp_min)`` after each step."""
    import numpy as np

    temp = DPT_TAU0
    for glb_step in range(1, steps + 1):
        temp = np.maximum(temp * np.exp(-DPT_GAMMA * glb_step / DPT_ANEAL), DPT_TAU_MIN)
    return float(temp)


# ---------------------------------------------------------------------- the two sides
def build_ours(config: str, size: str, seed: int):
    """mmprompt's recipe on random T5 weights at ``size``, dropout 0, norms and biases perturbed."""
    from mmprompt.build import build_model
    from mmprompt.config import load_cfg

    arch, kwargs, max_length = SIZES[size]
    cfg = load_cfg(
        os.path.join(ROOT, "configs", config),
        opts=[
            "MODEL.BACKBONE.ARCH",
            arch,
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "MODEL.TEXT.TOKENIZER",
            "byt5",
            "MODEL.TEXT.MAX_LENGTH",
            str(max_length),
            "MODEL.BACKBONE.DROPOUT_OFF",
            "True",
        ],
    )
    cfg.MODEL.BACKBONE.KWARGS.update({**kwargs, "dropout_rate": 0.0})
    if cfg.PROMPT.DYNAMIC.FEATURE_LENGTH > 0:  # OpenPrompt pads to max_seq_length
        cfg.PROMPT.DYNAMIC.FEATURE_LENGTH = max_length
    torch.manual_seed(seed)
    model = build_model(cfg, CLASSNAMES)
    perturb_norms_and_biases_(model.backbone.model, seed=seed)
    model.step = STEP
    return cfg, model


def inputs(model, max_length: int):
    """``(ids, mask)`` padded to the batch (ours), the same padded to ``max_length`` (OpenPrompt),
    the decoder input ``<pad> <extra_id_0> </s>`` and two label-word ids."""
    tower = model.backbone.tower("encoder")
    ids, mask = tower.tokenize(TEXTS)
    B, N = ids.shape
    config = model.backbone.model.config
    padded = F.pad(ids, (0, max_length - N), value=config.pad_token_id)
    padded_mask = F.pad(mask.long(), (0, max_length - N))
    extra_id_0 = 32099 if config.vocab_size > 32099 else config.vocab_size - 1  # T5's <extra_id_0>
    decoder = torch.tensor([[config.pad_token_id, extra_id_0, config.eos_token_id]] * B)
    words = torch.tensor([tower.tokenize([w])[0][0, 0].item() for w in CLASSNAMES])
    return (ids, mask), (padded, padded_mask), decoder, words


MASK_POSITION = 1  # OpenPrompt's loss_ids for T5-LM: [0, 1, 0] over <pad> <extra_id_0> </s>


def run_ours(model, tokens, decoder, seed):
    from transformers.modeling_outputs import BaseModelOutput

    model.train()  # the prompts sample; the frozen backbone stays in eval (DROPOUT_OFF)
    torch.manual_seed(seed)
    ctx = model.new_context()
    encoded = model.backbone.tower("encoder").encode(tokens, model.prompts, ctx)
    out = model.backbone.model(
        encoder_outputs=BaseModelOutput(last_hidden_state=encoded.x),
        attention_mask=encoded.mask.long(),
        decoder_input_ids=decoder,
    )
    return out.logits[:, MASK_POSITION], ctx


def run_theirs(dpt, template, plm, padded, decoder, seed, temperature):
    template.train()
    plm.eval()  # --plm_eval_mode: the frozen T5 in eval (its dropout is 0 here anyway)
    dpt.global_var.set_value("temperature", temperature)
    torch.manual_seed(seed)
    batch = {"input_ids": padded[0], "attention_mask": padded[1], "decoder_input_ids": decoder}
    batch = template.process_batch(batch)
    keys = dpt.signature(plm.forward).args
    outputs = plm(**{k: batch[k] for k in batch if k in keys}, output_hidden_states=True)
    return template.post_processing_outputs(outputs).logits[:, MASK_POSITION]


def loss_of(logits, words):
    return F.cross_entropy(logits[:, words], torch.tensor(LABELS))


def grads(params: Dict[str, torch.Tensor], loss: torch.Tensor) -> Dict[str, torch.Tensor]:
    values = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, values))


# ---------------------------------------------------------------------- parameter pairs
def method_parts(model):
    method = model.prompts.methods[0]
    return method.sources[0], method.placement


@torch.no_grad()
def pair_parameters(model, template, kind: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Copy ours into theirs; ``(ours, theirs)`` name -> parameter, matched by name."""
    source, placement = method_parts(model)
    head = placement.heads[0] if kind != "ins_vec" else None
    ours, theirs = {}, {}
    if kind in ("pos", "ins_pos"):
        ours["prompt"], theirs["prompt"] = source.tokens, template.soft_embeds
    else:
        pool = template.vec_emb
        ours["pool prompts"], theirs["pool prompts"] = source.prompts, pool.soft_embeds_group_param
        ours["pool router weight"], theirs["pool router weight"] = source.router.linear.weight, pool.layers[0].weight
        ours["pool router bias"], theirs["pool router bias"] = source.router.linear.bias, pool.layers[0].bias
    if kind == "ins_vec":  # a prefix: no position learned
        pass
    elif kind in ("pos", "pos_ins_vec"):
        ours["position logits"], theirs["position logits"] = head.logits, template.position_emb
    else:
        linear = template.pos_transform.layers[0]
        ours["position net weight"], theirs["position net weight"] = head.linear.weight, linear.weight
        ours["position net bias"], theirs["position net bias"] = head.linear.bias, linear.bias
    for name in ours:
        theirs[name].copy_(ours[name].view_as(theirs[name]))
    return ours, theirs


# (their file, class, mmprompt recipe, kind)
VARIANTS = {
    "pos": ("soft_adaptive", "SoftTemplate2", "t5_adap_pos.yaml"),
    "ins_pos": ("soft_ins_pos_adaptive", "SoftTemplate_ins_pos", "t5_adap_ins_pos.yaml"),
    "ins_vec": ("soft_ins_vec_adaptive", "SoftTemplate_ins_vec", "t5_adap_ins_vec.yaml"),
    "pos_ins_vec": ("soft_pos_ins_vec_adaptive", "SoftTemplate_pos_ins_vec", "t5_adap_pos_ins_vec.yaml"),
    "ins_vec_pos": ("soft_ins_vec_pos_adaptive", "SoftTemplate_ins_vec_pos", "t5_adap_ins_vec_pos.yaml"),
}


def seeds_for_choices(logits: torch.Tensor, wanted: List[int], start: int) -> Dict[int, int]:
    """For a task-level choice: a seed per wanted j whose Gumbel draw picks j (both sides draw
    ``empty(l+1).exponential_()`` first after seeding)."""
    found, seed = {}, start
    while len(found) < len(wanted) and seed < start + 100000:
        torch.manual_seed(seed)
        j = int((logits - torch.empty_like(logits).exponential_().log()).argmax())
        if j in wanted and j not in found:
            found[j] = seed
        seed += 1
    return found


def compare(args, kind: str) -> List[Result]:
    repo = require_checkout(args.dpt_repo, "--dpt-repo", MUST_HAVE)
    dpt = load_dpt(repo)
    file, cls, config = VARIANTS[kind]
    cfg, model = build_ours(config, args.size, args.seed)
    plm = model.backbone.model
    source, placement = method_parts(model)
    l = source.length
    with tensors_stay_put():
        kwargs = {"k": cfg.PROMPT.DYNAMIC.POOL_SIZE} if "vec" in kind else {}
        template = getattr(getattr(dpt, file), cls)(model=plm, tokenizer=None, num_tokens=l, **kwargs)
    ours_params, theirs_params = pair_parameters(model, template, kind)
    tokens, padded, decoder, words = inputs(model, SIZES[args.size][2])
    learned = kind != "ins_vec"  # a position is learned (the prefix has none)
    tau_ours = placement.temperature.value(STEP) if learned else None
    tau_theirs = dpt_temperature(STEP)
    if kind in ("pos", "pos_ins_vec"):  # one choice for the batch: force j = 0, a middle one, l
        chosen = seeds_for_choices(placement.heads[0].logits.detach()[None], [0, l // 2, l], 1000 + args.seed)
        runs = [(f" (j={j})", seed) for j, seed in sorted(chosen.items())]
    else:  # one choice per text
        runs = [("", 1000 + args.seed)]
    results = []
    for suffix, seed in runs:
        ours_logits, ctx = run_ours(model, tokens, decoder, seed)
        theirs_logits = run_theirs(dpt, template, plm, padded, decoder, seed, tau_theirs)
        g_ours = grads(ours_params, loss_of(ours_logits, words))
        g_theirs = grads(theirs_params, loss_of(theirs_logits, words))
        g_theirs = {k: v.view_as(g_ours[k]) for k, v in g_theirs.items()}
        if learned:
            dpos = ctx.records["encoder.layer0.dpos"][0].tolist()
            how = (
                f"j per text {[l - d for d in dpos]} (prompt tokens after the input), same seeded Gumbel "
                f"draw on both sides; temperature after {STEP} steps: ours {tau_ours:.6f}, theirs {tau_theirs:.6f}"
            )
        else:
            how = f"prefix [P; X], pool weights top {ctx.records['encoder.pool.top'][0].tolist()}"
        ratio = None
        if args.repeats > 0 and suffix in ("", runs[0][0]):
            ratio = time_ratio(
                lambda: loss_of(run_ours(model, tokens, decoder, seed)[0], words).backward(),
                lambda: loss_of(run_theirs(dpt, template, plm, padded, decoder, seed, tau_theirs), words).backward(),
                args.repeats,
            )
        results.append(
            Result(
                recipe=f"dpt/{config}{suffix}",
                compared_with=f"Xianjun-Yang/DPT openprompt/prompts/{file}.py {cls}",
                logits_rel=rel_diff(ours_logits, theirs_logits),
                grads_rel=grads_rel(g_ours, g_theirs),
                ratio=ratio,
                note=f"T5 {args.size} random, {len(TEXTS)} texts; {how}; their inputs padded to {SIZES[args.size][2]} tokens",
            )
        )
    return results


@recipe("dpt/t5_adap_pos", "dpt_repo")
def adap_pos(args):
    return compare(args, "pos")


@recipe("dpt/t5_adap_ins_pos", "dpt_repo")
def adap_ins_pos(args):
    return compare(args, "ins_pos")


@recipe("dpt/t5_adap_ins_vec", "dpt_repo")
def adap_ins_vec(args):
    return compare(args, "ins_vec")


@recipe("dpt/t5_adap_pos_ins_vec", "dpt_repo")
def adap_pos_ins_vec(args):
    return compare(args, "pos_ins_vec")


@recipe("dpt/t5_adap_ins_vec_pos", "dpt_repo")
def adap_ins_vec_pos(args):
    return compare(args, "ins_vec_pos")
