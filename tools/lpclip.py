#!/usr/bin/env python
"""Linear-probe CLIP as CoOp's lpclip: frozen image features, logistic regression, C searched on val.

    python tools/lpclip.py --config-file configs/lpclip.yaml --root $DATA --seed 1 \\
        --output-dir output/lpclip/oxford_pets/16shots/seed1 DATASET.NAME oxford_pets DATASET.NUM_SHOTS 16

The image tower's features (test-time transform, every split) are written to
OUTPUT_DIR/features/{train,val,test}.npz in lpclip's format (``feature_list``, ``label_list``),
so their ``linear_probe.py`` reads them too; ``--features DIR`` reuses such files instead of
extracting. Few-shot sampling:

* ``--sampling mmprompt`` (default): mmprompt's few-shot splits for SEED (Dassl's sampling;
  DATASET.NUM_SHOTS per class in train, min(K, 4) in val), the whole test split;
* ``--sampling lpclip``: features of the full train and val splits, then lpclip's own draw for
  SEED (``np.random.seed(seed)``, per class ``np.random.choice``), as their linear_probe.py.

Then lpclip's search of C (``--steps`` rounds, 8 in their script) and the test accuracy of the
chosen classifier, written to OUTPUT_DIR/metrics.json. Needs scikit-learn
(``pip install 'mmprompt[lpclip]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mmprompt.errors import ConfigError, MMPromptError  # noqa: E402
from mmprompt.utils.cli import run_cli  # noqa: E402

SPLITS = ("train", "val", "test")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config-file", default="", help="config (yaml) naming the backbone and dataset, e.g. configs/lpclip.yaml"
    )
    p.add_argument("--dataset-config-file", default="", help="dataset config (yaml), merged before the config")
    p.add_argument("--root", default="", help="DATASET.ROOT: the folder holding the datasets")
    p.add_argument("--seed", type=int, default=None, help="SEED: of the few-shot draw")
    p.add_argument("--output-dir", default="", help="OUTPUT_DIR")
    p.add_argument(
        "--sampling",
        choices=("mmprompt", "lpclip"),
        default="mmprompt",
        help="few-shot draw: mmprompt's (Dassl's) splits, or lpclip's own np.random draw",
    )
    p.add_argument("--steps", type=int, default=8, help="rounds of the C search after the first sweep (lpclip: 8)")
    p.add_argument(
        "--features",
        default="",
        metavar="DIR",
        help="read {train,val,test}.npz (lpclip's format) from DIR instead of extracting features",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results already in OUTPUT_DIR (its features/ folder stays)",
    )
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    return p


def extract_features(cfg, splits):
    """{split: (features, labels)} from the frozen backbone's image tower, test-time transform."""
    import numpy as np
    import torch

    from mmprompt.build import build_backbone
    from mmprompt.data.build import build_loader

    device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
    backbone = build_backbone(cfg)
    if "vision" not in backbone.tower_names:
        raise ConfigError(
            f"The linear probe reads image features, but the {cfg.MODEL.BACKBONE.NAME} backbone has "
            f"the towers {backbone.tower_names}; use an open_clip (or timm_vit) backbone."
        )
    vision = backbone.to(device).eval().tower("vision")
    out = {}
    with torch.no_grad():
        for name, items in splits.items():
            features, labels = [], []
            for batch in build_loader(cfg, items, is_train=False):
                features.append(vision.run(batch["image"].to(device)).float().cpu())
                labels.append(batch["label"])
            out[name] = (torch.cat(features).numpy(), torch.cat(labels).numpy().astype(np.int64))
    return out


def save_features(folder, features) -> None:
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    for name, (x, y) in features.items():
        np.savez(os.path.join(folder, name), feature_list=x, label_list=y)


def load_features(folder):
    """{split: (features, labels)} from lpclip-format files, each checked: a 2-D finite float
    array, one integer label per row, the same feature size in every split."""
    import zipfile

    import numpy as np

    out = {}
    for name in SPLITS:
        path = os.path.join(folder, f"{name}.npz")
        if not os.path.isfile(path):
            raise MMPromptError(f"--features {folder} has no {name}.npz (lpclip's format: feature_list, label_list).")
        try:
            with np.load(path) as f:  # allow_pickle stays False: an object array is refused, never unpickled
                x, y = np.asarray(f["feature_list"]), np.asarray(f["label_list"])
        except KeyError as e:
            raise MMPromptError(
                f"{path} lacks the array {e}; lpclip's format holds feature_list and label_list."
            ) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise MMPromptError(f"{path} is not a readable .npz of features ({type(e).__name__}: {e}).") from None
        problem = ""
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or len(x) == 0:
            problem = f"feature_list must be a non-empty (items, dim) array of numbers, got shape {x.shape} {x.dtype}"
        elif not np.isfinite(x).all():
            problem = "feature_list holds NaN or infinite values"
        elif y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            problem = (
                f"label_list must hold one integer label per feature row ({len(x)}), got shape {y.shape} {y.dtype}"
            )
        elif out and x.shape[1] != next(iter(out.values()))[0].shape[1]:
            problem = f"its features have {x.shape[1]} numbers, those of train.npz {out['train'][0].shape[1]}"
        if problem:
            raise MMPromptError(f"{path}: {problem}.")
        out[name] = (x, y)
    return out


def main(argv=None) -> int:
    from train_net import setup_cfg

    from mmprompt.config.validate import validate_config
    from mmprompt.engine.run_dir import open_run_dir
    from mmprompt.evaluation.linear_probe import logistic_regression_class

    args = build_parser().parse_intermixed_args(argv)
    cfg = setup_cfg(args)
    logistic_regression_class()  # scikit-learn missing: say so before extracting anything
    shots = cfg.DATASET.NUM_SHOTS
    if args.sampling == "lpclip" and shots <= 0:
        raise ConfigError("--sampling lpclip draws DATASET.NUM_SHOTS items per class; set it (lpclip: 1, 2, 4, 8, 16).")
    if args.steps < 1:  # the chosen C is the last round's
        raise ConfigError(f"--steps must be >= 1 (rounds of the C search; lpclip: 8), got {args.steps}.")
    if not args.features:  # reading features needs no dataset or backbone
        validate_config(cfg, training=False)
    # one run per folder, as tools/train_net.py: results of another probe are not replaced silently
    run_dir = open_run_dir(cfg, "overwrite" if args.overwrite else "fresh")
    try:
        return probe(args, cfg, shots)
    finally:
        run_dir.close()


def probe(args, cfg, shots: int) -> int:
    from mmprompt.evaluation.linear_probe import accuracy, lpclip_split, search_c

    if args.features:
        features = load_features(args.features)
        dataset_name = cfg.DATASET.NAME or os.path.basename(os.path.normpath(args.features))
    else:
        from mmprompt.data.build import build_dataset

        dataset = build_dataset(cfg, num_shots=-1 if args.sampling == "lpclip" else None)
        splits = {"train": dataset.train_x, "val": dataset.val, "test": dataset.test}
        empty = [name for name, items in splits.items() if not items]
        if empty:
            raise MMPromptError(
                f"The dataset {cfg.DATASET.NAME} has no {' / '.join(empty)} items; the linear probe "
                "needs train, val (for C) and test."
            )
        features = extract_features(cfg, splits)
        save_features(os.path.join(cfg.OUTPUT_DIR, "features"), features)
        dataset_name = cfg.DATASET.NAME
    train, val, test = (features[name] for name in SPLITS)
    if args.sampling == "lpclip":
        train, val = lpclip_split(train, val, shots, cfg.SEED)
    import numpy as np

    if len(np.unique(train[1])) < 2:
        raise MMPromptError(
            f"The training features hold a single class ({np.unique(train[1]).tolist()}); a "
            "classifier needs at least two."
        )
    search = search_c(train[0], train[1], val[0], val[1], steps=args.steps)
    test_accuracy = 100 * accuracy(search.classifier, test[0], test[1])
    results = {
        "dataset": dataset_name,
        "seed": cfg.SEED,
        "num_shots": shots,
        "sampling": args.sampling,
        "backbone": cfg.MODEL.BACKBONE.ARCH,
        "feature_dim": int(train[0].shape[1]),
        "num_train": int(len(train[1])),
        "num_val": int(len(val[1])),
        "initial_c": [{"c": c, "val_accuracy": 100 * a} for c, a in search.initial],
        "rounds": [
            {
                "left": float(r.left),
                "right": float(r.right),
                "left_val_accuracy": 100 * r.left_accuracy,
                "right_val_accuracy": 100 * r.right_accuracy,
                "chosen": float(r.chosen),
                "test_accuracy": 100 * accuracy(clf, test[0], test[1]),
            }
            for r, clf in zip(search.rounds, search.classifiers)
        ],
        "best_c": float(search.best_c),
        "main_metric": "accuracy",
        "test": {"accuracy": test_accuracy, "num_samples": int(len(test[1]))},
    }
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"{dataset_name}, seed {cfg.SEED}, {shots} shots: C {search.best_c:.4g}, test accuracy {test_accuracy:.2f}")
    print(f"results in {os.path.join(cfg.OUTPUT_DIR, 'metrics.json')}", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
