"""The bad-input matrix for the tools that run the trainer themselves: lpclip, demo, the results tables.

They build their configs outside tools/train_net.py, so each must validate every config it will
run and take the run-dir lock before anything trains. Every case runs the tool's ``main(argv)``
in the sandbox of tests/_sandbox.py and asserts exit code 2, no traceback and a message naming
the problem; no case here trains a model.
"""

import json
import os

import numpy as np
import pytest
from _sandbox import REPO, call, refused, sandbox  # noqa: F401  (sandbox is a fixture)

LPCLIP = ["--config-file", os.path.join(REPO, "configs", "lpclip.yaml")]


def features(folder, **replace):
    """lpclip-format {train,val,test}.npz of 12 random 5-number features in 3 classes; ``replace``
    gives a split other (features, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        x, y = replace.get(split, (rng.normal(size=(12, 5)).astype(np.float32), np.arange(12) % 3))
        np.savez(folder / split, feature_list=x, label_list=y)
    return folder


def lpclip(capsys, box, feature_dir, *extra):
    return call(
        capsys, "lpclip", [*LPCLIP, "--features", feature_dir, "--output-dir", box.root / "out", "--steps", "1", *extra]
    )


# ---------------------------------------------------------------- lpclip


def test_lpclip_validates_the_config_before_building_anything(sandbox, capsys):
    refused(
        call(
            capsys,
            "lpclip",
            [*LPCLIP, "--root", sandbox.root, "--output-dir", sandbox.root / "out", "DATASET.NAME", "oxford_pet"],
        ),
        "Did you mean 'oxford_pets'",
    )
    refused(call(capsys, "lpclip", [*LPCLIP, "--output-dir", sandbox.root / "out"]), "DATASET.ROOT is empty")
    assert not (sandbox.root / "out").exists()


def test_lpclip_refuses_a_dir_with_another_probe_unless_overwrite(sandbox, capsys):
    pytest.importorskip("sklearn")
    folder = features(sandbox.root / "f")
    assert lpclip(capsys, sandbox, folder).code == 0
    first = (sandbox.root / "out" / "metrics.json").read_text()
    refused(lpclip(capsys, sandbox, folder, "--seed", "2"), "already holds a run", "--overwrite")
    assert (sandbox.root / "out" / "metrics.json").read_text() == first
    assert lpclip(capsys, sandbox, folder, "--seed", "2", "--overwrite").code == 0
    assert json.loads((sandbox.root / "out" / "metrics.json").read_text())["seed"] == 2


NAN = np.full((3, 5), np.nan)
FEATURES = {
    "nan": (dict(val=(NAN, np.arange(3))), "val.npz: feature_list holds NaN or infinite values"),
    "other_dim": (
        dict(test=(np.zeros((3, 4)), np.arange(3))),
        "test.npz: its features have 4 numbers, those of train.npz 5",
    ),
    "one_class": (dict(train=(np.zeros((3, 5)), np.zeros(3, int))), "The training features hold a single class"),
    "text_labels": (dict(val=(np.zeros((3, 5)), np.array(["a", "b", "c"]))), "label_list must hold one integer label"),
    "label_count": (
        dict(val=(np.zeros((3, 5)), np.arange(2))),
        "label_list must hold one integer label per feature row (3)",
    ),
    "one_dim": (dict(val=(np.zeros(5), np.arange(5))), "feature_list must be a non-empty (items, dim) array"),
    "empty": (dict(test=(np.zeros((0, 5)), np.zeros(0, int))), "feature_list must be a non-empty"),
}


@pytest.mark.parametrize("case", sorted(FEATURES))
def test_lpclip_bad_feature_file(sandbox, capsys, case):
    replace, needle = FEATURES[case]
    refused(lpclip(capsys, sandbox, features(sandbox.root / "f", **replace)), needle)


@pytest.mark.parametrize("case", ["garbage", "missing_array", "object_array"])
def test_lpclip_unreadable_feature_file_is_never_unpickled(sandbox, capsys, case):
    folder = features(sandbox.root / "f")
    if case == "garbage":
        (folder / "val.npz").write_bytes(b"not an npz")
    elif case == "missing_array":
        np.savez(folder / "val", feats=np.zeros((2, 5)))
    else:
        np.savez(folder / "val", feature_list=np.array([{"a": 1}], dtype=object), label_list=np.zeros(1, int))
    needle = "lacks the array" if case == "missing_array" else "is not a readable .npz of features"
    refused(lpclip(capsys, sandbox, folder), "val.npz", needle)


def test_lpclip_steps_and_shots(sandbox, capsys):
    folder = features(sandbox.root / "f")
    refused(lpclip(capsys, sandbox, folder, "--steps", "0"), "--steps must be >= 1")
    refused(
        lpclip(capsys, sandbox, folder, "--sampling", "lpclip", "DATASET.NUM_SHOTS", "16"), "fewer than the 16 shots"
    )


# ---------------------------------------------------------------- demo and the BBC News table


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--seeds", "1", "1"], "--seeds lists 1 more than once"),
        (["--methods", "adap_pos", "adap_pos"], "--methods lists adap_pos more than once"),
        (["--methods", ","], "--methods names no method"),
        (
            ["OPTIM.LR", "--methods", "linear_probe"],
            "Overrides come in KEY VALUE pairs; got an odd number: ['OPTIM.LR']",
        ),
        (["OPTIM.LR", "-1.0", "--methods", "linear_probe"], "OPTIM.LR must be >= 0, got -1.0"),
        (["OPTIM.LRR", "1", "--methods", "linear_probe"], "Unknown config key OPTIM.LRR"),
        (
            ["DATASET.TEXT.DATA_DIR", "nowhere", "--methods", "linear_probe"],
            "DATASET.TEXT.DATA_DIR nowhere is not a folder",
        ),
        (["--methods", "linear_probe", "OPTIM.LR", "0.1"], "'OPTIM.LR' is a KEY VALUE override, not a demo method"),
    ],
)
def test_demo_refuses_before_the_first_run(sandbox, capsys, argv, needle):
    refused(call(capsys, "demo", ["--output-dir", sandbox.root / "demo", "--no-progress", *argv]), needle)
    assert not (sandbox.root / "demo").exists()


def test_demo_output_dir_that_is_a_file(sandbox, capsys):
    (sandbox.root / "file").write_text("x")
    refused(
        call(capsys, "demo", ["--methods", "linear_probe", "--output-dir", sandbox.root / "file", "--no-progress"]),
        "Cannot write to the output dir",
        "a file is in the way",
    )


def test_demo_config_needs_no_dataset_root(sandbox, capsys):
    """BBC News ships with a package: validation must not ask for DATASET.ROOT (the demo's config
    names a folder that need not exist), or every train_net run of a demo config is refused."""
    from mmprompt.config import load_cfg
    from mmprompt.config.validate import config_problems

    cfg = load_cfg(os.path.join(REPO, "configs", "demo", "prompt_tuning.yaml"), opts=["DATASET.ROOT", "nowhere"])
    assert not [p for p in config_problems(cfg) if "DATASET.ROOT" in p]


@pytest.mark.parametrize(
    "flags,opts,needle",
    [
        (["--shots", "8", "8"], [], "--shots lists 8 more than once"),
        ([], ["SEED", "x"], "SEED (from command line) expects int"),
        (["--doc", "DOC_IS_A_FOLDER"], [], "is a folder; give the path of a file"),
        (["--doc", "UNDER_A_FILE"], [], "is a file, not a folder"),
    ],
)
def test_results_table_refuses_before_the_first_run(sandbox, capsys, flags, opts, needle):
    (sandbox.root / "file").write_text("x")
    paths = {"DOC_IS_A_FOLDER": str(sandbox.root), "UNDER_A_FILE": str(sandbox.root / "file" / "t.md")}
    flags = [paths.get(f, f) for f in flags] + ([] if "--doc" in flags else ["--doc", str(sandbox.root / "t.md")])
    refused(
        call(
            capsys, "results_table", ["--methods", "linear_probe", *flags, "--output-dir", sandbox.root / "rt", *opts]
        ),
        needle,
    )
    assert not (sandbox.root / "rt").exists()


# ---------------------------------------------------------------- the resumable real-data tables

GOOD_RUN = {
    "phase": "grid",
    "method": "linear_probe",
    "shots": 4,
    "seed": 1,
    "point": ["OPTIM.LR", "0.004"],
    "point_label": "lr 0.004",
    "trainable_params": 10,
    "val_acc": 50.0,
    "val_items": 10,
    "test_acc": None,
    "test_items": 0,
    "train_time_s": 1.0,
    "eval_time_s": 1.0,
    "train_cpu_s": 1.0,
    "steps": 2,
    "output_dir": "runs/x",
}
RESULTS = {
    "not_utf8": (b"\xff\xfe", "is not a results file of this tool (UnicodeDecodeError"),
    "not_json": (b"{", "is not a results file of this tool (JSONDecodeError"),
    "no_runs": (b"{}", "is not a results file of this tool (KeyError"),
    "runs_not_a_list": (b'{"runs": 5}', "'runs' must be a list of runs"),
    "run_lacks_fields": (
        json.dumps({"runs": [{"phase": "grid"}]}).encode(),
        "run 0 has missing or wrongly typed method",
    ),
    "run_not_an_object": (b'{"runs": [3]}', "run 0 has missing or wrongly typed everything"),
    "table_run_without_test": (
        json.dumps({"runs": [dict(GOOD_RUN, phase="table")]}).encode(),
        "wrongly typed test_acc",
    ),
    # a resumed table made with other overrides would mix two settings in one table
    "other_overrides": (
        json.dumps({"runs": [dict(GOOD_RUN, opts=["OPTIM.MAX_ITER", "5"])]}).encode(),
        "its runs were made with the overrides ['OPTIM.MAX_ITER', '5']",
    ),
}


@pytest.mark.parametrize("tool", ["results_vision", "results_snli"])
@pytest.mark.parametrize("case", sorted(RESULTS))
def test_real_table_on_a_bad_results_file(sandbox, capsys, tool, case):
    raw, needle = RESULTS[case]
    out = sandbox.root / "out"
    out.mkdir()
    (out / "results.json").write_bytes(raw)
    refused(
        call(
            capsys,
            tool,
            [
                "--methods",
                "linear_probe",
                "--shots",
                "4",
                "--seeds",
                "1",
                "--output-dir",
                out,
                "--doc",
                sandbox.root / "t.md",
                "--plot",
                sandbox.root / "p.png",
                "DATASET.ROOT",
                sandbox.root,
            ],
        ),
        "results.json",
        needle,
    )
    assert os.listdir(out) == ["results.json"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--seeds", "1", "2", "1"], "--seeds lists 1 more than once"),
        (["OPTIM.LR", "nan"], "OPTIM.LR (from command line) expects float"),
        (["DATASET.ROOT", "nowhere"], "DATASET.ROOT nowhere is not a folder that exists"),
        (["--doc", "UNDER_A_FILE"], "is a file, not a folder"),
    ],
)
def test_real_table_refuses_before_the_first_run(sandbox, capsys, argv, needle):
    (sandbox.root / "file").write_text("x")
    argv = [str(sandbox.root / "file" / "t.md") if a == "UNDER_A_FILE" else a for a in argv]
    defaults = ["--doc", str(sandbox.root / "t.md")] if "--doc" not in argv else []
    root = [] if "DATASET.ROOT" in argv else ["DATASET.ROOT", str(sandbox.root)]
    refused(
        call(
            capsys,
            "results_vision",
            [
                "--methods",
                "linear_probe",
                "--output-dir",
                sandbox.root / "out",
                "--plot",
                sandbox.root / "p.png",
                *defaults,
                *root,
                *argv,
            ],
        ),
        needle,
    )
    assert not (sandbox.root / "out").exists()


# ---------------------------------------------------------------- prep scripts and the side-by-side benchmark


def test_prep_scripts_refuse_a_root_that_is_a_file(sandbox, capsys):
    (sandbox.root / "file").write_text("x")
    for tool, extra in (
        ("prepare_fashion_mnist", []),
        ("prepare_clip_datasets", ["--dataset", "dtd"]),
        ("prepare_fgvc", ["--dataset", "cub"]),
    ):
        refused(call(capsys, tool, ["--root", sandbox.root / "file", *extra]), "is a file, not a folder")


def test_fgvc_prep_names_the_file_and_line_of_a_non_utf8_list(sandbox, capsys):
    folder = sandbox.root / "CUB_200_2011"
    (folder / "images").mkdir(parents=True)
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"):
        (folder / name).write_bytes(b"1 a\n2 caf\xe9\n")
    refused(
        call(capsys, "prepare_fgvc", ["--root", sandbox.root, "--dataset", "cub"]), "images.txt:2 is not UTF-8 text"
    )


@pytest.mark.parametrize("packed", ["folder", "zip"])
def test_text_prep_names_the_file_and_line_of_a_non_utf8_release(sandbox, capsys, packed):
    import zipfile

    rows = {
        "train.tsv": b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n",
        "dev.tsv": b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n",
    }
    src = sandbox.root / "src"
    (src / "RTE").mkdir(parents=True)
    if packed == "folder":
        for name, raw in rows.items():
            (src / "RTE" / name).write_bytes(raw)
    else:
        with zipfile.ZipFile(src / "RTE.zip", "w") as z:
            for name, raw in rows.items():
                z.writestr(f"RTE/{name}", raw)
    needle = "RTE/train.tsv:3 is not UTF-8 text" if packed == "folder" else "RTE.zip!RTE/train.tsv:3 is not UTF-8 text"
    refused(
        call(capsys, "prepare_text_datasets", ["--root", sandbox.root / "data", "--src", src, "--task", "glue_rte"]),
        needle,
    )


def _vs_official():
    import importlib.util
    import sys

    if "_matrix_vs_official" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "_matrix_vs_official", os.path.join(REPO, "benchmarks", "vs_official.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["_matrix_vs_official"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--only", "no-such-comparison"], "--only no-such-comparison matches no comparison"),
        (["--repeats", "-1"], "--repeats must be >= 0"),
        (["--json", "MISSING/x.json"], "cannot be written"),
        (["--coop-repo", "MISSING"], "--coop-repo"),  # a checkout that is not there: which flag, what it lacks
    ],
)
def test_vs_official_refuses_before_comparing(sandbox, capsys, argv, needle):
    from mmprompt.utils.cli import call_cli

    argv = [
        str(sandbox.root / "missing" / a.split("/", 1)[1])
        if a.startswith("MISSING/")
        else str(sandbox.root / "missing")
        if a == "MISSING"
        else a
        for a in argv
    ]
    capsys.readouterr()
    code = call_cli(_vs_official().main, [*argv, "--size", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and needle in err, (code, err)


# ---------------------------------------------------------------- the Python API


def test_from_pretrained_with_damaged_metadata_is_one_message(sandbox):
    import torch
    from safetensors.torch import save_file

    import mmprompt
    from mmprompt.errors import MMPromptError

    path = sandbox.root / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(path), metadata={"config": "MODEL:\n  NAME: x\n", "classnames": "{not json"})
    with pytest.raises(MMPromptError, match="its metadata 'classnames' is not valid JSON"):
        mmprompt.from_pretrained(str(path))


@pytest.mark.parametrize("num_classes", ["a", -1, 0, 2.5, True])
def test_wrap_with_a_bad_num_classes_is_one_message(sandbox, num_classes):
    import timm

    import mmprompt
    from mmprompt.errors import ConfigError

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0, depth=1)
    with pytest.raises(ConfigError, match="num_classes must be a whole number >= 1"):
        mmprompt.wrap(vit, "vpt", num_classes=num_classes)
