"""DePT vs ZhengxiangShi/DePT and ADePT vs HungerPWAY/ADePT on T5, on the same random weights.

Theirs: each repository's forked ``peft`` (imported from the checkout path; the installed real
``peft`` is dropped from ``sys.modules`` around it, never overwritten) wrapping a
``T5ForConditionalGeneration`` with their own ``get_peft_model``: DePT's ``PROMPT_TUNING_LORA``
(``peft/tuners/prompt_tuning_lora.py``) and ADePT's ``PROMPT_TUNING_LORAX``
(``peft/tuners/prompt_tuning_lorax.py``), run through ``PeftModelForSeq2SeqLM.forward`` with
inputs padded to the maximum length as their ``train.py`` does (``pad_to_max_length`` True; DePT
adds its ``max_len x d`` offsets to the whole padded input).

Compared: mmprompt's ``t5_verbalizer`` output, the loss (seq2seq cross-entropy of the gold label
word, as theirs) and the logits (each class's label-word log-likelihood; theirs from their LM
logits with that class's word as labels), and the gradient of the loss w.r.t. every trainable
parameter. Both prompts start from their text init ("Classify this text is postive or not:"
repeated, through the same byte-level tokenizer: their ``AutoTokenizer.from_pretrained`` is
pointed at ``ByT5Tokenizer``, which needs no files; ADePT's is a hard-coded path of the authors'
machine), checked equal before the offsets are given random values and copied across. Every
dropout 0 (both sides in eval mode; ADePT's hard-coded bottleneck dropout only acts in training).
"""

from __future__ import annotations

import contextlib
import importlib
import os

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

TEXTS = [
    "The café's menu_item #42 - crème brûlée, well-known; isn't it?",
    "Naïve co-op members voted 3-to-1 against the über-plan (2nd round)",
]
LABEL_WORDS = ["not_entailment", "entail-ment's 2"]  # awkward on purpose, of different lengths
TINY_T5 = [
    "MODEL.BACKBONE.ARCH",
    "t5",
    "MODEL.BACKBONE.KWARGS",
    "{'d_model': 32, 'd_ff': 64, 'd_kv': 8, 'num_heads': 4, 'num_layers': 2, 'vocab_size': 384}",
]


@contextlib.contextmanager
def byte_tokenizer_for_their_init():
    """Their text init calls ``transformers.AutoTokenizer.from_pretrained(path)``; hand it ByT5's
    tokenizer (the one mmprompt's side uses) for the duration."""
    import transformers

    class _ByteAutoTokenizer:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return transformers.ByT5Tokenizer()

    saved = transformers.AutoTokenizer
    transformers.AutoTokenizer = _ByteAutoTokenizer
    try:
        yield
    finally:
        transformers.AutoTokenizer = saved


def build_ours(config: str, size: str, seed: int):
    from mmprompt.build import build_model
    from mmprompt.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", config))
    cfg.merge_from_list(
        [
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "MODEL.TEXT.TOKENIZER",
            "byt5",
            "MODEL.BACKBONE.KWARGS.dropout_rate",
            "0.0",
            *(TINY_T5 if size == "tiny" else []),
        ]
    )
    torch.manual_seed(seed)
    model = build_model(cfg, LABEL_WORDS)
    # T5's norms get random gains (it has no biases); the embeddings the prompt init read are untouched
    perturb_norms_and_biases_(model.backbone.model, seed=seed)
    return cfg, model


def their_model(path: str, method: str, cfg, hf_model):
    """Their PeftModelForSeq2SeqLM around ``hf_model``, configured as their train.py does."""
    with checkout_on_path(path, prefixes=("peft", "src")):
        peft = importlib.import_module("peft")
    common = dict(
        task_type=peft.TaskType.SEQ_2_SEQ_LM,
        prompt_tuning_init=peft.PromptTuningInit.TEXT,
        num_transformer_submodules=1,
        tokenizer_name_or_path="t5-base",
        token_dim=hf_model.config.d_model,
        max_length=cfg.MODEL.TEXT.MAX_LENGTH,
    )
    if method == "dept":
        c = cfg.PROMPT.DEPT
        config = peft.PromptTuningLoRAConfig(
            num_virtual_tokens=c.NUM_TOKENS, prompt_tuning_init_text=c.INIT_TEXT, r=c.RANK, **common
        )
    else:
        c = cfg.PROMPT.ADEPT
        config = peft.PromptTuningLoRAXConfig(
            num_virtual_tokens=c.NUM_TOKENS, prompt_tuning_init_text=c.INIT_TEXT, r=c.BOTTLENECK, **common
        )
    if not hasattr(hf_model, "_prepare_encoder_decoder_kwargs_for_generation"):
        # Their PeftModelForSeq2SeqLM.__init__ stores this transformers 4 generation helper (gone
        # in transformers 5); only their generate() would call it, and the comparison does not.
        def _generation_only(*_args, **_kwargs):
            raise NotImplementedError("their generate() path is not part of the comparison")

        hf_model._prepare_encoder_decoder_kwargs_for_generation = _generation_only
    with byte_tokenizer_for_their_init():
        return peft.get_peft_model(hf_model, config)


def compare(args, method: str) -> Result:
    from transformers import T5ForConditionalGeneration

    flag = "--dept-repo" if method == "dept" else "--adept-repo"
    tuner = "prompt_tuning_lora.py" if method == "dept" else "prompt_tuning_lorax.py"
    path = require_checkout(getattr(args, f"{method}_repo"), flag, ["peft/peft_model.py", f"peft/tuners/{tuner}"])
    config = f"t5_{method}.yaml"
    cfg, ours = build_ours(config, args.size, args.seed)
    module = ours.prompts.methods[0]
    offsets = module.offsets["0"]

    hf = T5ForConditionalGeneration(ours.backbone.model.config)
    hf.load_state_dict(ours.backbone.model.state_dict())
    theirs = their_model(path, method, cfg, hf)
    enc = theirs.prompt_encoder["default"]
    init_rel = rel_diff(module.prompt.sources[0].tokens, enc.embedding.weight)

    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():  # move the zero-initialised factors so every parameter gets a gradient
        if method == "dept":
            offsets.B.copy_(torch.randn(offsets.B.shape, generator=g) * 0.02)
            enc.lora_embedding_A.copy_(offsets.A)
            enc.lora_embedding_B.copy_(offsets.B)
        else:
            for p in (offsets.up.weight, offsets.up.bias, offsets.down.bias):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            enc.lora_embedding_A.copy_(offsets.down.weight.t())
            enc.lora_embedding_a.copy_(offsets.down.bias)
            enc.lora_embedding_B.copy_(offsets.up.weight.t())
            enc.lora_embedding_b.copy_(offsets.up.bias)
        enc.embedding.weight.copy_(module.prompt.sources[0].tokens)

    max_len = cfg.MODEL.TEXT.MAX_LENGTH
    tower = ours.backbone.tower("encoder")
    ids, mask = tower.tokenize(TEXTS, None, max_len)
    pad = max_len - ids.shape[1]  # their train.py pads every input to max_seq_length
    input_ids = torch.nn.functional.pad(ids, (0, pad), value=hf.config.pad_token_id)
    attention_mask = torch.nn.functional.pad(mask.long(), (0, pad), value=0)
    targets = ours.targets(ids.device)  # (C, L) label-word ids, -100 after each word
    labels = torch.tensor([1, 0])
    batch = {"text": TEXTS, "label": labels}
    ours.eval()
    theirs.eval()

    def run_ours():
        ours.zero_grad(set_to_none=True)
        out = ours(batch)
        out["loss"].backward()
        return out

    def their_loss():
        theirs.zero_grad(set_to_none=True)
        out = theirs(input_ids=input_ids, attention_mask=attention_mask, labels=targets[labels])
        out.loss.backward()
        return out.loss

    def their_class_log_likelihoods():
        rows = []
        with torch.no_grad():
            for c in range(targets.shape[0]):
                lab = targets[c].expand(len(TEXTS), -1).contiguous()
                logp = theirs(input_ids=input_ids, attention_mask=attention_mask, labels=lab).logits.log_softmax(-1)
                picked = logp.gather(-1, lab.clamp_min(0)[..., None])[..., 0] * (lab != -100)
                rows.append(picked.sum(-1))
        return torch.stack(rows, 1)

    logits_theirs = their_class_log_likelihoods()
    loss_theirs = their_loss()
    out = run_ours()
    pname = "prompt (short prompt)"
    g_ours = {pname: module.prompt.sources[0].tokens.grad}
    g_theirs = {pname: enc.embedding.weight.grad}
    if method == "dept":
        g_ours.update({"offsets A": offsets.A.grad, "offsets B": offsets.B.grad})
        g_theirs.update({"offsets A": enc.lora_embedding_A.grad, "offsets B": enc.lora_embedding_B.grad})
        scales = f"scaling ours {offsets.scale:.6f} / theirs {enc.scaling:.6f}"
    else:
        g_ours.update(
            {
                "W_down": offsets.down.weight.grad.t(),
                "b_down": offsets.down.bias.grad,
                "W_up": offsets.up.weight.grad.t(),
                "b_up": offsets.up.bias.grad,
            }
        )
        g_theirs.update(
            {
                "W_down": enc.lora_embedding_A.grad,
                "b_down": enc.lora_embedding_a.grad,
                "W_up": enc.lora_embedding_B.grad,
                "b_up": enc.lora_embedding_b.grad,
            }
        )
        scales = "no scaling on either side"
    logits_rel = max(rel_diff(out["logits"], logits_theirs), rel_diff(out["loss"], loss_theirs))
    ratio = time_ratio(run_ours, their_loss, args.repeats)
    n_ours = sum(p.numel() for p in module.parameters())
    n_theirs = sum(p.numel() for p in enc.parameters())
    d = hf.config.d_model
    repo = "ZhengxiangShi/DePT" if method == "dept" else "HungerPWAY/ADePT"
    kind = "PROMPT_TUNING_LORA" if method == "dept" else "PROMPT_TUNING_LORAX"
    return Result(
        recipe=f"configs/{config}" + (" (tiny)" if args.size == "tiny" else ""),
        compared_with=f"{repo} peft/peft_model.py PeftModelForSeq2SeqLM ({kind}, peft/tuners/{tuner})",
        logits_rel=logits_rel,
        grads_rel=grads_rel(g_ours, g_theirs),
        ratio=ratio,
        note=(
            f"T5 {d}-d x {hf.config.num_layers} layers; logits = label-word log-likelihoods and the loss (worst "
            f"of both); prompt init from the phrase: rel diff {init_rel:.1e}; {scales}; trainable parameters "
            f"ours {n_ours:,} / theirs {n_theirs:,}; inputs padded to {max_len} for theirs; timing: ours "
            f"scores all {len(LABEL_WORDS)} label words in the training pass, theirs decodes the gold one"
        ),
    )


@recipe("dept_t5", "dept_repo")
def dept(args):
    return [compare(args, "dept")]


@recipe("adept_t5", "adept_repo")
def adept(args):
    return [compare(args, "adept")]
