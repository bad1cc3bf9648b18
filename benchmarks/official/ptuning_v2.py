"""P-tuning v2 (key/value prefixes) vs THUDM/P-tuning-v2's sequence classifiers.

Their ``model/sequence_classification.py`` (``BertPrefixForSequenceClassification``,
``RobertaPrefixForSequenceClassification``) and ``model/prefix_encoder.py`` are imported from the
checkout; ``model.deberta`` (their DeBERTa fork, written against transformers 4.11 internals that
5.x no longer has, and not used here) is replaced by a stub. Both sides get the same random BERT /
RoBERTa weights (every LayerNorm gain and bias and every bias perturbed, the pooler included),
the same prefix table (and projection MLP) and classifier, dropout 0, the same tokenized text
pairs with padding; mmprompt runs ``configs/bert_ptuning_v2.yaml``'s model (text_classifier,
pooler head, ``ptuning_v2``) through its ``forward``. Compared: the logits and the gradient of
each side's own cross-entropy loss w.r.t. the prefix parameters and the classifier.

Their code passes ``past_key_values`` as the per-layer ``(key, value)`` tuple transformers 4.11
took; transformers 5.x takes a ``Cache``, so the comparison converts that tuple, unchanged, into a
``DynamicCache`` on the way into their ``BertModel`` / ``RobertaModel`` (whose attention then
concatenates ``[prefix; keys]`` exactly as 4.11's did, and numbers positions from the prefix
length as 4.11 did from ``past_key_values_length``).
"""

from __future__ import annotations

import contextlib
import io
import types
from typing import Dict, List

import torch

from .common import (
    Result,
    grads_rel,
    import_from,
    perturb_norms_and_biases_,
    recipe,
    rel_diff,
    require_checkout,
    time_ratio,
)

# Awkward pairs: underscores, hyphens, digits, apostrophes, accents, multi-word, one long enough
# to be truncated, so padding and the pair's token types vary across the batch.
PREMISES = [
    "The café's owner_id is 42-B.",
    "Zoë didn't re-enter São Paulo in 1999.",
    "A well-known, multi-word claim: it's 3.5 km long and north-east of the old mill",
    "no",
]
HYPOTHESES = [
    "The owner id is 42.",
    "Zoë left São Paulo",
    "It is long.",
    "The naïve co-worker's O'Brien-style answer was 'no' — twice, in 2023 and 2024.",
]
LABELS = [0, 1, 1, 0]
TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2"  # offline WordPiece (pad id 0), both sides

SIZES = {
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
}
PREFIX_LENGTH = 20  # their run_rte_bert.sh pre_seq_len
PROJECTION_HIDDEN = 512  # their prefix_hidden_size default
MAX_LENGTH = 32


def _unused_deberta_stub() -> types.ModuleType:
    """Their ``model.deberta`` names, as placeholders: sequence_classification.py defines a DeBERTa
    class from them at import time, which is never built here."""
    stub = types.ModuleType("model.deberta")
    for name in ("DebertaModel", "DebertaPreTrainedModel", "ContextPooler", "StableDropout"):
        setattr(stub, name, type(name, (torch.nn.Module,), {}))
    return stub


def _their_module(repo: str):
    return import_from(
        repo, "model.sequence_classification", stubs={"model.deberta": _unused_deberta_stub()}, prefixes=("model",)
    )


def _take_legacy_past_key_values(encoder) -> None:
    """Let ``encoder`` (their BertModel / RobertaModel) take the 4.11-style tuple their code passes."""
    from transformers import Cache, DynamicCache

    forward = encoder.forward

    def forward_with_legacy_tuple(*args, past_key_values=None, head_mask=None, **kwargs):
        if head_mask is not None:
            raise ValueError("head_mask is not part of this comparison")
        if past_key_values is not None and not isinstance(past_key_values, Cache):
            past_key_values = DynamicCache(ddp_cache_data=[(kv[0], kv[1]) for kv in past_key_values])
        return forward(*args, cache=past_key_values, **kwargs)

    encoder.forward = forward_with_legacy_tuple


def _build_theirs(their_class, config):
    """Their model, built quietly (it prints its parameter count). Their RoBERTa classes call
    ``init_weights()`` in ``__init__``, which in transformers 5.x needs ``post_init()``'s
    bookkeeping first (4.11 had none); the call is skipped during construction, as 4.11's
    ``from_pretrained`` skipped it too, and ``post_init()`` runs afterwards. Every weight that
    matters is replaced below anyway."""
    saved = their_class.init_weights
    their_class.init_weights = lambda self: None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = their_class(config)
    finally:
        their_class.init_weights = saved
    model.post_init()
    return model.float()


def _configs(arch: str, size: str, projection: bool):
    """Their transformers config and mmprompt's yacs config for the same model."""
    from transformers import AutoConfig

    from mmprompt.config import get_cfg

    dims = dict(
        SIZES[size],
        vocab_size=30522,
        max_position_embeddings=512 if size == "base" else 128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if arch == "roberta":  # the WordPiece tokenizer pads with 0: RoBERTa's padding_idx follows it
        dims.update(pad_token_id=0, type_vocab_size=1)
    theirs = AutoConfig.for_model(arch, **dims, num_labels=2)
    theirs.pre_seq_len, theirs.prefix_projection, theirs.prefix_hidden_size = (
        PREFIX_LENGTH,
        projection,
        PROJECTION_HIDDEN,
    )

    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.NAME",
            "text_classifier",
            "MODEL.BACKBONE.NAME",
            "hf_encoder",
            "MODEL.BACKBONE.ARCH",
            arch,
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "MODEL.TEXT.TOKENIZER",
            TOKENIZER,
            "MODEL.TEXT.MAX_LENGTH",
            str(MAX_LENGTH),
            "MODEL.HEAD.POOL",
            "pooler",
            "MODEL.HEAD.DROPOUT",
            "0.0",
            "MODEL.TEXT.HEAD_INIT_STD",
            "0.02",
            "PROMPT.METHODS",
            "['ptuning_v2']",
            "PROMPT.PTUNING_V2.NUM_TOKENS",
            str(PREFIX_LENGTH),
            "PROMPT.PTUNING_V2.PROJECTION",
            str(projection),
            "PROMPT.PTUNING_V2.PROJECTION_HIDDEN",
            str(PROJECTION_HIDDEN),
            "PROMPT.PTUNING_V2.DROPOUT",
            "0.0",
        ]
    )
    cfg.MODEL.BACKBONE.KWARGS.update(dims)
    return theirs, cfg


#: mmprompt parameter -> their parameter (the classifier is trained too, so it is compared)
def _names(projection: bool) -> Dict[str, str]:
    names = {
        "prompts.methods.0.embedding": "prefix_encoder.embedding.weight",
        "head.weight": "classifier.weight",
        "head.bias": "classifier.bias",
    }
    if projection:
        for i in (0, 2):
            for p in ("weight", "bias"):
                names[f"prompts.methods.0.projection.{i}.{p}"] = f"prefix_encoder.trans.{i}.{p}"
    return names


def compare(args, arch: str, projection: bool) -> Result:
    from mmprompt.build import build_model

    repo = require_checkout(
        args.ptv2_repo, "--ptv2-repo", ["model/sequence_classification.py", "model/prefix_encoder.py"]
    )
    module = _their_module(repo)
    their_class = (
        module.BertPrefixForSequenceClassification if arch == "bert" else module.RobertaPrefixForSequenceClassification
    )
    their_config, cfg = _configs(arch, args.size, projection)
    torch.manual_seed(args.seed)
    theirs = _build_theirs(their_class, their_config)
    encoder = theirs.bert if arch == "bert" else theirs.roberta
    perturb_norms_and_biases_(encoder, seed=args.seed)
    _take_legacy_past_key_values(encoder)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():  # prefix and classifier away from any init, so misplaced values show
        for p in list(theirs.prefix_encoder.parameters()) + list(theirs.classifier.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    ours = build_model(cfg, ["entailment", "not_entailment"])
    ours.backbone.model.load_state_dict(encoder.state_dict())
    names = _names(projection)
    their_params = dict(theirs.named_parameters())
    our_params = dict(ours.named_parameters())
    with torch.no_grad():
        for mine, their in names.items():
            our_params[mine].copy_(their_params[their])
    theirs.eval()
    ours.eval()

    tokenizer = ours.tower.tokenizer.get()
    enc = tokenizer(PREMISES, HYPOTHESES, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    labels = torch.tensor(LABELS)
    their_inputs = dict(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        labels=labels,
        token_type_ids=enc["token_type_ids"] if arch == "bert" else None,
    )
    batch = {"text": PREMISES, "text_b": HYPOTHESES, "label": labels}

    def run_theirs():
        theirs.zero_grad(set_to_none=True)
        out = theirs(**their_inputs)
        out.loss.backward()
        return out.logits

    def run_ours():
        ours.zero_grad(set_to_none=True)
        out = ours(batch)
        out["loss"].backward()
        return out["logits"]

    their_logits = run_theirs()
    their_grads = {mine: their_params[their].grad.clone() for mine, their in names.items()}
    our_logits = run_ours()
    our_grads = {mine: our_params[mine].grad.clone() for mine in names}
    ratio = time_ratio(run_ours, run_theirs, args.repeats)

    heads, dim = their_config.num_attention_heads, their_config.hidden_size
    layers = their_config.num_hidden_layers
    prompt_params = sum(p.numel() for p in ours.prompts.parameters())
    note = (
        f"{args.size} {arch}: {layers} layers, d {dim}, {heads} heads, l {PREFIX_LENGTH}"
        + (
            f", projection h {PROJECTION_HIDDEN}"
            if projection
            else f" (2*L*l*d = {2 * layers * PREFIX_LENGTH * dim:,})"
        )
        + f"; prefix parameters {prompt_params:,}, theirs {sum(p.numel() for p in theirs.prefix_encoder.parameters()):,}"
        "; their 4.11-style past_key_values tuple handed to transformers 5.x as a DynamicCache"
    )
    module_name = "BertPrefixForSequenceClassification" if arch == "bert" else "RobertaPrefixForSequenceClassification"
    return Result(
        recipe=f"ptuning_v2 {arch}" + (" +projection" if projection else ""),
        compared_with=f"THUDM/P-tuning-v2 model/sequence_classification.py {module_name}"
        + (" (prefix_projection)" if projection else ""),
        logits_rel=rel_diff(our_logits, their_logits),
        grads_rel=grads_rel(our_grads, their_grads),
        ratio=ratio,
        note=note,
    )


@recipe("ptuning_v2_bert", "ptv2_repo")
def bert(args) -> List[Result]:
    return [compare(args, "bert", projection=False)]


@recipe("ptuning_v2_bert_projection", "ptv2_repo")
def bert_projection(args) -> List[Result]:
    return [compare(args, "bert", projection=True)]


@recipe("ptuning_v2_roberta", "ptv2_repo")
def roberta(args) -> List[Result]:
    return [compare(args, "roberta", projection=False)]
