"""Rows no one reads (MODEL.BACKBONE.SKIP_UNUSED_ROWS): ViT and CLIP towers compute the last layer
for the pooled token only, and skip the rows of deep prompts the next layer overwrites. The result
is the full layers' -- logits and the gradient of every trainable parameter -- for every recipe
(VPT shallow/deep on timm, VPT-in-CLIP, MaPLe, MaPLe + learned positions, IVLP, CoOp, CoCoOp,
zero-shot), with random LayerNorm gains and biases so no row is special; the subset blocks equal
the library blocks on their rows; and the rows really are skipped (counted at the MLPs)."""

import json
import os

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock
from timm.models.vision_transformer import Block

from mmprompt.backbones import open_clip as oc
from mmprompt.backbones import timm_vit as tv
from mmprompt.build import build_model
from mmprompt.config import load_cfg
from mmprompt.errors import MMPromptError
from mmprompt.prompts.base import PromptContext, PromptModule, PromptStack
from mmprompt.tokens import new_owner_id

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["sea_lion", "acme inc.", "a very long class name of the kind some datasets have", "dog"]
LAYERS = 3  # a first layer, a middle one and the last one, in each tower
TIMM = ["MODEL.BACKBONE.PRETRAINED", "", "MODEL.HEAD.NUM_CLASSES", "4", "INPUT.SIZE", "(32, 32)"]
TIMM_KWARGS = "{'embed_dim': 32, 'depth': %d, 'num_heads': 2, 'img_size': 32, 'patch_size': 8}" % LAYERS
DEPTH2 = ["PROMPT.MAPLE.PROMPT_DEPTH", "2", "PROMPT.MAPLE.PROMPT_DEPTH_VISION", "2"]
DEPTH3 = ["PROMPT.MAPLE.PROMPT_DEPTH", "3", "PROMPT.MAPLE.PROMPT_DEPTH_VISION", "3"]
VPT = ["PROMPT.VPT.NUM_TOKENS", "3"]

#: recipe: (config, options, whether its deep prompts are replaced, so some middle rows are skipped)
RECIPES = {
    "vpt_shallow": ("vpt_shallow_cub.yaml", VPT, False),
    "vpt_deep": ("vpt_deep_cub.yaml", VPT, True),
    "vpt_deep_adap_pos": ("vpt_deep_adap_pos_cub.yaml", VPT, True),
    # one learned position per layer: deeper layers remove the tokens and insert them anew
    "vpt_deep_adap_pos_per_layer": ("vpt_deep_adap_pos_cub.yaml", VPT + ["PROMPT.DYNAMIC.CHOICE_DEPTH", "3"], True),
    "vpt_clip": ("vpt_clip.yaml", DEPTH3, True),
    "maple": ("maple.yaml", DEPTH3, True),
    "maple_adap_pos": ("maple_adap_pos.yaml", DEPTH3, True),
    "maple_adap_ins_pos": ("maple_adap_pos.yaml", DEPTH3 + ["PROMPT.MAPLE.POSITION", "adap_ins_pos"], True),
    "ivlp": ("ivlp.yaml", DEPTH2, True),
    "coop": ("coop.yaml", ["PROMPT.COOP.N_CTX", "4"], False),
    "coop_middle": ("coop.yaml", ["PROMPT.COOP.N_CTX", "4", "PROMPT.COOP.CLASS_TOKEN_POSITION", "middle"], False),
    "cocoop": ("cocoop.yaml", [], False),
    "zsclip": ("zsclip.yaml", [], False),
}


@pytest.fixture(scope="module")
def clip_json(tmp_path_factory):
    """The tiny CLIP of the tests with three layers per tower."""
    with open(os.path.join(REPO, "configs/_base_/tiny_clip_model.json")) as f:
        spec = json.load(f)
    spec["vision_cfg"]["layers"] = spec["text_cfg"]["layers"] = LAYERS
    path = tmp_path_factory.mktemp("clip") / "tiny_clip_3_layers.json"
    path.write_text(json.dumps(spec))
    return str(path)


def assert_same(ours, full, what=""):
    """Equal up to float32 rounding (the query rows' projections are separate matrix products)."""
    scale = full.abs().max().clamp_min(1e-12)
    assert (ours - full).abs().max() <= 1e-5 * scale, what


def randomise_norms(module, generator):
    """Random LayerNorm gains and biases: the frozen weights' own would leave rows alike."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=generator))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=generator))


def build(recipe, clip_json, skip=True):
    config, opts, _ = RECIPES[recipe]
    size = TIMM + ["MODEL.BACKBONE.KWARGS", TIMM_KWARGS] if config.startswith("vpt_") and recipe != "vpt_clip" else []
    if not size:
        size = ["MODEL.BACKBONE.ARCH", clip_json, "MODEL.BACKBONE.PRETRAINED", "", "INPUT.SIZE", "(32, 32)"]
    cfg = load_cfg(
        os.path.join(REPO, "configs", config), opts=size + opts + ["MODEL.BACKBONE.SKIP_UNUSED_ROWS", str(skip)]
    )
    torch.manual_seed(0)
    model = build_model(cfg, CLASSES)
    g = torch.Generator().manual_seed(1)
    randomise_norms(model.backbone, g)
    with torch.no_grad():  # prompts away from their init, so every token matters
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def blocks_of(tower):
    if hasattr(tower, "_vit"):
        return tower._vit.blocks
    return (tower._visual if tower.name == "vision" else tower._root).transformer.resblocks


def count_mlp_rows(backbone):
    """{tower: [(samples, rows) the MLP of each layer computed, layer after layer]}: what the layers
    really did. timm runs batch-first, open_clip's training path sequence-first."""
    counts = {}
    for name, tower in backbone.towers.items():
        counts[name] = seen = []
        batch_first = hasattr(tower, "_vit")
        for block in blocks_of(tower):

            def hook(module, args, out, seen=seen, batch_first=batch_first):
                shape = args[0].shape
                seen.append((shape[0], shape[1]) if batch_first else (shape[1], shape[0]))

            block.mlp.register_forward_hook(hook)
    return counts


def step(model, skip):
    """Logits, every trainable parameter's gradient, and the MLP rows computed per layer, with the
    row savings on or off (same Gumbel noise for learned positions)."""
    for tower in model.backbone.towers.values():
        tower.skip_unused_rows = skip
    model.zero_grad()
    model.train()
    counts = count_mlp_rows(model.backbone)
    torch.manual_seed(2)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 2])}
    out = model(batch, model.new_context())
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if params:  # zero-shot CLIP has none
        out["loss"].backward()
    for tower in model.backbone.towers.values():
        for block in blocks_of(tower):
            block.mlp._forward_hooks.clear()
    grads = {n: p.grad.clone() for n, p in params.items()}
    return out["logits"].detach(), grads, counts


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_skipping_unused_rows_gives_the_full_logits_and_gradients(recipe, clip_json):
    model = build(recipe, clip_json)
    logits, grads, rows = step(model, skip=True)
    full_logits, full_grads, full_rows = step(model, skip=False)
    assert_same(logits, full_logits, "logits")
    assert grads.keys() == full_grads.keys() and (grads or recipe == "zsclip")
    for name in grads:
        assert full_grads[name].abs().max() > 0, name  # every parameter takes part
        assert_same(grads[name], full_grads[name], name)
    skipped_middle = False
    for tower in rows:
        ours, full = rows[tower], full_rows[tower]
        assert len(ours) == len(full) and len(full) % LAYERS == 0
        for i, ((samples, computed), (full_samples, every)) in enumerate(zip(ours, full)):
            assert samples == full_samples
            if i % LAYERS == LAYERS - 1:  # the last layer of a pass: the pooled token only
                assert computed == 1 < every, (tower, i)
            else:
                assert computed <= every
                skipped_middle |= computed < every
    # a layer before deep prompts are replaced skips their rows; no other layer skips any
    assert skipped_middle == RECIPES[recipe][2]


def _rows(B, N, M, generator):
    """(B, M) distinct sorted positions per sample, different in each sample."""
    return torch.stack([torch.randperm(N, generator=generator)[:M].sort().values for _ in range(B)])


def _compare_on_rows(full, ours, x, rows):
    """The outputs of ``rows`` and the gradient they send to the block input are the library's."""
    index = rows[..., None].expand(-1, -1, x.shape[2])
    weights = torch.randn(index.shape, generator=torch.Generator().manual_seed(5))
    (ours_x,) = torch.autograd.grad((ours.gather(1, index) * weights).sum(), x)
    (full_x,) = torch.autograd.grad((full.gather(1, index) * weights).sum(), x)
    assert_same(ours.gather(1, index), full.gather(1, index), "rows")
    assert_same(ours_x, full_x, "input gradient")


@pytest.mark.parametrize("mask", ["none", "keys", "causal", "causal_keys"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_open_clip_block_on_query_rows_equals_the_library_block(mask, batch_first):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4, ls_init_value=0.3, batch_first=batch_first)
    randomise_norms(block, g)
    assert oc.computes_row_subsets(block)
    B, N, M = 3, 9, 4
    x = torch.randn(B, N, 32, generator=g, requires_grad=True)
    rows = _rows(B, N, M, g)
    keys = torch.rand(B, N, generator=g) > 0.3
    causal = torch.full((N, N), float("-inf")).triu_(1)
    causal_rows = torch.zeros(B, M, N).masked_fill(torch.arange(N) > rows[..., None], float("-inf"))
    full_mask = {
        "none": None,
        "keys": oc.additive_key_mask(keys, 4, x.dtype),
        "causal": causal,
        "causal_keys": oc.additive_key_mask(keys, 4, x.dtype, base=causal),
    }[mask]
    rows_mask = {
        "none": None,
        "keys": oc.additive_key_mask(keys, 4, x.dtype, rows=rows),
        "causal": causal_rows.repeat_interleave(4, 0),
        "causal_keys": oc.additive_key_mask(keys, 4, x.dtype, base=causal_rows, rows=rows),
    }[mask]
    layout = (lambda t: t) if batch_first else (lambda t: t.transpose(0, 1))
    full = layout(block(layout(x), attn_mask=full_mask))
    ours = oc._run_block_rows(block, x, rows_mask, batch_first, rows)
    _compare_on_rows(full, ours, x, rows)
    with torch.no_grad():  # evaluation: the library's batch-first fast path on the full side
        index = rows[..., None].expand(-1, -1, 32)
        assert_same(
            oc._run_block_rows(block, x, rows_mask, batch_first, rows).gather(1, index),
            layout(block(layout(x), attn_mask=full_mask)).gather(1, index),
        )


@pytest.mark.parametrize("masked", [False, True])
def test_timm_block_on_query_rows_equals_the_library_block(masked):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    block = Block(32, 4, qkv_bias=True, qk_norm=True, init_values=0.3)
    randomise_norms(block, g)
    assert tv.computes_row_subsets(block)
    B, N, M = 3, 9, 4
    x = torch.randn(B, N, 32, generator=g, requires_grad=True)
    rows = _rows(B, N, M, g)
    mask = (torch.rand(B, N, generator=g) > 0.3)[:, None, None, :] if masked else None
    _compare_on_rows(block(x, attn_mask=mask), tv._block_rows(block, x, rows, mask), x, rows)


def test_other_blocks_run_in_full():
    class OwnBlock(Block):
        pass

    class OwnResidualBlock(ResidualAttentionBlock):
        pass

    assert not tv.computes_row_subsets(OwnBlock(32, 4))
    assert not oc.computes_row_subsets(OwnResidualBlock(32, 4))
    assert not oc.computes_row_subsets(ResidualAttentionBlock(32, 4, is_cross_attention=True))


class Promising(PromptModule):
    """Two tokens after CLS before layer 0, promised to be overwritten before layer 1; ``keep``
    says whether layer 1 really replaces them."""

    def __init__(self, keep):
        super().__init__()
        self.keep = keep
        self.owner_id = new_owner_id()

    def before_layer(self, tower, i, seq, ctx):
        tokens = torch.full((2, seq.width), float(i))
        if i == 0:
            return seq.insert(tokens, "start", self.owner_id).will_overwrite(self.owner_id, 1)
        if i == 1 and self.keep:
            return seq.replace(self.owner_id, tokens)
        return seq


def _timm_tower(skip=True):
    torch.manual_seed(0)
    backbone = tv.create_timm_vit(
        "vit_base_patch16_224", "", {"embed_dim": 32, "depth": LAYERS, "num_heads": 2, "img_size": 32, "patch_size": 8}
    )
    randomise_norms(backbone, torch.Generator().manual_seed(0))
    tower = backbone.tower("vision")
    tower.skip_unused_rows = skip
    return tower


def test_a_promised_overwrite_that_does_not_happen_is_refused():
    tower = _timm_tower()
    images = torch.randn(2, 3, 32, 32)
    kept = tower.run_layers(tower.embed(images), PromptStack([Promising(keep=True)]), PromptContext())
    assert not kept.overwrite_before  # replace took the promise off
    with pytest.raises(MMPromptError, match="promised to be overwritten before layer 1"):
        tower.run_layers(tower.embed(images), PromptStack([Promising(keep=False)]), PromptContext())


def test_callers_that_read_the_states_get_every_row():
    """run_layers without then_pool (mean pooling, instance features, a caller's own reading) and
    with ``upto`` (the promise for the next layer is not this loop's to check) computes every row
    the caller can see: the states equal the full layers' everywhere."""
    images = torch.randn(2, 3, 32, 32)
    for upto in (None, 1):
        states = {}
        for skip in (True, False):
            tower = _timm_tower(skip)
            stack = PromptStack([Promising(keep=True)])
            states[skip] = tower.run_layers(tower.embed(images), stack, PromptContext(), upto).x
        assert_same(states[True], states[False], f"upto {upto}")


def test_mean_pooling_computes_every_row_of_the_last_layer():
    tower = _timm_tower()
    seq = tower.embed(torch.randn(2, 3, 32, 32))
    assert tower.pooled_rows(seq) is not None and tower.pooled_rows(seq, "cls") is not None
    assert tower.pooled_rows(seq, "mean") is None
    blocks = blocks_of(tower)
    seen = []
    blocks[-1].mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    tower.run_layers(seq, then_pool=True, pool_mode="mean")
    tower.run_layers(seq, then_pool=True, pool_mode="cls")
    assert seen == [seq.length, 1]


def test_skip_unused_rows_switch_reaches_the_towers(clip_json):
    for recipe in ("vpt_deep", "maple"):
        for skip in (True, False):
            model = build(recipe, clip_json, skip=skip)
            assert {t.skip_unused_rows for t in model.backbone.towers.values()} == {skip}


@pytest.mark.parametrize("recipe", ["vpt_deep", "maple", "cocoop"])
def test_evaluation_gives_the_full_logits(recipe, clip_json):
    model = build(recipe, clip_json).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    logits = {}
    for skip in (True, False):
        for tower in model.backbone.towers.values():
            tower.skip_unused_rows = skip
        if hasattr(model, "clear_text_cache"):
            model.clear_text_cache()
        with torch.no_grad():
            logits[skip] = model({"image": images})["logits"]
    assert_same(logits[True], logits[False])


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("shared", ["runs", "one_run", "per_sample"])
def test_row_subsets_take_and_put_the_rows(dim, shared):
    """Shared rows go through slices, per-sample ones through gather/scatter: the same rows."""
    from mmprompt.backbones._common import RowSubset

    g = torch.Generator().manual_seed(0)
    B, N, D = 3, 10, 4
    rows = {
        "runs": torch.tensor([0, 3, 4, 5, 8]).expand(B, -1),
        "one_run": torch.tensor([0]).expand(B, -1),
        "per_sample": _rows(B, N, 5, g),
    }[shared]
    x = torch.randn(B, N, D, generator=g)
    layout = (lambda t: t) if dim == 1 else (lambda t: t.transpose(0, 1))
    subset = RowSubset(rows, dim)
    assert (subset.runs is None) == (shared == "per_sample")
    index = rows[..., None].expand(-1, -1, D)
    assert torch.equal(layout(subset.take(layout(x))), x.gather(1, index))
    new = torch.randn(index.shape, generator=g)
    assert torch.equal(layout(subset.put(layout(x), layout(new))), x.scatter(1, index, new))


@pytest.mark.parametrize("recipe", ["vpt_deep", "maple", "vpt_deep_adap_pos_per_layer"])
def test_the_rows_of_a_layout_are_searched_once_a_pass(recipe, clip_json, monkeypatch):
    """Deep prompts overwrite their slots in place, so the rows skipped by the layers are searched
    once per tower and pass and reused while the layout is that same owner tensor; a layer that
    rearranges its tokens (its own learned position) is searched anew."""
    from mmprompt.tokens import TokenSeq

    searches = []
    search = TokenSeq.rows_except
    monkeypatch.setattr(TokenSeq, "rows_except", lambda seq, owners: searches.append(seq.tower) or search(seq, owners))
    model = build(recipe, clip_json)
    step(model, True)
    per_tower = {tower: searches.count(tower) for tower in set(searches)}
    # layers 0..LAYERS-2 skip the rows the next layer overwrites
    rearranged = recipe.endswith("per_layer")
    assert per_tower and all(n == (LAYERS - 1 if rearranged else 1) for n in per_tower.values()), per_tower
