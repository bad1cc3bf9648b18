"""The CLIP-family recipes (MaPLe, IVLP, VPT in CLIP, CoOp) on a tiny random open_clip CLIP: the class
prompts' token layouts the authors' code builds, and every recipe config through tools/train_net.py.

The layouts pinned here are what benchmarks/official/clip_family.py found the same as the authors'
trainers (those comparisons need their checkouts; these tests do not)."""

import json
import os

import pytest
import torch
from test_engine_integration import make_oxford_pets
from test_engine_train import _train_net
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
#: "acme inc." ends with a full stop: in "acme inc.." CLIP's tokenizer merges ".." into one token,
#: which CoOp's name slice (the name's own token count) keeps with the name
CLASSES = ["sea_lion", "acme inc."]
C = "ctx"
SOT, EOT = 49406, 49407


def model_for(config, *opts):
    return build_model(load_cfg(os.path.join(REPO, "configs", config), opts=TINY + list(opts)), CLASSES)


def words(model, text):
    ids, mask = model.backbone.tower("text").tokenize([text])
    return [i for i in ids[0][mask[0]].tolist() if i not in (SOT, EOT)]


def layer0_layout(model, owner):
    """Per class: the tokens layer 0 receives up to EOT, C where ``owner`` put a prompt token,
    else the vocabulary id whose embedding sits there."""
    text = model.backbone.tower("text")
    seen = record_layers(text)
    model.eval()
    model({"image": torch.randn(1, 3, 32, 32)})
    seq, vocab = seen[0], text.input_embeddings().weight
    rows = []
    for b in range(seq.batch_size):
        row = []
        for j in range(int(seq.anchors["pool"][b]) + 1):
            if int(seq.owner[b, j]) == owner:
                row.append(C)
            else:
                match = (vocab == seq.x[b, j]).all(-1).nonzero()
                row.append(int(match[0]))
        rows.append(row)
    return rows


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_layouts_around_the_class_name(position):
    model = model_for("coop.yaml", "PROMPT.COOP.N_CTX", "4", "PROMPT.COOP.CLASS_TOKEN_POSITION", position)
    coop = model.prompts.methods[0]
    got = layer0_layout(model, coop.owner_id)
    for row, name in zip(got, ["sea lion", "acme inc."]):
        text = words(model, name + ".")  # "name." as CoOp tokenizes it
        k = len(words(model, name))  # the name's tokens counted alone (CoOp's name_lens)
        name_part, rest = text[:k], text[k:]
        expected = {
            "end": [C] * 4 + name_part + rest,
            "middle": [C] * 2 + name_part + [C] * 2 + rest,
            "front": name_part + [C] * 4 + rest,
        }[position]
        assert row == [SOT] + expected + [EOT]
    # "acme inc.." is as many tokens as "acme inc.": no separate "." is left after the name
    assert len(words(model, "acme inc..")) == len(words(model, "acme inc."))


def test_coop_ctxv1_learns_one_token_per_word_from_the_phrase():
    model = model_for("coop_ctxv1.yaml")  # N_CTX 16 stays in the config, as in CoOp's ctxv1 runs
    coop = model.prompts.methods[0]
    vocab = model.backbone.tower("text").input_embeddings().weight
    assert torch.equal(coop.source.tokens, vocab[words(model, "a photo of a")])
    assert layer0_layout(model, coop.owner_id)[0] == [SOT, C, C, C, C] + words(model, "sea lion.") + [EOT]


def test_maple_layout_keeps_of_a_as_words_and_vpt_clip_keeps_the_hand_written_prompt():
    maple_model = model_for("maple.yaml", "PROMPT.MAPLE.PROMPT_DEPTH", "2")
    maple = maple_model.prompts.methods[0]
    assert layer0_layout(maple_model, maple.text_owner)[0] == [SOT, C, C] + words(maple_model, "of a sea lion.") + [EOT]
    vpt_model = model_for("vpt_clip.yaml", "PROMPT.MAPLE.PROMPT_DEPTH_VISION", "2")
    assert vpt_model.class_texts == ["a photo of a sea lion.", "a photo of a acme inc.."]
    assert not vpt_model.text_prompted


CROSS = ["DATASET.NAME", "oxford_pets", "DATASET.TEST_DATASETS", "['oxford_pets']"]
SMALL = [
    "DATASET.NUM_SHOTS",
    "2",
    "OPTIM.MAX_EPOCH",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE",
    "4",
    "TRAIN.PROGRESS_BAR",
    "False",
    "TRAIN.TENSORBOARD",
    "False",
]
DEPTH2 = ["PROMPT.MAPLE.PROMPT_DEPTH", "2", "PROMPT.MAPLE.PROMPT_DEPTH_VISION", "2"]


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_recipes_data")
    make_oxford_pets(str(root))
    return root


@pytest.mark.parametrize(
    "config, methods, extra",
    [
        ("maple_cross_datasets.yaml", ["maple"], DEPTH2 + CROSS),
        ("ivlp.yaml", ["maple"], DEPTH2),
        ("ivlp_language_only.yaml", ["maple"], DEPTH2),
        ("vpt_clip.yaml", ["maple"], DEPTH2),
        ("coop_ctxv1.yaml", ["coop"], []),
        ("coop_csc.yaml", ["coop"], ["PROMPT.COOP.N_CTX", "2", "PROMPT.COOP.CLASS_TOKEN_POSITION", "middle"]),
        ("coop_middle.yaml", ["coop"], ["PROMPT.COOP.N_CTX", "2"]),
        ("coop_ep50.yaml", ["coop"], ["PROMPT.COOP.N_CTX", "2"]),
        ("coop_ep50_ctxv1.yaml", ["coop"], []),
    ],
)
def test_recipe_trains_and_tests_through_train_net(pets, tmp_path, config, methods, extra):
    out = tmp_path / "run"
    argv = [
        "--config-file",
        os.path.join(REPO, "configs", config),
        "--root",
        str(pets),
        "--seed",
        "1",
        "--output-dir",
        str(out),
        *TINY,
        *SMALL,
        *extra,
    ]
    assert _train_net().main(argv) == 0
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["recipe"] == config[:-5] and metrics["methods"] == methods
    assert metrics["test"]["num_samples"] > 0
    if config.startswith("maple_cross"):
        assert metrics["cross"]["oxford_pets"]["num_samples"] == 12  # all 4 classes x 3 test images
    elif config.startswith("coop"):
        assert metrics["subsample_classes"] == "all"  # CoOp: few-shot on all classes
    else:
        assert {"base", "new", "hm"} <= set(metrics)  # the base-to-novel recipes of MaPLe's repository
