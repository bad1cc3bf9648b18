"""Items, split files, few-shot sampling and its cache, base/novel classes, transforms and loaders."""

import json
import os
import pickle
import random

import pytest
import torch
from PIL import Image

from mmprompt.config import get_cfg
from mmprompt.data.base import (
    DataError,
    DatasetBase,
    Datum,
    apply_fewshot,
    apply_subsample,
    coop_fewshot_cache_path,
    fewshot_cache_path,
    generate_fewshot_dataset,
    read_split_json,
    subsample_classes,
    write_split_json,
)
from mmprompt.data.build import CLIP_MEAN, CLIP_STD, build_dataset, build_loader, build_transform, normalization
from mmprompt.errors import ConfigError, RegistryError


def _items(num_classes=5, per_class=10, root="/data/images"):
    return [
        Datum(label=c, classname=f"class{c}", impath=f"{root}/class{c}/{i}.jpg")
        for c in range(num_classes)
        for i in range(per_class)
    ]


def _dataset(tmp_path, num_classes=5, per_class=10):
    image_dir = str(tmp_path / "images")
    items = _items(num_classes, per_class, image_dir)
    return DatasetBase(items, items[::2], items[1::2], name="toy", dataset_dir=str(tmp_path), image_dir=image_dir)


def test_dataset_base_classnames_and_gaps():
    d = DatasetBase(_items(3, 2))
    assert d.num_classes == 3 and d.lab2cname == {0: "class0", 1: "class1", 2: "class2"}
    with pytest.raises(DataError, match=r"missing labels \[1\]"):
        DatasetBase([Datum(label=0, classname="a"), Datum(label=2, classname="c")])


def test_split_json_round_trip_stores_relative_paths(tmp_path):
    items = _items(2, 3, str(tmp_path / "images"))
    path = tmp_path / "split.json"
    write_split_json(str(path), items[:2], items[2:4], items[4:], str(tmp_path / "images"))
    raw = json.loads(path.read_text())
    assert raw["train"][0] == ["class0/0.jpg", 0, "class0"]
    train, val, test = read_split_json(str(path), "/elsewhere")
    assert train[0].impath == "/elsewhere/class0/0.jpg" and len(val) == 2 and len(test) == 2
    path.write_text('{"train": [["a.jpg", "zero", "x"]], "val": [], "test": []}')
    with pytest.raises(DataError, match=r"\[relative_path, label, classname\]"):
        read_split_json(str(path), "/x")
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_split_json(str(path), "/x")


def test_generate_fewshot_dataset_counts_order_and_short_classes():
    items = _items(4, 6)[::-1]  # labels first appear as 3, 2, 1, 0
    a = generate_fewshot_dataset(items, 3, random.Random(1))
    assert [d.label for d in a] == [3] * 3 + [2] * 3 + [1] * 3 + [0] * 3
    assert a == generate_fewshot_dataset(items, 3, random.Random(1))
    assert a != generate_fewshot_dataset(items, 3, random.Random(2))
    assert generate_fewshot_dataset(items, -1, random.Random(1)) == items
    short = items + [Datum(label=4, classname="rare", impath="/data/images/rare/0.jpg")]
    with pytest.warns(UserWarning, match=r"kept whole, as Dassl does: 4 'rare' \(1\)"):
        b = generate_fewshot_dataset(short, 2, random.Random(1))
    assert [d.classname for d in b].count("rare") == 1 and len(b) == 9


def test_apply_fewshot_val_gets_at_most_four_and_is_cached(tmp_path):
    dataset = _dataset(tmp_path, 3, 20)
    shot = apply_fewshot(dataset, 8, seed=5)
    per_class = lambda split, c: sum(d.label == c for d in split)  # noqa: E731
    assert [per_class(shot.train_x, c) for c in range(3)] == [8, 8, 8]
    assert [per_class(shot.val, c) for c in range(3)] == [4, 4, 4]
    assert shot.test == dataset.test and shot.classnames == dataset.classnames
    cache = fewshot_cache_path(str(tmp_path), 8, 5)
    assert cache.endswith(os.path.join("split_fewshot", "mmprompt_shot_8-seed_5.json")) and os.path.isfile(cache)
    assert not os.path.exists(coop_fewshot_cache_path(str(tmp_path), 8, 5))  # CoOp's name is left to CoOp
    assert json.loads(open(cache).read())["train"][0][0].startswith("class")  # relative paths
    again = apply_fewshot(dataset, 8, seed=5)
    assert again.train_x == shot.train_x and again.val == shot.val


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/mmprompt-pwned", "w"))


def test_coop_cache_with_other_python_objects_is_refused(tmp_path):
    dataset = _dataset(tmp_path, 2, 5)
    cache = coop_fewshot_cache_path(str(tmp_path), 1, 1)
    os.makedirs(os.path.dirname(cache))
    with open(cache, "wb") as f:
        pickle.dump({"train": [_Exploit()], "val": []}, f)
    if os.path.exists("/tmp/mmprompt-pwned"):
        os.remove("/tmp/mmprompt-pwned")
    with pytest.raises(DataError, match="not a CoOp/Dassl cache.*refusing to load io.open.*Delete it"):
        apply_fewshot(dataset, 1, seed=1)
    assert not os.path.exists("/tmp/mmprompt-pwned")


def test_old_mmprompt_cache_under_coops_name_is_refused(tmp_path):
    dataset = _dataset(tmp_path, 2, 5)
    cache = coop_fewshot_cache_path(str(tmp_path), 1, 1)
    os.makedirs(os.path.dirname(cache))
    with open(cache, "wb") as f:  # what mmprompt wrote there before it sampled as Dassl does
        pickle.dump({"train": [["class0/0.jpg", 0, "class0"]], "val": [["class0/1.jpg", 0, "class0"]]}, f, protocol=4)
    with pytest.raises(DataError, match="older mmprompt.*Delete it"):
        apply_fewshot(dataset, 1, seed=1)


def test_damaged_mmprompt_cache_is_refused(tmp_path):
    dataset = _dataset(tmp_path, 2, 5)
    apply_fewshot(dataset, 1, seed=1)
    cache = fewshot_cache_path(str(tmp_path), 1, 1)
    with open(cache, "w") as f:
        f.write('{"version": 1, "train": []}')
    with pytest.raises(DataError, match="not an mmprompt 1-shot seed-1 cache.*delete it"):
        apply_fewshot(dataset, 1, seed=1)


def test_subsample_base_new_relabels_from_zero():
    items = _items(5, 2)
    (base,) = subsample_classes(items, subsample="base")
    (new,) = subsample_classes(items, subsample="new")
    assert sorted({d.label for d in base}) == [0, 1, 2] and {d.classname for d in base} == {
        "class0",
        "class1",
        "class2",
    }
    assert sorted({d.label for d in new}) == [0, 1]
    assert all(d.classname == f"class{d.label + 3}" for d in new)
    dataset = apply_subsample(DatasetBase(items, items, items), "new")
    assert dataset.classnames == ["class3", "class4"] and dataset.num_classes == 2
    with pytest.raises(DataError, match="all, base or new"):
        subsample_classes(items, subsample="novel")


def _cfg():
    cfg = get_cfg()
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def test_normalization_follows_the_backbone():
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.ARCH, cfg.MODEL.BACKBONE.PRETRAINED = "open_clip", "ViT-B-16", ""
    assert normalization(cfg) == (CLIP_MEAN, CLIP_STD)
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.ARCH = "timm_vit", "vit_base_patch16_224_in21k"
    assert normalization(cfg) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]
    assert normalization(cfg) == ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    cfg.INPUT.PIXEL_STD = []
    with pytest.raises(ConfigError, match="both"):
        normalization(cfg)


def test_transforms(tmp_path):
    image = Image.new("RGB", (50, 40), (255, 0, 0))
    cfg = _cfg()
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    train, test = build_transform(cfg, True), build_transform(cfg, False)
    assert train(image).shape == test(image).shape == (3, 32, 32)
    assert torch.equal(test(image), test(image)) and torch.allclose(test(image)[0], torch.ones(32, 32))
    cfg.INPUT.TRANSFORMS = ["random_rotate"]  # random_crop is a real (Dassl) transform since issue 12
    with pytest.raises(ConfigError, match="unknown \\['random_rotate'\\]"):
        build_transform(cfg, True)


def _write_images(tmp_path, n=6):
    folder = tmp_path / "images"
    folder.mkdir()
    items = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.new("RGB", (40, 40), (i * 30, 0, 0)).save(path)
        items.append(Datum(label=i % 3, classname=f"c{i % 3}", impath=str(path)))
    return items


def test_image_loader_batches(tmp_path):
    items = _write_images(tmp_path)
    cfg = _cfg()
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TEST.BATCH_SIZE = 4, 4
    batches = list(build_loader(cfg, items, is_train=True))
    assert len(batches) == 1  # drop_last when training
    assert set(batches[0]) == {"image", "label"} and batches[0]["image"].shape == (4, 3, 32, 32)
    assert batches[0]["label"].dtype == torch.long
    test = list(build_loader(cfg, items, is_train=False))
    assert [b["label"].tolist() for b in test] == [[0, 1, 2, 0], [1, 2]]


def test_text_loader_batches():
    items = [Datum(label=i % 2, classname="", text=f"sentence {i}", text_b=f"other {i}") for i in range(5)]
    batch = next(iter(build_loader(_cfg(), items, is_train=False)))
    assert batch["text"] == [f"sentence {i}" for i in range(5)] and batch["text_b"][0] == "other 0"
    assert batch["label"].tolist() == [0, 1, 0, 1, 0]


def test_corrupt_image_at_load_time_names_the_file(tmp_path):
    items = _write_images(tmp_path, 3)
    open(items[1].impath, "wb").write(b"garbage")
    with pytest.raises(DataError, match=r"1\.jpg cannot be decoded.*rerun the prep"):
        list(build_loader(_cfg(), items, is_train=False))
    with pytest.raises(DataError, match="empty split"):
        build_loader(_cfg(), [], is_train=True)


def test_build_dataset_config_errors(tmp_path):
    cfg = _cfg()
    with pytest.raises(ConfigError, match="DATASET.NAME is empty"):
        build_dataset(cfg)
    cfg.DATASET.NAME, cfg.DATASET.ROOT = "oxford_pet", str(tmp_path)
    with pytest.raises(RegistryError, match="oxford_pets"):
        build_dataset(cfg)
