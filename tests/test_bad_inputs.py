"""The bad-input matrix: configs, yaml files, datasets, images, text data and the tools.

Every case runs a tool's ``main(argv)`` in-process (as its command line does) inside the
sandbox of tests/_sandbox.py and asserts exit code 2, no traceback, a message naming the
problem, and (in the sandbox's teardown) that nothing outside the sandbox changed. Config
problems are found before anything is built, so no case here trains a model.
"""

import io
import json
import os
import struct
import warnings
import zlib

import pytest
from _sandbox import call, refused, sandbox  # noqa: F401  (sandbox is a fixture)
from PIL import Image
from test_engine_train import write_config


def train_net(capsys, box, *opts, flags=(), config=None):
    cfg = config or write_config(box.root)
    return call(
        capsys, "train_net", ["--config-file", cfg, "--root", box.root, "--output-dir", box.root / "out", *flags, *opts]
    )


# ---------------------------------------------------------------- config values

CONFIG_VALUES = [
    (["OPTIM.LR", "-1.0"], "OPTIM.LR must be >= 0, got -1.0"),
    (["OPTIM.LR", "1e400"], "OPTIM.LR is inf"),
    (["OPTIM.LR", "fast"], "OPTIM.LR (from command line) expects float"),
    (["DATALOADER.TRAIN_X.BATCH_SIZE", "0"], "DATALOADER.TRAIN_X.BATCH_SIZE must be >= 1, got 0"),
    (["DATALOADER.TRAIN_X.BATCH_SIZE", "-4"], "DATALOADER.TRAIN_X.BATCH_SIZE must be >= 1, got -4"),
    (["DATALOADER.TEST.BATCH_SIZE", "0"], "DATALOADER.TEST.BATCH_SIZE must be >= 1"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS must be >= 0"),
    (["TRAIN.PRINT_FREQ", "0"], "TRAIN.PRINT_FREQ must be >= 1, got 0"),
    (["OPTIM.MAX_EPOCH", "0"], "OPTIM.MAX_EPOCH must be >= 1 (or set OPTIM.MAX_ITER > 0), got 0"),
    (["OPTIM.MAX_ITER", "-1"], "OPTIM.MAX_ITER must be >= 0"),
    (["INPUT.SIZE", "(0, 0)"], "INPUT.SIZE must be (height, width), two whole numbers > 0; got (0, 0)"),
    (["INPUT.SIZE", "(224,)"], "INPUT.SIZE must be (height, width)"),
    (["INPUT.SIZE", "(224.5, 224)"], "INPUT.SIZE must be (height, width)"),
    (["INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]", "INPUT.PIXEL_STD", "[0.0, 0.0, 0.0]"], "INPUT.PIXEL_STD must be > 0"),
    (["INPUT.PIXEL_STD", "[0.2, 0.2]"], "INPUT.PIXEL_STD must be 3 numbers"),
    (["INPUT.PIXEL_MEAN", "['a', 'b', 'c']"], "INPUT.PIXEL_MEAN must be 3 numbers"),
    (["INPUT.RRCROP_SCALE", "(0.9, 0.1)"], "INPUT.RRCROP_SCALE must be (min, max)"),
    (["INPUT.TEST_RESIZE_RATIO", "-1.0"], "INPUT.TEST_RESIZE_RATIO must be >= 0"),
    (["INPUT.RESIZE_SIZE", "-256"], "INPUT.RESIZE_SIZE must be >= 0"),
    (["INPUT.INTERPOLATION", "lanczos"], "INPUT.INTERPOLATION"),
    (["INPUT.TRANSFORMS", "['random_rotate']"], "INPUT.TRANSFORMS"),
    (["TEST.SPLIT", "tset"], "TEST.SPLIT must be one of test, val; got 'tset'"),
    (["TEST.FINAL_MODEL", "best"], "TEST.FINAL_MODEL must be one of last_step, best_val"),
    (["TEST.EVALUATOR", "bogus"], "TEST.EVALUATOR: Unknown evaluator 'bogus'"),
    (["OPTIM.NAME", "adam"], "OPTIM.NAME must be one of sgd, adamw, adafactor; got 'adam'"),
    (["OPTIM.LR_SCHEDULER", "step"], "OPTIM.LR_SCHEDULER must be one of cosine, linear, constant"),
    (["OPTIM.SCHEDULER_UNIT", "epochs"], "OPTIM.SCHEDULER_UNIT must be one of epoch, iter"),
    (["OPTIM.WARMUP_TYPE", "cosine"], "OPTIM.WARMUP_TYPE must be one of constant, linear"),
    (["TRAIN.PRECISION", "fp64"], "TRAIN.PRECISION"),
    (["TRAIN.NONFINITE", "ignore"], "TRAIN.NONFINITE must be one of stop, skip"),
    (["TRAIN.GRAD_ACCUM_STEPS", "0"], "TRAIN.GRAD_ACCUM_STEPS must be >= 1"),
    (["TRAIN.GRAD_CLIP_NORM", "-1.0"], "TRAIN.GRAD_CLIP_NORM must be >= 0"),
    (["TRAIN.EVAL_PERIOD", "-1"], "TRAIN.EVAL_PERIOD must be >= 0"),
    (["TRAIN.EARLY_STOP_PATIENCE", "-1"], "TRAIN.EARLY_STOP_PATIENCE must be >= 0"),
    (["TRAIN.CHECKPOINT_PERIOD", "-2"], "TRAIN.CHECKPOINT_PERIOD must be >= 0"),
    (["TRAIN.MAX_SKIPPED_STEPS", "-1"], "TRAIN.MAX_SKIPPED_STEPS must be >= 0"),
    (["OPTIM.MOMENTUM", "1.5"], "OPTIM.MOMENTUM must be in [0, 1)"),
    (["OPTIM.ADAM_EPS", "0.0"], "OPTIM.ADAM_EPS must be > 0"),
    (["OPTIM.WEIGHT_DECAY", "-0.1"], "OPTIM.WEIGHT_DECAY must be >= 0"),
    (["OPTIM.ADAM_BETA2", "1.0"], "OPTIM.ADAM_BETA2 must be in [0, 1)"),
    (["OPTIM.GROUP_LR", "{'offsets': 'fast'}"], "OPTIM.GROUP_LR.offsets must be a learning rate (a number)"),
    (["OPTIM.GROUP_LR", "{'offsets': -1.0}"], "OPTIM.GROUP_LR.offsets must be >= 0"),
    (["MODEL.HEAD.DROPOUT", "1.0"], "MODEL.HEAD.DROPOUT must be in [0, 1)"),
    (["MODEL.HEAD.NUM_CLASSES", "-1"], "MODEL.HEAD.NUM_CLASSES must be >= 0"),
    (["MODEL.TEXT.MAX_LENGTH", "0"], "MODEL.TEXT.MAX_LENGTH must be >= 1"),
    (["DATASET.SUBSAMPLE_CLASSES", "bsae"], "DATASET.SUBSAMPLE_CLASSES must be one of all, base, new"),
    (["DATASET.NUM_SHOTS", "-5"], "DATASET.NUM_SHOTS must be >= 1 for few-shot"),
    (["DATASET.TEST_DATASETS", "['imagenet_v3']"], "Unknown dataset 'imagenet_v3'. Did you mean 'imagenet_v2'"),
    (["DATASET.TEST_DATASETS", "['dtd', 'dtd']"], "DATASET.TEST_DATASETS lists 'dtd' more than once"),
    (["PROMPT.METHODS", "['vpt', 'vpt']"], "PROMPT.METHODS lists 'vpt' more than once"),
    (["DATASET.NAME", "oxford_pet"], "Unknown dataset 'oxford_pet'. Did you mean 'oxford_pets'"),
    (["DATASET.NAME", "''"], "DATASET.NAME is empty"),
    (["MODEL.NAME", "clip_prompt_classifer"], "Unknown model 'clip_prompt_classifer'"),
    (["MODEL.BACKBONE.NAME", "timm_vitt"], "Unknown backbone 'timm_vitt'"),
    (["PROMPT.METHODS", "['vtp']"], "Unknown prompt method 'vtp'"),
    (
        ["PROMPT.METHODS", "['coop']", "PROMPT.COOP.N_CTX", "0"],
        "PROMPT.COOP: N_CTX 0 leaves the coop method with nothing",
    ),
    (["PROMPT.METHODS", "['vpt']", "PROMPT.VPT.NUM_TOKENS", "0"], "PROMPT.VPT: NUM_TOKENS 0 leaves"),
    (
        ["PROMPT.METHODS", "['dept']", "PROMPT.DEPT.NUM_TOKENS", "0", "PROMPT.DEPT.RANK", "0"],
        "PROMPT.DEPT: NUM_TOKENS 0 and RANK 0 leaves",
    ),
    (["PROMPT.METHODS", "['vpt']", "PROMPT.VPT.SOURCE", "bogus"], "PROMPT.VPT.SOURCE: Unknown prompt token source"),
    (["PROMPT.METHODS", "['vpt']", "PROMPT.VPT.POSITION", "sideways"], "PROMPT.VPT.POSITION: Unknown prompt placement"),
    (["PROMPT.DYNAMIC.TAU0", "0.0"], "PROMPT.DYNAMIC.TAU0 must be > 0"),
    (["PROMPT.DYNAMIC.POOL_SIZE", "0"], "PROMPT.DYNAMIC.POOL_SIZE must be >= 1"),
    (["MODEL.INIT_WEIGHTS", "missing.safetensors"], "MODEL.INIT_WEIGHTS missing.safetensors is not a file"),
    (["SEED", "abc"], "SEED (from command line) expects int"),
    (["SEED", "100000000000000000000000"], "SEED 100000000000000000000000 does not fit in 64 bits"),
    (["OUTPUT_DIR", "'out\\x00put'"], "OUTPUT_DIR 'out\\x00put' contains a NUL character"),
    (["MODEL.BACKBONE.ARC", "x"], "Unknown config key MODEL.BACKBONE.ARC"),
    (["OPTIM.LR"], "KEY VALUE pairs"),
    (["OPTIM", "5"], "is a group of keys"),
]


@pytest.mark.parametrize("opts,needle", CONFIG_VALUES, ids=[" ".join(o)[:40] for o, _ in CONFIG_VALUES])
def test_bad_config_value_is_one_message_before_anything_is_built(sandbox, capsys, opts, needle):
    refused(train_net(capsys, sandbox, *opts), needle)
    assert not (sandbox.root / "out").exists()  # refused before the output dir was even made


def test_every_config_problem_in_one_message(sandbox, capsys):
    err = refused(
        train_net(capsys, sandbox, "OPTIM.LR", "-1.0", "DATALOADER.TRAIN_X.BATCH_SIZE", "0", "TEST.SPLIT", "tset"),
        "The config has 3 problems",
    ).err
    assert "OPTIM.LR" in err and "BATCH_SIZE" in err and "TEST.SPLIT" in err


def test_a_main_metric_the_evaluator_lacks_is_found_before_training(sandbox, capsys):
    refused(
        train_net(capsys, sandbox, "TEST.MAIN_METRIC", "f1"),
        "TEST.MAIN_METRIC f1 is not a metric of the ClassificationEvaluator; it gives accuracy",
    )
    assert not (sandbox.root / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
    "recipe,opts,needle",
    [
        ("maple", ["PROMPT.MAPLE.PROMPT_DEPTH", "13"], "PROMPT.MAPLE.PROMPT_DEPTH = 13; it must be between 1 and 12"),
        (
            "maple",
            ["PROMPT.MAPLE.MODE", "deep_vision", "PROMPT.MAPLE.PROMPT_DEPTH_VISION", "20"],
            "PROMPT.MAPLE.PROMPT_DEPTH_VISION = 20; it must be between 1 and 12",
        ),
        ("maple", ["PROMPT.MAPLE.N_CTX", "75"], "PROMPT.MAPLE.N_CTX gives 75 context tokens, more than the 73"),
        ("coop", ["PROMPT.COOP.N_CTX", "80"], "PROMPT.COOP.N_CTX gives 80 context tokens, more than the 73"),
    ],
)
def test_clip_prompt_sizes_beyond_the_architecture_are_found_before_the_model_is_built(
    sandbox, capsys, monkeypatch, recipe, opts, needle
):
    """ViT-B/16 has 12 layers per tower and 77 text positions: depths and context lengths are
    checked against the architecture's config, before the model (some 20 s at this size) is built."""
    import mmprompt.backbones.open_clip as oc

    pytest.importorskip("open_clip")

    def must_not_build(*args, **kwargs):
        raise AssertionError("the model was built before the config check")

    monkeypatch.setattr(oc, "create_open_clip", must_not_build)
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", f"{recipe}.yaml")
    refused(train_net(capsys, sandbox, *opts, config=config), needle)


def test_root_that_does_not_exist(sandbox, capsys):
    refused(
        call(
            capsys,
            "train_net",
            [
                "--config-file",
                write_config(sandbox.root),
                "--root",
                sandbox.root / "nope",
                "--output-dir",
                sandbox.root / "out",
            ],
        ),
        "DATASET.ROOT",
        "is not a folder",
    )


@pytest.mark.parametrize(
    "flags,needle",
    [
        ([], "--config-file is required"),
        (["--config-file", "configs/nope.yaml"], "Config file not found"),
        (["--config-file", "CFG", "--load-epoch", "2"], "--load-epoch needs --model-dir"),
        (["--config-file", "CFG", "--eval-only"], "--eval-only needs weights"),
        (["--config-file", "CFG", "--eval-only", "--model-dir", "nowhere"], "--model-dir nowhere does not exist"),
        (["--config-file", "CFG", "--seed", "one"], "argument --seed: invalid int value"),
    ],
)
def test_bad_flags(sandbox, capsys, flags, needle):
    cfg = write_config(sandbox.root)
    argv = [cfg if f == "CFG" else f for f in flags] + ["--root", sandbox.root, "--output-dir", sandbox.root / "out"]
    refused(call(capsys, "train_net", argv), needle)


def test_an_unprepared_test_dataset_is_found_before_training(sandbox, capsys):
    refused(
        train_net(capsys, sandbox, "DATASET.TEST_DATASETS", "['dtd']"),
        "DATASET.TEST_DATASETS target dtd",
        "prepare_clip_datasets.py",
    )
    assert not (sandbox.root / "out" / "checkpoints").exists()


def test_a_test_split_the_dataset_lacks_is_found_before_training(sandbox, capsys):
    import _engine_doubles

    from mmprompt.data.base import DatasetBase
    from mmprompt.registry import DATASETS

    if "engine_test_no_test" not in DATASETS:
        DATASETS.register("engine_test_no_test")(
            lambda cfg: DatasetBase(_engine_doubles._items(6, 1), _engine_doubles._items(2, 2), [], name="no_test")
        )
    refused(train_net(capsys, sandbox, "DATASET.NAME", "engine_test_no_test"), "has no test split to evaluate")
    assert not (sandbox.root / "out" / "checkpoints").exists()


# ---------------------------------------------------------------- yaml files

YAMLS = {
    "not_utf8": (b"OPTIM:\n  LR: 0.1 # caf\xe9\n", "is not UTF-8 text"),
    "bad_syntax": (b"OPTIM:\n  LR: [0.1\n", "is not valid YAML"),
    "top_level_list": (b"- 1\n- 2\n", "must hold a mapping of config keys, got list"),
    "base_is_a_number": (b"_BASE_: 42\n", "_BASE_ must be the path of a yaml file (or a list of paths), got 42"),
    "base_list_with_a_number": (b"_BASE_: [a.yaml, 3]\n", "_BASE_ must be the path"),
    "base_missing": (b"_BASE_: missing.yaml\n", "Config file not found"),
    "group_given_a_value": (b"OPTIM: 5\n", "Config key OPTIM (from"),
    "wrong_type": (b"OPTIM:\n  LR: fast\n", "OPTIM.LR (from"),
    "unknown_key": (b"OPTIM:\n  LRR: 0.1\n", "Unknown config key OPTIM.LRR"),
    # yaml keeps the last of two equal keys: the first OPTIM block (its LR) would vanish unseen
    "duplicate_group": (
        b"OPTIM:\n  LR: 0.1\nSEED: 1\nOPTIM:\n  MAX_EPOCH: 1\n",
        "the key 'OPTIM' appears twice (lines 1 and 4)",
    ),
    "duplicate_leaf": (b"OPTIM:\n  LR: 0.1\n  LR: 0.2\n", "the key 'LR' appears twice"),
    "number_as_key": (b"1: 2\n", "Config key 1 (from"),
    "null_value": (b"OPTIM:\n  LR: null\n", "Config key OPTIM.LR (from bad.yaml) is empty (null)"),
    "value_left_out": (b"OPTIM:\n  LR:\n", "OPTIM.LR (from bad.yaml) is empty (null)"),
    "tab_indent": (b"OPTIM:\n\tLR: 0.1\n", "is not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(YAMLS))
def test_bad_yaml_file(sandbox, capsys, case):
    raw, needle = YAMLS[case]
    path = sandbox.root / "bad.yaml"
    path.write_bytes(raw)
    refused(train_net(capsys, sandbox, config=str(path)), needle)


def test_base_cycle_and_a_directory_as_config(sandbox, capsys):
    (sandbox.root / "a.yaml").write_text("_BASE_: b.yaml\n")
    (sandbox.root / "b.yaml").write_text("_BASE_: a.yaml\n")
    refused(train_net(capsys, sandbox, config=str(sandbox.root / "a.yaml")), "_BASE_ cycle")
    (sandbox.root / "dir.yaml").mkdir()
    refused(train_net(capsys, sandbox, config=str(sandbox.root / "dir.yaml")), "dir.yaml is a directory, not a file")


def refused_at_once(capsys, box, needle, *opts, config=None, seconds=30):
    """``train_net`` in a daemon thread: a plain open of a fifo would wait forever for a writer,
    so a regression shows as this failing, not as a hung suite."""
    import threading

    result = []
    worker = threading.Thread(target=lambda: result.append(train_net(capsys, box, *opts, config=config)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "train_net is still waiting on the fifo"
    refused(result[0], needle)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_as_config_split_file_or_image_is_refused_not_waited_on(sandbox, capsys):
    os.mkfifo(sandbox.root / "pipe.yaml")
    refused_at_once(
        capsys, sandbox, "pipe.yaml is a named pipe (fifo), not a file", config=str(sandbox.root / "pipe.yaml")
    )
    folder = pets(sandbox)
    os.mkfifo(folder / "split_zhou_OxfordPets.json")
    refused_at_once(capsys, sandbox, "split_zhou_OxfordPets.json is a named pipe (fifo)", "DATASET.NAME", "oxford_pets")


def test_bad_dataset_config_file(sandbox, capsys):
    (sandbox.root / "data.yaml").write_bytes(b"DATASET:\n  NAME: \xff\n")
    refused(
        train_net(capsys, sandbox, flags=["--dataset-config-file", sandbox.root / "data.yaml"]),
        "data.yaml is not UTF-8 text",
    )


# ---------------------------------------------------------------- datasets with split files

JPEG = io.BytesIO()
Image.new("RGB", (8, 8), (120, 30, 200)).save(JPEG, "JPEG")
JPEG = JPEG.getvalue()


def pets(box, split=None, images=("Abyssinian_1.jpg",)):
    folder = box.root / "oxford_pets"
    (folder / "images").mkdir(parents=True)
    for name in images:
        (folder / "images" / name).write_bytes(JPEG)
    if split is not None:
        (folder / "split_zhou_OxfordPets.json").write_bytes(
            split if isinstance(split, bytes) else json.dumps(split).encode()
        )
    return folder


GOOD_ROW = ["Abyssinian_1.jpg", 0, "abyssinian"]
SPLITS = {
    "not_utf8": (b'{"train": [["caf\xe9.jpg", 0, "x"]]}', "is not valid JSON"),
    "not_json": (b'{"train": [', "is not valid JSON"),
    "a_list": ([GOOD_ROW], "must be a JSON object with keys"),
    "row_wrong_types": ({"train": [[1, "0", 2]], "val": [], "test": []}, "every entry must be [relative_path, label"),
    "row_too_short": ({"train": [["a.jpg", 0]], "val": [], "test": []}, "every entry must be"),
    "image_missing": (
        {"train": [GOOD_ROW, ["Bengal_9.jpg", 1, "bengal"]], "val": [], "test": [GOOD_ROW]},
        "Bengal_9.jpg",
    ),
    # entries climbing out of the image folder would read files the user never named
    "path_climbs_out": (
        {"train": [GOOD_ROW, ["../../secret.jpg", 0, "abyssinian"]], "val": [], "test": [GOOD_ROW]},
        "the image path '../../secret.jpg' points outside the dataset's image folder",
    ),
    "absolute_path": (
        {"train": [GOOD_ROW, ["/etc/hostname", 0, "abyssinian"]], "val": [], "test": [GOOD_ROW]},
        "the image path '/etc/hostname' points outside",
    ),
    "label_is_true": (
        {"train": [GOOD_ROW, ["Abyssinian_1.jpg", True, "x"]], "val": [], "test": [GOOD_ROW]},
        "every entry must be",
    ),
    "negative_label": (
        {"train": [GOOD_ROW, ["Abyssinian_1.jpg", -1, "x"]], "val": [], "test": [GOOD_ROW]},
        "got the negative label -1 (class 'x')",
    ),
    # which of the two names a CLIP prompt got would depend on the order of the items
    "label_with_two_names": (
        {"train": [GOOD_ROW], "val": [], "test": [["Abyssinian_1.jpg", 0, "cat"]]},
        "label 0 is 'abyssinian' and 'cat'",
    ),
}


@pytest.mark.parametrize("case", sorted(SPLITS))
def test_bad_split_file(sandbox, capsys, case):
    split, needle = SPLITS[case]
    pets(sandbox, split)
    refused(train_net(capsys, sandbox, "DATASET.NAME", "oxford_pets"), "split_zhou_OxfordPets.json", needle)


def test_two_labels_with_one_class_name_warn(sandbox):
    from mmprompt.data.base import Datum, classnames_from_items

    with pytest.warns(UserWarning, match="1 class name.*'crane'.*sees those classes as one"):
        assert classnames_from_items([Datum(label=0, classname="crane"), Datum(label=1, classname="crane")]) == [
            "crane",
            "crane",
        ]


def test_base_to_new_of_a_one_class_dataset_says_so(sandbox):
    from mmprompt.data.base import DataError, DatasetBase, Datum, apply_subsample

    dataset = DatasetBase([Datum(label=0, classname="a")], name="one")
    with pytest.raises(DataError, match="SUBSAMPLE_CLASSES new: the dataset one has 1 class.*the new half is empty"):
        apply_subsample(dataset, "new")


def test_class_names_with_quotes_unicode_and_newlines_are_kept_as_they_are(sandbox):
    from mmprompt.data.base import Datum, classnames_from_items

    names = ['a "quoted" one', "naïve ☃", "two\nlines", "{}", "it's"]
    assert classnames_from_items([Datum(label=i, classname=n) for i, n in enumerate(names)]) == names


def test_non_utf8_annotation_list_names_file_and_line(sandbox, capsys):
    folder = pets(sandbox)
    (folder / "annotations").mkdir()
    (folder / "annotations" / "trainval.txt").write_bytes(b"Abyssinian_1 1 1 1\ncaf\xe9_2 1 1 1\n")
    (folder / "annotations" / "test.txt").write_bytes(b"Abyssinian_1 1 1 1\n")
    refused(train_net(capsys, sandbox, "DATASET.NAME", "oxford_pets"), "trainval.txt, line 2: not UTF-8 text")


def test_read_only_dataset_folder_skips_the_few_shot_cache_with_a_warning(sandbox, capsys):
    from mmprompt.config import get_cfg
    from mmprompt.data.build import build_dataset

    folder = pets(sandbox, {"train": [GOOD_ROW], "val": [GOOD_ROW], "test": [GOOD_ROW]})
    (folder / "split_fewshot").write_text("a file where the cache folder would go")  # as a read-only folder does
    cfg = get_cfg()
    cfg.merge_from_list(["DATASET.ROOT", str(sandbox.root), "DATASET.NAME", "oxford_pets", "DATASET.NUM_SHOTS", "1"])
    dataset = build_dataset(cfg)
    assert len(dataset.train_x) == 1
    assert "cannot write the few-shot cache" in capsys.readouterr().err


VPT_SPLITS = {
    "not_utf8": (b'{"caf\xe9.jpg": 0}', "is not valid JSON"),
    "not_json": (b"{", "is not valid JSON"),
    # VPT maps any integer or string ids through sorted(set(ids)); a fraction is no id at all
    "fractional_label": (b'{"a.jpg": 1.5}', "must be an integer or a string"),
    "path_climbs_out": (b'{"a/../../b.jpg": 1}', "the image path 'a/../../b.jpg' points outside"),
}


@pytest.mark.parametrize("case", sorted(VPT_SPLITS))
def test_bad_vpt_split_file(sandbox, capsys, case):
    folder = sandbox.root / "CUB_200_2011"
    (folder / "images").mkdir(parents=True)
    raw, needle = VPT_SPLITS[case]
    for split in ("train", "val", "test"):
        (folder / f"{split}.json").write_bytes(raw)
    refused(train_net(capsys, sandbox, "DATASET.NAME", "cub"), "train.json", needle)


# ---------------------------------------------------------------- images


def _truncated_jpeg(path):
    big = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(big, "JPEG", quality=95)
    path.write_bytes(big.getvalue()[: len(big.getvalue()) // 2])


def _bomb_png(path):
    """A PNG that declares 40000 x 40000 pixels (over PIL's decompression-bomb limit) in 60 bytes."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def test_truncated_jpeg_and_bomb_are_left_out_at_prep(sandbox):
    from mmprompt.data.base import is_decodable

    _truncated_jpeg(sandbox.root / "cut.jpg")
    _bomb_png(sandbox.root / "bomb.png")
    (sandbox.root / "text.jpg").write_text("not an image")
    (sandbox.root / "good.jpg").write_bytes(JPEG)
    assert [is_decodable(str(sandbox.root / n)) for n in ("cut.jpg", "bomb.png", "text.jpg", "good.jpg")] == [
        False,
        False,
        False,
        True,
    ]


def test_generated_split_leaves_a_truncated_image_out_with_a_warning(sandbox):
    from mmprompt.config import get_cfg
    from mmprompt.data.build import build_dataset

    folder = pets(
        sandbox, images=[f"Abyssinian_{i}.jpg" for i in range(1, 5)] + [f"Bengal_{i}.jpg" for i in range(1, 5)]
    )
    _truncated_jpeg(folder / "images" / "Bengal_4.jpg")
    (folder / "annotations").mkdir()
    lines = [f"Abyssinian_{i} 1 1 1" for i in range(1, 4)] + [f"Bengal_{i} 2 1 2" for i in range(1, 4)]
    (folder / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (folder / "annotations" / "test.txt").write_text("Abyssinian_4 1 1 1\nBengal_4 2 1 2\n")
    cfg = get_cfg()
    cfg.merge_from_list(["DATASET.ROOT", str(sandbox.root), "DATASET.NAME", "oxford_pets"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(cfg)
    assert "Bengal_4.jpg" in " ".join(str(w.message) for w in caught)
    assert all("Bengal_4" not in d.impath for d in dataset.test)


def test_decompression_bomb_at_load_time_is_one_message(sandbox):
    from mmprompt.data.base import DataError
    from mmprompt.data.build import load_image

    _bomb_png(sandbox.root / "bomb.png")
    with pytest.raises(DataError, match="bomb.png cannot be decoded"):
        load_image(str(sandbox.root / "bomb.png"))


# ---------------------------------------------------------------- text data


def text_task(capsys, box, task, train_raw, val_raw=None, ext="tsv"):
    train, val = box.root / f"train.{ext}", box.root / f"dev.{ext}"
    train.write_bytes(train_raw)
    val.write_bytes(val_raw if val_raw is not None else train_raw)
    return train_net(
        capsys,
        box,
        "DATASET.NAME",
        task,
        "DATASET.TEXT.DATA_FILES.TRAIN",
        train,
        "DATASET.TEXT.DATA_FILES.VALIDATION",
        val,
        "DATASET.TEXT.FORMAT",
        "pair",
    )


TEXT_FILES = {
    "tsv_not_utf8": (
        "glue_rte",
        b"index\tsentence1\tsentence2\tlabel\n0\tcaf\xe9\tb\tentailment\n",
        "tsv",
        "train.tsv:2 is not UTF-8 text",
    ),
    "tsv_field_count": (
        "glue_rte",
        b"index\tsentence1\tsentence2\tlabel\n0\ta\tentailment\n",
        "tsv",
        "has 3 tab-separated fields, the header has 4",
    ),
    "tsv_header": ("glue_rte", b"id\ttext\n0\ta\n", "tsv", "lacks ['sentence1', 'sentence2']"),
    "tsv_label": (
        "glue_rte",
        b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
        "tsv",
        "label 'maybe' is not one of",
    ),
    "stsb_score": (
        "glue_stsb",
        b"index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        b"0\tg\tf\ty\to\ts\ts\ta\tb\thigh\n",
        "tsv",
        "score 'high' is not a number",
    ),
    "tsv_empty": ("glue_rte", b"", "tsv", "is empty"),
    "jsonl_not_json": (
        "superglue_boolq",
        b'{"question": "q", "passage": "p", "idx": 0, "label": true}\n{oops\n',
        "jsonl",
        "train.jsonl:2 is not a JSON line",
    ),
    "jsonl_not_utf8": ("superglue_boolq", b'{"question": "caf\xe9"}\n', "jsonl", "is not UTF-8 text"),
    "jsonl_label_type": (
        "superglue_boolq",
        b'{"question": "q", "passage": "p", "idx": 0, "label": "yes"}\n',
        "jsonl",
        "label must be true/false, got 'yes'",
    ),
    "jsonl_missing_field": (
        "superglue_boolq",
        b'{"question": "q", "idx": 0, "label": true}\n',
        "jsonl",
        "lacks the field 'passage'",
    ),
    "jsonl_field_type": (
        "superglue_multirc",
        b'{"idx": 0, "passage": {"text": "t", "questions": 5}}\n',
        "jsonl",
        "has a field of the wrong type",
    ),
    "jsonl_record_not_object": (
        "superglue_boolq",
        b"[1, 2]\n",
        "jsonl",
        "train.jsonl:1: a BoolQ record has a field of the wrong type",
    ),
}


@pytest.mark.parametrize("case", sorted(TEXT_FILES))
def test_bad_text_task_file(sandbox, capsys, case):
    task, raw, ext, needle = TEXT_FILES[case]
    refused(text_task(capsys, sandbox, task, raw, ext=ext), needle)


def test_text_files_half_given_or_missing(sandbox, capsys):
    refused(
        train_net(capsys, sandbox, "DATASET.NAME", "glue_rte", "DATASET.TEXT.DATA_FILES.TRAIN", "t.tsv"),
        "Set both DATASET.TEXT.DATA_FILES.TRAIN and DATASET.TEXT.DATA_FILES.VALIDATION",
    )
    refused(
        train_net(
            capsys,
            sandbox,
            "DATASET.NAME",
            "glue_rte",
            "DATASET.TEXT.DATA_FILES.TRAIN",
            "t.tsv",
            "DATASET.TEXT.DATA_FILES.VALIDATION",
            "v.tsv",
        ),
        "data file t.tsv does not exist",
    )


def test_bbc_news_folder_missing_or_with_an_empty_class(sandbox, capsys):
    refused(
        train_net(capsys, sandbox, "DATASET.NAME", "bbc_news", "DATASET.TEXT.DATA_DIR", sandbox.root / "bbc"), "bbc"
    )
    (sandbox.root / "bbc" / "sport").mkdir(parents=True)
    refused(
        train_net(capsys, sandbox, "DATASET.NAME", "bbc_news", "DATASET.TEXT.DATA_DIR", sandbox.root / "bbc"),
        "is empty",
    )


# ---------------------------------------------------------------- parse_results


def run_dir(box, name, metrics):
    folder = box.root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_bytes(metrics if isinstance(metrics, bytes) else json.dumps(metrics).encode())
    return folder


GOOD = {"dataset": "dtd", "methods": ["coop"], "main_metric": "accuracy", "split": "test", "test": {"accuracy": 60.0}}
METRICS = {
    "not_utf8": (b'{"dataset": "caf\xe9"}', "is not valid UTF-8 text"),
    "not_json": (b'{"dataset": ', "is not valid JSON"),
    "a_list": ([GOOD], "holds a list"),
    "split_not_object": ({**GOOD, "test": 60.0}, "test.accuracy is missing or not a number"),
    "metric_text": ({**GOOD, "test": {"accuracy": "high"}}, "test.accuracy is missing or not a number"),
    "hm_without_new": ({**GOOD, "hm": 50.0, "base": {"accuracy": 1.0}}, "new.accuracy is missing"),
    "cross_wrong": ({**GOOD, "cross": {"imagenet_v2": 3}}, "cross must map each target dataset"),
    # json reads NaN and Infinity: the table would show 'nan' and spoil the mean over seeds
    "metric_nan": (
        b'{"dataset": "dtd", "methods": ["coop"], "split": "test", "test": {"accuracy": NaN}}',
        "test.accuracy is missing or not a number",
    ),
    "metric_inf": (
        b'{"dataset": "dtd", "methods": ["coop"], "split": "test", "test": {"accuracy": Infinity}}',
        "test.accuracy is missing or not a number",
    ),
    "main_metric_not_a_name": ({**GOOD, "main_metric": ["accuracy"]}, "main_metric must be a name"),
    "split_not_a_name": ({**GOOD, "split": {"a": 1}}, "split must be a name"),
}


@pytest.mark.parametrize("case", sorted(METRICS))
def test_parse_results_on_a_bad_metrics_file(sandbox, capsys, case):
    raw, needle = METRICS[case]
    run_dir(sandbox, "good", GOOD)
    run_dir(sandbox, "bad", raw)
    refused(
        call(capsys, "parse_results", [sandbox.root / "runs"]), "1 of 2 metrics.json file(s) cannot be used", needle
    )


def test_parse_results_on_a_metrics_file_that_cannot_be_opened(sandbox, capsys):
    run_dir(sandbox, "good", GOOD)
    loop = sandbox.root / "runs" / "loop"
    loop.mkdir()
    os.symlink(loop / "metrics.json", loop / "metrics.json")  # a link to itself
    refused(call(capsys, "parse_results", [sandbox.root / "runs"]), "loop/metrics.json cannot be read")


def test_parse_results_lists_every_bad_file_and_other_refusals(sandbox, capsys):
    run_dir(sandbox, "a", b"{")
    run_dir(sandbox, "b", [1])
    err = refused(call(capsys, "parse_results", [sandbox.root / "runs"]), "2 of 2").err
    assert "runs/a/metrics.json" in err and "runs/b/metrics.json" in err
    refused(call(capsys, "parse_results", [sandbox.root / "nowhere"]), "does not exist")
    (sandbox.root / "empty").mkdir()
    refused(call(capsys, "parse_results", [sandbox.root / "empty"]), "No metrics.json under")


@pytest.mark.parametrize("target", ["missing_folder", "a_folder"])
def test_parse_results_json_output_that_cannot_be_written(sandbox, capsys, target):
    run_dir(sandbox, "a", GOOD)
    out = sandbox.root / "nodir" / "t.json" if target == "missing_folder" else sandbox.root / "runs"
    refused(call(capsys, "parse_results", [sandbox.root / "runs", "--json", out]), f"Cannot write --json {out}")


def test_parse_results_with_runs_that_have_no_test(sandbox, capsys):
    run_dir(sandbox, "a", {"dataset": "dtd", "methods": ["coop"], "step": 10})
    refused(call(capsys, "parse_results", [sandbox.root / "runs"]), "hold no test results")


# ---------------------------------------------------------------- plot_run and plot_positions


def log_dir(box, raw):
    folder = box.root / "run"
    folder.mkdir(exist_ok=True)
    (folder / "log.jsonl").write_bytes(raw)
    return folder


TRAIN_LINE = b'{"kind": "train", "step": 1, "loss": 1.0, "lr": 0.1}\n'
LOGS = {
    "not_utf8": (b'{"kind": "caf\xe9"}\n', "is not UTF-8 text"),
    "garbage": (b"hello\nworld\n", "holds no readable record (line 1"),
    "records_without_kind": (b'{"step": 1}\n[1, 2]\n', "holds no readable record"),
    "only_val_records": (b'{"kind": "val", "step": 3, "epoch": 1, "accuracy": 5}\n', "has no training records"),
    "train_without_loss": (b'{"kind": "train", "step": 1, "lr": 0.1}\n', "has no training records (with a loss"),
}


@pytest.mark.parametrize("case", sorted(LOGS))
def test_plot_run_on_a_bad_log(sandbox, capsys, case):
    raw, needle = LOGS[case]
    refused(call(capsys, "plot_run", [log_dir(sandbox, raw)]), "log.jsonl", needle)
    assert not (sandbox.root / "run" / "curves.png").exists()


def test_plot_run_skips_a_cut_off_last_line_and_a_corrupt_metrics_file(sandbox, capsys):
    folder = log_dir(sandbox, TRAIN_LINE + b'{"kind": "train", "step": 2, "loss": 0.9, "lr": 0.1}\n{"kind": "tr')
    (folder / "metrics.json").write_bytes(b"\xff")
    outcome = call(capsys, "plot_run", [folder])
    assert outcome.code == 0, outcome.err
    assert "skipped 1 line(s)" in outcome.err and "metrics.json is unreadable" in outcome.err
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    refused(call(capsys, "plot_run", [sandbox.root]), "No log.jsonl")


def test_plot_run_out_is_a_missing_folder_or_a_folder(sandbox, capsys):
    folder = log_dir(sandbox, TRAIN_LINE)
    refused(call(capsys, "plot_run", [folder, "--out", sandbox.root / "nodir" / "c.png"]), "Cannot write the plot")
    (sandbox.root / "plots").mkdir()
    assert call(capsys, "plot_run", [folder, "--out", sandbox.root / "plots"]).code == 0
    assert os.listdir(sandbox.root / "plots") == ["curves.png"]


RECORDS = {
    "missing": (None, "No prompt_records.json"),
    "not_json": (b"{", "is not valid JSON"),
    "not_utf8": (b'{"a": [[1]], "\xff": 1}', "is not UTF-8 text"),
    "a_list": (b"[1, 2]", "holds no records"),
    "only_empty": (b'{"text.layer0.dpos": [[]], "text.layer1.dpos": []}', "every record"),
    "not_numbers": (b'{"text.layer0.dpos": [["a", "b"]]}', "record text.layer0.dpos holds 'a'"),
    "nan_values": (b'{"text.layer0.dpos": [[NaN]]}', "not a chosen position"),
    "negative": (b'{"text.layer0.dpos": [[-3, 2]]}', "holds -3, not a chosen position"),
    "huge": (b'{"text.layer0.dpos": [[1e30]]}', "holds 1e+30, not a chosen position"),
}


@pytest.mark.parametrize("case", sorted(RECORDS))
def test_plot_positions_on_bad_records(sandbox, capsys, case):
    raw, needle = RECORDS[case]
    folder = sandbox.root / "run"
    folder.mkdir()
    if raw is not None:
        (folder / "prompt_records.json").write_bytes(raw)
    refused(call(capsys, "plot_positions", [folder]), needle)
    assert not (folder / "position_plots").exists()


def test_plot_positions_keys_never_become_paths(sandbox, capsys):
    folder = sandbox.root / "run"
    folder.mkdir()
    (folder / "prompt_records.json").write_text(json.dumps({"../../../outside/canary": [[1, 2, 2]]}))
    outcome = call(capsys, "plot_positions", [folder])
    assert outcome.code == 0, outcome.err
    assert os.listdir(folder / "position_plots") == ["_.._.._outside_canary.png"]


# ---------------------------------------------------------------- model_info


@pytest.mark.parametrize(
    "opts,needle",
    [
        (["MODEL.BACKBONE.ARC", "x"], "Unknown config key MODEL.BACKBONE.ARC"),
        (["MODEL.BACKBONE.FREEZE", "sometimes"], "expects bool"),
    ],
)
def test_model_info_on_bad_overrides(sandbox, capsys, opts, needle):
    from _sandbox import REPO

    refused(
        call(capsys, "model_info", ["--config-file", os.path.join(REPO, "configs", "_base_", "tiny_vit.yaml"), *opts]),
        needle,
    )


# ---------------------------------------------------------------- the machine


def test_a_full_disk_mid_run_is_one_message_naming_the_file(sandbox, capsys, monkeypatch):
    import errno

    from mmprompt.engine import checkpoint

    def full(path, state):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(checkpoint, "save_trainer_state", full)
    err = refused(train_net(capsys, sandbox), "No space left on device", "trainer-step2.pt", "--resume").err
    assert err.count("error:") == 1


def test_num_workers_default_fits_the_machine():
    from mmprompt.config import get_cfg

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert get_cfg().DATALOADER.NUM_WORKERS == min(4, usable)


def test_hub_rows_with_wrongly_typed_fields_name_the_row():
    from mmprompt.config import get_cfg
    from mmprompt.data.base import DataError
    from mmprompt.data.text import task_items
    from mmprompt.data.text_tasks import get_task

    task = get_task("superglue_multirc")
    rows = [{"paragraph": "p", "question": "q", "answer": "a", "idx": 7, "label": 1}]  # idx should be a mapping
    with pytest.raises(DataError, match="superglue_multirc train row 0 from disk has a missing or wrongly typed field"):
        task_items(get_cfg(), task, rows, ["False", "True"], "pair", "train", "disk")
