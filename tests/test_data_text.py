import contextlib
import io
import json
import zipfile

import pytest

from datasets_prep import prepare_text_datasets as prep
from datasets_prep._common import PrepError
from mmprompt.config import get_cfg
from mmprompt.data.base import DataError, DatasetMissingError
from mmprompt.data.build import build_dataset
from mmprompt.data.text import split_per_class
from mmprompt.data.text_tasks import STSB_CLASSES, TASKS
from mmprompt.errors import ConfigError
from mmprompt.registry import DATASETS


def make_cfg(name, root="", fmt="pair", **text):
    cfg = get_cfg()
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root) or "/nonexistent-root"
    cfg.DATASET.TEXT.FORMAT = fmt
    for k, v in text.items():
        if k in ("TRAIN", "VALIDATION"):
            cfg.DATASET.TEXT.DATA_FILES[k] = v
        else:
            cfg.DATASET.TEXT[k] = v
    return cfg


# ------------------------------------------------------------------ BBC News (real data)


def test_bbc_news_has_5_sorted_classes_and_2225_articles_in_a_fixed_split():
    cfg = make_cfg("bbc_news")
    ds = build_dataset(cfg)
    assert ds.classnames == ["business", "entertainment", "politics", "sports", "tech"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (1558, 223, 444)
    assert len(ds.train_x) + len(ds.val) + len(ds.test) == 2225
    assert ds.evaluator_name == "classification"
    counts = [sum(d.label == c for d in ds.train_x + ds.val + ds.test) for c in range(5)]
    assert counts == [510, 386, 417, 511, 401]
    assert all(d.text and d.text_b is None and d.classname == ds.classnames[d.label] for d in ds.test)
    texts = {d.text for d in ds.train_x}
    assert not texts & {d.text for d in ds.test}
    again = build_dataset(cfg)
    assert [d.text for d in again.test] == [d.text for d in ds.test]
    assert "£15.8m" in " ".join(d.text for d in ds.train_x + ds.val + ds.test)  # the one cp1252 article


def test_bbc_news_few_shot_counts_and_seed():
    cfg = make_cfg("bbc_news")
    cfg.DATASET.NUM_SHOTS = 8
    ds = build_dataset(cfg)
    assert len(ds.train_x) == 40 and len(ds.val) == 20 and len(ds.test) == 444
    assert [sum(d.label == c for d in ds.train_x) for c in range(5)] == [8] * 5
    assert [d.text for d in build_dataset(cfg).train_x] == [d.text for d in ds.train_x]
    cfg.SEED = 2
    assert [d.text for d in build_dataset(cfg).train_x] != [d.text for d in ds.train_x]


def test_bbc_news_too_many_shots_keeps_the_class_whole_with_a_warning():
    cfg = make_cfg("bbc_news")
    cfg.DATASET.NUM_SHOTS = 300  # entertainment has 270 training articles: kept whole, as Dassl does
    with pytest.warns(UserWarning, match=r"300-shot sampling of the train split: .*'entertainment' \(270\)"):
        dataset = build_dataset(cfg)
    assert sum(d.classname == "entertainment" for d in dataset.train_x) == 270


def test_per_class_split_rounds_half_up():
    import random

    texts = [f"t{i}" for i in range(15)]
    train, val, test = split_per_class(texts, random.Random(0))
    assert (len(train), len(val), len(test)) == (10, 2, 3)  # 1.5 -> 2, 3.0 -> 3
    assert sorted(train + val + test) == list(range(15))
    texts = ["same"] * 5 + [f"t{i}" for i in range(10)]  # a duplicated text stays in one split
    for seed in range(10):
        parts = split_per_class(texts, random.Random(seed))
        assert sum(any(texts[i] == "same" for i in part) for part in parts) == 1


def test_bbc_news_reads_another_class_folder_tree(tmp_path):
    for c, n in (("b", 10), ("a", 10)):
        (tmp_path / c).mkdir()
        for i in range(n):
            (tmp_path / c / f"{i:03d}.txt").write_text(f"{c} article {i}\n")
    ds = build_dataset(make_cfg("bbc_news", DATA_DIR=str(tmp_path), TEMPLATE="news: {text}"))
    assert ds.classnames == ["a", "b"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (14, 2, 4)
    assert ds.train_x[0].text.startswith("news: a article")
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="empty"):
        build_dataset(make_cfg("bbc_news", DATA_DIR=str(tmp_path)))


# ------------------------------------------------------------------ miniature official releases


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def tsv(header, rows):
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(c) for c in r) for r in rows]
    return "\n".join(lines) + "\n"


BOOLQ = {
    "train.jsonl": jsonl(
        [{"question": f"is it {i}", "passage": f"passage {i}", "idx": i, "label": i % 2 == 0} for i in range(6)]
    ),
    "val.jsonl": jsonl(
        [{"question": f"val q {i}", "passage": f"val p {i}", "idx": i, "label": i < 2} for i in range(4)]
    ),
    "test.jsonl": jsonl([{"question": "test q", "passage": "test p", "idx": 0}]),
}
CB_LABELS = ["entailment", "contradiction", "neutral"]
CB = {
    "train.jsonl": jsonl(
        [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": CB_LABELS[i % 3], "idx": i} for i in range(6)]
    ),
    "val.jsonl": jsonl(
        [{"premise": f"vp{i}", "hypothesis": f"vh{i}", "label": CB_LABELS[i % 3], "idx": i} for i in range(30)]
    ),
}
RTE_SG = {
    "train.jsonl": jsonl(
        [
            {"premise": f"p{i}", "hypothesis": f"h{i}", "label": ["entailment", "not_entailment"][i % 2], "idx": i}
            for i in range(4)
        ]
    ),
    "val.jsonl": jsonl(
        [{"premise": f"vp{i}", "hypothesis": f"vh{i}", "label": "entailment", "idx": i} for i in range(2)]
    ),
}


def multirc_record(idx, text, questions):
    return {
        "idx": idx,
        "version": 1.1,
        "passage": {
            "text": text,
            "questions": [
                {
                    "question": q,
                    "idx": qi,
                    "answers": [{"text": a, "idx": ai, "label": lab} for ai, (a, lab) in enumerate(ans)],
                }
                for qi, (q, ans) in enumerate(questions)
            ],
        },
    }


MULTIRC = {
    "train.jsonl": jsonl([multirc_record(0, "Sam ate.", [("Who ate?", [("Sam", 1), ("Kim", 0)])])]),
    "val.jsonl": jsonl(
        [multirc_record(p, f"para {p}", [(f"q{p}a", [("x", 1), ("y", 0)]), (f"q{p}b", [("z", 0)])]) for p in range(4)]
    ),
}
COPA = {
    "train.jsonl": jsonl(
        [
            {
                "premise": "The man broke his toe.",
                "choice1": "He dropped a hammer.",
                "choice2": "He got a hole in his sock.",
                "question": "cause",
                "label": 0,
                "idx": 0,
            },
            {
                "premise": "I tipped the bottle.",
                "choice1": "The liquid froze.",
                "choice2": "The liquid poured out.",
                "question": "effect",
                "label": 1,
                "idx": 1,
            },
        ]
    ),
    "val.jsonl": jsonl(
        [
            {"premise": f"vp{i}", "choice1": "a", "choice2": "b", "question": "effect", "label": i % 2, "idx": i}
            for i in range(2)
        ]
    ),
}
RECORD_TEXT = "Obama met Merkel in Berlin.\n@highlight\nTalks went well"
RECORD = {
    "train.jsonl": jsonl(
        [
            {
                "idx": 0,
                "source": "dm",
                "passage": {
                    "text": RECORD_TEXT,
                    "entities": [{"start": 0, "end": 4}, {"start": 10, "end": 15}, {"start": 20, "end": 25}],
                },
                "qas": [
                    {
                        "idx": 0,
                        "query": "@placeholder hosted the talks",
                        "answers": [{"start": 20, "end": 25, "text": "Berlin"}],
                    },
                    {"idx": 1, "query": "@placeholder visited", "answers": [{"start": 0, "end": 4, "text": "Obama"}]},
                ],
            }
        ]
    ),
    "val.jsonl": jsonl(
        [
            {
                "idx": 5,
                "source": "dm",
                "passage": {"text": RECORD_TEXT, "entities": [{"start": 0, "end": 4}, {"start": 10, "end": 15}]},
                "qas": [
                    {"idx": 7, "query": "@placeholder spoke", "answers": [{"start": 10, "end": 15, "text": "Merkel"}]}
                ],
            }
        ]
    ),
}
SST2 = {
    "train.tsv": tsv(
        ["sentence", "label"], [(f"good movie {i} ", 1) for i in range(3)] + [(f"bad film {i} ", 0) for i in range(3)]
    ),
    "dev.tsv": tsv(["sentence", "label"], [("it 's \" quoted", 1), ("dull", 0)]),
    "test.tsv": tsv(["index", "sentence"], [(0, "unlabelled")]),
}
STSB_HEADER = [
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
    "score",
]
STSB = {
    "train.tsv": tsv(
        STSB_HEADER,
        [
            (i, "main-news", "f", "2012", i, "none", "none", f"a{i}", f"b{i}", s)
            for i, s in enumerate(["5.000", "3.800", "0.000", "2.500"])
        ],
    ),
    "dev.tsv": tsv(
        STSB_HEADER,
        [
            (i, "main-news", "f", "2012", i, "none", "none", f"c{i}", f"d{i}", s)
            for i, s in enumerate(["4.200", "1.000"])
        ],
    ),
}
COLA = {  # CoLA's train/dev files have no header: source, label, original label, sentence
    "train.tsv": tsv(
        None,
        [
            ("gj04", 1, "", "The sailors rode the breeze clear of the rocks."),
            ("gj04", 0, "*", "The more we study verbs, the crazier they get get."),
            ("gj04", 1, "", "Day by day the facts are getting murkier."),
        ],
    ),
    "dev.tsv": tsv(
        None,
        [
            ("gj04", 1, "", "He left."),
            ("gj04", 0, "*", "Left he the."),
            ("gj04", 1, "", "She ran."),
            ("gj04", 0, "*", "Ran she the."),
        ],
    ),
    "test.tsv": tsv(["index", "sentence"], [(0, "Test sentence.")]),
}
WIC = {
    name: jsonl(
        [
            {
                "word": "place",
                "sentence1": f"Do you want to come over to my place {i}?",
                "sentence2": "It is not my place to tell you.",
                "idx": i,
                "label": i % 2 == 0,
                "start1": 31,
                "start2": 13,
                "end1": 36,
                "end2": 18,
                "version": 1.1,
            }
            for i in range(n)
        ]
    )
    for name, n in (("train.jsonl", 2), ("val.jsonl", 2))
}
WSC = {
    name: jsonl(
        [
            {
                "text": "Mark told Pete many lies about himself. He should have been more skeptical.",
                "target": {"span2_index": 7, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"},
                "idx": i,
                "label": i == 1,
            }
            for i in range(n)
        ]
    )
    for name, n in (("train.jsonl", 2), ("val.jsonl", 2))
}
MRPC_HEADER = ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
MRPC = {
    name: tsv(MRPC_HEADER, [(i % 2, 100 + i, 200 + i, f"first {i}", f"second {i}") for i in range(4)])
    for name in ("train.tsv", "dev.tsv")
}
QQP = {
    name: tsv(
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        [(i, 2 * i, 2 * i + 1, f"how {i}?", f"why {i}?", i % 2) for i in range(4)],
    )
    for name in ("train.tsv", "dev.tsv")
}
QNLI = {
    name: tsv(
        ["index", "question", "sentence", "label"],
        [(i, f"q{i}?", f"s{i}.", ["entailment", "not_entailment"][i % 2]) for i in range(4)],
    )
    for name in ("train.tsv", "dev.tsv")
}
RTE_GLUE = {
    name: tsv(
        ["index", "sentence1", "sentence2", "label"],
        [(i, f"s1 {i}", f"s2 {i}", ["entailment", "not_entailment"][i % 2]) for i in range(4)],
    )
    for name in ("train.tsv", "dev.tsv")
}
MNLI_TRAIN_HEADER = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
MNLI_LABELS = ["entailment", "neutral", "contradiction"]
MNLI = {
    "train.tsv": tsv(
        MNLI_TRAIN_HEADER,
        [
            (
                i,
                1,
                f"{i}e",
                "fiction",
                "( x )",
                "( y )",
                "(ROOT x)",
                "(ROOT y)",
                f"premise {i}",
                f"hypothesis {i}",
                MNLI_LABELS[i % 3],
                MNLI_LABELS[i % 3],
            )
            for i in range(6)
        ],
    ),
    "dev_matched.tsv": tsv(
        MNLI_DEV_HEADER,
        [
            (i, 1, f"{i}m", "fiction", "(", "(", "(", "(", f"matched p{i}", f"matched h{i}", *[MNLI_LABELS[i % 3]] * 6)
            for i in range(3)
        ],
    ),
    "dev_mismatched.tsv": tsv(
        MNLI_DEV_HEADER,
        [
            (
                i,
                1,
                f"{i}mm",
                "letters",
                "(",
                "(",
                "(",
                "(",
                f"mismatched p{i}",
                f"mismatched h{i}",
                *[MNLI_LABELS[i % 3]] * 6,
            )
            for i in range(3)
        ],
    ),
}


def write_release(src, folder, files, zipped=False):
    if zipped:
        with zipfile.ZipFile(src / f"{folder}.zip", "w") as z:
            for name, text in files.items():
                z.writestr(f"{folder}/{name}", text)
        return
    d = src / folder
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Official-format releases: SuperGLUE zips, and GLUE folders one level down."""
    src = tmp_path_factory.mktemp("downloads")
    write_release(src, "BoolQ", BOOLQ, zipped=True)
    write_release(src, "CB", CB, zipped=True)
    write_release(src, "MultiRC", MULTIRC, zipped=True)
    write_release(src, "COPA", COPA)
    write_release(src, "ReCoRD", RECORD)
    write_release(src / "superglue", "RTE", RTE_SG)
    write_release(src / "glue_data", "SST-2", SST2)
    write_release(src / "glue_data", "STS-B", STSB)
    write_release(src / "glue_data", "CoLA", COLA)
    write_release(src, "WiC", WIC, zipped=True)
    write_release(src, "WSC", WSC, zipped=True)
    for folder, files in (("MRPC", MRPC), ("QQP", QQP), ("QNLI", QNLI), ("RTE", RTE_GLUE), ("MNLI", MNLI)):
        write_release(src / "glue_data", folder, files)
    return src


TASKS_IN_FIXTURE = sorted(TASKS)  # every GLUE / SuperGLUE task


PREP_OUTPUT = {}


@pytest.fixture(scope="module")
def prepared(official, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        done = prep.prepare(
            prep.build_parser().parse_args(["--src", str(official), "--root", str(root), "--task", "all"])
        )
    PREP_OUTPUT["all"] = printed.getvalue()
    assert sorted(n for n, _, _ in done) == sorted(TASKS_IN_FIXTURE)
    return root


def test_prep_script_converts_official_releases(prepared):
    assert (prepared / "superglue" / "boolq" / "dataset_dict.json").is_file()
    assert (prepared / "glue" / "sst2" / "dataset_dict.json").is_file()
    import datasets

    boolq = datasets.load_from_disk(str(prepared / "superglue" / "boolq"))
    assert set(boolq) == {"train", "validation", "test"}
    assert boolq["train"][0] == {"question": "is it 0", "passage": "passage 0", "idx": 0, "label": 1}
    assert boolq["test"][0]["label"] == -1
    cola = datasets.load_from_disk(str(prepared / "glue" / "cola"))
    assert cola["train"][1] == {"sentence": "The more we study verbs, the crazier they get get.", "idx": 1, "label": 0}
    multirc = datasets.load_from_disk(str(prepared / "superglue" / "multirc"))
    assert multirc["validation"].num_rows == 12
    assert multirc["validation"][0]["idx"] == {"paragraph": 0, "question": 0, "answer": 0}
    out = PREP_OUTPUT["all"]
    assert "superglue_boolq: train 6, validation 4, test 1 rows" in out
    assert "glue_mnli: train 6, validation 3, validation_mismatched 3 rows" in out


def test_text_to_text_templates_and_label_words(prepared):
    def first(name):
        ds = build_dataset(make_cfg(name, prepared, fmt="text_to_text", NUM_VAL_FROM_TRAIN=2))
        return ds, ds.train_x[0]

    ds, item = first("superglue_boolq")
    assert ds.classnames == ["False", "True"] and ds.input_format == "text_to_text"
    assert (item.text, item.text_b, item.label, item.classname) == (
        "boolq question: is it 0 passage: passage 0",
        None,
        1,
        "True",
    )
    ds, item = first("superglue_cb")
    assert ds.classnames == CB_LABELS
    assert item.text == "cb hypothesis: h0 premise: p0" and item.label == 0
    _, item = first("superglue_rte")
    assert item.text == "rte hypothesis: h0 premise: p0"
    ds, item = first("superglue_copa")
    assert ds.classnames == ["choice1", "choice2"]
    assert (
        item.text
        == (
            "copa premise: The man broke his toe. question: cause choice1: He dropped a hammer. "
            "choice2: He got a hole in his sock."
        )
        and item.label == 0
    )
    ds, item = first("superglue_multirc")
    assert item.text == "multirc question: Who ate? answer: Sam paragraph: Sam ate."
    assert item.meta == {"group": "0-0"} and ds.evaluator_name == "multirc"
    ds, item = first("glue_sst2")
    assert item.text in {f"sst2 sentence: good movie {i} " for i in range(3)} and ds.classnames == [
        "negative",
        "positive",
    ]
    ds, item = first("glue_cola")
    assert item.text == "cola sentence: The sailors rode the breeze clear of the rocks."
    assert ds.classnames == ["unacceptable", "acceptable"] and ds.evaluator_name == "mcc"
    ds, item = first("glue_stsb")
    assert ds.classnames == list(STSB_CLASSES) and len(ds.classnames) == 26 and ds.evaluator_name == "correlation"
    assert item.text == "stsb sentence1: a0 sentence2: b0"
    # 2.5 * 5 = 12.5 rounds half to even -> 12, "2.4", as T5's tf.round does
    assert [d.label for d in ds.train_x] == [25, 19, 0, 12] and ds.train_x[3].classname == "2.4"
    assert [d.meta["score"] for d in ds.train_x] == [5.0, 3.8, 0.0, 2.5]


def test_remaining_tasks_read_from_their_official_formats(prepared):
    def build(name, fmt="text_to_text"):
        return build_dataset(make_cfg(name, prepared, fmt=fmt, NUM_VAL_FROM_TRAIN=2))

    wic = build("superglue_wic")
    assert (
        wic.train_x[0].text
        == (
            "wic word: place sentence1: Do you want to come over to my place 0? "
            "sentence2: It is not my place to tell you."
        )
        and wic.train_x[0].label == 1
    )
    wsc = build("superglue_wsc")
    assert (
        wsc.train_x[1].text
        == (
            "wsc text: Mark told Pete many lies about himself. He should have been more "
            "skeptical. pronoun: He candidate: Mark"
        )
        and wsc.train_x[1].classname == "True"
    )
    assert build("superglue_wsc", "pair").train_x[0].text_b == 'Does "He" refer to "Mark"?'
    mrpc = build("glue_mrpc", "pair")  # the header's byte-order mark is not part of the "Quality" column
    assert (mrpc.train_x[1].text, mrpc.train_x[1].text_b, mrpc.train_x[1].classname) == (
        "first 1",
        "second 1",
        "equivalent",
    )
    qqp = build("glue_qqp")
    assert qqp.test[0].text == "qqp question1: how 0? question2: why 0?" and qqp.test[1].classname == "duplicate"
    qnli = build("glue_qnli", "pair")
    assert (qnli.test[1].text, qnli.test[1].text_b, qnli.test[1].label) == ("q1?", "s1.", 1)
    rte = build("glue_rte")
    assert rte.train_x[0].text == "rte sentence1: s1 0 sentence2: s2 0" and rte.classnames == [
        "entailment",
        "not_entailment",
    ]
    mnli = build("glue_mnli")
    assert [d.text for d in mnli.test] == [f"mnli hypothesis: matched h{i} premise: matched p{i}" for i in range(3)]
    assert [d.classname for d in mnli.test] == MNLI_LABELS and len(mnli.train_x) == 4 and len(mnli.val) == 2


def test_pair_format_gives_text_and_text_b(prepared):
    ds = build_dataset(make_cfg("superglue_boolq", prepared))
    assert ds.input_format == "pair"
    assert (ds.train_x[0].text, ds.train_x[0].text_b) == ("is it 0", "passage 0")
    ds = build_dataset(make_cfg("superglue_cb", prepared))
    assert (ds.train_x[0].text, ds.train_x[0].text_b) == ("p0", "h0")
    ds = build_dataset(make_cfg("superglue_copa", prepared))
    assert ds.train_x[1].text == "I tipped the bottle. What was the effect?"
    assert ds.train_x[1].text_b == "choice1: The liquid froze. choice2: The liquid poured out."
    ds = build_dataset(make_cfg("glue_sst2", prepared, NUM_VAL_FROM_TRAIN=2))
    assert ds.test[0].text_b is None
    ds = build_dataset(make_cfg("superglue_multirc", prepared))
    assert (ds.train_x[0].text, ds.train_x[0].text_b) == ("Sam ate.", "Who ate? Sam")


def test_auto_format_follows_the_model():
    cfg = get_cfg()
    from mmprompt.data.text import resolve_format

    assert resolve_format(cfg) == "pair"
    cfg.MODEL.NAME = "t5_verbalizer"
    assert resolve_format(cfg) == "text_to_text"
    cfg.DATASET.TEXT.FORMAT = "seq2seq"
    with pytest.raises(ConfigError, match="FORMAT"):
        resolve_format(cfg)


def test_record_becomes_one_binary_item_per_candidate(prepared):
    ds = build_dataset(make_cfg("superglue_record", prepared, fmt="text_to_text", NUM_VAL_FROM_TRAIN=1))
    assert ds.evaluator_name == "record"
    # train had 2 queries over 3 entities; one query moved to val; test = the official validation query
    assert len(ds.train_x) == 3 and len(ds.val) == 3 and len(ds.test) == 2
    by_candidate = {d.meta["candidate"]: d for d in ds.test}
    assert set(by_candidate) == {"Obama", "Merkel"}
    assert by_candidate["Merkel"].label == 1 and by_candidate["Obama"].label == 0
    assert by_candidate["Merkel"].meta["answers"] == "Merkel"
    assert (
        by_candidate["Merkel"].text
        == "record query: Merkel spoke passage: Obama met Merkel in Berlin.\n- Talks went well"
    )
    assert {d.meta["group"] for d in ds.test} == {"5-7"}


def test_small_tasks_halve_validation_large_tasks_carve_train(prepared):
    cb = build_dataset(make_cfg("superglue_cb", prepared))
    assert len(cb.train_x) == 6 and len(cb.val) == 15 and len(cb.test) == 15
    assert not {d.text for d in cb.val} & {d.text for d in cb.test}
    assert {d.text for d in cb.val + cb.test} == {f"vp{i}" for i in range(30)}
    again = build_dataset(make_cfg("superglue_cb", prepared))
    assert [d.text for d in again.val] == [d.text for d in cb.val]
    other_seed = [build_dataset(make_cfg("superglue_cb", prepared, SPLIT_SEED=s)).val for s in range(1, 6)]
    assert any([d.text for d in v] != [d.text for d in cb.val] for v in other_seed)
    sst2 = build_dataset(make_cfg("glue_sst2", prepared, NUM_VAL_FROM_TRAIN=2))
    assert len(sst2.train_x) == 4 and len(sst2.val) == 2 and len(sst2.test) == 2
    assert not {d.text for d in sst2.train_x} & {d.text for d in sst2.val}
    assert sst2.test[0].text == "it 's \" quoted"  # GLUE tsv has no quoting
    with pytest.raises(DataError, match="NUM_VAL_FROM_TRAIN=6 leaves no training"):
        build_dataset(make_cfg("glue_sst2", prepared, NUM_VAL_FROM_TRAIN=6))


def test_multirc_split_keeps_each_paragraph_on_one_side(prepared):
    ds = build_dataset(make_cfg("superglue_multirc", prepared))
    val_paragraphs = {d.meta["group"].split("-")[0] for d in ds.val}
    test_paragraphs = {d.meta["group"].split("-")[0] for d in ds.test}
    assert len(val_paragraphs) == 2 and len(test_paragraphs) == 2 and not val_paragraphs & test_paragraphs
    assert len(ds.val) == 6 and len(ds.test) == 6


def test_text_few_shot_per_class(prepared):
    cfg = make_cfg("superglue_cb", prepared)
    cfg.DATASET.NUM_SHOTS = 2
    ds = build_dataset(cfg)
    assert [sum(d.label == c for d in ds.train_x) for c in range(3)] == [2, 2, 2]
    assert [sum(d.label == c for d in ds.val) for c in range(3)] == [2, 2, 2]
    assert len(ds.test) == 15
    cfg.DATASET.NUM_SHOTS = 3
    with pytest.warns(UserWarning, match="kept whole, as Dassl does"):  # a class of 2 stays 2
        ds = build_dataset(cfg)
    assert [sum(d.label == c for d in ds.train_x) for c in range(3)] == [2, 2, 2]


def test_official_files_read_directly_from_the_config(official, tmp_path):
    folder = official / "glue_data" / "STS-B"
    ds = build_dataset(
        make_cfg(
            "glue_stsb",
            tmp_path,
            fmt="text_to_text",
            TRAIN=str(folder / "train.tsv"),
            VALIDATION=str(folder / "dev.tsv"),
        )
    )
    assert len(ds.train_x) == 4 and len(ds.val) + len(ds.test) == 2
    with pytest.raises(ConfigError, match="both DATASET.TEXT.DATA_FILES"):
        build_dataset(make_cfg("glue_stsb", tmp_path, TRAIN=str(folder / "train.tsv")))
    with pytest.raises(DataError, match="official GLUE .tsv"):
        build_dataset(
            make_cfg("glue_stsb", tmp_path, TRAIN=str(folder / "train.jsonl"), VALIDATION=str(folder / "dev.tsv"))
        )
    # the unlabelled official test file is not a validation set
    with pytest.raises(DataError, match="Unlabelled rows"):
        build_dataset(
            make_cfg(
                "glue_sst2",
                tmp_path,
                TRAIN=str(official / "glue_data" / "SST-2" / "train.tsv"),
                VALIDATION=str(official / "glue_data" / "SST-2" / "test.tsv"),
                NUM_VAL_FROM_TRAIN=2,
            )
        )


def test_data_dir_names_a_save_to_disk_folder(prepared, tmp_path):
    ds = build_dataset(
        make_cfg("superglue_boolq", tmp_path / "elsewhere", DATA_DIR=str(prepared / "superglue" / "boolq"))
    )
    assert len(ds.train_x) == 6
    with pytest.raises(DatasetMissingError, match="save_to_disk"):
        build_dataset(make_cfg("superglue_boolq", tmp_path, DATA_DIR=str(tmp_path / "nope")))


def test_offline_without_local_data_says_what_to_pass(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        build_dataset(make_cfg("superglue_boolq", tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "superglue" / "boolq") in msg
    assert "prepare_text_datasets.py" in msg and "DATASET.TEXT.DATA_DIR" in msg and "DATA_FILES.TRAIN" in msg


def test_template_and_label_word_overrides(prepared):
    ds = build_dataset(
        make_cfg(
            "superglue_cb",
            prepared,
            fmt="text_to_text",
            TEMPLATE="{premise} ? {hypothesis}",
            LABEL_WORDS=["yes", "no", "maybe"],
        )
    )
    assert ds.train_x[0].text == "p0 ? h0" and ds.classnames == ["yes", "no", "maybe"]
    assert ds.train_x[0].classname == "yes"
    with pytest.raises(DataError, match="'question'.*available fields: hypothesis, premise"):
        build_dataset(make_cfg("superglue_cb", prepared, TEMPLATE="{question}"))
    with pytest.raises(ConfigError, match="LABEL_WORDS has 2 words but superglue_cb has 3"):
        build_dataset(make_cfg("superglue_cb", prepared, LABEL_WORDS=["yes", "no"]))


def test_every_glue_and_superglue_task_is_registered():
    names = set(DATASETS.names())
    for t in ("boolq", "cb", "rte", "wic", "multirc", "copa", "wsc", "record"):
        assert f"superglue_{t}" in names
    for t in ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "cola", "rte"):
        assert f"glue_{t}" in names
    assert "bbc_news" in names


# ------------------------------------------------------------------ prep script errors


def run_prep(*args):
    return prep.prepare(prep.build_parser().parse_args(list(args)))


def test_prep_refuses_bad_records_and_writes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    bad = dict(CB)
    bad["val.jsonl"] = CB["val.jsonl"] + '{"premise": "x", "hypothesis": "y", "label": "maybe", "idx": 9}\n'
    write_release(src, "CB", bad, zipped=True)
    write_release(src, "BoolQ", BOOLQ)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"CB.zip!CB/val.jsonl:31: label 'maybe'"):
        run_prep("--src", str(src), "--root", str(root), "--task", "superglue_boolq", "superglue_cb")
    assert not root.exists()  # BoolQ was read fine but nothing is written when one task fails


def test_prep_errors_on_missing_inputs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(PrepError, match="not a folder"):
        run_prep("--src", str(tmp_path / "missing"), "--root", str(tmp_path), "--task", "all")
    with pytest.raises(PrepError, match=r"superglue_wic: WiC/train.jsonl"):
        run_prep("--src", str(src), "--root", str(tmp_path), "--task", "superglue_wic")
    with pytest.raises(PrepError, match="Unknown task 'boolq'"):
        run_prep("--src", str(src), "--root", str(tmp_path), "--task", "boolq")
    write_release(src, "WiC", {"train.jsonl": "{}\n"})
    with pytest.raises(PrepError, match="not val.jsonl; the release looks incomplete"):
        run_prep("--src", str(src), "--root", str(tmp_path), "--task", "superglue_wic")
    (src / "CoLA.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(PrepError, match="not a readable zip"):
        run_prep("--src", str(src), "--root", str(tmp_path), "--task", "glue_cola")
    with pytest.raises(PrepError, match="offline switch"):
        run_prep("--root", str(tmp_path), "--task", "glue_cola", "--download")


def test_prep_keeps_an_existing_folder_unless_overwrite(official, tmp_path, capsys):
    root = tmp_path / "data"
    run_prep("--src", str(official), "--root", str(root), "--task", "glue_cola")
    marker = root / "glue" / "cola" / "marker"
    marker.write_text("x")
    run_prep("--src", str(official), "--root", str(root), "--task", "glue_cola")
    assert marker.exists() and "kept the prepared folder" in capsys.readouterr().out
    run_prep("--src", str(official), "--root", str(root), "--task", "glue_cola", "--overwrite")
    assert not marker.exists()
    assert not [p for p in (root / "glue").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_glue_tsv_with_a_wrong_field_count_names_the_line(tmp_path):
    src = tmp_path / "src"
    write_release(src, "SST-2", {"train.tsv": "sentence\tlabel\nfine\t1\nbroken line\n", "dev.tsv": SST2["dev.tsv"]})
    with pytest.raises(DataError, match=r"SST-2/train.tsv:3 has 1 tab-separated fields, the header has 2"):
        run_prep("--src", str(src), "--root", str(tmp_path / "data"), "--task", "glue_sst2")


def test_item_meta_collates_and_feeds_the_evaluators(prepared):
    """Batches as a loader would make them from the items' fields and meta reach the evaluators."""
    import torch
    from torch.utils.data import default_collate

    from mmprompt.evaluation.evaluators import build_evaluator

    for name, fmt, kw in (
        ("superglue_record", "text_to_text", {"NUM_VAL_FROM_TRAIN": 1}),
        ("superglue_multirc", "pair", {}),
        ("glue_stsb", "text_to_text", {}),
    ):
        ds = build_dataset(make_cfg(name, prepared, fmt=fmt, **kw))
        batch = default_collate([{"text": d.text, "label": d.label, **d.meta} for d in ds.val + ds.test])
        ev = build_evaluator(ds.evaluator_name, classnames=ds.classnames)
        perfect = torch.nn.functional.one_hot(batch["label"], len(ds.classnames)).float()
        ev.process(perfect, batch["label"], meta=batch)
        out = ev.evaluate()
        assert out[ev.main_metric] == pytest.approx(100.0), (name, out)


def test_hub_is_used_when_online(monkeypatch, tmp_path):
    import datasets

    import mmprompt.data.text as text_module

    rows = lambda tag, n: [
        {"premise": f"{tag} p{i}", "hypothesis": f"{tag} h{i}", "label": i % 3, "idx": i}  # noqa: E731
        for i in range(n)
    ]
    calls = []

    def fake_load_dataset(path, config):
        calls.append((path, config))
        return datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_list(rows("train", 6)),
                "validation_matched": datasets.Dataset.from_list(rows("matched", 3)),
                "validation_mismatched": datasets.Dataset.from_list(rows("mismatched", 3)),
            }
        )

    monkeypatch.setattr(text_module, "is_offline", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = build_dataset(make_cfg("glue_mnli", tmp_path, NUM_VAL_FROM_TRAIN=2))
    assert calls == [("nyu-mll/glue", "mnli")]
    assert [d.text for d in ds.test] == [f"matched p{i}" for i in range(3)]
    build_dataset(make_cfg("glue_mnli", tmp_path, NUM_VAL_FROM_TRAIN=2, HUB_PATH="someone/glue-parquet"))
    assert calls[-1] == ("someone/glue-parquet", "mnli")

    def failing_load_dataset(path, config):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(
        DatasetMissingError,
        match=r"hub \(aps/super_glue, config wsc.fixed\).*ConnectionError: "
        r"no route to host.*HUB_PATH.*prepare_text_datasets.py",
    ):
        build_dataset(make_cfg("superglue_wsc", tmp_path))


def test_prep_download_saves_the_hub_copy(monkeypatch, tmp_path):
    import datasets

    row = {"premise": "p", "hypothesis": "h", "label": 0, "idx": 0}
    monkeypatch.setattr(prep, "is_offline", lambda: False)
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda path, config: datasets.DatasetDict(
            {
                s: datasets.Dataset.from_list([row])
                for s in ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")
            }
        ),
    )
    run_prep("--root", str(tmp_path), "--task", "glue_mnli", "--download")
    saved = datasets.load_from_disk(str(tmp_path / "glue" / "mnli"))
    assert set(saved) == {"train", "validation", "validation_mismatched", "test", "test_mismatched"}
