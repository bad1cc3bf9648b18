"""T5 backbone: the wrapped encoder equals the library's, anchors and masks survive insertions,
the decoder scores targets as the library's seq2seq loss does, and weights load or fail clearly."""

import pytest
import torch
from _text_backbones import TEXTS, InsertPrompt, tiny_t5_cfg

from mmprompt.build import build_backbone
from mmprompt.errors import ConfigError, OfflineError
from mmprompt.prompts.base import PromptStack

EOS = 1  # T5's </s>


@pytest.fixture(scope="module")
def t5():
    backbone = build_backbone(tiny_t5_cfg())
    return backbone.eval()


def test_encoder_equals_library_on_padded_batch(t5):
    tower = t5.tower("encoder")
    ids, mask = tower.tokenize(TEXTS)
    assert len(set(mask.sum(1).tolist())) == 3  # three different lengths, so padding is exercised
    ours = tower.encode((ids, mask)).x
    theirs = t5.model.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)


def test_anchors_point_at_first_token_and_eos(t5):
    tower = t5.tower("encoder")
    ids, mask = tower.tokenize(TEXTS)
    seq = tower.embed((ids, mask))
    assert seq.anchors["start"].tolist() == [0, 0, 0]
    assert ids[torch.arange(3), seq.anchors["end"]].tolist() == [EOS] * 3
    assert "pool" not in seq.anchors
    assert torch.equal(tower.embed(TEXTS).x, seq.x)  # raw texts are tokenized on the way in


def test_decoder_log_likelihood_gives_the_library_seq2seq_loss(t5):
    tower = t5.tower("encoder")
    ids, mask = tower.tokenize(TEXTS)
    target_ids, target_mask = tower.tokenize(["yes", "no", "maybe so"])
    labels = target_ids.masked_fill(~target_mask, -100)
    encoded = tower.encode((ids, mask))
    token_log_probs = t5.target_log_probs(encoded.x, encoded.mask, labels)
    ours = -token_log_probs.sum() / (labels != -100).sum()
    theirs = t5.model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert bool((token_log_probs[labels == -100] == 0).all())


def test_insert_before_end_keeps_padding_masked_and_last(t5):
    tower = t5.tower("encoder")
    ids, mask = tower.tokenize(TEXTS)
    seq = tower.embed((ids, mask))
    k = 3
    prompt = InsertPrompt(k, tower.width, at="end")
    seq = prompt.before_layer("encoder", 0, seq, None)
    lengths = mask.sum(1)
    assert seq.length == ids.shape[1] + k
    # real tokens and prompts first, padding after them and still masked
    assert seq.mask.sum(1).tolist() == (lengths + k).tolist()
    for b in range(3):
        assert bool(seq.mask[b, : lengths[b] + k].all()) and not bool(seq.mask[b, lengths[b] + k :].any())
    # the end anchor still points at </s>, just after the prompts
    eos = tower.input_embeddings().weight[EOS]
    assert torch.equal(seq.gather_anchor("end"), eos.expand(3, -1))
    assert (seq.owner[torch.arange(3), seq.anchors["end"] - 1] == prompt.owner).all()
    out = tower.final(tower.run_layers(seq))
    assert torch.isfinite(out.x).all()


@pytest.mark.parametrize("at", ["start", "end"])
def test_masked_inserted_tokens_change_nothing(t5, at):
    tower = t5.tower("encoder")
    tokens = tower.tokenize(TEXTS)
    plain = tower.encode(tokens)
    prompt = InsertPrompt(4, tower.width, at=at, mask=torch.zeros(4, dtype=torch.bool))
    prompted = tower.encode(tokens, PromptStack([prompt])).remove(prompt.owner)
    # A longer sequence changes the float summation order in attention: ~1e-6 apart, never more
    # (an attended prompt token moves the states by ~1e-1).
    assert torch.allclose(prompted.x, plain.x, atol=1e-5, rtol=0)
    assert torch.equal(prompted.mask, plain.mask)


def test_prompts_change_the_output_and_mean_pool_ignores_them(t5):
    tower = t5.tower("encoder")
    tokens = tower.tokenize(TEXTS)
    prompt = InsertPrompt(2, tower.width, at="start")
    plain = tower.run_layers(tower.embed(tokens))
    prompted = tower.run_layers(tower.embed(tokens), PromptStack([prompt]))
    assert not torch.allclose(tower.pool(prompted), tower.pool(plain))
    with pytest.raises(ConfigError, match="mean"):
        tower.pool(plain, "cls")


def test_frozen_backbone_gets_no_gradients():
    cfg = tiny_t5_cfg()
    backbone = build_backbone(cfg)  # MODEL.BACKBONE.FREEZE is True by default
    tower = backbone.tower("encoder")
    prompt = InsertPrompt(3, tower.width, at="start")
    ids, mask = tower.tokenize(TEXTS)
    encoded = tower.encode((ids, mask), PromptStack([prompt]))
    labels = tower.tokenize(["a", "b", "c"])[0]
    loss = -backbone.target_log_probs(encoded.x, encoded.mask, labels).sum()
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert prompt.tokens.grad is not None and prompt.tokens.grad.abs().sum() > 0


def test_kwargs_set_decoder_depth_and_unknown_fields_are_named():
    backbone = build_backbone(tiny_t5_cfg(num_layers=3))
    assert backbone.tower("encoder").num_layers == 3 and len(backbone.model.decoder.block) == 3
    with pytest.raises(ConfigError, match="d_modle.*d_model"):
        build_backbone(tiny_t5_cfg(d_modle=8))


def test_offline_hub_weights_fail_with_a_clear_message():
    cfg = tiny_t5_cfg()
    cfg.MODEL.BACKBONE.ARCH = "google/t5-small-lm-adapt"
    cfg.MODEL.BACKBONE.PRETRAINED = "hub"
    cfg.MODEL.BACKBONE.KWARGS.clear()
    with pytest.raises(OfflineError) as err:
        build_backbone(cfg)
    message = str(err.value)
    assert "google/t5-small-lm-adapt" in message and "MODEL.BACKBONE.PRETRAINED" in message
    assert "local-dir" in message


def test_offline_tokenizer_of_an_uncached_model_fails_clearly():
    cfg = tiny_t5_cfg()
    cfg.MODEL.BACKBONE.ARCH = "google/t5-small-lm-adapt"  # built-in hyperparameters: no download
    cfg.MODEL.TEXT.TOKENIZER = ""
    backbone = build_backbone(cfg)
    with pytest.raises(OfflineError, match="tokenizer 'google/t5-small-lm-adapt'.*MODEL.TEXT.TOKENIZER"):
        backbone.tower("encoder").tokenize(["x"])


# Published size of T5 v1.1 base is 247,577,856 parameters with its untied LM head
# (32128 x 768 = 24,674,304); transformers 5 always ties T5's LM head to the shared embedding,
# so the model it builds has that many fewer distinct parameters.
T5_BASE_PARAMS = 222_903_552


@pytest.mark.slow
def test_t5_base_sized_random_model_builds_and_trains_one_step():
    from mmprompt.build import build_model

    cfg = tiny_t5_cfg()
    cfg.MODEL.NAME = "t5_verbalizer"
    cfg.MODEL.BACKBONE.ARCH = "google/t5-base-lm-adapt"  # built-in v1.1 base hyperparameters
    cfg.MODEL.BACKBONE.KWARGS.clear()
    cfg.MODEL.TEXT.MAX_LENGTH = 16
    model = build_model(cfg, ["yes", "no"])
    config = model.backbone.model.config
    assert (
        config.d_model,
        config.d_ff,
        config.num_layers,
        config.num_decoder_layers,
        config.vocab_size,
        config.feed_forward_proj,
    ) == (768, 2048, 12, 12, 32128, "gated-gelu")
    total = model.num_params()["total"]
    print(f"T5-base-sized random T5ForConditionalGeneration: {total:,} parameters")
    assert total == T5_BASE_PARAMS
    tower = model.backbone.tower("encoder")
    model.prompts = PromptStack([InsertPrompt(4, tower.width)])
    out = model({"text": ["is it?", "no way"], "label": torch.tensor([0, 1])})
    out["loss"].backward()
    assert out["logits"].shape == (2, 2) and torch.isfinite(out["loss"])
    assert model.prompts.methods[0].tokens.grad is not None
