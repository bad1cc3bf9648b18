"""Text trimming (MODEL.BACKBONE.TRIM_TEXT): the text towers run only on the tokens that can change
a feature, and the result is the untrimmed one -- logits and every prompt gradient -- for every
CLIP recipe (prompts that move tokens, deep prompts replacing tokens at deeper layers, CoOp's
placements around the class name, image-conditioned prompts) and for BERT-family padding."""

import os

import pytest
import torch
from test_prompts_backbones import record_layers

from mmprompt.build import build_model
from mmprompt.config import load_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "MODEL.BACKBONE.ARCH",
    os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "INPUT.SIZE",
    "(32, 32)",
]
DEPTH2 = ["PROMPT.MAPLE.PROMPT_DEPTH", "2", "PROMPT.MAPLE.PROMPT_DEPTH_VISION", "2"]
#: names of different lengths: the batch's last EOT is the long name's, the others keep padding
CLASSES = ["sea_lion", "acme inc.", "a very long class name of the kind some datasets have", "dog"]

RECIPES = {
    "maple": ("maple.yaml", DEPTH2),
    "maple_adap_pos": ("maple_adap_pos.yaml", DEPTH2),  # learned position: context also before EOT
    "coop_end": ("coop.yaml", ["PROMPT.COOP.N_CTX", "4"]),
    "coop_middle": ("coop.yaml", ["PROMPT.COOP.N_CTX", "4", "PROMPT.COOP.CLASS_TOKEN_POSITION", "middle"]),
    "coop_front": ("coop.yaml", ["PROMPT.COOP.N_CTX", "4", "PROMPT.COOP.CLASS_TOKEN_POSITION", "front"]),
    "coop_csc": ("coop_csc.yaml", ["PROMPT.COOP.N_CTX", "4"]),
    "cocoop": ("cocoop.yaml", []),
    "ivlp": ("ivlp.yaml", DEPTH2),
    "deep_language": ("ivlp_language_only.yaml", DEPTH2),  # deep text prompts replacing at layer 1
    "vpt_clip": ("vpt_clip.yaml", DEPTH2),
    "zsclip": ("zsclip.yaml", []),
}


def assert_same(ours, full, what=""):
    """Equal up to float32 rounding: the shorter sequences change the order of a few sums (max
    relative difference seen: ~1e-6), nothing else."""
    scale = full.abs().max().clamp_min(1e-12)
    assert (ours - full).abs().max() <= 1e-5 * scale, what


def build(recipe):
    config, opts = RECIPES[recipe]
    torch.manual_seed(0)
    model = build_model(load_cfg(os.path.join(REPO, "configs", config), opts=TINY + opts), CLASSES)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # prompts away from their init, so every token matters
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def step(model, trim):
    """Logits, the loss's gradient w.r.t. every trainable parameter, and the text lengths the
    layers ran on, with trimming on or off (same Gumbel noise for learned positions)."""
    text = model.backbone.tower("text")
    text.trim_text = trim
    seen = record_layers(text)
    model.zero_grad()
    model.train()
    torch.manual_seed(2)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 2])}
    out = model(batch, model.new_context())
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if params:
        out["loss"].backward()
    del text.layer  # drop the recorder
    return out["logits"].detach(), {n: p.grad.clone() for n, p in params.items()}, [s.length for s in seen]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_trimmed_text_gives_the_untrimmed_logits_and_gradients(recipe):
    model = build(recipe)
    logits, grads, lengths = step(model, trim=True)
    full_logits, full_grads, full_lengths = step(model, trim=False)
    assert_same(logits, full_logits, "logits")
    assert grads.keys() == full_grads.keys()
    for name in grads:
        assert_same(grads[name], full_grads[name], name)
    # the text layers really ran shorter: up to the longest class prompt's EOT (+ prompts)
    ids = model.class_token_ids
    longest = int(model.backbone.tower("text").eot_positions(ids).max()) + 1
    assert lengths and max(lengths) < min(full_lengths)
    assert min(lengths) >= longest


def test_trimmed_eot_pooling_reads_each_class_own_eot():
    """Shorter class prompts keep their padding up to the longest one's EOT, and pool at their own
    EOT: the features equal those of each text encoded alone by the library at full length."""
    model = build("zsclip")
    clip = model.backbone
    text = clip.tower("text")
    assert text.trim_text  # on by default (MODEL.BACKBONE.TRIM_TEXT)
    ids, mask = text.tokenize(model.class_texts)
    seen = record_layers(text)
    with torch.no_grad():
        ours = text.run((ids, mask))
        theirs = clip.model.encode_text(ids)
    assert seen[0].length == int(ids.argmax(-1).max()) + 1 < ids.shape[1]
    assert_same(ours, theirs)


def test_trim_text_switch_reaches_the_towers():
    cfg = load_cfg(os.path.join(REPO, "configs", "coop.yaml"), opts=TINY + ["MODEL.BACKBONE.TRIM_TEXT", "False"])
    model = build_model(cfg, CLASSES)
    assert model.backbone.tower("text").trim_text is False
    seen = record_layers(model.backbone.tower("text"))
    model.eval()
    with torch.no_grad():
        model({"image": torch.randn(1, 3, 32, 32)})
    assert seen[0].length == 77 + model.prompts.methods[0].n_ctx  # full context, trimmed back to 77 at layer 0


def pre_padded_text_model(cfg):
    """The model of ``cfg`` (two classes, prompts at random values, eval: no dropout, whose masks
    would be drawn for other shapes), its encoder tower, two tokenized texts and the same texts
    padded to 40 columns (as a tokenizer's ``padding="max_length"`` gives)."""
    torch.manual_seed(0)
    model = build_model(cfg, ["no", "yes"]).eval()
    with torch.no_grad():
        for p in model.prompts.parameters():
            p.copy_(torch.randn_like(p))
    tower = model.backbone.tower("encoder")
    assert tower.trim_text  # on by default (MODEL.BACKBONE.TRIM_TEXT)
    ids, mask = tower.tokenize(["great movie, truly", "bad"])
    pad = torch.zeros(2, 40 - ids.shape[1], dtype=ids.dtype)
    return model, tower, (ids, mask), (torch.cat([ids, pad], 1), torch.cat([mask, pad.bool()], 1))


def test_bert_padding_the_mask_hides_is_trimmed_exactly():
    """Pre-padded inputs (padding to a fixed length): the columns every sample masks are dropped,
    outputs and prompt gradients are those of the padded run; inner padding stays."""
    from _text_backbones import tiny_encoder_cfg

    cfg = tiny_encoder_cfg()
    cfg.merge_from_list(
        [
            "PROMPT.METHODS",
            "['prompt_tuning']",
            "MODEL.TEXT.TOKENIZER",
            "byt5",
            "MODEL.BACKBONE.KWARGS.vocab_size",
            "384",
        ]
    )
    model, tower, (ids, mask), padded = pre_padded_text_model(cfg)
    weights = torch.randn(2, tower.width)
    results = []
    for trim in (True, False):
        tower.trim_text = trim
        seen = record_layers(tower)
        model.zero_grad()
        torch.manual_seed(3)
        feats = tower.run(padded, model.prompts, model.new_context())
        (feats * weights).sum().backward()
        del tower.layer
        results.append(
            (feats.detach(), {n: p.grad.clone() for n, p in model.prompts.named_parameters()}, seen[0].length)
        )
    (trimmed, grads, length), (full, full_grads, full_length) = results
    assert full_length == 40 + model.prompts.methods[0].length
    assert length == ids.shape[1] + model.prompts.methods[0].length  # the batch's own longest text stays
    assert_same(trimmed, full)
    for name in grads:
        assert_same(grads[name], full_grads[name], name)


@pytest.mark.parametrize("method", ["dept", "prompt_tuning"])
def test_t5_padding_the_mask_hides_is_trimmed_exactly(method):
    """T5 encoder with pre-padded inputs (DePT pads to a fixed 256): the columns every sample masks
    are dropped; the decoder's log-probabilities of the label words (cross-attending through the
    trimmed mask) and every trainable gradient -- prompt and DePT offsets -- are the padded run's."""
    from _text_backbones import tiny_t5_cfg

    cfg = tiny_t5_cfg()
    cfg.MODEL.NAME = "t5_verbalizer"
    cfg.merge_from_list(["PROMPT.METHODS", f"['{method}']"])
    if method == "dept":
        cfg.merge_from_list(["PROMPT.DEPT.NUM_TOKENS", "4", "PROMPT.DEPT.RANK", "2", "PROMPT.DEPT.MAX_LEN", "48"])
    model, tower, (ids, mask), padded = pre_padded_text_model(cfg)
    targets = model.targets(ids.device)[torch.tensor([1, 0])]
    results = []
    for trim in (True, False):
        tower.trim_text = trim
        seen = record_layers(tower)
        model.zero_grad()
        encoded = tower.encode(padded, model.prompts, model.new_context())
        log_probs = model.backbone.target_log_probs(encoded.x, encoded.mask, targets)
        log_probs.sum().backward()
        del tower.layer
        grads = {n: p.grad.clone() for n, p in model.prompts.named_parameters()}
        results.append((log_probs.detach(), grads, seen[0].length))
    (trimmed, grads, length), (full, full_grads, full_length) = results
    assert length < full_length and full_length >= 40
    assert_same(trimmed, full)
    assert grads and all(g.abs().max() > 0 for g in grads.values())
    for name in grads:
        assert_same(grads[name], full_grads[name], name)
