"""The CLIP-benchmark prep script and readers, end to end on miniature official downloads.

Each builder writes what the owners distribute (archive names, folder layout inside them,
annotation formats: .mat via scipy, txt lists, json) with a few 8-px JPEGs per class.
"""

import io
import json
import os
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from datasets_prep import prepare_clip_datasets as prep
from datasets_prep._common import PrepError
from mmprompt.config import get_cfg
from mmprompt.data import base as data_base
from mmprompt.data.base import DataError, DatasetMissingError
from mmprompt.data.build import build_dataset, build_test_dataset
from mmprompt.data.clip_datasets import imagenet_classnames_table
from mmprompt.registry import DATASETS


def _jpeg(seed=0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()


def _tar(path, files, mode="w:gz"):
    """files: {member name: bytes}"""
    with tarfile.open(path, mode) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def _text(lines):
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------ builders of official downloads


def make_caltech101(root, per_class=10):
    folders = ["accordion", "airplanes", "Faces", "Faces_easy", "BACKGROUND_Google", "Leopards"]
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as t:
        for folder in folders:
            for i in range(per_class):
                info = tarfile.TarInfo(f"101_ObjectCategories/{folder}/image_{i + 1:04d}.jpg")
                info.size = len(JPEG)
                t.addfile(info, io.BytesIO(JPEG))
    _zip(
        os.path.join(root, "caltech-101.zip"),
        {"caltech-101/101_ObjectCategories.tar.gz": inner.getvalue(), "caltech-101/show_annotation.m": b"%"},
    )


def make_oxford_pets(root, trainval=10, test=3):
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 3, 1)]
    images, tv, te = {}, [], []
    for breed, cid, species in breeds:
        for i in range(trainval + test):
            images[f"images/{breed}_{i + 1}.jpg"] = JPEG
            (tv if i < trainval else te).append(f"{breed}_{i + 1} {cid} {species} {cid}")
    _tar(os.path.join(root, "images.tar.gz"), images)
    _tar(
        os.path.join(root, "annotations.tar.gz"),
        {
            "annotations/trainval.txt": _text(tv),
            "annotations/test.txt": _text(te),
            "annotations/list.txt": _text(["#Image CLASS-ID SPECIES BREED ID"] + tv + te),
        },
    )


CARS = ["AM General Hummer SUV 2000", "Tesla Model S Sedan 2012", "smart fortwo Convertible 2012"]


def _cars_annos(path, entries):
    annos = np.zeros((1, len(entries)), dtype=[("bbox_x1", "O"), ("class", "O"), ("fname", "O")])
    for i, (fname, cls) in enumerate(entries):
        annos[0, i] = (np.array([[1]], dtype=np.uint8), np.array([[cls]], dtype=np.uint8), np.array([fname]))
    savemat(path, {"annotations": annos})


def make_stanford_cars(root, train=10, test=3):
    dataset_dir = os.path.join(root, "stanford_cars")
    os.makedirs(dataset_dir)
    train_entries = [(f"{i + 1:05d}.jpg", i % 3 + 1) for i in range(3 * train)]
    test_entries = [(f"{i + 1:05d}.jpg", i % 3 + 1) for i in range(3 * test)]
    _tar(os.path.join(dataset_dir, "cars_train.tgz"), {f"cars_train/{f}": JPEG for f, _ in train_entries})
    _tar(os.path.join(dataset_dir, "cars_test.tgz"), {f"cars_test/{f}": JPEG for f, _ in test_entries})
    scratch = os.path.join(root, "scratch")
    os.makedirs(scratch)
    meta = np.empty((1, 3), dtype=object)
    for i, name in enumerate(CARS):
        meta[0, i] = np.array([name])
    savemat(os.path.join(scratch, "cars_meta.mat"), {"class_names": meta})
    _cars_annos(os.path.join(scratch, "cars_train_annos.mat"), train_entries)
    _cars_annos(os.path.join(dataset_dir, "cars_test_annos_withlabels.mat"), test_entries)
    _tar(
        os.path.join(dataset_dir, "car_devkit.tgz"),
        {f"devkit/{n}": open(os.path.join(scratch, n), "rb").read() for n in ("cars_meta.mat", "cars_train_annos.mat")},
    )
    shutil.rmtree(scratch)


def make_oxford_flowers(root, per_class=10):
    dataset_dir = os.path.join(root, "oxford_flowers")
    os.makedirs(dataset_dir)
    labels = [i % 3 + 1 for i in range(3 * per_class)]  # interleaved, as in the real file
    _tar(os.path.join(dataset_dir, "102flowers.tgz"), {f"jpg/image_{i + 1:05d}.jpg": JPEG for i in range(len(labels))})
    savemat(os.path.join(dataset_dir, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    savemat(
        os.path.join(dataset_dir, "setid.mat"),
        {"trnid": np.array([[1]]), "valid": np.array([[2]]), "tstid": np.array([[3]])},
    )
    with open(os.path.join(dataset_dir, "cat_to_name.json"), "w") as f:
        json.dump({"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}, f)


def _class_folder_archive(path, top, classes, per_class, extra=None):
    files = {f"{top}/{c}/{c}_{i + 1}.jpg": JPEG for c in classes for i in range(per_class)}
    files.update(extra or {})
    (_zip if path.endswith(".zip") else _tar)(path, files)


def make_food101(root, per_class=10):
    _class_folder_archive(
        os.path.join(root, "food-101.tar.gz"),
        "food-101/images",
        ["apple_pie", "baby_back_ribs", "baklava"],
        per_class,
        {"food-101/meta/classes.txt": _text(["apple_pie", "baby_back_ribs", "baklava"])},
    )


def make_dtd(root, per_class=10):
    _class_folder_archive(
        os.path.join(root, "dtd-r1.0.1.tar.gz"),
        "dtd/images",
        ["banded", "blotchy", "braided"],
        per_class,
        {"dtd/labels/train1.txt": _text(["banded/banded_1.jpg"])},
    )


def make_eurosat(root, per_class=10):
    _class_folder_archive(os.path.join(root, "EuroSAT.zip"), "2750", ["AnnualCrop", "Highway", "SeaLake"], per_class)


AIRCRAFT = ["707-320", "A300B4", "F-16A/B", "Cessna 172"]  # file order, not sorted


def make_fgvc_aircraft(root, train=6, val=3, test=3):
    files, image_id = {}, 1000000
    lists = {"train": [], "val": [], "test": []}
    for variant in AIRCRAFT:
        for part, n in (("train", train), ("val", val), ("test", test)):
            for _ in range(n):
                image_id += 1
                files[f"fgvc-aircraft-2013b/data/images/{image_id}.jpg"] = JPEG
                lists[part].append(f"{image_id} {variant}")
    for part, lines in lists.items():
        files[f"fgvc-aircraft-2013b/data/images_variant_{part}.txt"] = _text(lines)
    files["fgvc-aircraft-2013b/data/variants.txt"] = _text(AIRCRAFT)
    _tar(os.path.join(root, "fgvc-aircraft-2013b.tar.gz"), files)


SUN = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]


def make_sun397(root, train=10, test=3):
    images, tr, te = {}, [], []
    for cat in SUN:
        for i in range(train + test):
            rel = f"{cat}/sun_{i:04d}.jpg"
            images[f"SUN397{rel}"] = JPEG
            (tr if i < train else te).append(rel)
    images["SUN397/ClassName.txt"] = _text(SUN)
    _tar(os.path.join(root, "SUN397.tar.gz"), images)
    _zip(
        os.path.join(root, "Partitions.zip"),
        {"ClassName.txt": _text(SUN), "Training_01.txt": _text(tr), "Testing_01.txt": _text(te)},
    )


UCF = ["ApplyEyeMakeup", "PlayingDaf", "YoYo"]


def make_ucf101(root, train=10, test=3):
    dataset_dir = os.path.join(root, "ucf101")
    os.makedirs(dataset_dir)
    frames, tr, te = {}, [], []
    for k, action in enumerate(UCF):
        folder = {"ApplyEyeMakeup": "Apply_Eye_Makeup", "PlayingDaf": "Playing_Daf", "YoYo": "Yo_Yo"}[action]
        for i in range(train + test):
            video = f"v_{action}_g{i + 1:02d}_c01"
            frames[f"UCF-101-midframes/{folder}/{video}.jpg"] = JPEG
            (tr if i < train else te).append(f"{action}/{video}.avi" + (f" {k + 1}" if i < train else ""))
    _zip(os.path.join(dataset_dir, "UCF-101-midframes.zip"), frames)
    _zip(
        os.path.join(dataset_dir, "UCF101TrainTestSplits-RecognitionTask.zip"),
        {
            "ucfTrainTestlist/classInd.txt": _text([f"{i + 1} {a}" for i, a in enumerate(UCF)]),
            "ucfTrainTestlist/trainlist01.txt": _text(tr),
            "ucfTrainTestlist/testlist01.txt": _text(te),
        },
    )


WNIDS = ["n01440764", "n01443537", "n01484850"]  # tench, goldfish, great white shark


def make_imagenet(root, train=10, val=3):
    dataset_dir = os.path.join(root, "imagenet")
    os.makedirs(dataset_dir)
    outer = {}
    for wnid in WNIDS:
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as t:
            for i in range(train):
                info = tarfile.TarInfo(f"{wnid}_{i}.JPEG")
                info.size = len(JPEG)
                t.addfile(info, io.BytesIO(JPEG))
        outer[f"{wnid}.tar"] = inner.getvalue()
    _tar(os.path.join(dataset_dir, "ILSVRC2012_img_train.tar"), outer, mode="w")
    # the devkit numbers synsets in its own order (ILSVRC2012_ID), not by wnid
    ids = {WNIDS[2]: 1, WNIDS[0]: 2, WNIDS[1]: 3}
    truth = [ids[WNIDS[i % 3]] for i in range(3 * val)]
    _tar(
        os.path.join(dataset_dir, "ILSVRC2012_img_val.tar"),
        {f"ILSVRC2012_val_{i + 1:08d}.JPEG": JPEG for i in range(len(truth))},
        mode="w",
    )
    synsets = np.zeros((len(ids), 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for k, (wnid, sid) in enumerate(sorted(ids.items(), key=lambda kv: kv[1])):
        synsets[k, 0] = (np.array([[sid]], dtype=np.uint16), np.array([wnid]), np.array(["fish"]))
    scratch = os.path.join(root, "meta.mat")
    savemat(scratch, {"synsets": synsets})
    _tar(
        os.path.join(dataset_dir, "ILSVRC2012_devkit_t12.tar.gz"),
        {
            "ILSVRC2012_devkit_t12/data/meta.mat": open(scratch, "rb").read(),
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": _text(map(str, truth)),
        },
    )
    os.remove(scratch)
    return truth


def make_imagenet_a(root, per_class=3):
    files = {f"imagenet-a/{w}/{i}.jpg": JPEG for w in ("n01498041", "n01531178") for i in range(per_class)}
    files["imagenet-a/README.txt"] = b"ImageNet-A"
    _tar(os.path.join(root, "imagenet-a.tar"), files, mode="w")


def make_imagenet_r(root, per_class=3):
    _tar(
        os.path.join(root, "imagenet-r.tar"),
        {
            f"imagenet-r/{w}/art_{i}.jpg": JPEG
            for w in ("n01443537", "n01833805", "n02007558")
            for i in range(per_class)
        },
        mode="w",
    )


def make_imagenet_sketch(root, per_class=2):
    _zip(
        os.path.join(root, "ImageNet-Sketch.zip"),
        {f"sketch/{w}/sketch_{i}.JPEG": JPEG for w in WNIDS for i in range(per_class)},
    )


def make_imagenet_v2(root):
    _tar(
        os.path.join(root, "imagenetv2-matched-frequency.tar.gz"),
        {f"imagenetv2-matched-frequency-format-val/{c}/img{c}.jpeg": JPEG for c in range(1000)},
    )


# ------------------------------------------------------------------ the expectations

#: name -> (builder, expected class names in label order, (train, val, test) counts)
CASES = {
    "caltech101": (make_caltech101, ["face", "leopard", "accordion", "airplane"], (20, 8, 12)),
    "oxford_pets": (make_oxford_pets, ["abyssinian", "american_bulldog", "bengal"], (24, 6, 9)),
    "stanford_cars": (
        make_stanford_cars,
        ["2000 AM General Hummer SUV", "2012 Tesla Model S Sedan", "2012 smart fortwo Convertible"],
        (24, 6, 9),
    ),
    "oxford_flowers": (
        make_oxford_flowers,
        ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"],
        (15, 6, 9),
    ),
    "food101": (make_food101, ["apple_pie", "baby_back_ribs", "baklava"], (15, 6, 9)),
    "fgvc_aircraft": (make_fgvc_aircraft, AIRCRAFT, (24, 12, 12)),
    "sun397": (make_sun397, ["abbey", "outdoor apartment_building", "shop bakery"], (24, 6, 9)),
    "dtd": (make_dtd, ["banded", "blotchy", "braided"], (15, 6, 9)),
    "eurosat": (make_eurosat, ["Annual Crop Land", "Highway or Road", "Sea or Lake"], (15, 6, 9)),
    "ucf101": (make_ucf101, ["Apply_Eye_Makeup", "Playing_Daf", "Yo_Yo"], (24, 6, 9)),
    "imagenet": (make_imagenet, ["tench", "goldfish", "great white shark"], (30, 9, 9)),
}


def _cfg(root, name, shots=-1, subsample="all", seed=1):
    cfg = get_cfg()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(root), name
    cfg.DATASET.NUM_SHOTS, cfg.DATASET.SUBSAMPLE_CLASSES, cfg.SEED = shots, subsample, seed
    return cfg


def _prepare(root, name):
    out = io.StringIO()
    dataset = prep.prepare(str(root), name, out=out)
    return dataset, out.getvalue()


def _rel(dataset, items):
    return [(os.path.relpath(d.impath, dataset.dataset_dir), d.label, d.classname) for d in items]


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepare_and_read(tmp_path, name):
    build, classnames, (n_train, n_val, n_test) = CASES[name]
    build(str(tmp_path))
    dataset, summary = _prepare(tmp_path, name)
    assert dataset.classnames == classnames
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (n_train, n_val, n_test)
    assert f"{name}: {len(classnames)} classes, train {n_train}, val {n_val}, test {n_test}" in summary
    for split in (dataset.train_x, dataset.val, dataset.test):
        assert {d.label for d in split} == set(range(len(classnames)))
        assert all(d.classname == classnames[d.label] and os.path.isfile(d.impath) for d in split)
    if name != "imagenet":  # ImageNet's val doubles as its test set, as in CoOp
        assert not {d.impath for d in dataset.train_x} & {d.impath for d in dataset.val + dataset.test}
        assert not {d.impath for d in dataset.val} & {d.impath for d in dataset.test}
        assert os.path.isfile(os.path.join(dataset.dataset_dir, DATASETS.get(name).split_file))

    shot = build_dataset(_cfg(tmp_path, name, shots=2))
    counts = np.bincount([d.label for d in shot.train_x], minlength=len(classnames))
    assert counts.tolist() == [2] * len(classnames)
    if name == "imagenet":  # CoOp's ImageNet validates on the whole val = test set
        assert shot.val == shot.test and len(shot.val) == n_val
    else:
        counts = np.bincount([d.label for d in shot.val], minlength=len(classnames))
        assert counts.tolist() == [2] * len(classnames)
    assert len(shot.test) == n_test

    base = build_dataset(_cfg(tmp_path, name, shots=2, subsample="base"))
    new = build_dataset(_cfg(tmp_path, name, shots=2, subsample="new"))
    half = -(-len(classnames) // 2)
    assert base.classnames == classnames[:half] and new.classnames == classnames[half:]
    assert {d.label for d in new.test} == set(range(len(classnames) - half))
    assert all(d.classname == new.classnames[d.label] for d in new.test + new.train_x)


@pytest.mark.parametrize("name", ["oxford_pets", "eurosat"])
def test_generated_split_is_deterministic(tmp_path, name):
    build = CASES[name][0]
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        root.mkdir()
        build(str(root))
        _prepare(root, name)
    split = DATASETS.get(name).split_file
    folder = DATASETS.get(name).folder
    assert (first / folder / split).read_bytes() == (second / folder / split).read_bytes()
    (first / folder / split).unlink()
    _prepare(first, name)  # regenerated from the extracted folders
    assert (first / folder / split).read_bytes() == (second / folder / split).read_bytes()
    a = build_dataset(_cfg(first, name, shots=2, seed=3))
    b = build_dataset(_cfg(second, name, shots=2, seed=3))
    assert _rel(a, a.train_x) == _rel(b, b.train_x)
    c = build_dataset(_cfg(second, name, shots=2, seed=4))
    assert _rel(a, a.train_x) != _rel(c, c.train_x)


def test_fewshot_cache_survives_moving_the_root(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    make_eurosat(str(tmp_path / "data"))
    _prepare(tmp_path / "data", "eurosat")
    first = build_dataset(_cfg(tmp_path / "data", "eurosat", shots=2))
    cache = tmp_path / "data" / "eurosat" / "split_fewshot" / "mmprompt_shot_2-seed_1.json"
    assert cache.is_file()
    rows = json.loads(cache.read_text())
    assert all(not os.path.isabs(r[0]) for r in rows["train"])
    shutil.move(str(tmp_path / "data"), str(tmp_path / "moved"))

    def no_sampling(*args, **kwargs):
        raise AssertionError("the cached few-shot split should have been read")

    monkeypatch.setattr(data_base, "sample_fewshot", no_sampling)
    moved = build_dataset(_cfg(tmp_path / "moved", "eurosat", shots=2))
    assert _rel(moved, moved.train_x) == _rel(first, first.train_x)
    assert all(d.impath.startswith(str(tmp_path / "moved")) and os.path.isfile(d.impath) for d in moved.train_x)


def test_stale_fewshot_cache_is_refused(tmp_path):
    make_dtd(str(tmp_path))
    _prepare(tmp_path, "dtd")
    build_dataset(_cfg(tmp_path, "dtd", shots=1))
    split = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    rows = json.loads(split.read_text())
    rows["train"] = rows["train"][::2]
    split.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="split file changed.*Delete"):
        build_dataset(_cfg(tmp_path, "dtd", shots=1))


def test_user_split_file_is_respected(tmp_path):
    make_dtd(str(tmp_path))
    dataset_dir = tmp_path / "dtd"
    _prepare(tmp_path, "dtd")
    custom = {
        "train": [["banded/banded_1.jpg", 0, "banded"], ["braided/braided_2.jpg", 1, "braided"]],
        "val": [["banded/banded_3.jpg", 0, "banded"]],
        "test": [["braided/braided_4.jpg", 1, "braided"]],
    }
    (dataset_dir / "split_zhou_DescribableTextures.json").write_text(json.dumps(custom))
    dataset = build_dataset(_cfg(tmp_path, "dtd"))
    assert dataset.classnames == ["banded", "braided"]
    assert [os.path.basename(d.impath) for d in dataset.train_x] == ["banded_1.jpg", "braided_2.jpg"]
    assert len(dataset.val) == len(dataset.test) == 1


def test_already_extracted_archives_are_moved_into_place(tmp_path):
    make_fgvc_aircraft(str(tmp_path))
    make_eurosat(str(tmp_path))
    for archive in ("fgvc-aircraft-2013b.tar.gz", "EuroSAT.zip"):
        shutil.unpack_archive(str(tmp_path / archive), str(tmp_path))
        (tmp_path / archive).unlink()
    aircraft, _ = _prepare(tmp_path, "fgvc_aircraft")
    eurosat, _ = _prepare(tmp_path, "eurosat")
    assert aircraft.classnames == AIRCRAFT and len(aircraft.test) == 12
    assert (tmp_path / "fgvc_aircraft" / "variants.txt").is_file() and not (tmp_path / "2750").exists()
    assert eurosat.num_classes == 3 and len(eurosat.train_x) == 15


def test_imagenet_flat_val_folder_is_sorted_in_place(tmp_path):
    truth = make_imagenet(str(tmp_path))
    dataset_dir = tmp_path / "imagenet"
    (dataset_dir / "images").mkdir()
    shutil.unpack_archive(str(dataset_dir / "ILSVRC2012_img_val.tar"), str(dataset_dir / "images" / "val"))
    (dataset_dir / "ILSVRC2012_img_val.tar").unlink()
    dataset, _ = _prepare(tmp_path, "imagenet")
    ids = {1: WNIDS[2], 2: WNIDS[0], 3: WNIDS[1]}
    for i, class_id in enumerate(truth):
        assert (dataset_dir / "images" / "val" / ids[class_id] / f"ILSVRC2012_val_{i + 1:08d}.JPEG").is_file()
    assert len(dataset.test) == 9 and dataset.classnames == ["tench", "goldfish", "great white shark"]


def test_imagenet_variants(tmp_path):
    for make in (make_imagenet_a, make_imagenet_r, make_imagenet_sketch, make_imagenet_v2):
        make(str(tmp_path))
    table = dict(imagenet_classnames_table())
    a, out = _prepare(tmp_path, "imagenet_a")
    assert a.classnames == [table["n01498041"], table["n01531178"]] and len(a.test) == 6
    assert "imagenet_a: 2 classes, test 6" in out
    r, _ = _prepare(tmp_path, "imagenet_r")
    assert r.classnames == ["goldfish", table["n01833805"], "flamingo"] and sorted({d.label for d in r.test}) == [
        0,
        1,
        2,
    ]
    sketch, _ = _prepare(tmp_path, "imagenet_sketch")
    assert sketch.classnames == ["tench", "goldfish", "great white shark"] and len(sketch.test) == 6
    v2, _ = _prepare(tmp_path, "imagenet_v2")
    assert v2.num_classes == 1000 and len(v2.test) == 1000 and v2.test[999].classname == "toilet paper"
    cross = build_test_dataset(_cfg(tmp_path, "imagenet", shots=4, subsample="base"), "imagenet_r")
    assert cross.num_classes == 3 and len(cross.test) == 9
    shutil.rmtree(tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "7")
    with pytest.raises(DataError, match=r"missing \['7'\]"):
        build_test_dataset(_cfg(tmp_path, "imagenet"), "imagenet_v2")


def test_imagenet_classnames_table_is_clip_names_in_wnid_order():
    table = imagenet_classnames_table()
    assert len(table) == 1000 and [w for w, _ in table] == sorted(w for w, _ in table)
    assert table[0] == ("n01440764", "tench") and table[-1][1] == "toilet paper"


# ------------------------------------------------------------------ bad inputs


def test_missing_root_and_missing_dataset(tmp_path, capsys):
    with pytest.raises(PrepError, match="does not exist"):
        prep.main(["--root", str(tmp_path / "nope"), "--dataset", "dtd"])
    with pytest.raises(PrepError, match=r"dtd-r1.0.1.tar.gz.*--download"):
        prep.main(["--root", str(tmp_path), "--dataset", "dtd"])
    with pytest.raises(DatasetMissingError) as e:
        build_dataset(_cfg(tmp_path, "oxford_pets"))
    message = str(e.value)
    assert str(tmp_path / "oxford_pets") in message and "split_zhou_OxfordPets.json" in message
    assert "prepare_clip_datasets.py --root" in message and "--dataset oxford_pets" in message
    with pytest.raises(DatasetMissingError, match="classnames.txt"):
        build_dataset(_cfg(tmp_path, "imagenet"))
    assert prep.main(["--root", str(tmp_path), "--dataset", "all"]) == 1
    assert "0 of 15 datasets prepared" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing partial


def test_script_prints_errors_without_traceback(tmp_path):
    import subprocess
    import sys

    script = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets_prep", "prepare_clip_datasets.py"
    )
    result = subprocess.run(
        [sys.executable, script, "--root", str(tmp_path / "nope"), "--dataset", "dtd"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: --root {tmp_path / 'nope'} does not exist")


def test_imagenet_download_says_where_to_put_files(tmp_path, capsys):
    with pytest.raises(PrepError, match="ILSVRC2012_img_train.tar"):
        prep.main(["--root", str(tmp_path), "--dataset", "imagenet", "--download"])
    assert "image-net.org" in capsys.readouterr().out


def test_truncated_archive_writes_nothing(tmp_path):
    make_food101(str(tmp_path))
    archive = tmp_path / "food-101.tar.gz"
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(PrepError, match="truncated or corrupt"):
        _prepare(tmp_path, "food101")
    assert sorted(os.listdir(tmp_path)) == ["food-101.tar.gz"]


def test_half_extracted_folder_is_named(tmp_path):
    make_oxford_pets(str(tmp_path))
    _prepare(tmp_path, "oxford_pets")
    (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").unlink()
    (tmp_path / "oxford_pets" / "images" / "Bengal_3.jpg").unlink()
    with pytest.raises(DatasetMissingError, match=r"1 of the 39 images.*half-extracted"):
        _prepare(tmp_path, "oxford_pets")
    assert not (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").exists()


def test_escaping_member_is_refused(tmp_path):
    _tar(str(tmp_path / "dtd-r1.0.1.tar.gz"), {"dtd/images/banded/a.jpg": JPEG, "dtd/../../evil.jpg": JPEG})
    with pytest.raises(PrepError, match="escapes the target"):
        _prepare(tmp_path, "dtd")
    assert sorted(os.listdir(tmp_path)) == ["dtd-r1.0.1.tar.gz"]
    assert not (tmp_path.parent / "evil.jpg").exists()


def _symlink_tar(path, link_target):
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo("dtd/images/banded/a.jpg")
        info.size = len(JPEG)
        t.addfile(info, io.BytesIO(JPEG))
        link = tarfile.TarInfo("dtd/images/banded/b.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, link_target
        t.addfile(link)


@pytest.mark.parametrize("kind", ["absolute_zip", "dotdot_zip", "symlink_out", "absolute_symlink"])
def test_unsafe_members_are_refused(tmp_path, kind):
    if kind == "absolute_zip":
        _zip(str(tmp_path / "EuroSAT.zip"), {"2750/A/a.jpg": JPEG, "/tmp/evil.jpg": JPEG})
    elif kind == "dotdot_zip":
        _zip(str(tmp_path / "EuroSAT.zip"), {"2750/A/a.jpg": JPEG, "2750/../../evil.jpg": JPEG})
    else:
        _symlink_tar(
            str(tmp_path / "dtd-r1.0.1.tar.gz"), "../../../../../etc/passwd" if kind == "symlink_out" else "/etc/passwd"
        )
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(PrepError, match="refusing"):
        _prepare(tmp_path, "eurosat" if kind.endswith("zip") else "dtd")
    assert sorted(os.listdir(tmp_path)) == before


def test_corrupt_image_is_skipped_with_a_warning(tmp_path):
    make_eurosat(str(tmp_path))
    _prepare(tmp_path, "eurosat")
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").unlink()
    (tmp_path / "eurosat" / "2750" / "Highway" / "Highway_4.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="1 undecodable"):
        dataset, summary = _prepare(tmp_path, "eurosat")
    assert "skipped 1 undecodable image(s): 2750/Highway/Highway_4.jpg" in summary
    assert len(dataset.train_x) + len(dataset.val) + len(dataset.test) == 29
    assert not any(d.impath.endswith("Highway_4.jpg") for d in dataset.train_x + dataset.val + dataset.test)


def test_empty_class_is_an_error_and_writes_no_split(tmp_path):
    make_food101(str(tmp_path))
    _prepare(tmp_path, "food101")
    (tmp_path / "food-101" / "split_zhou_Food101.json").unlink()
    (tmp_path / "food-101" / "images" / "churros").mkdir()
    with pytest.raises(DataError, match="churros holds no images"):
        _prepare(tmp_path, "food101")
    assert not (tmp_path / "food-101" / "split_zhou_Food101.json").exists()


def test_class_smaller_than_the_shots_is_kept_whole_with_a_warning(tmp_path):
    make_oxford_flowers(str(tmp_path))
    _prepare(tmp_path, "oxford_flowers")
    with pytest.warns(
        UserWarning,
        match=r"6-shot sampling of the train split: 3 class\(es\).*kept whole, as "
        r"Dassl does: 0 'pink primrose' \(5\)",
    ):
        shot = build_dataset(_cfg(tmp_path, "oxford_flowers", shots=6))
    full = build_dataset(_cfg(tmp_path, "oxford_flowers"))
    assert sorted(d.impath for d in shot.train_x) == sorted(d.impath for d in full.train_x)


def test_ucf_videos_need_a_decoder_or_the_midframes_archive(tmp_path):
    try:
        import cv2  # noqa: F401

        pytest.skip("a video decoder is installed")
    except ImportError:
        pass
    try:
        import av  # noqa: F401

        pytest.skip("a video decoder is installed")
    except ImportError:
        pass
    make_ucf101(str(tmp_path))
    (tmp_path / "ucf101" / "UCF-101-midframes.zip").unlink()
    (tmp_path / "ucf101" / "UCF-101" / "YoYo").mkdir(parents=True)
    (tmp_path / "ucf101" / "UCF-101" / "YoYo" / "v_YoYo_g01_c01.avi").write_bytes(b"RIFF")
    with pytest.raises(PrepError, match="neither OpenCV nor PyAV"):
        _prepare(tmp_path, "ucf101")
    assert not (tmp_path / "ucf101" / "UCF-101-midframes").exists()


def test_download_resumes_and_checks_sha256(tmp_path):
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from datasets_prep._common import download

    payload = bytes(range(256)) * 64
    ranges = []

    class RangeHandler(BaseHTTPRequestHandler):
        def do_GET(self):
            start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
            ranges.append(start)
            body = payload[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/archive.tar.gz"
        dest = tmp_path / "archive.tar.gz"
        (tmp_path / "archive.tar.gz.part").write_bytes(payload[:1000])  # an interrupted earlier run
        download(url, str(dest), sha256=hashlib.sha256(payload).hexdigest())
        assert ranges == [1000] and dest.read_bytes() == payload
        with pytest.raises(PrepError, match="checksum mismatch"):
            download(url, str(tmp_path / "other.tar.gz"), sha256="0" * 64)
        assert not (tmp_path / "other.tar.gz").exists() and not (tmp_path / "other.tar.gz.part").exists()
    finally:
        server.shutdown()


def test_ucf_middle_frames_from_videos(tmp_path, monkeypatch):
    """The folder logic of frame extraction, with the decoder replaced (none may be installed)."""
    make_ucf101(str(tmp_path))
    dataset_dir = tmp_path / "ucf101"
    (dataset_dir / "UCF-101-midframes.zip").unlink()
    with zipfile.ZipFile(dataset_dir / "UCF101TrainTestSplits-RecognitionTask.zip") as z:
        lines = [
            line
            for part in ("trainlist01", "testlist01")
            for line in z.read(f"ucfTrainTestlist/{part}.txt").decode().split("\n")
        ]
    for line in lines:
        if line.strip():
            video = dataset_dir / "UCF-101" / line.split()[0]
            video.parent.mkdir(parents=True, exist_ok=True)
            video.write_bytes(b"RIFF")
    decoded = []
    monkeypatch.setattr(
        prep, "_video_middle_frame_reader", lambda: lambda path: decoded.append(path) or Image.new("RGB", (8, 8))
    )
    dataset, _ = _prepare(tmp_path, "ucf101")
    assert len(decoded) == 39 and dataset.classnames == ["Apply_Eye_Makeup", "Playing_Daf", "Yo_Yo"]
    assert (dataset_dir / "UCF-101-midframes" / "Yo_Yo" / "v_YoYo_g01_c01.jpg").is_file()
