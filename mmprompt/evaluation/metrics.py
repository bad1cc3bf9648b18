"""Metric functions on numpy arrays (no sklearn): the numbers each benchmark reports.

Every function returns plain Python floats in [0, 1] (or [-1, 1] for correlations and MCC);
the evaluators in :mod:`mmprompt.evaluation.evaluators` turn them into percentages.
Degenerate inputs follow the conventions of the published scorers: an F1 whose precision and
recall are both undefined is 0, an MCC or a correlation with a constant side is 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Dict, Hashable, Sequence

import numpy as np
from scipy import stats


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, pred]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if labels.size else 0.0


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + actual); 0 when a class is never seen nor predicted
    denom = predicted + actual
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over every class of the label set (sklearn's
    ``f1_score(average='macro', labels=range(C))``), which is what CB reports."""
    return float(per_class_f1(cm).mean())


def binary_f1(preds: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class (MRPC, QQP, MultiRC's F1a)."""
    preds, labels = np.asarray(preds) == positive, np.asarray(labels) == positive
    tp = float(np.sum(preds & labels))
    denom = float(preds.sum() + labels.sum())
    return 2 * tp / denom if denom else 0.0


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no sample (it has no accuracy to report)."""
    actual = cm.sum(axis=1).astype(np.float64)
    return np.divide(np.diag(cm), actual, out=np.full_like(actual, np.nan), where=actual > 0)


def matthews_corrcoef(cm: np.ndarray) -> float:
    """Matthews correlation from a confusion matrix (Gorodkin's multiclass form, which equals
    the binary ``(TP*TN - FP*FN) / sqrt(...)`` for two classes); 0 when undefined."""
    cm = cm.astype(np.float64)
    t = cm.sum(axis=1)
    p = cm.sum(axis=0)
    c = np.trace(cm)
    s = cm.sum()
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.pearsonr(x, y)[0])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y)[0])


def multirc_f1a_em(preds: Sequence[int], labels: Sequence[int], groups: Sequence[Hashable]) -> Dict[str, float]:
    """SuperGLUE MultiRC: F1a is the binary F1 over every answer option pooled together; EM is
    the fraction of questions (``groups``) whose answer options are all predicted right."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    all_right: Dict[Hashable, bool] = {}
    for g, p, t in zip(groups, preds, labels):
        all_right[g] = all_right.get(g, True) and bool(p == t)
    em = float(np.mean(list(all_right.values()))) if all_right else 0.0
    return {"f1a": binary_f1(preds, labels), "em": em}


def _normalize_answer(s: str) -> str:
    """SQuAD/ReCoRD answer normalisation: lower case, no punctuation, no articles, one space."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _token_f1(prediction: str, truth: str) -> float:
    pred_tokens = _normalize_answer(prediction).split()
    truth_tokens = _normalize_answer(truth).split()
    common = Counter(pred_tokens) & Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def record_em_f1(
    scores: Sequence[float], groups: Sequence[Hashable], candidates: Sequence[str], answers: Sequence[Sequence[str]]
) -> Dict[str, float]:
    """SuperGLUE ReCoRD scored as candidate ranking: for each query (``groups``) the candidate
    entity with the highest score is the prediction, and EM / token F1 take the max over that
    query's gold answers, as the official scorer does."""
    best: Dict[Hashable, tuple] = {}
    for score, g, cand, gold in zip(scores, groups, candidates, answers):
        if g not in best or score > best[g][0]:
            best[g] = (float(score), cand, list(gold))
    if not best:
        return {"em": 0.0, "f1": 0.0}
    em = [
        max(float(_normalize_answer(c) == _normalize_answer(a)) for a in gold) if gold else 0.0
        for _, c, gold in best.values()
    ]
    f1 = [max(_token_f1(c, a) for a in gold) if gold else 0.0 for _, c, gold in best.values()]
    return {"em": float(np.mean(em)), "f1": float(np.mean(f1))}


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2*b*n / (b+n), the base-to-novel summary of CoCoOp/MaPLe; 0 when both are 0."""
    return 2 * base * novel / (base + novel) if (base + novel) > 0 else 0.0
