"""Linear-probe CLIP: lpclip's C search and sampling on fixed random features, and tools/lpclip.py."""

import builtins
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from mmprompt.errors import MMPromptError  # noqa: E402
from mmprompt.evaluation import linear_probe  # noqa: E402
from mmprompt.evaluation.linear_probe import INITIAL_C, lpclip_split, search_c  # noqa: E402


def features(seed=0, classes=12, dim=8, counts=(10, 6, 8), noise=1.2):
    """Overlapping classes, so the C search moves (well-separated ones tie in every round)."""
    rng = np.random.RandomState(seed)
    means = rng.randn(classes, dim)
    out = {}
    for split, n in zip(("train", "val", "test"), counts):
        labels = np.repeat(np.arange(classes), n)
        out[split] = ((means[labels] + noise * rng.randn(len(labels), dim)).astype(np.float32), labels)
    return out


def lpclip_reference(val_x, val_y, steps, fit):
    """lpclip/linear_probe.py's search as its text describes it, written out step by step;
    ``fit(c)`` is their ``LogisticRegression(solver="lbfgs", max_iter=1000, C=c).fit(train)``."""

    def val_acc(c):
        pred = fit(c).predict(val_x)
        return sum(pred == val_y) / len(val_y)

    accs = [val_acc(c) for c in [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]]
    peak = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6][int(np.argmax(accs))]
    c_left, c_right = 1e-1 * peak, 1e1 * peak
    chosen = []
    for _ in range(steps):
        acc_left, acc_right = val_acc(c_left), val_acc(c_right)
        if acc_left < acc_right:
            chosen.append(c_right)
            c_left, c_right = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_right)
        else:
            chosen.append(c_left)
            c_right, c_left = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_left)
        c_left, c_right = np.power(10, c_left), np.power(10, c_right)
    return accs, chosen


def test_c_search_matches_lpclip_on_fixed_features():
    pytest.importorskip("sklearn")
    f = features()
    (tx, ty), (vx, vy) = lpclip_split(f["train"], f["val"], 4, 1)
    from sklearn.linear_model import LogisticRegression

    fitted = {}  # one fit per value of C, shared by both searches: the test is about the search

    def fit(c, *args):
        if c not in fitted:
            fitted[c] = LogisticRegression(solver="lbfgs", max_iter=1000, C=c).fit(tx, ty)
        return fitted[c]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs hits max_iter at the large C values
        ours = search_c(tx, ty, vx, vy, steps=8, fit=fit)
        accs, chosen = lpclip_reference(vx, vy, steps=8, fit=fit)
    assert [c for c, _ in ours.initial] == list(INITIAL_C)
    assert [a for _, a in ours.initial] == accs
    assert [r.chosen for r in ours.rounds] == chosen
    assert len(set(chosen)) > 1  # the search did move on these features
    assert ours.best_c == chosen[-1] and ours.classifier is fitted[chosen[-1]] and len(ours.classifiers) == 8
    clf = linear_probe.fit_classifier(chosen[-1], tx, ty)  # the library's own fit is lpclip's
    assert np.array_equal(clf.coef_, fitted[chosen[-1]].coef_)


def test_sampling_matches_lpclip_draw():
    f = features(counts=(20, 8, 10))
    train_y, val_y = f["train"][1], f["val"][1]
    np.random.seed(3)  # lpclip: a global seed, then train shots per class, then val shots per class
    labels = np.unique(train_y)
    train_idx = [i for lb in labels for i in np.random.choice(np.where(train_y == lb)[0], size=8, replace=False)]
    val_idx = [i for lb in labels for i in np.random.choice(np.where(val_y == lb)[0], size=4, replace=False)]
    (tx, ty), (vx, vy) = lpclip_split(f["train"], f["val"], 8, 3)
    assert np.array_equal(ty, train_y[train_idx]) and np.array_equal(tx, f["train"][0][train_idx])
    assert np.array_equal(vy, val_y[val_idx]) and np.array_equal(vx, f["val"][0][val_idx])
    assert len(vy) == 12 * 4  # min(K, 4) validation shots
    with pytest.raises(MMPromptError, match="fewer than the 32 shots"):
        lpclip_split(f["train"], f["val"], 32, 3)


def test_missing_scikit_learn_names_the_package(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(MMPromptError, match=r"pip install scikit-learn.*mmprompt\[lpclip\]"):
        linear_probe.logistic_regression_class()


@pytest.mark.slow  # two tool runs in subprocesses
def test_lpclip_tool_on_a_generated_dataset(tmp_path):
    pytest.importorskip("sklearn")
    from test_engine_integration import make_oxford_pets

    make_oxford_pets(str(tmp_path / "data"))
    out = tmp_path / "run"
    tiny = [
        "MODEL.BACKBONE.ARCH",
        os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
        "MODEL.BACKBONE.PRETRAINED",
        "",
        "INPUT.SIZE",
        "(32, 32)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DATASET.NUM_SHOTS",
        "2",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "lpclip.py"),
            "--config-file",
            os.path.join(REPO, "configs", "lpclip.yaml"),
            "--root",
            str(tmp_path / "data"),
            "--seed",
            "1",
            "--output-dir",
            str(out),
            "--steps",
            "2",
            *tiny,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    with np.load(out / "features" / "train.npz") as f:
        train_features, train_labels = f["feature_list"], f["label_list"]
    classes = len(np.unique(train_labels))
    assert metrics["num_train"] == 2 * classes == len(train_labels) and metrics["num_val"] == 2 * classes
    assert train_features.shape == (2 * classes, 32) and metrics["feature_dim"] == 32  # the CLIP embedding
    assert len(metrics["rounds"]) == 2 and metrics["best_c"] == metrics["rounds"][-1]["chosen"]
    assert metrics["test"]["num_samples"] > 0 and 0 <= metrics["test"]["accuracy"] <= 100
    # the features again, with lpclip's own draw and no model
    again = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "lpclip.py"),
            "--config-file",
            os.path.join(REPO, "configs", "lpclip.yaml"),
            "--features",
            str(out / "features"),
            "--sampling",
            "lpclip",
            "--seed",
            "2",
            "--output-dir",
            str(tmp_path / "again"),
            "--steps",
            "1",
            "DATASET.NUM_SHOTS",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    with open(tmp_path / "again" / "metrics.json") as f:
        assert json.load(f)["num_train"] == classes
