"""The prompt methods on the real tiny backbones (timm ViT, open_clip CLIP, T5, BERT) through the
task models: where tokens land per layer, gradients only on prompts, frozen weights unchanged."""

import json
import os

import pytest
import torch
from _text_backbones import tiny_encoder_cfg, tiny_t5_cfg

from mmprompt.build import build_backbone, build_model, build_prompts
from mmprompt.config import load_cfg
from mmprompt.prompts.base import PromptContext

ROOT = os.path.join(os.path.dirname(__file__), "..")
BASE = os.path.join(ROOT, "configs", "_base_")


def record_layers(tower):
    """Make ``tower`` remember the sequence each layer receives."""
    seen = []
    layer = tower.layer

    def recording(i, seq):
        seen.append(seq)
        return layer(i, seq)

    tower.layer = recording
    return seen


def tokens_of(seq, owner):
    pos = seq.positions_of(owner)
    return seq.x.gather(1, pos[..., None].expand(-1, -1, seq.width))


def train_step(model, batch):
    """One SGD step; returns the names of parameters that got a gradient."""
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    model.train()
    model(batch)["loss"].backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert all(p.grad is None for p in model.backbone.parameters())
    opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "frozen backbone weights changed"
    return got


def vit_cfg(*opts):
    return load_cfg(os.path.join(BASE, "tiny_vit.yaml"), opts=list(opts))


def test_vpt_deep_on_timm_vit_replaces_prompts_before_each_layer():
    cfg = vit_cfg(
        "PROMPT.METHODS",
        "['vpt']",
        "PROMPT.VPT.DEEP",
        "True",
        "PROMPT.VPT.NUM_TOKENS",
        "3",
        "PROMPT.VPT.DROPOUT",
        "0.0",
    )
    model = build_model(cfg, ["a", "b", "c"])
    vpt = model.prompts.methods[0]
    seen = record_layers(model.backbone.tower("vision"))
    model.eval()
    model({"image": torch.randn(2, 3, 32, 32)})
    assert [s.length for s in seen] == [1 + 3 + 16] * 2  # CLS, prompts, 4x4 patches
    for i, s in enumerate(seen):
        assert s.positions_of(vpt.owner_id)[0].tolist() == [1, 2, 3]
        assert torch.equal(tokens_of(s, vpt.owner_id)[1], vpt.sources[i].tokens)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 2])}
    got = train_step(model, batch)
    assert {n for n in got if n.startswith("prompts.")} == {
        "prompts.methods.0.sources.0.tokens",
        "prompts.methods.0.sources.1.tokens",
    }
    assert all(n.startswith(("prompts.", "head.")) for n in got)


@pytest.fixture
def clip_json(tmp_path):
    """A tiny open_clip config whose text (48) and vision (64) widths differ, so couplings are checked."""
    with open(os.path.join(BASE, "tiny_clip_model.json")) as f:
        spec = json.load(f)
    spec["text_cfg"]["width"] = 48
    spec["text_cfg"]["heads"] = 2
    path = tmp_path / "tiny_clip_48_64.json"
    path.write_text(json.dumps(spec))
    return str(path)


def clip_model(clip_json, *opts, classes=("cat", "sea lion")):
    cfg = load_cfg(os.path.join(BASE, "tiny_clip.yaml"), opts=["MODEL.BACKBONE.ARCH", clip_json, *opts])
    return build_model(cfg, list(classes))


def test_maple_on_open_clip_couples_text_to_vision_per_layer(clip_json):
    model = clip_model(clip_json, "PROMPT.METHODS", "['maple']", "PROMPT.MAPLE.PROMPT_DEPTH", "2")
    maple = model.prompts.methods[0]
    assert maple.couplings[0].in_features == 48 and maple.couplings[0].out_features == 64
    text, vision = model.backbone.tower("text"), model.backbone.tower("vision")
    text_seen, vision_seen = record_layers(text), record_layers(vision)
    model.eval()
    model({"image": torch.randn(2, 3, 32, 32)})
    ids, _ = text.tokenize(["of a", "cat."])
    of_a = ids[0, 1:3]
    # "SOT [ctx ctx] of a cat . EOT": the context's first two words learned, "of a" kept as words
    seq = text_seen[0]
    assert seq.owner[0, 1:3].tolist() == [maple.text_owner] * 2
    assert torch.equal(seq.x[0, 3:5], text.input_embeddings().weight[of_a])
    assert int(seq.anchors["pool"][0]) == 1 + 2 + 2 + 2  # EOT after "cat ."
    for i in range(2):
        assert torch.equal(tokens_of(text_seen[i], maple.text_owner)[0], maple.text_sources[i].tokens)
        expected = maple.couplings[i](maple.text_sources[i].tokens)
        assert torch.allclose(tokens_of(vision_seen[i], maple.vision_owner)[0], expected)
        assert vision_seen[i].length == 1 + 16 + 2
    # the class texts are trimmed after the longest one's EOT, then 2 context tokens and the 2
    # fixed words go in; the deeper layer replaces the context in place
    trimmed = int(text.eot_positions(model.class_token_ids).max()) + 1
    assert [s.length for s in text_seen] == [trimmed + 4, trimmed + 4]
    got = train_step(model, {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([1, 0])})
    assert got == {
        f"prompts.methods.0.{n}"
        for n in [
            "text_sources.0.tokens",
            "text_sources.1.tokens",
            "couplings.0.weight",
            "couplings.0.bias",
            "couplings.1.weight",
            "couplings.1.bias",
        ]
    }
    state = model.trainable_state_dict()
    assert all(k.startswith("prompts.") for k in state)  # a checkpoint holds only the prompts


def test_coop_on_open_clip_class_prompts(clip_json):
    # CSC with a random init: with CTX_INIT, CoOp's context is generic (test_prompts_clip.py)
    model = clip_model(
        clip_json,
        "PROMPT.METHODS",
        "['coop']",
        "PROMPT.COOP.N_CTX",
        "4",
        "PROMPT.COOP.CTX_INIT",
        "",
        "PROMPT.COOP.CSC",
        "True",
    )
    coop = model.prompts.methods[0]
    assert coop.source.tokens.shape == (2 * 4, 48)
    seen = record_layers(model.backbone.tower("text"))
    model.eval()
    model({"image": torch.randn(1, 3, 32, 32)})
    placed = tokens_of(seen[0], coop.owner_id)
    assert torch.equal(placed, coop.source.tokens.reshape(2, 4, 48))
    got = train_step(model, {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([1, 0])})
    assert got == {"prompts.methods.0.source.tokens"}


def t5_model(*opts):
    cfg = tiny_t5_cfg()
    cfg.MODEL.NAME = "t5_verbalizer"
    cfg.merge_from_list(list(opts))
    return build_model(cfg, ["no", "yes"])


TEXTS = {"text": ["great movie", "bad"], "label": torch.tensor([1, 0])}


@pytest.mark.parametrize("source", ["param", "superpos", "residual"])
def test_prompt_tuning_on_t5_encoder(source):
    model = t5_model(
        "PROMPT.METHODS",
        "['prompt_tuning']",
        "PROMPT.PROMPT_TUNING.NUM_TOKENS",
        "5",
        "PROMPT.PROMPT_TUNING.SOURCE",
        source,
        "PROMPT.SUPERPOS.M",
        "16",
        "PROMPT.RESIDUAL.HIDDEN",
        "8",
    )
    pt = model.prompts.methods[0]
    tower = model.backbone.tower("encoder")
    seen = record_layers(tower)
    model.eval()
    model(TEXTS)
    assert seen[0].positions_of(pt.owner_id)[0].tolist() == [0, 1, 2, 3, 4]  # T5: no SOT, prefix at 0
    expected = pt.sources[0](PromptContext(), "encoder")[0]
    assert torch.allclose(tokens_of(seen[0], pt.owner_id)[0], expected)
    assert seen[1].length == seen[0].length
    if source == "param":
        assert torch.equal(pt.sources[0].tokens, tower.input_embeddings().weight[:5])
    got = train_step(model, TEXTS)
    assert got and all(n.startswith("prompts.methods.0.sources.0.") for n in got)


@pytest.mark.parametrize("method", ["dept", "adept"])
def test_offsets_on_t5_encoder(method):
    node = method.upper()
    model = t5_model(
        "PROMPT.METHODS",
        f"['{method}']",
        f"PROMPT.{node}.NUM_TOKENS",
        "4",
        *(
            ["PROMPT.DEPT.RANK", "3", "PROMPT.DEPT.MAX_LEN", "64"]
            if method == "dept"
            else ["PROMPT.ADEPT.BOTTLENECK", "3"]
        ),
    )
    m = model.prompts.methods[0]
    tower = model.backbone.tower("encoder")
    for p in m.offsets.parameters():  # move the zero-initialised factors so offsets are visible
        torch.nn.init.normal_(p)
    seen = record_layers(tower)
    model.eval()
    ids, mask = tower.tokenize(TEXTS["text"])
    plain = tower.embed((ids, mask))
    model(TEXTS)
    seq = seen[0]
    assert seq.positions_of(m.prompt.owner_id)[0].tolist() == [0, 1, 2, 3]
    n = int(mask[0].sum())  # content = tokens before </s>
    content = seq.x[0, 4 : 4 + n - 1]
    assert not torch.allclose(content, plain.x[0, : n - 1])
    assert torch.equal(seq.x[0, 4 + n - 1], plain.x[0, n - 1])  # </s> untouched
    got = train_step(model, TEXTS)
    assert any(".offsets." in g for g in got) and any(".prompt." in g for g in got)
    groups = m.param_groups()["offsets"]
    assert {f"prompts.methods.0.{g}" for g in groups} == {n for n, _ in model.named_parameters() if ".offsets." in n}


def test_deep_prompt_on_bert_every_layer():
    cfg = tiny_encoder_cfg()
    cfg.merge_from_list(
        ["PROMPT.METHODS", "['deep_prompt']", "PROMPT.DEEP_PROMPT.NUM_TOKENS", "3", "PROMPT.DEEP_PROMPT.DROPOUT", "0.0"]
    )
    backbone = build_backbone(cfg)
    stack = build_prompts(cfg, backbone)
    deep = stack.methods[0]
    tower = backbone.tower("encoder")
    seen = record_layers(tower)
    ids = torch.randint(5, 100, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    backbone.eval()
    feats = tower.run((ids, mask), stack, PromptContext())
    assert [s.length for s in seen] == [9, 9]
    for i, s in enumerate(seen):
        assert s.positions_of(deep.owner_id)[0].tolist() == [1, 2, 3]  # after [CLS]
        assert torch.equal(tokens_of(s, deep.owner_id)[0], deep.sources[i].tokens)
    feats.pow(2).sum().backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(s.tokens.grad is not None for s in deep.sources)
