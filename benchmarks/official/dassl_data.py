"""Few-shot picks: mmprompt's sampling beside Dassl's own ``generate_fewshot_dataset``.

For every CoOp split file in ``../shared/data/coop_splits`` (or ``$MMPROMPT_COOP_SPLITS``), seeds
1-3 and K = 1, 2, 4, 8, 16, Dassl's side runs what a CoOp/MaPLe dataset's ``__init__`` runs after
``train.py``'s ``set_random_seed(seed)``: ``generate_fewshot_dataset(train, num_shots=K)`` then
``generate_fewshot_dataset(val, num_shots=min(K, 4))``, with their real functions. mmprompt's side
is :func:`mmprompt.data.base.sample_fewshot` on the same items. There are no logits here: a
Result's ``logits_rel`` is the fraction of picks (train and val, position by position over all
seeds and K) that differ, so 0 means the very same images in the same order.

Only Dassl's ``dassl/utils`` and ``dassl/data/datasets/base_dataset.py`` are imported (the
package ``__init__`` files, which pull in every dataset and trainer, are bypassed), with
``gdown`` stubbed (it is only used to download datasets).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import types
import warnings
from typing import List, Sequence

from benchmarks.official.common import REPO, Result, checkout_on_path, recipe, require_checkout

DEFAULT_SPLITS = os.path.join(REPO, "..", "shared", "data", "coop_splits")
SEEDS = (1, 2, 3)
SHOTS = (1, 2, 4, 8, 16)


def _dassl_functions(dassl_repo: str):
    """(generate_fewshot_dataset bound to a bare DatasetBase, set_random_seed) from the checkout."""
    root = require_checkout(dassl_repo, "--dassl-repo", ["dassl/data/datasets/base_dataset.py", "dassl/utils/tools.py"])
    packages = {}
    for name, rel in (("dassl", "dassl"), ("dassl.data", "dassl/data"), ("dassl.data.datasets", "dassl/data/datasets")):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(root, rel)]  # submodules load from the checkout; __init__ is skipped
        packages[name] = package
    packages["gdown"] = types.ModuleType("gdown")
    with checkout_on_path(root, stubs=packages, prefixes=("dassl",)):
        import importlib

        base_dataset = importlib.import_module("dassl.data.datasets.base_dataset")
        tools = importlib.import_module("dassl.utils.tools")
    theirs = object.__new__(base_dataset.DatasetBase)  # generate_fewshot_dataset only needs the instance's methods
    return theirs.generate_fewshot_dataset, tools.set_random_seed


def _differing(ours: Sequence, theirs: Sequence) -> int:
    key = lambda d: (d.impath, d.label)  # noqa: E731
    same = sum(key(a) == key(b) for a, b in zip(ours, theirs))
    return max(len(ours), len(theirs)) - same


def _compare(name: str, train, val, fewshot, set_seed, cases) -> Result:
    from mmprompt.data.base import sample_fewshot

    differing = total = 0
    for seed, shots in cases:
        with contextlib.redirect_stdout(io.StringIO()):  # Dassl prints "Creating a K-shot dataset"
            set_seed(seed)
            their_train = fewshot(train, num_shots=shots)
            their_val = fewshot(val, num_shots=min(shots, 4))
        with warnings.catch_warnings():  # the "kept whole" warning for short classes, expected here
            warnings.simplefilter("ignore")
            our_train, our_val = sample_fewshot(train, val, shots, seed)
        differing += _differing(our_train, their_train) + _differing(our_val, their_val)
        total += max(len(our_train), len(their_train)) + max(len(our_val), len(their_val))
    return Result(
        recipe=f"fewshot {name}",
        compared_with="Dassl.pytorch base_dataset.DatasetBase.generate_fewshot_dataset "
        "after dassl.utils.set_random_seed",
        logits_rel=differing / max(total, 1),
        note=f"logits_rel = fraction of differing picks ({differing} of {total}, train + val, seeds "
        f"{sorted({s for s, _ in cases})}, K {sorted({k for _, k in cases})})",
    )


@recipe("dassl_data", "dassl_repo")
def run(args) -> List[Result]:
    from mmprompt.data.base import Datum, read_split_json

    fewshot, set_seed = _dassl_functions(args.dassl_repo)
    cases = [(s, k) for s in SEEDS for k in SHOTS]
    folder = os.path.abspath(os.environ.get("MMPROMPT_COOP_SPLITS", DEFAULT_SPLITS))
    files = (
        sorted(f for f in os.listdir(folder) if f.startswith("split_zhou_") and f.endswith(".json"))
        if os.path.isdir(folder)
        else []
    )
    if not files:
        raise FileNotFoundError(f"no split_zhou_*.json in {folder}; set MMPROMPT_COOP_SPLITS to CoOp's split files")
    # set_random_seed seeds random, numpy and torch; leave them as they were for the other recipes
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        results = []
        for fname in files:
            train, val, _ = read_split_json(os.path.join(folder, fname), "/data/images")
            results.append(_compare(fname[len("split_zhou_") : -len(".json")], train, val, fewshot, set_seed, cases))
        # classes smaller than K (kept whole by both) and labels first seen out of order
        rng = random.Random(0)
        items = [
            Datum(label=c, classname=f"c{c}", impath=f"/d/{c}/{i}.jpg")
            for c in (5, 0, 3, 1, 4, 2)
            for i in range(rng.randint(1, 12))
        ]
        rng.shuffle(items)
        results.append(_compare("short classes, shuffled labels", items, items[::-1], fewshot, set_seed, cases))
        return results
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
