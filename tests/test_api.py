"""The Python API (mmprompt.wrap / create_model / from_pretrained / save_pretrained) on tiny
random models: the Done-when cases of issue 14 in-process (a plain loop of 3 steps moves the
Gumbel temperature; save, reload, same logits), option routing and its errors."""

from __future__ import annotations

import os

import pytest
import torch

import mmprompt
from mmprompt.errors import ConfigError, MMPromptError
from mmprompt.prompts.dynamic import TemperatureSchedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_vit():
    timm = pytest.importorskip("timm")
    return timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        num_classes=0,
        embed_dim=64,
        depth=2,
        num_heads=2,
        img_size=32,
        patch_size=8,
    )


def tiny_clip():
    open_clip = pytest.importorskip("open_clip")
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, layers=2, width=64, head_width=32, patch_size=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    )


WORDS = "the a cat dog sat on mat good bad movie film".split()


def tiny_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return transformers.BertModel(config), tokenizer


IMAGES = {
    "image": torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
    "label": torch.tensor([0, 1, 2, 0]),
}
TEXTS = {"text": ["good movie", "bad film", "the cat sat", "a dog"], "label": torch.tensor([1, 0, 1, 0])}


def temperatures(model):
    return [float(m.tau) for m in model.modules() if isinstance(m, TemperatureSchedule)]


def train_save_reload(model, batch, out, backbone, **load):
    """3 plain SGD steps; the temperatures move; the reloaded model gives the same logits."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    start = temperatures(model)
    model.train()
    for _ in range(3):
        model(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model.step == 3
    moved = temperatures(model)
    assert moved and all(t < s for t, s in zip(moved, start)), (start, moved)
    model.eval()
    with torch.no_grad():
        logits = model(batch)["logits"]
    model.save_pretrained(str(out))
    assert sorted(os.listdir(out)) == ["README.md", "config.yaml", "prompts.safetensors"]
    back = mmprompt.from_pretrained(str(out), model=backbone, **load)
    assert not back.training and back.step == 3 and temperatures(back) == moved
    with torch.no_grad():
        assert torch.equal(back(batch)["logits"], logits)
    return back


def test_open_clip_maple_adap_pos_plain_loop_round_trip(tmp_path):
    torch.manual_seed(0)
    clip = tiny_clip()
    model = mmprompt.wrap(
        clip, "maple", classnames=["cat", "dog", "car"], n_ctx=2, prompt_depth=2, position="adap_pos", gamma=0.1
    )
    assert type(model).__name__ == "CLIPPromptClassifier"
    assert not any(p.requires_grad for p in clip.parameters()) and not clip.training
    train_save_reload(model, IMAGES, tmp_path / "maple", clip)
    assert "maple on open_clip" in (tmp_path / "maple" / "README.md").read_text()


def test_timm_vit_vpt_plain_loop_round_trip(tmp_path):
    torch.manual_seed(0)
    vit = tiny_vit()
    model = mmprompt.wrap(vit, "vpt", num_classes=3, num_tokens=4, deep=True, position="adap_pos", gamma=0.1)
    assert model.cfg.PROMPT.VPT.NUM_TOKENS == 4 and model.cfg.PROMPT.VPT.DEEP
    assert model.cfg.PROMPT.DYNAMIC.GAMMA == 0.1
    train_save_reload(model, IMAGES, tmp_path / "vpt", vit)


def test_bert_prompt_tuning_plain_loop_round_trip(tmp_path):
    torch.manual_seed(0)
    bert, tokenizer = tiny_bert(tmp_path)
    model = mmprompt.wrap(
        bert, "prompt_tuning", num_classes=2, tokenizer=tokenizer, num_tokens=4, position="adap_pos", gamma=0.1
    )
    assert type(model).__name__ == "TextClassifier"
    train_save_reload(model, TEXTS, tmp_path / "pt", bert, tokenizer=tokenizer)


def test_temperature_anneals_in_a_plain_loop_and_follows_an_optimizer():
    """The issue's report: 20 SGD steps at GAMMA 0.1 left tau at 1.0; now each training forward
    (or, with follow_optimizer, each optimizer step) is a step of the schedule."""
    torch.manual_seed(0)
    model = mmprompt.wrap(tiny_vit(), "vpt", num_classes=3, num_tokens=2, position="adap_pos", gamma=0.1)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for _ in range(20):
        model(IMAGES)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model.step == 20
    assert temperatures(model) == [pytest.approx(max(torch.exp(torch.tensor(-0.1 * 19)).item(), 0.5))]
    with torch.no_grad():  # evaluation-style passes do not count
        model(IMAGES)
    model.eval()
    model(IMAGES)
    assert model.step == 20

    handle = model.follow_optimizer(optimizer)
    model.train()
    for _ in range(2):  # two accumulated micro-batches, one optimizer step
        model(IMAGES)["loss"].backward()
    optimizer.step()
    assert model.step == 21
    handle.remove()
    model(IMAGES)
    assert model.step == 22


def test_options_route_to_method_shared_and_per_method_nodes():
    clip = tiny_clip()
    model = mmprompt.wrap(
        clip,
        ["maple", "coop"],
        classnames=["cat", "dog"],
        maple={"n_ctx": 2, "prompt_depth": 1, "position": "adap_pos", "dynamic": {"gamma": 0.2}},
        coop={"n_ctx": 3, "ctx_init": ""},
        dynamic={"tau0": 2.0},
        head={"dropout": 0.0},
    )
    cfg = model.cfg
    assert cfg.PROMPT.METHODS == ["maple", "coop"]
    assert (cfg.PROMPT.MAPLE.N_CTX, cfg.PROMPT.COOP.N_CTX) == (2, 3)
    assert cfg.PROMPT.DYNAMIC.TAU0 == 2.0 and cfg.PROMPT.DYNAMIC.GAMMA == 3e-5
    assert cfg.PROMPT.PER_METHOD.MAPLE.DYNAMIC.GAMMA == 0.2
    schedules = [m for m in model.modules() if isinstance(m, TemperatureSchedule)]
    assert [float(s.gamma) for s in schedules] == [0.2] and [float(s.tau0) for s in schedules] == [2.0]


@pytest.mark.parametrize(
    "options,message",
    [
        ({"n_ctx": 2}, "give it per method"),
        ({"num_tokns": 2}, "not a key of"),
        ({"maple": {"n_cx": 2}}, "PROMPT.MAPLE has no key N_CX"),
        ({"maple": {"dynamic": {"gama": 1.0}}}, "PROMPT.DYNAMIC has no key GAMA"),
        ({"maple": 3}, "takes a dict"),
        ({"gamma": "fast"}, "PROMPT.DYNAMIC.GAMMA"),
    ],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        mmprompt.wrap(tiny_clip(), ["maple", "coop"], classnames=["cat", "dog"], **options)


def test_wrap_refuses_what_it_cannot_prompt():
    with pytest.raises(ConfigError, match="wrap prompts a timm VisionTransformer"):
        mmprompt.wrap(torch.nn.Linear(2, 2), "vpt", num_classes=2)
    with pytest.raises(ConfigError, match="needs classnames="):
        mmprompt.wrap(tiny_clip(), "maple")
    with pytest.raises(ConfigError, match="Unknown prompt method 'mapel'"):
        mmprompt.wrap(tiny_clip(), "mapel", classnames=["a"])


def test_per_method_overrides_are_checked():
    """PROMPT.PER_METHOD from a yaml or KEY VALUE overrides: only listed methods, shared nodes,
    existing keys and values of the shared key's type."""
    from mmprompt.build import method_cfg
    from mmprompt.config import load_cfg

    def cfg_with(*opts):
        return load_cfg(opts=["PROMPT.METHODS", "['vpt']", *opts])

    cfg = cfg_with("PROMPT.PER_METHOD.VPT.DYNAMIC.GAMMA", "0.1")
    assert method_cfg(cfg, "vpt").PROMPT.DYNAMIC.GAMMA == 0.1 and cfg.PROMPT.DYNAMIC.GAMMA == 3e-5
    for opts, message in [
        (("PROMPT.PER_METHOD.COOP.DYNAMIC.GAMMA", "0.1"), "does not list"),
        (("PROMPT.PER_METHOD.VPT.DYNAMIC.GAMMA", "fast"), "must be a float"),
        (("PROMPT.PER_METHOD.VPT.DYNAMIC.GAMA", "0.1"), "has no key GAMA"),
        (("PROMPT.PER_METHOD.VPT.HEAD.DROPOUT", "0.1"), "only the nodes"),
    ]:
        with pytest.raises(ConfigError, match=message):
            method_cfg(cfg_with(*opts), "vpt")


def test_from_pretrained_needs_the_wrapped_backbone(tmp_path):
    model = mmprompt.wrap(tiny_vit(), "vpt", num_classes=3, num_tokens=2)
    model.save_pretrained(str(tmp_path))
    with pytest.raises(MMPromptError, match="pass it again"):
        mmprompt.from_pretrained(str(tmp_path))


def test_create_model_from_a_recipe_and_round_trip_without_a_backbone(tmp_path):
    base = os.path.join(REPO, "configs", "_base_", "tiny_vit.yaml")
    torch.manual_seed(0)
    model = mmprompt.create_model(
        base, "PROMPT.METHODS", "['vpt']", "PROMPT.VPT.NUM_TOKENS", "3", classnames=["a", "b", "c"]
    )
    assert model.cfg.PROMPT.VPT.NUM_TOKENS == 3 and model.head.out_features == 3
    model.eval()
    with torch.no_grad():
        logits = model(IMAGES)["logits"]
    model.save_pretrained(str(tmp_path))
    torch.manual_seed(0)  # the same random backbone (a pretrained one needs no seed)
    back = mmprompt.from_pretrained(str(tmp_path))
    with torch.no_grad():
        assert torch.equal(back(IMAGES)["logits"], logits)


def test_create_model_takes_recipe_names():
    assert "maple_adap_pos" in mmprompt.list_recipes()
    with pytest.raises(ConfigError, match="No recipe 'maple_adap'"):
        mmprompt.create_model("maple_adap")
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        mmprompt.create_model("maple_adap_pos", "PROMPT.MAPLE.N_CTX")


def test_t5_is_wrapped_as_a_verbalizer_or_a_classifier():
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(
        vocab_size=384,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        num_decoder_layers=2,
        decoder_start_token_id=0,
    )
    t5 = transformers.T5ForConditionalGeneration(config)
    tokenizer = transformers.ByT5Tokenizer()
    verbalizer = mmprompt.wrap(t5, "prompt_tuning", classnames=["yes", "no"], tokenizer=tokenizer, num_tokens=3)
    classifier = mmprompt.wrap(t5, "prompt_tuning", num_classes=2, tokenizer=tokenizer, num_tokens=3)
    assert (type(verbalizer).__name__, type(classifier).__name__) == ("T5Verbalizer", "TextClassifier")
    batch = {"text": ["is it?", "no way"], "label": torch.tensor([0, 1])}
    with torch.no_grad():
        assert verbalizer(batch)["logits"].shape == classifier(batch)["logits"].shape == (2, 2)


def keyword_defaults(cls, skip=()):
    import inspect

    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and name not in skip
    }


@pytest.mark.parametrize(
    "path,node,skip",
    [
        ("mmprompt.prompts.maple:MaPLe", "MAPLE", ("settings",)),
        ("mmprompt.prompts.coop:CoOp", "COOP", ("settings", "num_classes")),
        ("mmprompt.prompts.dynamic:_LearnedChoice", "DYNAMIC", ("temperature",)),
        ("mmprompt.prompts.dynamic:AdaptivePosition", "DYNAMIC", ("length", "width")),
        ("mmprompt.prompts.dynamic:AdaptiveLength", "DYNAMIC", ("length", "width")),
        ("mmprompt.prompts.dynamic:PromptPool", "DYNAMIC", ("tower", "init", "init_text", "patch_size")),
        ("mmprompt.prompts.sources_superpos:SuperPosSource", "SUPERPOS", ("tower", "init", "init_text", "patch_size")),
        ("mmprompt.prompts.sources_superpos:ResidualSource", "RESIDUAL", ("tower", "init", "init_text", "patch_size")),
        ("mmprompt.prompts.offsets:DePT", "DEPT", ()),
        ("mmprompt.prompts.offsets:ADePT", "ADEPT", ()),
        ("mmprompt.prompts.offsets:OffsetPrompt", "DEPT", ()),
        ("mmprompt.prompts.offsets:OffsetPrompt", "ADEPT", ()),
    ],
)
def test_keyword_defaults_are_the_config_defaults(path, node, skip):
    """Modules built from keywords and from the default config are the same modules."""
    import importlib

    module, name = path.split(":")
    cls = getattr(importlib.import_module(module), name)
    defaults = mmprompt.get_cfg().PROMPT[node]
    for key, value in keyword_defaults(cls, skip).items():
        expected = defaults[key.upper()]
        assert (list(value) if isinstance(expected, list) else value) == expected, (name, key)


def test_prompt_modules_are_built_from_keywords_without_a_config():
    """The issue's report: adap_pos or MaPLe built without a cfg failed on cfg.PROMPT."""
    from mmprompt.backbones.open_clip import OpenCLIP
    from mmprompt.prompts.base import PromptStack
    from mmprompt.prompts.dynamic import AdaptivePosition, TemperatureSchedule
    from mmprompt.prompts.maple import MaPLe

    open_clip = pytest.importorskip("open_clip")
    backbone = OpenCLIP(tiny_clip(), "tiny", open_clip.tokenizer.SimpleTokenizer()).freeze()
    maple = MaPLe(n_ctx=2, prompt_depth=1, position="adap_pos", ctx_init="")
    PromptStack([maple]).setup(backbone)
    assert isinstance(maple.text_placement, AdaptivePosition)
    assert sum(p.numel() for p in maple.text_placement.parameters()) == 3  # l + 1 position logits
    placement = AdaptivePosition(length=4, width=8, arrangement="dpt", temperature=TemperatureSchedule(gamma=0.1))
    assert placement.rotate and float(placement.temperature.gamma) == pytest.approx(0.1)


def test_from_pretrained_takes_a_zoo_name(tmp_path):
    """The packaged zoo entry (MiniLM + adap_pos on BBC News): downloaded with its checksum into the
    cache, built from the config it carries (older keys ignored, with a warning), step restored."""
    with pytest.warns(UserWarning, match="older mmprompt"):
        model = mmprompt.from_pretrained("minilm-bbc_news-adap_pos-8shot-seed1", cache_dir=str(tmp_path))
    assert type(model).__name__ == "TextClassifier" and not model.training
    assert model.step == 20 and model.cfg.PROMPT.DYNAMIC.GAMMA > 0
    with torch.no_grad():
        assert model({"text": ["the match ended in a draw", "shares fell sharply"]})["logits"].shape == (2, 5)


@pytest.mark.parametrize("method", ["dept", "adept"])
def test_offset_methods_built_from_keywords_are_the_config_built_ones(method):
    """DePT / ADePT from keywords (no cfg) and from a config with the same values: the same
    parameters and, on the same values, the same encoder states."""
    from _text_backbones import tiny_t5_cfg

    from mmprompt.build import build_backbone
    from mmprompt.prompts.base import PromptContext, PromptStack
    from mmprompt.prompts.offsets import ADePT, DePT

    cfg = tiny_t5_cfg()
    node = cfg.PROMPT[method.upper()]
    node.NUM_TOKENS, node.LAYERS, node.INIT = 3, [0, 1], "normal"
    keywords = dict(num_tokens=3, layers=(0, 1), init="normal")
    if method == "dept":
        node.RANK, node.MAX_LEN = 2, 32
        keywords.update(rank=2, max_len=32)
        from_keywords, from_cfg = DePT(**keywords), DePT.from_config(cfg)
    else:
        node.BOTTLENECK = 4
        keywords.update(bottleneck=4)
        from_keywords, from_cfg = ADePT(**keywords), ADePT.from_config(cfg)
    backbone = build_backbone(cfg).freeze(dropout_off=True)
    stacks = [PromptStack([from_keywords]), PromptStack([from_cfg])]
    for stack in stacks:
        stack.setup(backbone)
        stack.eval()  # ADePT's offset dropout off
    shapes = [{n: p.shape for n, p in stack.named_parameters()} for stack in stacks]
    assert shapes[0] == shapes[1] and any("offsets.1" in n for n in shapes[0])
    with torch.no_grad():
        for p in stacks[0].parameters():
            p.normal_()
    stacks[1].load_state_dict(stacks[0].state_dict())
    tower = backbone.tower("encoder")
    inputs = tower.tokenize(["a short one", "and a longer second text"])
    outs = [tower.encode(inputs, stack, PromptContext()).x for stack in stacks]
    assert torch.equal(outs[0], outs[1])
