"""The P-tuning v2 recipes end to end through tools/train_net.py on a tiny random BERT: the
authors' key/value-prefix recipe (configs/bert_ptuning_v2.yaml, SuperGLUE RTE from official-format
files) and the deep hidden-state prompt recipe (configs/bert_deep_prompt.yaml, BBC News)."""

import json
import os
import subprocess
import sys

import pytest

from mmprompt.config import load_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, LAYERS = 32, 2
TINY_BERT = [
    "MODEL.BACKBONE.ARCH",
    "bert",
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "MODEL.BACKBONE.KWARGS",
    f"{{'hidden_size': {WIDTH}, 'intermediate_size': 64, 'num_attention_heads': 4, "
    f"'num_hidden_layers': {LAYERS}, 'vocab_size': 30522}}",
    "MODEL.TEXT.TOKENIZER",
    "sentence-transformers/all-MiniLM-L6-v2",
    "MODEL.TEXT.MAX_LENGTH",
    "48",
]
QUICK = [
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


def train_net(config, root, out, *opts):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            os.path.join(REPO, "configs", config),
            "--root",
            str(root),
            "--output-dir",
            str(out),
            *TINY_BERT,
            *QUICK,
            *opts,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def write_rte(folder):
    """A miniature of the official SuperGLUE RTE release (train.jsonl, val.jsonl)."""
    labels = ["entailment", "not_entailment"]
    os.makedirs(folder, exist_ok=True)
    for name, n in (("train.jsonl", 8), ("val.jsonl", 6)):
        with open(os.path.join(folder, name), "w") as f:
            for i in range(n):
                f.write(
                    json.dumps(
                        {
                            "premise": f"The café's owner_{i} is O'Brien-Smith, aged {30 + i}.",
                            "hypothesis": f"O'Brien is {30 + i}.",
                            "label": labels[i % 2],
                            "idx": i,
                        }
                    )
                    + "\n"
                )


def test_the_ptuning_v2_recipe_is_the_authors_rte_bert_large_script():
    cfg = load_cfg(os.path.join(REPO, "configs", "bert_ptuning_v2.yaml"))
    assert cfg.PROMPT.METHODS == ["ptuning_v2"] and cfg.MODEL.BACKBONE.ARCH == "bert-large-cased"
    p = cfg.PROMPT.PTUNING_V2
    assert (p.NUM_TOKENS, p.DEPTH, p.PROJECTION, p.DROPOUT, p.POSITIONS_AFTER_PREFIX) == (20, 0, False, 0.1, True)
    assert (cfg.MODEL.HEAD.POOL, cfg.MODEL.HEAD.DROPOUT, cfg.MODEL.TEXT.HEAD_INIT_STD) == ("pooler", 0.1, 0.02)
    o = cfg.OPTIM
    assert (o.NAME, o.LR, o.WEIGHT_DECAY, o.MAX_EPOCH, o.LR_SCHEDULER, o.SCHEDULER_UNIT) == (
        "adamw",
        0.01,
        0.0,
        60,
        "linear",
        "iter",
    )
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.MODEL.TEXT.MAX_LENGTH, cfg.SEED, cfg.TRAIN.GRAD_CLIP_NORM) == (
        32,
        128,
        11,
        1.0,
    )
    assert cfg.DATASET.NAME == "superglue_rte" and not cfg.MODEL.BACKBONE.DROPOUT_OFF


@pytest.mark.slow
def test_ptuning_v2_recipe_trains_and_tests(tmp_path):
    write_rte(tmp_path / "RTE")
    metrics = train_net(
        "bert_ptuning_v2.yaml",
        tmp_path,
        tmp_path / "run",
        "DATASET.TEXT.DATA_FILES.TRAIN",
        str(tmp_path / "RTE" / "train.jsonl"),
        "DATASET.TEXT.DATA_FILES.VALIDATION",
        str(tmp_path / "RTE" / "val.jsonl"),
    )
    assert metrics["methods"] == ["ptuning_v2"] and metrics["dataset"] == "superglue_rte"
    assert metrics["test"]["num_samples"] == 3 and 0 <= metrics["test"]["accuracy"] <= 100
    # 2 L l d prefix numbers + the classifier (the pooler stays frozen with BERT)
    assert metrics["num_params"]["trainable"] == 2 * LAYERS * 20 * WIDTH + WIDTH * 2 + 2


@pytest.mark.slow
def test_deep_prompt_recipe_trains_and_tests(tmp_path):
    metrics = train_net(
        "bert_deep_prompt.yaml",
        tmp_path,
        tmp_path / "run",
        "DATASET.NUM_SHOTS",
        "2",
        "DATALOADER.TEST.BATCH_SIZE",
        "128",
    )
    assert metrics["methods"] == ["deep_prompt"] and metrics["dataset"] == "bbc_news"
    assert metrics["test"]["num_samples"] > 0
    assert metrics["num_params"]["trainable"] == LAYERS * 20 * WIDTH + WIDTH * 5 + 5  # 20 tokens per layer + head
