"""The authors' Dassl / CoOp / MaPLe yaml files and names, read as their train.py reads them.

The fixtures below restate the authors' trainer yamls (keys and values) so the tests need no
checkout; each names its source file. The common blocks are written once, as the files share them
verbatim; the per-file values are in TRAINER_YAMLS.
"""

import json
import os
import subprocess
import sys

import pytest

from mmprompt.config import get_cfg, load_cfg
from mmprompt.config.dassl_compat import CLIP_BACKBONES, DASSL_DATASET_NAMES, canonical_dataset_name
from mmprompt.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# configs/trainers/<T>/<file>.yaml of KaiyangZhou/CoOp and muzairkhattak/multimodal-prompt-learning
# (MaPLe); the CoOp and CoCoOp files are identical in both repositories.
DASSL_YAML = """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: {batch}
  TEST:
    BATCH_SIZE: 100
  NUM_WORKERS: 8

INPUT:
  SIZE: (224, 224)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]

OPTIM:
  NAME: "sgd"
  LR: {lr}
  MAX_EPOCH: {epochs}
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5

TRAIN:
  PRINT_FREQ: {print_freq}

MODEL:
  BACKBONE:
    NAME: "{backbone}"
{trainer}"""

MAPLE_NODE = """
TRAINER:
  MAPLE:
    N_CTX: 2
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH: {depth}"""
COCOOP_NODE = """
TRAINER:
  COCOOP:
    N_CTX: {n_ctx}
    CTX_INIT: "{init}"
    PREC: "fp16\""""
COOP_CTXV1_NODE = """
TRAINER:
  COOP:
    CTX_INIT: "a photo of a"
"""
IVLP_NODE = """
TRAINER:
  IVLP:
    N_CTX_VISION: {nv}
    N_CTX_TEXT: {nt}
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH_VISION: {dv}
    PROMPT_DEPTH_TEXT: 12"""
VPT_NODE = """
TRAINER:
  VPT:
    N_CTX_VISION: 8
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH_VISION: 12"""


def coop(batch=32, lr=0.002, epochs=200, print_freq=5, backbone="ViT-B/16", node=""):
    return dict(batch=batch, lr=lr, epochs=epochs, print_freq=print_freq, backbone=backbone, trainer=node)


def clip_b4(lr, epochs, node):
    return dict(batch=4, lr=lr, epochs=epochs, print_freq=20, backbone="ViT-B/16", trainer=node)


# (source file, --trainer, yaml values, what the mmprompt config must hold)
TRAINER_YAMLS = [
    (
        "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
        "MaPLe",
        clip_b4(0.0035, 5, MAPLE_NODE.format(depth=9)),
        {
            "PROMPT.METHODS": ["maple"],
            "PROMPT.MAPLE.MODE": "maple",
            "PROMPT.MAPLE.N_CTX": 2,
            "PROMPT.MAPLE.CTX_INIT": "a photo of a",
            "PROMPT.MAPLE.PROMPT_DEPTH": 9,
        },
    ),
    (
        "MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
        "MaPLe",
        clip_b4(0.0026, 2, MAPLE_NODE.format(depth=3)),
        {"PROMPT.MAPLE.MODE": "maple", "PROMPT.MAPLE.PROMPT_DEPTH": 3, "OPTIM.MAX_EPOCH": 2},
    ),
    (
        "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
        "IVLP",
        clip_b4(0.0035, 5, IVLP_NODE.format(nv=2, nt=2, dv=12)),
        {
            "PROMPT.METHODS": ["maple"],
            "PROMPT.MAPLE.MODE": "ivlp",
            "PROMPT.MAPLE.N_CTX": 2,
            "PROMPT.MAPLE.N_CTX_VISION": 2,
            "PROMPT.MAPLE.PROMPT_DEPTH": 12,
            "PROMPT.MAPLE.PROMPT_DEPTH_VISION": 12,
        },
    ),
    (
        "IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml",
        "IVLP",
        clip_b4(0.0025, 5, IVLP_NODE.format(nv=0, nt=4, dv=0)),
        {"PROMPT.MAPLE.MODE": "deep_language", "PROMPT.MAPLE.N_CTX": 4, "PROMPT.MAPLE.PROMPT_DEPTH": 12},
    ),
    (
        "VPT/vit_b16_c2_ep5_batch4_4.yaml",
        "VPT",
        clip_b4(0.0025, 5, VPT_NODE),
        {
            "PROMPT.MAPLE.MODE": "deep_vision",
            "PROMPT.MAPLE.N_CTX_VISION": 8,
            "PROMPT.MAPLE.PROMPT_DEPTH_VISION": 12,
            "MODEL.CLIP.TEMPLATE": "a photo of a {}.",
        },
    ),
    *[
        (
            f"CoCoOp/vit_b16_c{n}_ep10_batch1{suffix}.yaml",
            "CoCoOp",
            coop(batch=1, epochs=10, print_freq=20, node=COCOOP_NODE.format(n_ctx=n, init=init)),
            {"PROMPT.METHODS": ["cocoop"], "PROMPT.COCOOP.N_CTX": n, "PROMPT.COCOOP.CTX_INIT": init},
        )
        for n, suffix, init in ((16, "", ""), (4, "", ""), (4, "_ctxv1", "a photo of a"), (8, "", ""))
    ],
    *[
        (
            f"CoOp/{name}.yaml",
            "CoOp",
            coop(epochs=epochs, backbone=backbone, node=COOP_CTXV1_NODE if ctx else ""),
            {
                "PROMPT.METHODS": ["coop"],
                "PROMPT.COOP.N_CTX": 16,
                "PROMPT.COOP.CSC": False,
                "PROMPT.COOP.CTX_INIT": "a photo of a" if ctx else "",
                "PROMPT.COOP.CLASS_TOKEN_POSITION": "end",
                "OPTIM.MAX_EPOCH": epochs,
                "MODEL.BACKBONE.ARCH": CLIP_BACKBONES[backbone],
            },
        )
        for name, epochs, backbone, ctx in (
            ("vit_b16", 200, "ViT-B/16", False),
            ("vit_b16_ep100", 100, "ViT-B/16", False),
            ("vit_b16_ep50", 50, "ViT-B/16", False),
            ("vit_b32", 200, "ViT-B/32", False),
            ("vit_b32_ep50", 50, "ViT-B/32", False),
            ("rn50", 200, "RN50", False),
            ("rn50_ep50", 50, "RN50", False),
            ("rn50_ep100", 100, "RN50", False),
            ("rn50_ctxv1", 200, "RN50", True),
            ("rn50_ep50_ctxv1", 50, "RN50", True),
            ("rn101", 200, "RN101", False),
            ("rn101_ep50", 50, "RN101", False),
            # only in KaiyangZhou/CoOp:
            ("vit_b16_ctxv1", 200, "ViT-B/16", True),
            ("vit_b16_ep100_ctxv1", 100, "ViT-B/16", True),
            ("vit_b16_ep50_ctxv1", 50, "ViT-B/16", True),
        )
    ],
]

# configs/datasets/*.yaml (identical in both repositories): DATASET.NAME of each
DATASET_YAMLS = {
    "caltech101": "Caltech101",
    "dtd": "DescribableTextures",
    "eurosat": "EuroSAT",
    "fgvc_aircraft": "FGVCAircraft",
    "food101": "Food101",
    "imagenet": "ImageNet",
    "imagenet_a": "ImageNetA",
    "imagenet_r": "ImageNetR",
    "imagenet_sketch": "ImageNetSketch",
    "imagenetv2": "ImageNetV2",
    "oxford_flowers": "OxfordFlowers",
    "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars",
    "sun397": "SUN397",
    "ucf101": "UCF101",
}


def write(path, text):
    path.write_text(text)
    return str(path)


def value(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def has(cfg, key):
    try:
        value(cfg, key)
        return True
    except KeyError:
        return False


@pytest.mark.parametrize("source, trainer, fields, expected", TRAINER_YAMLS, ids=[t[0] for t in TRAINER_YAMLS])
def test_every_authors_trainer_yaml_loads_or_names_exactly_its_unmapped_keys(
    tmp_path, source, trainer, fields, expected
):
    config = write(tmp_path / "trainer.yaml", DASSL_YAML.format(**fields))
    dataset = write(tmp_path / "oxford_pets.yaml", 'DATASET:\n  NAME: "OxfordPets"\n')
    # their scripts: --trainer T --dataset-config-file ... --config-file ... DATASET.NUM_SHOTS 16
    opts = ["DATASET.ROOT", "/data", "SEED", "1", "DATASET.NUM_SHOTS", "16"]
    missing = [k for k in expected if not has(get_cfg(), k)]
    if missing:  # a method this build lacks (CoCoOp): refused, naming exactly the node's keys that map to it
        with pytest.raises(ConfigError) as err:
            load_cfg(config, dataset, opts, trainer=trainer)
        node = source.split("/")[0].upper()
        named = {line.split()[1] for line in str(err.value).splitlines() if line.startswith("  - ")}
        assert named == {f"TRAINER.{node}.{k.split('.')[-1]}" for k in missing}
        return
    cfg = load_cfg(config, dataset, opts, trainer=trainer)
    for key, want in expected.items():
        assert value(cfg, key) == want, key
    assert cfg.MODEL.NAME == "clip_prompt_classifier" and cfg.MODEL.BACKBONE.NAME == "open_clip"
    assert cfg.MODEL.BACKBONE.PRETRAINED == "openai"
    assert cfg.DATASET.NAME == "oxford_pets" and cfg.DATASET.NUM_SHOTS == 16
    assert cfg.OPTIM.LR == fields["lr"] and cfg.OPTIM.WARMUP_CONS_LR == 1e-5
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == fields["batch"] and cfg.INPUT.SIZE == (224, 224)
    assert cfg.TRAIN.PRECISION == "fp16"  # TRAINER.<T>.PREC, their default fp16 where the yaml omits it


def test_coop_rn50_val_yaml_keeps_mmprompt_defaults_where_it_is_silent(tmp_path):
    # configs/trainers/CoOp/rn50_val.yaml (both repositories): no OPTIM, no TRAIN block
    config = write(
        tmp_path / "rn50_val.yaml",
        """\
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 200
  TEST:
    BATCH_SIZE: 200
  NUM_WORKERS: 8

INPUT:
  SIZE: (224, 224)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]

MODEL:
  BACKBONE:
    NAME: "RN50"
""",
    )
    cfg = load_cfg(config, trainer="CoOp")
    assert cfg.DATALOADER.TEST.BATCH_SIZE == 200 and cfg.MODEL.BACKBONE.ARCH == "RN50"
    assert cfg.OPTIM.NAME == get_cfg().OPTIM.NAME  # Dassl's default would be adam (see dassl_compat's docstring)


def test_every_dataset_yaml_names_an_mmprompt_dataset(tmp_path):
    import mmprompt.data  # noqa: F401  (fills the DATASETS registry)
    from mmprompt.registry import DATASETS

    config = write(tmp_path / "maple.yaml", DASSL_YAML.format(**clip_b4(0.0035, 5, MAPLE_NODE.format(depth=9))))
    for file, dassl_name in DATASET_YAMLS.items():
        dataset = write(tmp_path / f"{file}.yaml", f'DATASET:\n  NAME: "{dassl_name}"\n')
        name = load_cfg(config, dataset).DATASET.NAME
        assert name == canonical_dataset_name(dassl_name) and name in DATASETS.names(), file
    assert set(DASSL_DATASET_NAMES) == set(DATASET_YAMLS.values())


def test_maple_yaml_with_oxford_pets_is_the_maple_recipe(tmp_path):
    """MaPLe's base-to-novel command (scripts/maple/base2new_train_maple.sh) gives the config of
    configs/maple.yaml; what differs is named and checked to resolve to the same images."""
    from mmprompt.config.config import all_keys
    from mmprompt.data.build import resolve_preprocess

    config = write(
        tmp_path / "vit_b16_c2_ep5_batch4_2ctx.yaml",
        DASSL_YAML.format(**clip_b4(0.0035, 5, MAPLE_NODE.format(depth=9))),
    )
    dataset = write(tmp_path / "oxford_pets.yaml", 'DATASET:\n  NAME: "OxfordPets"\n')
    flags = ["DATASET.ROOT", "/data", "SEED", "1", "OUTPUT_DIR", "out"]
    theirs = load_cfg(
        config, dataset, flags + ["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"], trainer="MaPLe"
    )
    ours = load_cfg(os.path.join(REPO, "configs", "maple.yaml"), opts=flags)
    differ = {k for k in all_keys(ours) if not isinstance(value(ours, k), dict) and value(ours, k) != value(theirs, k)}
    # Explicit INPUT values equal to what mmprompt reads from the backbone; their fp16 training
    # (mmprompt's recipe leaves precision to TRAIN.PRECISION auto); logging and loader workers.
    assert differ == {
        "INPUT.SIZE",
        "INPUT.INTERPOLATION",
        "INPUT.PIXEL_MEAN",
        "INPUT.PIXEL_STD",
        "TRAIN.PRECISION",
        "TRAIN.PRINT_FREQ",
        "DATALOADER.NUM_WORKERS",
    }
    assert resolve_preprocess(theirs) == resolve_preprocess(ours)


def test_unmapped_keys_are_named_all_at_once(tmp_path):
    config = write(
        tmp_path / "t.yaml",
        DASSL_YAML.format(**clip_b4(0.0035, 5, MAPLE_NODE.format(depth=9))) + "\n    SOMETHING: 1\n",
    )
    opts = [
        "INPUT.CUTOUT_N",
        "2",
        "DATALOADER.TRAIN_X.SAMPLER",
        "RandomDomainSampler",
        "TRAINER.FOO.X",
        "1",
        "TEST.EVALUATOR",
        "Retrieval",
        "OPTIM.STEPSIZE",
        "(30,)",
    ]  # the last one: read only by step schedulers
    with pytest.raises(ConfigError) as err:
        load_cfg(config, opts=opts)
    named = [line.split()[1] for line in str(err.value).splitlines() if line.startswith("  - ")]
    assert sorted(named) == sorted(
        ["TRAINER.MAPLE.SOMETHING", "INPUT.CUTOUT_N", "DATALOADER.TRAIN_X.SAMPLER", "TRAINER.FOO.X", "TEST.EVALUATOR"]
    )
    assert "only 'RandomSampler' is accepted" in str(err.value)


def test_trainer_flag_defaults_and_overrides(tmp_path):
    coop_yaml = write(tmp_path / "vit_b16.yaml", DASSL_YAML.format(**coop()))
    with pytest.raises(ConfigError, match="pass --trainer CoOp"):
        load_cfg(coop_yaml)
    # scripts/coop/main.sh: TRAINER.COOP.N_CTX ${NCTX} TRAINER.COOP.CSC ${CSC} TRAINER.COOP.CLASS_TOKEN_POSITION ${CTP}
    cfg = load_cfg(
        coop_yaml,
        opts=[
            "TRAINER.COOP.N_CTX",
            "4",
            "TRAINER.COOP.CSC",
            "True",
            "TRAINER.COOP.CLASS_TOKEN_POSITION",
            "middle",
            "TRAINER.COOP.PREC",
            "fp32",
        ],
        trainer="coop",
    )
    assert (cfg.PROMPT.COOP.N_CTX, cfg.PROMPT.COOP.CSC, cfg.PROMPT.COOP.CLASS_TOKEN_POSITION) == (4, True, "middle")
    assert cfg.TRAIN.PRECISION == "fp32"
    # a node the yaml leaves out starts from their extend_cfg defaults (VPT: one shallow layer of 2 tokens)
    vpt = write(tmp_path / "vpt.yaml", DASSL_YAML.format(**clip_b4(0.0025, 5, "")))
    cfg = load_cfg(vpt, trainer="VPT")
    assert (cfg.PROMPT.MAPLE.MODE, cfg.PROMPT.MAPLE.N_CTX_VISION, cfg.PROMPT.MAPLE.PROMPT_DEPTH_VISION) == (
        "deep_vision",
        2,
        1,
    )
    with pytest.raises(ConfigError, match="not one mmprompt reads"):
        load_cfg(vpt, trainer="DAEL")
    # IVLP's vision and text depths may differ (their independentVL.py reads them separately)
    cfg = load_cfg(vpt, opts=["TRAINER.IVLP.PROMPT_DEPTH_VISION", "3"], trainer="IVLP")
    assert (cfg.PROMPT.MAPLE.MODE, cfg.PROMPT.MAPLE.PROMPT_DEPTH, cfg.PROMPT.MAPLE.PROMPT_DEPTH_VISION) == (
        "ivlp",
        9,
        3,
    )
    with pytest.raises(ConfigError, match="--trainer VPT"):
        load_cfg(vpt, opts=["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "0"], trainer="IVLP")


def test_zero_shot_trainers_are_the_zsclip_recipes(tmp_path):
    # scripts/coop/zeroshot.sh: --trainer ZeroshotCLIP --config-file configs/trainers/CoOp/vit_b16_ep50.yaml --eval-only
    coop_yaml = write(tmp_path / "vit_b16_ep50.yaml", DASSL_YAML.format(**coop(epochs=50)))
    for trainer, recipe in (("ZeroshotCLIP", "zsclip.yaml"), ("ZeroshotCLIP2", "zsclip_ensemble.yaml")):
        cfg = load_cfg(coop_yaml, trainer=trainer)
        ours = load_cfg(os.path.join(REPO, "configs", recipe))
        assert cfg.PROMPT.METHODS == [] and cfg.MODEL.CLIP.ZERO_SHOT_TEMPLATES == ours.MODEL.CLIP.ZERO_SHOT_TEMPLATES


def test_mmprompt_keys_beside_dassl_keys_override_them(tmp_path):
    config = write(tmp_path / "t.yaml", DASSL_YAML.format(**clip_b4(0.0035, 5, MAPLE_NODE.format(depth=9))))
    cfg = load_cfg(
        config,
        opts=[
            "PROMPT.MAPLE.PROMPT_DEPTH",
            "2",
            "MODEL.BACKBONE.ARCH",
            "ViT-B-32",
            "MODEL.BACKBONE.PRETRAINED",
            "/weights/ViT-B-16.pt",
            "TRAINER.MAPLE.N_CTX",
            "3",
        ],
    )
    assert cfg.PROMPT.MAPLE.PROMPT_DEPTH == 2 and cfg.PROMPT.MAPLE.N_CTX == 3
    assert cfg.MODEL.BACKBONE.ARCH == "ViT-B-32" and cfg.MODEL.BACKBONE.PRETRAINED == "/weights/ViT-B-16.pt"


def test_plain_mmprompt_configs_are_not_translated(tmp_path):
    # DATASET.NAME in Dassl's spelling alone is no Dassl-style file: the name is resolved when the
    # dataset is built, and a TRAINER node in a merge_from_file gets a pointer to load_cfg.
    cfg = load_cfg(os.path.join(REPO, "configs", "coop.yaml"), opts=["DATASET.NAME", "OxfordPets"])
    assert cfg.DATASET.NAME == "OxfordPets" and cfg.PROMPT.METHODS == ["coop"]
    from mmprompt.config import merge_from_file

    with pytest.raises(ConfigError, match="TRAINER is a Dassl/CoOp node"):
        merge_from_file(get_cfg(), write(tmp_path / "t.yaml", "TRAINER:\n  MAPLE:\n    N_CTX: 2\n"))


@pytest.mark.slow
def test_maple_yaml_trains_through_train_net(tmp_path):
    """Their command line, unchanged except for the tiny random CLIP and CPU precision."""
    sys.path.insert(0, HERE)
    from test_engine_integration import make_oxford_pets

    make_oxford_pets(str(tmp_path / "data"))
    config = write(
        tmp_path / "vit_b16_c2_ep5_batch4_2ctx.yaml",
        DASSL_YAML.format(**clip_b4(0.0035, 5, MAPLE_NODE.format(depth=9))),
    )
    dataset = write(tmp_path / "oxford_pets.yaml", 'DATASET:\n  NAME: "OxfordPets"\n')
    command = [
        sys.executable,
        os.path.join(REPO, "tools", "train_net.py"),
        "--root",
        str(tmp_path / "data"),
        "--seed",
        "1",
        "--trainer",
        "MaPLe",
        "--dataset-config-file",
        dataset,
        "--config-file",
        config,
        "--output-dir",
        str(tmp_path / "run"),
        "DATASET.NUM_SHOTS",
        "2",
        "DATASET.SUBSAMPLE_CLASSES",
        "base",
        "MODEL.BACKBONE.ARCH",
        os.path.join(REPO, "configs/_base_/tiny_clip_model.json"),
        "MODEL.BACKBONE.PRETRAINED",
        "",
        "TRAINER.MAPLE.PROMPT_DEPTH",
        "2",
        "TRAINER.MAPLE.PREC",
        "fp32",
        "OPTIM.MAX_EPOCH",
        "1",
        "DATALOADER.NUM_WORKERS",
        "0",
        "TRAIN.PROGRESS_BAR",
        "False",
        "TRAIN.TENSORBOARD",
        "False",
    ]
    run = lambda *extra: subprocess.run(
        command + list(extra),
        capture_output=True,
        text=True,  # noqa: E731
        timeout=600,
        cwd=REPO,
    )
    refused = run()  # their INPUT.SIZE (224, 224) does not fit the 32 px model
    assert refused.returncode == 2 and "takes 32x32 images" in refused.stderr and "Traceback" not in refused.stderr
    proc = run("INPUT.SIZE", "(32, 32)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["dataset"] == "oxford_pets" and metrics["methods"] == ["maple"]
    assert metrics["recipe"] == "vit_b16_c2_ep5_batch4_2ctx" and "hm" in metrics
