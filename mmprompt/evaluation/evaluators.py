"""Evaluators: accumulate a model's outputs batch by batch, then report a task's metrics.

Interface (every evaluator, built by name with :func:`build_evaluator`)::

    evaluator = build_evaluator(dataset.evaluator_name, classnames=dataset.classnames)
    evaluator.reset()
    for batch in loader:
        out = model(batch)
        evaluator.process(out["logits"], batch["label"], meta=batch)
    results = evaluator.evaluate()          # {"accuracy": 91.2, ...}
    results[evaluator.main_metric]          # the number used for model selection

* ``outputs``: logits of shape (B, C) (torch tensor on any device, or numpy); evaluators that
  take scores accept (B,) or (B, 1) too (regression, ranking).
* ``labels``: (B,) class ids, or float targets for regression.
* ``meta``: the batch dict itself (or any mapping) when the metric needs per-sample fields
  besides the label: ``"group"`` (MultiRC question id, ReCoRD query id), ``"candidate"`` and
  ``"answers"`` (ReCoRD; a list, or one string joined by :data:`ANSWER_SEP`), ``"score"``
  (STS-B's exact gold score), ``"subset"`` ("base"/"novel" for the base-to-novel evaluator, one
  string for the whole batch or one per sample). Values are sequences of length B.
* ``evaluate()`` returns a dict of floats in percent (accuracy 91.2, not 0.912; correlations
  and MCC times 100 as GLUE reports them); the classification evaluator adds one nested dict,
  ``per_class_accuracy`` {classname: percent}. Calling it does not reset the state.

Registered names: ``classification`` (accuracy, error rate, macro-F1, per-class accuracy, and
F1 of class 1 for two classes), ``mcc`` (CoLA), ``correlation`` (STS-B Pearson/Spearman),
``multirc`` (F1a/EM), ``record`` (ReCoRD EM/F1), ``base_novel`` (base, novel and their HM).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import MMPromptError
from ..registry import EVALUATORS
from . import metrics

# ReCoRD items carry their gold answers as one string joined by this separator (ASCII "unit
# separator", absent from the texts), so a batch of them collates like any other string field.
ANSWER_SEP = "\x1f"


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _meta_field(meta: Optional[Mapping], key: str, batch_size: int, evaluator: str) -> list:
    if meta is None or key not in meta:
        raise MMPromptError(
            f"The '{evaluator}' evaluator needs meta['{key}'] for every sample "
            f"(pass the batch as meta=batch; the dataset puts '{key}' in each item)."
        )
    value = meta[key]
    value = list(value.tolist() if hasattr(value, "tolist") else value)
    if len(value) != batch_size:
        raise MMPromptError(f"meta['{key}'] has {len(value)} entries for a batch of {batch_size}.")
    return value


class Evaluator:
    """Base class: subclasses implement ``_process_batch`` and ``evaluate``."""

    main_metric = "accuracy"

    def __init__(self, classnames: Optional[Sequence[str]] = None):
        self.classnames = list(classnames) if classnames is not None else None
        self.reset()

    def reset(self) -> None:
        self._preds: List[np.ndarray] = []
        self._labels: List[np.ndarray] = []

    def process(self, outputs, labels, meta: Optional[Mapping] = None) -> None:
        outputs, labels = _to_numpy(outputs), _to_numpy(labels).reshape(-1)
        if outputs.shape[0] != labels.shape[0]:
            raise MMPromptError(f"{type(self).__name__}: {outputs.shape[0]} outputs for {labels.shape[0]} labels.")
        self._process_batch(outputs, labels, meta)

    def _process_batch(self, outputs: np.ndarray, labels: np.ndarray, meta) -> None:
        raise NotImplementedError

    def evaluate(self) -> Dict[str, float]:
        raise NotImplementedError

    def _collected(self):
        if not self._labels:
            raise MMPromptError(f"{type(self).__name__}.evaluate() was called before any process().")
        return np.concatenate(self._preds), np.concatenate(self._labels)


def _argmax(outputs: np.ndarray) -> np.ndarray:
    if outputs.ndim != 2:
        raise MMPromptError(f"Expected logits of shape (batch, classes), got {outputs.shape}.")
    return outputs.argmax(axis=1)


@EVALUATORS.register("classification")
class ClassificationEvaluator(Evaluator):
    """Accuracy, error rate, macro-F1 over all classes, per-class accuracy; for two classes also
    ``f1`` of class 1 (MRPC/QQP's F1, "equivalent"/"duplicate" being label 1)."""

    def __init__(self, classnames: Optional[Sequence[str]] = None, num_classes: Optional[int] = None):
        if classnames is None and num_classes is None:
            raise MMPromptError("ClassificationEvaluator needs classnames or num_classes.")
        self.num_classes = len(classnames) if classnames is not None else int(num_classes)
        super().__init__(classnames)

    def _process_batch(self, outputs, labels, meta):
        preds = _argmax(outputs)
        if outputs.shape[1] != self.num_classes:
            raise MMPromptError(f"Logits have {outputs.shape[1]} classes, the evaluator expects {self.num_classes}.")
        self._preds.append(preds)
        self._labels.append(labels.astype(np.int64))

    def evaluate(self):
        preds, labels = self._collected()
        cm = metrics.confusion_matrix(preds, labels, self.num_classes)
        acc = metrics.accuracy(preds, labels)
        names = self.classnames or [str(i) for i in range(self.num_classes)]
        per_class = metrics.per_class_accuracy(cm)
        out = {
            "accuracy": 100 * acc,
            "error_rate": 100 * (1 - acc),
            "macro_f1": 100 * metrics.macro_f1(cm),
            "per_class_accuracy": {n: float(100 * a) for n, a in zip(names, per_class) if not np.isnan(a)},
            "num_samples": int(labels.size),
        }
        if self.num_classes == 2:
            out["f1"] = 100 * metrics.binary_f1(preds, labels)
        return out


@EVALUATORS.register("mcc")
class MCCEvaluator(Evaluator):
    """Matthews correlation (CoLA) and accuracy."""

    main_metric = "mcc"

    def _process_batch(self, outputs, labels, meta):
        self._preds.append(_argmax(outputs))
        self._labels.append(labels.astype(np.int64))

    def evaluate(self):
        preds, labels = self._collected()
        num_classes = int(max(preds.max(), labels.max()) + 1)
        if self.classnames is not None:
            num_classes = max(num_classes, len(self.classnames))
        cm = metrics.confusion_matrix(preds, labels, num_classes)
        return {
            "mcc": 100 * metrics.matthews_corrcoef(cm),
            "accuracy": 100 * metrics.accuracy(preds, labels),
            "num_samples": int(labels.size),
        }


@EVALUATORS.register("correlation")
class CorrelationEvaluator(Evaluator):
    """Pearson and Spearman correlation (STS-B) and their mean ``corr``.

    Outputs are either one score per sample ((B,) or (B, 1), a regression head), or logits over
    classes that stand for numbers (T5's "0.0", "0.2", ... "5.0" label words), whose argmax is
    mapped through ``class_values`` (default: the classnames parsed as floats). Integer labels
    are mapped the same way; float labels are used as they are. When ``meta["score"]`` is given
    (STS-B items carry their exact score), it is the gold value instead of the label, so rounding
    the targets to classes does not change the reference.
    """

    main_metric = "pearson"

    def __init__(self, classnames: Optional[Sequence[str]] = None, class_values: Optional[Sequence[float]] = None):
        if class_values is None and classnames is not None:
            try:
                class_values = [float(c) for c in classnames]
            except ValueError:
                class_values = None  # a regression head's classnames name its output, not values
        self.class_values = np.asarray(class_values, dtype=np.float64) if class_values is not None else None
        super().__init__(classnames)

    def _values_of_classes(self, ids: np.ndarray) -> np.ndarray:
        if self.class_values is None:
            raise MMPromptError(
                "CorrelationEvaluator got class logits or integer labels but has "
                "no class_values (numeric classnames) to turn classes into scores."
            )
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.class_values)):
            bad = ids.max() if ids.max() >= len(self.class_values) else ids.min()
            raise MMPromptError(
                f"CorrelationEvaluator: class id {bad} has no value (there are {len(self.class_values)} class_values)."
            )
        return self.class_values[ids]

    def _process_batch(self, outputs, labels, meta):
        if outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1):
            preds = outputs.reshape(-1).astype(np.float64)
        else:
            preds = self._values_of_classes(_argmax(outputs))
        if meta is not None and "score" in meta:
            labels = np.asarray(_meta_field(meta, "score", labels.shape[0], "correlation"), dtype=np.float64)
        elif np.issubdtype(labels.dtype, np.integer):
            labels = self._values_of_classes(labels)
        self._preds.append(preds)
        self._labels.append(labels.astype(np.float64))

    def evaluate(self):
        preds, labels = self._collected()
        p, s = metrics.pearson(preds, labels), metrics.spearman(preds, labels)
        return {"pearson": 100 * p, "spearman": 100 * s, "corr": 100 * (p + s) / 2, "num_samples": int(labels.size)}


@EVALUATORS.register("multirc")
class MultiRCEvaluator(Evaluator):
    """F1a over every answer option and EM per question (meta['group'] = question id)."""

    main_metric = "f1a"

    def reset(self):
        super().reset()
        self._groups: list = []

    def _process_batch(self, outputs, labels, meta):
        self._groups.extend(_meta_field(meta, "group", labels.shape[0], "multirc"))
        self._preds.append(_argmax(outputs))
        self._labels.append(labels.astype(np.int64))

    def evaluate(self):
        preds, labels = self._collected()
        scores = metrics.multirc_f1a_em(preds, labels, self._groups)
        return {
            "f1a": 100 * scores["f1a"],
            "em": 100 * scores["em"],
            "f1a_em": 50 * (scores["f1a"] + scores["em"]),
            "accuracy": 100 * metrics.accuracy(preds, labels),
            "num_samples": int(labels.size),
        }


@EVALUATORS.register("record")
class ReCoRDEvaluator(Evaluator):
    """ReCoRD as candidate ranking: each sample is one (query, candidate entity) pair; the
    candidate with the highest score (logit of class 1 minus class 0, or a single score) in
    each query is the answer. Needs meta 'group', 'candidate' and 'answers'."""

    main_metric = "f1"

    def reset(self):
        super().reset()
        self._groups: list = []
        self._candidates: list = []
        self._answers: list = []

    def _process_batch(self, outputs, labels, meta):
        b = labels.shape[0]
        self._groups.extend(_meta_field(meta, "group", b, "record"))
        self._candidates.extend(_meta_field(meta, "candidate", b, "record"))
        self._answers.extend(
            a.split(ANSWER_SEP) if isinstance(a, str) else list(a) for a in _meta_field(meta, "answers", b, "record")
        )
        if outputs.ndim == 2 and outputs.shape[1] == 2:
            scores = outputs[:, 1] - outputs[:, 0]
        elif outputs.ndim == 1 or outputs.shape[1] == 1:
            scores = outputs.reshape(-1)
        else:
            raise MMPromptError(f"ReCoRD scores must be (B,), (B, 1) or (B, 2) logits, got {outputs.shape}.")
        self._preds.append(scores.astype(np.float64))
        self._labels.append(labels)

    def evaluate(self):
        scores, labels = self._collected()
        out = metrics.record_em_f1(scores, self._groups, self._candidates, self._answers)
        return {"em": 100 * out["em"], "f1": 100 * out["f1"], "num_queries": len(set(self._groups))}


@EVALUATORS.register("base_novel")
class BaseNovelEvaluator(Evaluator):
    """Accuracy on base and novel classes and their harmonic mean (CoCoOp/MaPLe protocol).

    Feed both test sets through one evaluator, telling each batch's subset with
    ``meta={"subset": "base"}`` (or a per-sample list); logits of each subset are over that
    subset's own classes, as the base-to-novel readers relabel each half from 0."""

    main_metric = "hm"
    SUBSETS = ("base", "novel")

    def reset(self):
        self._correct = {s: 0 for s in self.SUBSETS}
        self._count = {s: 0 for s in self.SUBSETS}

    def process(self, outputs, labels, meta: Optional[Mapping] = None) -> None:
        outputs, labels = _to_numpy(outputs), _to_numpy(labels).reshape(-1)
        if meta is None or "subset" not in meta:
            raise MMPromptError("The 'base_novel' evaluator needs meta={'subset': 'base' or 'novel'}.")
        subset = meta["subset"]
        subsets = [subset] * labels.shape[0] if isinstance(subset, str) else list(subset)
        if len(subsets) != labels.shape[0]:
            raise MMPromptError(f"meta['subset'] has {len(subsets)} entries for a batch of {labels.shape[0]}.")
        correct = _argmax(outputs) == labels
        for s, ok in zip(subsets, correct):
            if s not in self._correct:
                raise MMPromptError(f"Unknown subset {s!r}; use 'base' or 'novel'.")
            self._correct[s] += int(ok)
            self._count[s] += 1

    def evaluate(self):
        missing = [s for s in self.SUBSETS if self._count[s] == 0]
        if missing:
            raise MMPromptError(f"base_novel evaluator saw no '{missing[0]}' samples; evaluate both subsets.")
        base = 100 * self._correct["base"] / self._count["base"]
        novel = 100 * self._correct["novel"] / self._count["novel"]
        return {"base": base, "novel": novel, "hm": metrics.harmonic_mean(base, novel)}


def build_evaluator(name: str = "classification", classnames: Optional[Sequence[str]] = None, **options) -> Evaluator:
    """The evaluator registered as ``name`` (a dataset names its own in ``dataset.evaluator_name``;
    vision datasets use "classification")."""
    return EVALUATORS.get(name)(classnames=classnames, **options)
