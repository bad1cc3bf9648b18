"""P-tuning v2 as key/value prefixes (``ptuning_v2``): what each layer's attention gets, how the
mask, positions and parameter counts come out, the T5 encoder path, and the towers that refuse
it; pinned on tiny random models without the authors' code (benchmarks/official/ptuning_v2.py
compares with it)."""

import math
import os

import pytest
import torch
from _text_backbones import TINY_T5, padded_ids, tiny_encoder_cfg, tiny_t5_cfg
from transformers import DynamicCache

from mmprompt.build import build_backbone, build_model, build_prompts
from mmprompt.config import load_cfg
from mmprompt.errors import ConfigError
from mmprompt.prompts.base import PromptContext, PromptModule, PromptStack
from mmprompt.tokens import KVPrefix, TokenSeq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = 3  # prefix length in these tests


def prefix_opts(*extra):
    return [
        "PROMPT.METHODS",
        "['ptuning_v2']",
        "PROMPT.PTUNING_V2.NUM_TOKENS",
        str(L),
        "PROMPT.PTUNING_V2.DROPOUT",
        "0.0",
        *extra,
    ]


def built(cfg, *opts):
    cfg.merge_from_list(prefix_opts(*opts))
    torch.manual_seed(0)
    backbone = build_backbone(cfg).eval()
    stack = build_prompts(cfg, backbone)
    with torch.no_grad():  # away from the 0.02 init, so a misplaced value changes the output
        for p in stack.parameters():
            p.normal_(0, 0.5)
    return backbone, stack


def record_layer_inputs(tower):
    """The sequences ``tower.layer`` receives, and whether its outputs still carry a prefix."""
    seen, leftovers = [], []
    layer = tower.layer

    def spy(i, seq):
        seen.append(seq)
        out = layer(i, seq)
        leftovers.append(out.kv_prefix)
        return out

    tower.layer = spy
    return seen, leftovers


def library_prefix_cache(module, batch):
    """The module's prefixes as the transformers cache ``BertModel(..., cache=)`` takes."""
    kv = module.keys_and_values(batch)
    return DynamicCache(
        ddp_cache_data=[(kv[:, :, i, 0].transpose(1, 2), kv[:, :, i, 1].transpose(1, 2)) for i in range(module.depth)]
    )


# ---------------------------------------------------------------------------------- layout
def test_every_layer_gets_its_own_keys_and_values_and_the_sequence_is_untouched():
    backbone, stack = built(tiny_encoder_cfg())
    module, tower = stack.methods[0], backbone.tower("encoder")
    seen, leftovers = record_layer_inputs(tower)
    ids, mask = padded_ids(2, 6, 0, [6, 4], 100)
    tower.run_layers(tower.embed((ids, mask)), stack, PromptContext())
    heads, head_dim = tower.kv_prefix_shape()
    assert (heads, head_dim) == (4, 8)
    table = module.embedding.view(L, module.depth, 2, heads, head_dim)  # their (l, 2L, heads, head_dim) view
    for i, seq in enumerate(seen):
        assert seq.length == 6 and bool((seq.owner == 0).all())  # no token was inserted
        assert seq.kv_prefix.keys.shape == (2, heads, L, head_dim)
        for b in range(2):
            assert torch.equal(seq.kv_prefix.keys[b], table[:, i, 0].transpose(0, 1))
            assert torch.equal(seq.kv_prefix.values[b], table[:, i, 1].transpose(0, 1))
    assert leftovers == [None, None]  # each prefix acts on its own layer only


def test_projection_makes_every_layer_from_one_table():
    backbone, stack = built(
        tiny_encoder_cfg(), "PROMPT.PTUNING_V2.PROJECTION", "True", "PROMPT.PTUNING_V2.PROJECTION_HIDDEN", "7"
    )
    module, tower = stack.methods[0], backbone.tower("encoder")
    assert module.embedding.shape == (L, 32)
    assert [type(m).__name__ for m in module.projection] == ["Linear", "Tanh", "Linear"]
    assert module.projection[0].weight.shape == (7, 32) and module.projection[2].weight.shape == (2 * 2 * 32, 7)
    seen, _ = record_layer_inputs(tower)
    tower.run_layers(tower.embed(padded_ids(1, 5, 0, [5], 100)), stack, PromptContext())
    flat = module.projection(module.embedding).view(L, 2, 2, 4, 8)
    for i, seq in enumerate(seen):
        assert torch.allclose(seq.kv_prefix.keys[0], flat[:, i, 0].transpose(0, 1))
        assert torch.allclose(seq.kv_prefix.values[0], flat[:, i, 1].transpose(0, 1))


@pytest.mark.parametrize("projection", [False, True])
def test_parameter_counts(projection):
    cfg = tiny_encoder_cfg()
    opts = ["PROMPT.PTUNING_V2.PROJECTION", str(projection), "PROMPT.PTUNING_V2.PROJECTION_HIDDEN", "16"]
    _, stack = built(cfg, *opts)
    layers, d, h = 2, 32, 16
    expected = (L * d + d * h + h + h * 2 * layers * d + 2 * layers * d) if projection else 2 * layers * L * d
    assert sum(p.numel() for p in stack.parameters()) == expected
    # T5 whose heads * d_kv differs from d_model: the prefix has the attention's width, not d_model's
    _, t5_stack = built(tiny_t5_cfg(d_kv=4), "PROMPT.PTUNING_V2.DEPTH", "1")
    assert t5_stack.methods[0].embedding.shape == (L, 1 * 2 * TINY_T5["num_heads"] * 4)


def test_init_is_their_from_pretrained_init():
    cfg = tiny_encoder_cfg(hidden_size=64, num_attention_heads=4, intermediate_size=64)
    cfg.merge_from_list(prefix_opts("PROMPT.PTUNING_V2.PROJECTION", "True"))
    torch.manual_seed(0)
    module = build_prompts(cfg, build_backbone(cfg)).methods[0]
    assert abs(module.embedding.std().item() - 0.02) < 0.004
    assert abs(module.projection[2].weight.std().item() - 0.02) < 0.002
    assert not module.projection[0].bias.any() and not module.projection[2].bias.any()


def test_dropout_draws_a_mask_per_sample_and_is_off_in_eval():
    backbone, stack = built(tiny_encoder_cfg(), "PROMPT.PTUNING_V2.DROPOUT", "0.5")
    module = stack.methods[0]
    module.train()
    kv = module.keys_and_values(2)
    assert not torch.equal(kv[0] == 0, kv[1] == 0)
    dropped = (kv == 0).float().mean().item()
    assert 0.35 < dropped < 0.65
    module.eval()
    kv = module.keys_and_values(2)
    assert torch.equal(kv[0], kv[1]) and bool((kv != 0).all())


def test_two_prefixes_before_one_layer_are_concatenated():
    seq = TokenSeq.from_embeddings(torch.zeros(2, 4, 8), tower="encoder")
    a = KVPrefix(torch.ones(2, 2, 1, 4), torch.ones(2, 2, 1, 4))
    b = KVPrefix(torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 3, 4))
    both = seq.with_kv_prefix(a).with_kv_prefix(b)
    assert both.kv_prefix.length == 4 and torch.equal(both.kv_prefix.keys[:, :, :1], a.keys)
    prefix, rest = both.take_kv_prefix()
    assert prefix is both.kv_prefix and rest.kv_prefix is None and rest.x is seq.x
    with pytest.raises(ValueError, match="keys and values must both be"):
        KVPrefix(torch.ones(2, 2, 1, 4), torch.ones(2, 2, 2, 4))


# ----------------------------------------------------------------- BERT-family: library, mask
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_encoder_with_prefix_equals_the_library_model_given_past_key_values(arch):
    """The tower's layers equal ``BertModel`` / ``RobertaModel`` run by transformers itself with
    the prefixes as its cache and ones prepended to the attention mask: what THUDM's model does."""
    backbone, stack = built(tiny_encoder_cfg(arch))
    module, tower = stack.methods[0], backbone.tower("encoder")
    pad = backbone.model.config.pad_token_id
    ids, mask = padded_ids(3, 7, pad, [7, 4, 2], 100)
    ours = tower.run_layers(tower.embed((ids, mask)), stack, PromptContext()).x
    full_mask = torch.cat([torch.ones(3, L, dtype=torch.long), mask.long()], 1)
    theirs = backbone.model(input_ids=ids, attention_mask=full_mask, cache=library_prefix_cache(module, 3))
    assert torch.allclose(ours[mask], theirs.last_hidden_state[mask], atol=1e-5, rtol=1e-5)


def test_positions_start_after_the_prefix_unless_asked_otherwise():
    for arch, first in (("bert", 0), ("roberta", None)):
        for after in (True, False):
            backbone, stack = built(tiny_encoder_cfg(arch), "PROMPT.PTUNING_V2.POSITIONS_AFTER_PREFIX", str(after))
            tower = backbone.tower("encoder")
            pad = backbone.model.config.pad_token_id
            start = pad + 1 if first is None else first  # RoBERTa numbers real tokens from padding_idx + 1
            seen = []
            position_ids = tower.position_ids
            tower.position_ids = lambda seq: seen.append(position_ids(seq)) or seen[-1]
            ids, mask = padded_ids(2, 5, pad, [5, 3], 100)
            tower.run_layers(tower.embed((ids, mask)), stack, PromptContext())
            shift = L if after else 0
            assert seen[0][0].tolist() == [start + shift + j for j in range(5)]
            assert seen[0][1, :3].tolist() == [start + shift + j for j in range(3)]


@pytest.mark.parametrize("base", ["tiny_bert.yaml", "tiny_t5.yaml"])
def test_a_padded_batch_equals_each_sample_alone(base):
    texts = ["a b", "a much longer text with more words in it", "mid length text"]
    opts = prefix_opts("MODEL.NAME", "text_classifier")
    if base == "tiny_bert.yaml":
        opts += ["MODEL.HEAD.POOL", "pooler"]
    cfg = load_cfg(os.path.join(ROOT, "configs", "_base_", base), opts=opts)
    torch.manual_seed(0)
    model = build_model(cfg, ["x", "y"]).eval()
    with torch.no_grad():
        for p in model.prompts.parameters():
            p.normal_(0, 0.5)
        batch = model({"text": texts})["logits"]
        alone = torch.cat([model({"text": [t]})["logits"] for t in texts])
    assert torch.allclose(batch, alone, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------ T5 encoder
def test_t5_encoder_prefix_equals_an_explicit_attention_over_concatenated_keys():
    """Each T5 block with a prefix equals its attention written out: keys and values
    ``[prefix; W_k h]``, ``[prefix; W_v h]``; prefix keys visible to all; the relative bias with the
    prefix at positions 0..l-1 and the input from l; then T5's own feed-forward layer."""
    backbone, stack = built(tiny_t5_cfg())
    module, tower = stack.methods[0], backbone.tower("encoder")
    ids, mask = padded_ids(3, 7, 0, [7, 4, 2], 300)
    ours = tower.run_layers(tower.embed((ids, mask)), stack, PromptContext()).x

    encoder = backbone.model.encoder
    first = encoder.block[0].layer[0].SelfAttention
    heads, head_dim, n = first.n_heads, first.key_value_proj_dim, ids.shape[1]
    relative = torch.arange(L + n)[None, :] - (torch.arange(n) + L)[:, None]  # key - query
    buckets = first._relative_position_bucket(
        relative,
        bidirectional=True,
        num_buckets=first.relative_attention_num_buckets,
        max_distance=first.relative_attention_max_distance,
    )
    bias = first.relative_attention_bias(buckets).permute(2, 0, 1)[None]
    visible = torch.cat([torch.ones(3, L, dtype=torch.bool), mask], 1)[:, None, None, :]
    kv = module.keys_and_values(3)
    x = encoder.embed_tokens(ids)
    with torch.no_grad():
        for i, block in enumerate(encoder.block):
            attention = block.layer[0].SelfAttention
            h = block.layer[0].layer_norm(x)

            def split(t):
                return t.view(3, n, heads, head_dim).transpose(1, 2)

            keys = torch.cat([kv[:, :, i, 0].transpose(1, 2), split(attention.k(h))], 2)
            values = torch.cat([kv[:, :, i, 1].transpose(1, 2), split(attention.v(h))], 2)
            scores = (split(attention.q(h)) @ keys.transpose(-1, -2) + bias).masked_fill(~visible, -math.inf)
            x = x + attention.o((scores.softmax(-1) @ values).transpose(1, 2).reshape(3, n, heads * head_dim))
            x = block.layer[-1](x)
    assert torch.allclose(ours[mask], x[mask], atol=1e-5, rtol=1e-5)


def test_t5_verbalizer_trains_the_prefix_only():
    cfg = tiny_t5_cfg()
    cfg.MODEL.NAME = "t5_verbalizer"
    cfg.merge_from_list(prefix_opts())
    model = build_model(cfg, ["no", "yes"]).train()
    model({"text": ["great movie", "bad"], "label": torch.tensor([1, 0])})["loss"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(trainable) == ["prompts.methods.0.embedding"]
    assert trainable["prompts.methods.0.embedding"].grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())


# ------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "base,tower", [("tiny_vit.yaml", "vision"), ("tiny_clip.yaml", "vision"), ("tiny_clip.yaml", "text")]
)
def test_towers_without_key_value_prefixes_refuse_it(base, tower, monkeypatch):
    monkeypatch.chdir(ROOT)  # tiny_clip.yaml names its model JSON relative to the repo root
    cfg = load_cfg(os.path.join(ROOT, "configs", "_base_", base), opts=prefix_opts("PROMPT.PTUNING_V2.TOWER", tower))
    with pytest.raises(ConfigError, match=rf"'{tower}' tower does not take.*hf_encoder.*t5.*'deep_prompt'"):
        build_model(cfg, ["a", "b"])


def test_a_stray_prefix_on_a_tower_without_support_is_an_error():
    class StrayPrefix(PromptModule):
        def before_layer(self, tower, i, seq, ctx):
            return seq.with_kv_prefix(
                KVPrefix(torch.zeros(seq.batch_size, 1, 1, 4), torch.zeros(seq.batch_size, 1, 1, 4))
            )

    cfg = load_cfg(os.path.join(ROOT, "configs", "_base_", "tiny_vit.yaml"))
    backbone = build_backbone(cfg)
    tower = backbone.tower("vision")
    with pytest.raises(ConfigError, match="cannot take; only the BERT-family"):
        tower.run(torch.randn(1, 3, 32, 32), PromptStack([StrayPrefix()]), PromptContext())


def test_bad_lengths_are_config_errors():
    with pytest.raises(ConfigError, match="NUM_TOKENS must be at least 1"):
        built(tiny_encoder_cfg(), "PROMPT.PTUNING_V2.NUM_TOKENS", "0")
    with pytest.raises(ConfigError, match="PROMPT.PTUNING_V2.DEPTH = 5 but the encoder tower has 2 layers"):
        built(tiny_encoder_cfg(), "PROMPT.PTUNING_V2.DEPTH", "5")
    backbone, stack = built(tiny_encoder_cfg(), "PROMPT.PTUNING_V2.NUM_TOKENS", "60")  # 64 positions
    tower = backbone.tower("encoder")
    with pytest.raises(ConfigError, match="numbered after a 60-token prefix.*needs position 65.*64 positions"):
        tower.run_layers(tower.embed(padded_ids(1, 6, 0, [6], 100)), stack, PromptContext())


def test_prefixes_compose_with_hidden_state_prompts():
    """Prompt tuning's tokens sit in the sequence, numbered after the prefix; both train."""
    cfg = load_cfg(
        os.path.join(ROOT, "configs", "_base_", "tiny_bert.yaml"),
        opts=[
            *prefix_opts(),
            "PROMPT.METHODS",
            "['prompt_tuning', 'ptuning_v2']",
            "PROMPT.PROMPT_TUNING.NUM_TOKENS",
            "2",
            "PROMPT.PROMPT_TUNING.INIT",
            "normal",
            "PROMPT.PROMPT_TUNING.POSITION",
            "adap_pos",
        ],
    )
    model = build_model(cfg, ["x", "y"]).train()
    seen = []
    position_ids = model.tower.position_ids
    model.tower.position_ids = lambda seq: seen.append(position_ids(seq)) or seen[-1]
    model({"text": ["one two", "three"], "label": torch.tensor([0, 1])})["loss"].backward()
    assert seen[0][:, 0].tolist() == [L, L]  # [CLS] after the 3 prefix positions
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "placement" not in n)
    assert {"prompts.methods.0.sources.0.tokens", "prompts.methods.1.embedding"} <= set(grads)
