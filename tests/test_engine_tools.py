"""tools/plot_run.py and tools/parse_results.py on real run outputs and hand-written metrics."""

import importlib.util
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from test_engine_train import run_inprocess, write_config  # noqa: E402

from mmprompt.errors import MMPromptError  # noqa: E402


def tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_run_writes_a_png(tmp_path, capsys):
    cfg = write_config(tmp_path)
    run_inprocess(cfg, tmp_path, tmp_path / "run", "TRAIN.PRINT_FREQ", "1")
    assert tool("plot_run").main([str(tmp_path / "run")]) == 0
    png = tmp_path / "run" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MMPromptError, match="No log.jsonl"):
        tool("plot_run").main([str(tmp_path)])


def write_metrics(folder, dataset, seed, base=None, new=None, acc=None, cross=None):
    os.makedirs(folder, exist_ok=True)
    m = {"dataset": dataset, "methods": ["maple", "adap_pos"], "seed": seed, "main_metric": "accuracy", "split": "test"}
    if base is not None:
        m.update(
            base={"accuracy": base}, new={"accuracy": new}, hm=2 * base * new / (base + new), test={"accuracy": base}
        )
    else:
        m["test"] = {"accuracy": acc}
    if cross:
        m["cross"] = {k: {"accuracy": v} for k, v in cross.items()}
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(m, f)


def test_parse_results_base_to_novel_table(tmp_path, capsys):
    write_metrics(tmp_path / "pets" / "seed1", "oxford_pets", 1, base=90, new=80)
    write_metrics(tmp_path / "pets" / "seed2", "oxford_pets", 2, base=94, new=84)
    write_metrics(tmp_path / "dtd" / "seed1", "dtd", 1, base=60, new=40)
    out = tmp_path / "table.json"
    assert tool("parse_results").main([str(tmp_path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    table = json.loads(out.read_text())["maple+adap_pos"]
    assert table["oxford_pets"]["base"] == {"mean": 92.0, "std": 2.0, "runs": 2}
    assert table["oxford_pets"]["hm"]["mean"] == pytest.approx(2 * 92 * 82 / 174)
    assert table["average"]["base"]["mean"] == 76.0 and table["average"]["new"]["mean"] == 61.0
    assert table["average"]["hm"]["mean"] == pytest.approx(2 * 76 * 61 / 137)
    assert "| oxford_pets (2 runs) | 92.00 ± 2.00 | 82.00 ± 2.00 | 86.71 |" in text
    assert "| **average** | 76.00 | 61.00 | 67.68 |" in text


def test_parse_results_separates_recipes_with_the_same_methods(tmp_path, capsys):
    write_metrics(tmp_path / "a", "dtd", 1, base=60, new=40)
    write_metrics(tmp_path / "b", "dtd", 1, base=70, new=50)
    for folder, recipe in (("a", "maple"), ("b", "maple_adap_pos")):
        path = tmp_path / folder / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "recipe": recipe}))
    assert tool("parse_results").main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "### maple\n" in text and "### maple_adap_pos\n" in text and "| dtd | 70.00 | 50.00 | 58.33 |" in text


def test_parse_results_accuracy_and_cross_dataset_rows(tmp_path, capsys):
    write_metrics(tmp_path / "a", "imagenet", 1, acc=70, cross={"imagenet_v2": 60})
    write_metrics(tmp_path / "b", "imagenet", 2, acc=72, cross={"imagenet_v2": 62})
    assert tool("parse_results").main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| imagenet (2 runs) | 71.00 ± 1.00 |" in text
    assert "| imagenet -> imagenet_v2 (2 runs) | 61.00 ± 1.00 |" in text
    os.makedirs(tmp_path / "empty")
    with pytest.raises(MMPromptError, match="No metrics.json"):
        tool("parse_results").main([str(tmp_path / "empty")])
