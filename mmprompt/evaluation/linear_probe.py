"""Linear-probe CLIP as CoOp's ``lpclip/``: frozen image features, logistic regression, a C search.

What their ``linear_probe.py`` does, restated:

* features are the CLIP image tower's output (after the projection, not normalised) of every
  image under the test-time transform, train split included;
* a classifier is scikit-learn's ``LogisticRegression(solver="lbfgs", max_iter=1000)`` with an L2
  penalty of inverse strength ``C``, fitted on the few-shot training features;
* ``C`` is searched on the validation features: first over ``1e6, 1e4, ..., 1e-6``; around the
  best of them (the first on ties) the interval ``[C/10, 10 C]``; then ``steps`` rounds that fit
  both ends, keep the better one (the left on ties) and halve the interval in log10 towards it.
  Each round's kept classifier is tested; the run reports the last round's.
* their own few-shot sampling (``sample_like_lpclip``): per class, in label order,
  ``np.random.choice(..., replace=False)`` after ``np.random.seed(seed)``, train then val, with
  ``min(K, 4)`` validation shots (Dassl's rule too, so mmprompt's few-shot splits give the same
  counts).

scikit-learn is an optional dependency (``pip install mmprompt[lpclip]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import MMPromptError

#: the first values of C tried (lpclip's search_list)
INITIAL_C: Tuple[float, ...] = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
#: logistic regression iterations (lpclip: max_iter=1000)
MAX_ITER = 1000


def logistic_regression_class():
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise MMPromptError(
            "The linear probe fits scikit-learn's LogisticRegression, and scikit-learn is not "
            "installed: pip install scikit-learn (or pip install 'mmprompt[lpclip]')."
        ) from None
    return LogisticRegression


def fit_classifier(c: float, features: np.ndarray, labels: np.ndarray, max_iter: int = MAX_ITER):
    """L2-regularised multinomial logistic regression (lbfgs; L2 is scikit-learn's default penalty)."""
    return logistic_regression_class()(solver="lbfgs", max_iter=max_iter, C=c).fit(features, labels)


def accuracy(classifier, features: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct predictions (lpclip: ``sum(pred == y) / len(y)``)."""
    return float(np.mean(classifier.predict(features) == labels))


@dataclass
class SearchRound:
    left: float  # the two values of C fitted in this round
    right: float
    left_accuracy: float  # their validation accuracies
    right_accuracy: float
    chosen: float  # the C kept (the better end; the left one on ties)


@dataclass
class CSearch:
    initial: List[Tuple[float, float]] = field(default_factory=list)  # (C, val accuracy) of INITIAL_C
    rounds: List[SearchRound] = field(default_factory=list)
    classifiers: List[object] = field(default_factory=list)  # the kept classifier of each round

    @property
    def best_c(self) -> float:
        return self.rounds[-1].chosen

    @property
    def classifier(self):
        return self.classifiers[-1]


def search_c(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    steps: int = 8,
    initial: Sequence[float] = INITIAL_C,
    max_iter: int = MAX_ITER,
    fit: Callable = fit_classifier,
) -> CSearch:
    """lpclip's search of C on the validation split (see the module docstring)."""
    if steps < 1:
        raise MMPromptError(f"The C search needs at least one round, got steps={steps}.")
    result = CSearch()

    def fitted(c):
        clf = fit(c, train_x, train_y, max_iter)
        return clf, accuracy(clf, val_x, val_y)

    for c in initial:
        result.initial.append((c, fitted(c)[1]))
    peak = initial[int(np.argmax([acc for _, acc in result.initial]))]
    left, right = 1e-1 * peak, 1e1 * peak
    for _ in range(steps):
        clf_left, acc_left = fitted(left)
        clf_right, acc_right = fitted(right)
        # the next interval: from the kept end to the log10 midpoint, the ends passing through
        # log10 and back as in lpclip (numpy's functions, so the values match to the last bit)
        log_left, log_right = np.log10(left), np.log10(right)
        middle = 0.5 * (log_right + log_left)
        if acc_left < acc_right:
            result.rounds.append(SearchRound(left, right, acc_left, acc_right, right))
            result.classifiers.append(clf_right)
            left, right = np.power(10, middle), np.power(10, log_right)
        else:
            result.rounds.append(SearchRound(left, right, acc_left, acc_right, left))
            result.classifiers.append(clf_left)
            left, right = np.power(10, log_left), np.power(10, middle)
    return result


def sample_like_lpclip(
    labels: np.ndarray, shots: int, rng: np.random.RandomState, classes: Optional[np.ndarray] = None
) -> List[int]:
    """Indices of ``shots`` items of each of ``classes`` (default: the labels present, sorted),
    drawn without replacement."""
    picked: List[int] = []
    for label in np.unique(labels) if classes is None else classes:
        members = np.where(labels == label)[0]
        if len(members) < shots:
            raise MMPromptError(f"Class {label} has {len(members)} items, fewer than the {shots} shots asked for.")
        picked.extend(rng.choice(members, size=shots, replace=False))
    return picked


def lpclip_split(train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray], shots: int, seed: int):
    """lpclip's few-shot train and val features for one seed: ``((x, y), (x, y))``."""
    rng = np.random.RandomState(seed)  # the stream np.random.seed(seed) starts
    classes = np.unique(train[1])  # lpclip draws the val shots of the training labels too
    train_idx = sample_like_lpclip(train[1], shots, rng, classes)
    val_idx = sample_like_lpclip(val[1], min(shots, 4), rng, classes)
    return (train[0][train_idx], train[1][train_idx]), (val[0][val_idx], val[1][val_idx])


__all__ = [
    "INITIAL_C",
    "CSearch",
    "SearchRound",
    "search_c",
    "fit_classifier",
    "accuracy",
    "sample_like_lpclip",
    "lpclip_split",
    "logistic_regression_class",
]
