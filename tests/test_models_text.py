"""Text task models: the linear-head classifier and the T5 label-word verbalizer, built from the
shipped configs, checked against the library's own forward and for what trains."""

import os

import pytest
import torch
import torch.nn.functional as F

from mmprompt.build import build_model
from mmprompt.config import load_cfg
from mmprompt.errors import ConfigError, OfflineError

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "_base_")
BATCH = {
    "text": ["the match ended in a draw", "shares rose", "a new phone was launched today"],
    "text_b": ["sport", "business", "tech"],
    "label": torch.tensor([0, 1, 2]),
}
CLASSES = ["sport", "business", "tech"]


def cfg_of(name, *opts):
    return load_cfg(os.path.join(CONFIGS, name), opts=list(opts))


def prompt_tuning(*opts):
    return (
        "PROMPT.METHODS",
        "['prompt_tuning']",
        "PROMPT.PROMPT_TUNING.NUM_TOKENS",
        "4",
        "PROMPT.PROMPT_TUNING.INIT",
        "sampled_vocab",
        *opts,
    )


@pytest.fixture(scope="module")
def bert_classifier():
    return build_model(cfg_of("tiny_bert.yaml"), CLASSES).eval()


def test_classifier_without_prompts_reads_the_library_cls_state(bert_classifier):
    model = bert_classifier
    tokens = model.tower.tokenize(BATCH["text"], BATCH["text_b"])
    hidden = model.backbone.model(
        input_ids=tokens.ids, attention_mask=tokens.mask.long(), token_type_ids=tokens.token_type_ids
    ).last_hidden_state
    out = model(BATCH)
    assert torch.allclose(out["logits"], model.head(hidden[:, 0]), atol=1e-6, rtol=0)
    assert torch.allclose(out["loss"], F.cross_entropy(out["logits"], BATCH["label"]))
    assert tokens.token_type_ids is not None and tokens.token_type_ids.any()


def test_classifier_trains_only_head_and_prompt():
    model = build_model(cfg_of("tiny_bert.yaml", *prompt_tuning()), CLASSES)
    model.train()
    model(BATCH)["loss"].backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("head.", "prompts.")) for n in trainable)
    assert any(n.startswith("prompts.") for n in trainable)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(model.get_parameter(n).grad is not None for n in trainable)
    assert set(model.trainable_state_dict()) >= trainable


def test_classifier_on_the_t5_encoder_uses_mean_pooling():
    model = build_model(cfg_of("tiny_t5.yaml", "MODEL.NAME", "text_classifier", "MODEL.HEAD.POOL", "mean"), CLASSES)
    out = model(BATCH)
    assert out["logits"].shape == (3, 3) and torch.isfinite(out["loss"])


def test_models_explain_a_batch_without_texts(bert_classifier, verbalizer):
    for model in (bert_classifier, verbalizer):
        with pytest.raises(ConfigError, match="'text' list.*image"):
            model({"image": torch.zeros(1, 3, 8, 8), "label": torch.tensor([0])})


def test_classifier_needs_a_class_count():
    with pytest.raises(ConfigError, match="NUM_CLASSES"):
        build_model(cfg_of("tiny_bert.yaml"), None)


@pytest.fixture(scope="module")
def verbalizer():
    return build_model(cfg_of("tiny_t5.yaml"), CLASSES).eval()


def test_verbalizer_loss_is_the_library_seq2seq_loss_of_the_gold_word(verbalizer):
    model = verbalizer
    ids, mask = model.tower.tokenize(BATCH["text"], BATCH["text_b"])
    targets = model.targets(ids.device)
    gold = targets[BATCH["label"]]
    theirs = model.backbone.model(input_ids=ids, attention_mask=mask.long(), labels=gold).loss
    out = model(BATCH)
    assert torch.allclose(out["loss"], theirs, atol=1e-6)


def test_verbalizer_logits_are_each_label_word_log_likelihood(verbalizer):
    model = verbalizer
    ids, mask = model.tower.tokenize(BATCH["text"], BATCH["text_b"])
    targets = model.targets(ids.device)
    expected = []
    for c in range(len(CLASSES)):  # one library forward per class, for comparison
        labels = targets[c].repeat(3, 1)
        logits = model.backbone.model(input_ids=ids, attention_mask=mask.long(), labels=labels).logits
        picked = logits.log_softmax(-1).gather(-1, labels.clamp_min(0)[..., None])[..., 0]
        expected.append((picked * (labels != -100)).sum(1))
    out = model(BATCH)
    assert torch.allclose(out["logits"], torch.stack(expected, 1), atol=1e-4, rtol=1e-6)  # sums of ~6 terms near -20
    assert out["logits"].shape == (3, 3) and bool((out["logits"] < 0).all())


def test_verbalizer_generates_what_the_library_generates(verbalizer):
    model = verbalizer
    ids, mask = model.tower.tokenize(BATCH["text"], BATCH["text_b"])
    theirs = model.backbone.model.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=5, do_sample=False)
    assert model.generate(BATCH, max_new_tokens=5) == model.tower.decode(theirs)


def test_verbalizer_trains_only_the_prompt():
    model = build_model(cfg_of("tiny_t5.yaml", *prompt_tuning()), CLASSES).train()
    model(BATCH)["loss"].backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("prompts.") for n in trainable)
    assert all(model.get_parameter(n).grad is not None for n in trainable)
    assert all(p.grad is None for p in model.backbone.parameters())


def test_verbalizer_refuses_bad_label_words_and_backbones():
    with pytest.raises(ConfigError, match="label words"):
        build_model(cfg_of("tiny_t5.yaml"), [])
    model = build_model(cfg_of("tiny_t5.yaml"), ["same", "same"])
    with pytest.raises(ConfigError, match="same tokens"):
        model(BATCH)
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.NAME t5"):
        build_model(cfg_of("tiny_bert.yaml", "MODEL.NAME", "t5_verbalizer"), CLASSES)


def test_t5_base_config_offline_asks_for_a_local_folder():
    with pytest.raises(OfflineError, match="google/t5-base-lm-adapt.*MODEL.BACKBONE.PRETRAINED"):
        build_model(cfg_of("t5_base.yaml"), CLASSES)


@pytest.mark.slow
def test_minilm_config_builds_the_pretrained_classifier_and_trains_a_prompt():
    model = build_model(cfg_of("minilm.yaml", *prompt_tuning("MODEL.TEXT.MAX_LENGTH", "32")), CLASSES)
    assert model.pool_mode == "default" and model.tower.default_pool == "mean"
    out = model(BATCH)
    out["loss"].backward()
    assert out["logits"].shape == (3, 3)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.num_params()["trainable"] == 4 * 384 + 384 * 3 + 3
