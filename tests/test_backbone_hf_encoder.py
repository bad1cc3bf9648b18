"""BERT-family backbone: wrapped hidden states equal AutoModel's (BERT and RoBERTa, padded, pairs),
insertions keep masks and anchors right, switched-off prompts change nothing, the frozen model
gets no gradients, the packaged MiniLM loads offline, and uncached hub ids fail clearly."""

import pytest
import torch
from _text_backbones import MINILM, InsertPrompt, padded_ids, tiny_encoder_cfg

from mmprompt.backbones import _hf
from mmprompt.build import build_backbone
from mmprompt.errors import ConfigError, OfflineError
from mmprompt.prompts.base import PromptStack

LENGTHS = [9, 5, 7]


@pytest.fixture(scope="module", params=["bert", "roberta"])
def encoder(request):
    backbone = build_backbone(tiny_encoder_cfg(request.param))
    return backbone.eval()


def batch(backbone, pairs=False):
    config = backbone.model.config
    ids, mask = padded_ids(3, 9, config.pad_token_id, LENGTHS, config.vocab_size)
    tokens = _hf.TokenizedText(ids, mask)
    if pairs and config.type_vocab_size > 1:
        types = torch.zeros_like(ids)
        types[0, 5:9] = 1  # second text: 5..8 (its [SEP] included), as BERT's tokenizer marks it
        types[2, 4:7] = 1
        tokens = _hf.TokenizedText(ids, mask, types)
    return tokens


def library_hidden_states(backbone, tokens):
    kwargs = {"input_ids": tokens.ids, "attention_mask": tokens.mask.long()}
    if tokens.token_type_ids is not None:
        kwargs["token_type_ids"] = tokens.token_type_ids
    return backbone.model(**kwargs).last_hidden_state


@pytest.mark.parametrize("pairs", [False, True])
def test_hidden_states_equal_the_library_on_padded_batches(encoder, pairs):
    tower = encoder.tower("encoder")
    tokens = batch(encoder, pairs)
    ours = tower.run_layers(tower.embed(tokens)).x
    assert torch.allclose(ours, library_hidden_states(encoder, tokens), atol=1e-6, rtol=0)


def test_anchors_and_pooling(encoder):
    tower = encoder.tower("encoder")
    tokens = batch(encoder)
    seq = tower.run_layers(tower.embed(tokens))
    assert seq.anchors["start"].tolist() == [1, 1, 1]
    assert seq.anchors["end"].tolist() == [n - 1 for n in LENGTHS]
    assert seq.anchors["pool"].tolist() == [0, 0, 0]
    hidden = library_hidden_states(encoder, tokens)
    assert torch.allclose(tower.pool(seq, "cls"), hidden[:, 0], atol=1e-6, rtol=0)
    assert torch.allclose(tower.pool(seq), hidden[:, 0], atol=1e-6, rtol=0)  # default: CLS for BERT/RoBERTa
    mean = (hidden * tokens.mask[..., None]).sum(1) / tokens.mask.sum(1, keepdim=True)
    assert torch.allclose(tower.pool(seq, "mean"), mean, atol=1e-6, rtol=0)
    assert torch.allclose(tower.pool(seq, "pooler"), encoder.model.pooler(hidden), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="MODEL.HEAD.POOL"):
        tower.pool(seq, "max")


def test_insert_before_end_keeps_masks_and_end_at_sep(encoder):
    tower = encoder.tower("encoder")
    tokens = batch(encoder)
    seq = tower.embed(tokens)
    sep = seq.gather_anchor("end").clone()
    k = 3
    prompt = InsertPrompt(k, tower.width, at="end")
    seq = prompt.before_layer("encoder", 0, seq, None)
    for b, n in enumerate(LENGTHS):
        assert bool(seq.mask[b, : n + k].all()) and not bool(seq.mask[b, n + k :].any())
        assert seq.owner[b, n - 1 : n - 1 + k].eq(prompt.owner).all()
    assert seq.anchors["end"].tolist() == [n - 1 + k for n in LENGTHS]
    assert torch.equal(seq.gather_anchor("end"), sep)
    # prompts get positions like words: the separator moves k positions on
    positions = tower.position_ids(seq)
    shift = 0 if tower.padding_idx is None else tower.padding_idx + 1
    assert positions[torch.arange(3), seq.anchors["end"]].tolist() == [n - 1 + k + shift for n in LENGTHS]
    out = tower.run_layers(seq)
    assert torch.isfinite(out.x).all()


@pytest.mark.parametrize("at", ["start", "end"])
def test_masked_inserted_tokens_change_nothing(encoder, at):
    tower = encoder.tower("encoder")
    tokens = batch(encoder, pairs=True)
    plain = tower.run_layers(tower.embed(tokens))
    prompt = InsertPrompt(4, tower.width, at=at, mask=torch.zeros(4, dtype=torch.bool))
    prompted = tower.run_layers(tower.embed(tokens), PromptStack([prompt])).remove(prompt.owner)
    assert torch.allclose(prompted.x, plain.x, atol=1e-6, rtol=0)
    assert torch.equal(prompted.mask, plain.mask)


def test_prompt_in_second_text_gets_its_token_type():
    backbone = build_backbone(tiny_encoder_cfg("bert")).eval()
    tower = backbone.tower("encoder")
    seq = tower.embed(batch(backbone, pairs=True))
    seq = InsertPrompt(2, tower.width, at="end").before_layer("encoder", 0, seq, None)
    types = tower.token_type_ids(seq)
    assert types[0].tolist() == [0] * 5 + [1] * 6  # second text, prompts and final [SEP]
    assert types[1].tolist() == [0] * 11  # single text: all first segment, padding 0


def test_too_long_for_the_position_table_is_explained():
    backbone = build_backbone(tiny_encoder_cfg("bert", max_position_embeddings=10)).eval()
    tower = backbone.tower("encoder")
    with pytest.raises(ConfigError, match="MODEL.TEXT.MAX_LENGTH"):
        tower.run_layers(tower.embed(batch(backbone)), PromptStack([InsertPrompt(4, tower.width)]))


def test_frozen_backbone_gets_no_gradients():
    backbone = build_backbone(tiny_encoder_cfg("roberta"))
    tower = backbone.tower("encoder")
    prompt = InsertPrompt(3, tower.width)
    feature = tower.pool(tower.run_layers(tower.embed(batch(backbone)), PromptStack([prompt])))
    feature.pow(2).sum().backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert prompt.tokens.grad is not None and prompt.tokens.grad.abs().sum() > 0


def test_minilm_hub_id_resolves_to_the_packaged_copy():
    folder = _hf.resolve(MINILM)
    assert folder != MINILM and folder.endswith("model")
    assert _hf.weights_source(MINILM, "hub") == folder


@pytest.mark.slow
def test_real_minilm_loads_offline_and_trains_a_prompt():
    cfg = tiny_encoder_cfg(MINILM)
    cfg.MODEL.BACKBONE.KWARGS.clear()
    cfg.MODEL.BACKBONE.PRETRAINED = "hub"
    backbone = build_backbone(cfg)
    tower = backbone.tower("encoder")
    assert (tower.width, tower.num_layers, tower.default_pool) == (384, 6, "mean")
    tokens = tower.tokenize(["A cat sat on the mat.", "Stocks fell sharply today"], ["yes", "no"])
    backbone.eval()
    ours = tower.run_layers(tower.embed(tokens)).x
    assert torch.allclose(ours, library_hidden_states(backbone, tokens), atol=1e-5, rtol=0)
    backbone.train()
    prompt = InsertPrompt(5, tower.width)
    feature = tower.pool(tower.run_layers(tower.embed(tokens), PromptStack([prompt])))
    feature.sum().backward()
    assert prompt.tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_offline_hub_id_not_cached_fails_with_a_clear_message():
    cfg = tiny_encoder_cfg("bert-base-uncased")
    cfg.MODEL.BACKBONE.KWARGS.clear()
    with pytest.raises(OfflineError) as err:
        build_backbone(cfg)
    message = str(err.value)
    assert "bert-base-uncased" in message and "MODEL.BACKBONE.ARCH" in message
    cfg.MODEL.BACKBONE.ARCH = "bert"
    cfg.MODEL.BACKBONE.PRETRAINED = "FacebookAI/roberta-base"
    with pytest.raises(OfflineError, match="roberta-base.*MODEL.BACKBONE.PRETRAINED"):
        build_backbone(cfg)


def test_non_encoder_architecture_is_refused():
    cfg = tiny_encoder_cfg("t5")
    cfg.MODEL.BACKBONE.KWARGS.clear()
    with pytest.raises(ConfigError, match="hf_encoder.*t5"):
        build_backbone(cfg)
