import numpy as np
import pytest
import torch

from mmprompt.errors import MMPromptError
from mmprompt.evaluation import metrics
from mmprompt.evaluation.evaluators import build_evaluator
from mmprompt.registry import EVALUATORS


def one_hot_logits(preds, num_classes):
    logits = torch.zeros(len(preds), num_classes)
    logits[torch.arange(len(preds)), torch.tensor(preds)] = 1.0
    return logits


def test_registry_holds_every_evaluator():
    assert {"classification", "mcc", "correlation", "multirc", "record", "base_novel"} <= set(EVALUATORS.names())


def test_classification_metrics_match_hand_computed_values_across_batches():
    labels = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 2, 0]
    ev = build_evaluator("classification", classnames=["a", "b", "c"])
    ev.process(one_hot_logits(preds[:4], 3), torch.tensor(labels[:4]))
    ev.process(one_hot_logits(preds[4:], 3), torch.tensor(labels[4:]))
    out = ev.evaluate()
    assert out["accuracy"] == pytest.approx(100 * 4 / 6)
    assert out["error_rate"] == pytest.approx(100 * 2 / 6)
    # per-class F1 = 2TP / (predicted + actual): a 2/4, b 4/5, c 2/3
    assert out["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)
    assert out["per_class_accuracy"] == pytest.approx({"a": 50.0, "b": 100.0, "c": 50.0})
    assert out["num_samples"] == 6
    assert "f1" not in out
    assert ev.main_metric == "accuracy"
    ev.reset()
    with pytest.raises(MMPromptError, match="before any process"):
        ev.evaluate()


def test_binary_classification_reports_f1_of_class_one():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]  # TP 3, FN 1, FP 1
    ev = build_evaluator("classification", num_classes=2)
    ev.process(one_hot_logits(preds, 2).numpy(), np.array(labels))
    assert ev.evaluate()["f1"] == pytest.approx(100 * 6 / 8)


def test_macro_f1_counts_never_seen_classes_as_zero():
    cm = metrics.confusion_matrix(np.array([0, 0]), np.array([0, 0]), 3)
    assert metrics.macro_f1(cm) == pytest.approx(1 / 3)


def test_mcc_matches_binary_formula():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]  # TP 3 TN 3 FP 1 FN 1 -> (9-1)/sqrt(4^4) = 0.5
    ev = build_evaluator("mcc", classnames=["unacceptable", "acceptable"])
    ev.process(one_hot_logits(preds, 2), torch.tensor(labels))
    out = ev.evaluate()
    assert out["mcc"] == pytest.approx(50.0)
    assert out["accuracy"] == pytest.approx(75.0)
    assert ev.main_metric == "mcc"
    # constant predictions: undefined MCC is reported as 0, like the GLUE scorer
    ev.reset()
    ev.process(one_hot_logits([1] * 4, 2), torch.tensor([0, 1, 0, 1]))
    assert ev.evaluate()["mcc"] == 0.0


def test_correlation_on_regression_scores():
    ev = build_evaluator("correlation", classnames=["similarity"])
    ev.process(torch.tensor([[1.0], [2.0]]), torch.tensor([2.0, 5.0]))
    ev.process(torch.tensor([[3.0], [4.0]]), torch.tensor([4.0, 9.0]))
    out = ev.evaluate()
    assert out["pearson"] == pytest.approx(100 * 10 / np.sqrt(130))
    assert out["spearman"] == pytest.approx(80.0)  # ranks 1,3,2,4: 1 - 6*2/(4*15)
    assert out["corr"] == pytest.approx((out["pearson"] + out["spearman"]) / 2)


def test_correlation_maps_t5_label_words_to_numbers():
    classnames = [f"{v / 5:.1f}" for v in range(26)]  # "0.0" ... "5.0"
    ev = build_evaluator("correlation", classnames=classnames)
    # predicted classes 5, 10, 15, 20 -> 1.0, 2.0, 3.0, 4.0; label ids 10, 25, 20, 5 -> 2.0, 5.0, 4.0, 1.0
    ev.process(one_hot_logits([5, 10, 15, 20], 26), torch.tensor([10, 25, 20, 5]))
    out = ev.evaluate()
    # dx = -1.5 -.5 .5 1.5, dy = -1 2 1 -2: sum dxdy = -2, sum dx^2 = 5, sum dy^2 = 10
    assert out["pearson"] == pytest.approx(100 * -2 / np.sqrt(50))
    # label ranks 2 4 3 1: d = -1 -2 0 3, sum d^2 = 14 -> 1 - 6*14/(4*15)
    assert out["spearman"] == pytest.approx(100 * (1 - 6 * 14 / 60))
    with pytest.raises(MMPromptError, match="class id 26"):
        ev.process(one_hot_logits([0], 26), torch.tensor([26]))


def test_correlation_without_numeric_classes_refuses_class_logits():
    ev = build_evaluator("correlation", classnames=["similarity"])
    with pytest.raises(MMPromptError, match="class_values"):
        ev.process(torch.zeros(2, 3), torch.tensor([0.5, 1.0]))


def test_multirc_f1a_and_em():
    groups = ["q1", "q1", "q1", "q2", "q2", "q3"]
    labels = [1, 0, 1, 0, 1, 1]
    preds = [1, 0, 1, 1, 1, 0]  # q1 all right, q2 and q3 not; TP 3, predicted 4, actual 4
    ev = build_evaluator("multirc")
    ev.process(one_hot_logits(preds[:2], 2), torch.tensor(labels[:2]), meta={"group": groups[:2]})
    ev.process(one_hot_logits(preds[2:], 2), torch.tensor(labels[2:]), meta={"group": groups[2:]})
    out = ev.evaluate()
    assert out["em"] == pytest.approx(100 / 3)
    assert out["f1a"] == pytest.approx(75.0)
    with pytest.raises(MMPromptError, match="meta\\['group'\\]"):
        ev.process(one_hot_logits([0], 2), torch.tensor([0]))


def test_record_picks_best_candidate_per_query():
    ev = build_evaluator("record")
    logits = torch.tensor([[0.0, 2.0], [0.0, 3.0], [0.0, 1.0], [0.0, 0.0]])
    meta = {
        "group": ["A", "A", "B", "B"],
        "candidate": ["Obama", "the White House", "New York City", "Paris"],
        "answers": [["White House"]] * 2 + [["New York"]] * 2,
    }
    ev.process(logits, torch.tensor([0, 1, 0, 0]), meta=meta)
    out = ev.evaluate()
    assert out["em"] == pytest.approx(50.0)  # "the White House" == "White House" after normalising
    assert out["f1"] == pytest.approx(100 * (1.0 + 0.8) / 2)  # "new york city" vs "new york": P 2/3, R 1
    assert out["num_queries"] == 2


def test_base_novel_harmonic_mean():
    assert metrics.harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert metrics.harmonic_mean(0.0, 0.0) == 0.0
    ev = build_evaluator("base_novel")
    ev.process(one_hot_logits([0, 1, 1, 1, 0], 2), torch.tensor([0, 1, 1, 1, 1]), meta={"subset": "base"})  # 80%
    ev.process(one_hot_logits([0, 1, 2], 3), torch.tensor([0, 1, 0]), meta={"subset": ["novel"] * 3})  # 66.7%
    out = ev.evaluate()
    assert out["base"] == pytest.approx(80.0)
    assert out["novel"] == pytest.approx(200 / 3)
    assert out["hm"] == pytest.approx(2 * 80 * (200 / 3) / (80 + 200 / 3))
    ev.reset()
    ev.process(one_hot_logits([0], 2), torch.tensor([0]), meta={"subset": "base"})
    with pytest.raises(MMPromptError, match="no 'novel' samples"):
        ev.evaluate()


def test_unknown_evaluator_name_is_a_clear_error():
    with pytest.raises(MMPromptError, match="Unknown evaluator 'acurracy'"):
        build_evaluator("acurracy", classnames=["a"])


def test_record_answers_may_arrive_as_one_joined_string():
    from mmprompt.evaluation.evaluators import ANSWER_SEP

    ev = build_evaluator("record")
    meta = {"group": ["A", "A"], "candidate": ["Obama", "Berlin"], "answers": [f"Berlin{ANSWER_SEP}Obama"] * 2}
    ev.process(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), torch.tensor([1, 1]), meta=meta)
    assert ev.evaluate()["em"] == pytest.approx(100.0)


def test_correlation_prefers_the_exact_score_in_meta():
    classnames = [f"{v / 5:.1f}" for v in range(26)]
    ev = build_evaluator("correlation", classnames=classnames)
    # predictions 1.0 2.0 3.0 4.0 against exact scores 1.1 1.9 3.0 4.1 (labels are their rounded classes)
    ev.process(
        one_hot_logits([5, 10, 15, 20], 26),
        torch.tensor([6, 10, 15, 20]),
        meta={"score": torch.tensor([1.1, 1.9, 3.0, 4.1], dtype=torch.float64)},
    )
    expected = metrics.pearson(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.1, 1.9, 3.0, 4.1]))
    assert ev.evaluate()["pearson"] == pytest.approx(100 * expected)
