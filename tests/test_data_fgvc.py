"""FGVC prep + readers end to end on miniature copies of the official downloads."""

import io
import json
import os
import random
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from datasets_prep import prepare_fgvc as prep
from datasets_prep._common import PrepError
from mmprompt.config import get_cfg
from mmprompt.data.base import DataError, DatasetMissingError
from mmprompt.data.build import build_dataset
from mmprompt.registry import DATASETS

NUM_TRAIN, NUM_TEST = 20, 3  # per class; 10% of 20 -> 2 val images per class


def jpeg(path, shade=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(path, "JPEG")


def tar_folder(archive, base, names):
    """Pack ``base/<name>`` entries under their own names, as the official archives do."""
    with tarfile.open(archive, "w:gz" if archive.endswith("gz") else "w") as t:
        for n in names:
            t.add(os.path.join(base, n), arcname=n)
    for n in names:
        p = os.path.join(base, n)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def cell_column(strings):
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


def cars_annos(pairs):
    dt = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    arr = np.zeros((1, len(pairs)), dtype=dt)
    for i, (fname, label) in enumerate(pairs):
        arr[0, i] = (np.array([[1]]), np.array([[1]]), np.array([[7]]), np.array([[7]]), np.array([[label]]), fname)
    return arr


# ------------------------------------------------------------------ miniature official downloads


def make_image_list_dataset(folder, class_ids, class_names, folder_name, hierarchy_extra=(), uuid_ids=False):
    """CUB / NABirds: images/, images.txt, image_class_labels.txt, train_test_split.txt, classes.txt."""
    images, labels, split = [], [], []
    n = 0
    for cid, cname in zip(class_ids, class_names):
        for k in range(NUM_TRAIN + NUM_TEST):
            n += 1
            image_id = f"{n:04x}-ab12-cd34" if uuid_ids else str(n)
            rel = f"{folder_name(cid, cname)}/img_{cid}_{k:03d}.jpg"
            jpeg(os.path.join(folder, "images", rel), n)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            split.append(f"{image_id} {1 if k < NUM_TRAIN else 0}")
    write_lines(folder, "images.txt", images)
    write_lines(folder, "image_class_labels.txt", labels)
    write_lines(folder, "train_test_split.txt", split)
    write_lines(
        folder, "classes.txt", [f"{c} {n}" for c, n in list(hierarchy_extra) + list(zip(class_ids, class_names))]
    )


def write_lines(folder, name, lines):
    with open(os.path.join(folder, name), "w") as f:
        f.write("\n".join(lines) + "\n")


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def make_cub(root, archived=True):
    folder = os.path.join(root, "CUB_200_2011")
    make_image_list_dataset(folder, [1, 2, 3], CUB_CLASSES, lambda cid, name: name)
    if archived:  # CUB_200_2011.tgz holds CUB_200_2011/ and attributes.txt
        with open(os.path.join(root, "attributes.txt"), "w") as f:
            f.write("1 has_bill_shape::curved\n")
        tar_folder(os.path.join(root, "CUB_200_2011.tgz"), root, ["CUB_200_2011", "attributes.txt"])


def make_nabirds(root):
    folder = os.path.join(root, "nabirds")
    make_image_list_dataset(
        folder,
        [295, 296, 313],
        ["Black-footed Albatross", "Laysan Albatross", "Wood Duck"],
        lambda cid, name: f"{cid:04d}",
        hierarchy_extra=[(0, "Birds"), (1, "Perching Birds")],
        uuid_ids=True,
    )
    tar_folder(os.path.join(root, "nabirds.tar.gz"), root, ["nabirds"])


def make_flowers(root):
    labels, n = [], 0
    per_class = {"trnid": [], "valid": [], "tstid": []}
    for c in (1, 2, 3):
        for k in range(12):
            n += 1
            jpeg(os.path.join(root, "jpg", f"image_{n:05d}.jpg"), n)
            labels.append(c)
            per_class["trnid" if k < 4 else "valid" if k < 8 else "tstid"].append(n)
    tar_folder(os.path.join(root, "102flowers.tgz"), root, ["jpg"])
    savemat(os.path.join(root, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    savemat(os.path.join(root, "setid.mat"), {k: np.array([v], dtype=np.uint16) for k, v in per_class.items()})


DOG_FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]


def make_dogs(root):
    staging = os.path.join(root, "dogs_raw")
    lists = {"train": ([], []), "test": ([], [])}
    for label, folder in enumerate(DOG_FOLDERS, start=1):
        for k in range(NUM_TRAIN + NUM_TEST):
            rel = f"{folder}/{folder.split('-')[0]}_{k}.jpg"
            jpeg(os.path.join(staging, "Images", rel), k)
            files, labels = lists["train" if k < NUM_TRAIN else "test"]
            files.append(rel)
            labels.append(label)
    for split, (files, labels) in lists.items():
        savemat(
            os.path.join(staging, f"{split}_list.mat"),
            {
                "file_list": cell_column(files),
                "labels": np.array(labels, dtype=float)[:, None],
                "annotation_list": cell_column([f[:-4] for f in files]),
            },
        )
    savemat(os.path.join(staging, "file_list.mat"), {"file_list": cell_column(lists["train"][0] + lists["test"][0])})
    tar_folder(os.path.join(root, "images.tar"), staging, ["Images"])
    tar_folder(os.path.join(root, "lists.tar"), staging, ["file_list.mat", "train_list.mat", "test_list.mat"])
    os.rmdir(staging)


def make_cars(root):
    folder = os.path.join(root, "Stanford-cars")  # the user extracted everything already
    train, test, n = [], [], 0
    for label in (1, 2, 3):
        for k in range(NUM_TRAIN + NUM_TEST):
            n += 1
            name = f"{n:05d}.jpg"
            if k < NUM_TRAIN:
                jpeg(os.path.join(folder, "cars_train", name), n)
                train.append((name, label))
            else:
                jpeg(os.path.join(folder, "cars_test", name), n)
                test.append((name, label))
    os.makedirs(os.path.join(folder, "devkit"))
    savemat(os.path.join(folder, "devkit", "cars_train_annos.mat"), {"annotations": cars_annos(train)})
    savemat(
        os.path.join(folder, "devkit", "cars_test_annos.mat"), {"annotations": cars_annos([(f, 0) for f, _ in test])}
    )
    names = np.empty((1, 3), dtype=object)
    names[0, :] = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Tesla Model S Sedan 2012"]
    savemat(os.path.join(folder, "devkit", "cars_meta.mat"), {"class_names": names})
    savemat(os.path.join(root, "cars_test_annos_withlabels.mat"), {"annotations": cars_annos(test)})


MAKERS = {"cub": make_cub, "nabirds": make_nabirds, "flowers": make_flowers, "dogs": make_dogs, "cars": make_cars}
EXPECTED = {  # classnames, (train, val, test) sizes
    "cub": (["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"], (54, 6, 9)),
    "nabirds": (["Black-footed Albatross", "Laysan Albatross", "Wood Duck"], (54, 6, 9)),
    "flowers": (["flower 1", "flower 2", "flower 3"], (12, 12, 12)),
    "dogs": (["Chihuahua", "Japanese spaniel", "Maltese dog"], (54, 6, 9)),
    "cars": (["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Tesla Model S Sedan 2012"], (54, 6, 9)),
}


def make_cfg(root, name, **dataset):
    cfg = get_cfg()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    for k, v in dataset.items():
        cfg.DATASET[k] = v
    return cfg


def prepare(root, name, **kw):
    out = io.StringIO()
    ds = prep.prepare(str(root), name, out=out, **kw)
    return ds, out.getvalue()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_prep_then_reader_end_to_end(tmp_path, name):
    MAKERS[name](str(tmp_path))
    ds, summary = prepare(tmp_path, name)
    classnames, sizes = EXPECTED[name]
    assert f"{name}: 3 classes, train {sizes[0]}, val {sizes[1]}, test {sizes[2]}" in summary
    assert "note: the official" in summary  # 3 classes, not the real count
    read = build_dataset(make_cfg(tmp_path, name))
    assert read.classnames == classnames and read.num_classes == 3
    assert (len(read.train_x), len(read.val), len(read.test)) == sizes
    for split in (read.train_x, read.val, read.test):
        assert [sum(d.label == c for d in split) for c in range(3)] == [len(split) // 3] * 3
        assert all(os.path.isfile(d.impath) for d in split)
    assert not {d.impath for d in read.train_x} & {d.impath for d in read.val}
    # VPT layout: {relative path: class id from 0}
    info = prep.FGVC_DATASETS[name]
    dataset_dir = tmp_path / info.folder
    train_json = json.loads((dataset_dir / "train.json").read_text())
    assert all(not os.path.isabs(p) and isinstance(y, int) and 0 <= y < 3 for p, y in train_json.items())
    assert sorted(set(train_json.values())) == [0, 1, 2]
    assert json.loads((dataset_dir / "classnames.json").read_text()) == classnames
    # regenerating gives byte-identical split files
    before = {f: (dataset_dir / f).read_bytes() for f in ("train.json", "val.json", "test.json")}
    prepare(tmp_path, name, overwrite=True)
    assert before == {f: (dataset_dir / f).read_bytes() for f in before}


def test_registry_names():
    assert {"cub", "nabirds", "flowers", "dogs", "cars"} <= set(DATASETS.names())


def test_nabirds_leaf_classes_are_renumbered_in_official_id_order(tmp_path):
    make_nabirds(str(tmp_path))
    prepare(tmp_path, "nabirds")
    test = json.loads((tmp_path / "nabirds" / "test.json").read_text())
    assert {p.split("/")[0]: y for p, y in test.items()} == {"0295": 0, "0296": 1, "0313": 2}


def test_flowers_uses_the_official_val_and_cat_to_name(tmp_path):
    make_flowers(str(tmp_path))
    os.makedirs(tmp_path / "OxfordFlower")
    (tmp_path / "OxfordFlower" / "cat_to_name.json").write_text(
        json.dumps({"1": "pink primrose", "2": "globe thistle", "3": "blanket flower"})
    )
    ds, _ = prepare(tmp_path, "flowers")
    val = json.loads((tmp_path / "OxfordFlower" / "val.json").read_text())
    # setid.mat 'valid' = images 5-8, 17-20, 29-32
    assert sorted(val) == [f"jpg/image_{i:05d}.jpg" for i in (*range(5, 9), *range(17, 21), *range(29, 33))]
    assert ds.classnames == ["pink primrose", "globe thistle", "blanket flower"]


def test_val_carving_rules_and_seed(tmp_path):
    # 31 training images: classes of 15, 12 and 4
    train = [(f"c{c}/{k}.jpg", c) for c, n in ((0, 15), (1, 12), (2, 4)) for k in range(n)]
    # vpt: ceil(3.1) = 4 to val; 27 kept by largest remainder (13.06, 10.45, 3.48 -> 13, 10, 3 + 1 for
    # the largest remainder, class 2), so the class of 4 gets no val image, as small NABirds classes
    kept, val = prep.carve_val(train, 10, seed=0)
    assert [sum(y == c for _, y in val) for c in range(3)] == [2, 2, 0]
    kept, val = prep.carve_val(train, 10, seed=0, rule="per_class")  # 1.5 -> 2, 1.2 -> 1, 0.4 -> at least 1
    assert [sum(y == c for _, y in val) for c in range(3)] == [2, 1, 1]
    small = train[:15] + [("c1/lone.jpg", 1)]  # a lone image stays in train under both rules
    for rule in prep.VAL_CARVES:
        kept, val = prep.carve_val(small, 10, seed=0, rule=rule)
        assert sorted(kept + val) == sorted(small) and ("c1/lone.jpg", 1) in kept
        assert [x for x in small if x in kept] == kept  # official order kept
        assert prep.carve_val(small, 10, seed=0, rule=rule) == (kept, val)
        assert any(prep.carve_val(small, 10, seed=s, rule=rule)[1] != val for s in range(1, 5))
    with pytest.raises(PrepError, match="--val-carve must be one of vpt, per_class"):
        prep.carve_val(train, 10, seed=0, rule="random")


def test_stratified_counts_break_ties_with_the_seed():
    counts = {0: 10, 1: 10, 2: 10}  # 27 of 30 kept: 9 each, nothing tied
    assert prep.stratified_train_counts(counts, 27, random.Random(0)) == {0: 9, 1: 9, 2: 9}
    picks = {tuple(sorted(prep.stratified_train_counts(counts, 28, random.Random(s)).items())) for s in range(20)}
    assert all(sorted(v for _, v in p) == [9, 9, 10] for p in picks) and len(picks) == 3


def test_few_shot_counts_cache_and_moved_root(tmp_path):
    root = tmp_path / "data"
    os.makedirs(root)
    make_cub(str(root))
    prepare(root, "cub")
    cfg = make_cfg(root, "cub", NUM_SHOTS=2)
    ds = build_dataset(cfg)
    assert [sum(d.label == c for d in ds.train_x) for c in range(3)] == [2, 2, 2]
    assert [sum(d.label == c for d in ds.val) for c in range(3)] == [2, 2, 2]
    assert (root / "CUB_200_2011" / "split_fewshot" / "mmprompt_shot_2-seed_1.json").is_file()
    moved = tmp_path / "moved"
    shutil.move(str(root), str(moved))
    again = build_dataset(make_cfg(moved, "cub", NUM_SHOTS=2))
    assert [os.path.relpath(d.impath, moved) for d in again.train_x] == [
        os.path.relpath(d.impath, root) for d in ds.train_x
    ]
    assert all(os.path.isfile(d.impath) for d in again.train_x)
    with pytest.warns(UserWarning, match=r"19-shot sampling of the train split: 3 class\(es\).*kept whole"):
        whole = build_dataset(make_cfg(moved, "cub", NUM_SHOTS=19))
    assert len(whole.train_x) == 54


def test_trainval_option_and_base_novel(tmp_path):
    make_dogs(str(tmp_path))
    prepare(tmp_path, "dogs")
    cfg = make_cfg(tmp_path, "dogs")
    cfg.DATASET.FGVC.TRAINVAL = True
    assert len(build_dataset(cfg).train_x) == 60
    novel = build_dataset(make_cfg(tmp_path, "dogs", SUBSAMPLE_CLASSES="new"))
    assert novel.classnames == ["Maltese dog"] and {d.label for d in novel.test} == {0}  # base = first ceil(3/2)


def test_existing_split_files_are_kept(tmp_path):
    make_cars(str(tmp_path))
    folder = tmp_path / "Stanford-cars"
    # a user's own VPT split files (no classnames.json): one image per split
    for split, rel in (
        ("train", "cars_train/00001.jpg"),
        ("val", "cars_train/00002.jpg"),
        ("test", "cars_test/00021.jpg"),
    ):
        (folder / f"{split}.json").write_text(json.dumps({rel: 0}))
    ds, summary = prepare(tmp_path, "cars")
    assert "kept the split files" in summary
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (1, 1, 1) and ds.classnames == ["0"]


# ------------------------------------------------------------------ bad inputs


def assert_nothing_written(root, folder):
    d = os.path.join(root, folder)
    assert not any(
        os.path.exists(os.path.join(d, f)) for f in ("train.json", "val.json", "test.json", "classnames.json")
    )
    if os.path.isdir(d):
        assert not [f for f in os.listdir(d) if f.startswith(".")]  # no staged temp files


def test_missing_root_and_missing_files(tmp_path):
    with pytest.raises(PrepError, match="does not exist"):
        prep.main(["--root", str(tmp_path / "nope"), "--dataset", "cub"])
    with pytest.raises(PrepError, match=r"cars: .*lacks cars_train \(cars_train.tgz\), .*The owners' host"):
        prepare(tmp_path, "cars")
    with pytest.raises(PrepError, match=r"nabirds: .*sign-up"):
        prepare(tmp_path, "nabirds")
    assert os.listdir(tmp_path) == []


def test_partial_downloads_extract_nothing(tmp_path):
    make_dogs(str(tmp_path))
    os.remove(tmp_path / "lists.tar")
    with pytest.raises(
        PrepError, match=r"lacks train_list.mat \(lists.tar\). Download lists.tar from .*Nothing was extracted"
    ):
        prepare(tmp_path, "dogs")
    assert not (tmp_path / "Stanford-dogs").exists()


def test_archive_with_escaping_member_is_refused(tmp_path):
    evil = tmp_path / "payload.txt"
    evil.write_text("x")
    with tarfile.open(tmp_path / "CUB_200_2011.tgz", "w:gz") as t:
        t.add(evil, arcname="CUB_200_2011/images.txt")
        t.add(evil, arcname="../escaped.txt")
    os.remove(evil)
    with pytest.raises(PrepError, match="escapes the target"):
        prepare(tmp_path, "cub")
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["CUB_200_2011.tgz"]


def test_half_extracted_images_are_an_error(tmp_path):
    make_cub(str(tmp_path), archived=False)
    os.remove(tmp_path / "CUB_200_2011" / "images" / CUB_CLASSES[1] / "img_2_004.jpg")
    with pytest.raises(PrepError, match="1 of the 69 images listed.*half-extracted"):
        prepare(tmp_path, "cub")
    assert_nothing_written(tmp_path, "CUB_200_2011")


def test_empty_class_is_an_error(tmp_path):
    make_cub(str(tmp_path), archived=False)
    with open(tmp_path / "CUB_200_2011" / "classes.txt", "a") as f:
        f.write("4 004.Groove_billed_Ani\n")
    with pytest.raises(PrepError, match="class.*3 'Groove billed Ani' have no usable training image"):
        prepare(tmp_path, "cub")
    assert_nothing_written(tmp_path, "CUB_200_2011")


def test_corrupt_image_is_skipped_with_a_warning_and_a_count(tmp_path):
    make_cub(str(tmp_path), archived=False)
    bad = tmp_path / "CUB_200_2011" / "images" / CUB_CLASSES[0] / "img_1_000.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="leaving 1 undecodable"):
        ds, summary = prepare(tmp_path, "cub")
    assert "skipped 1 undecodable image(s): 001.Black_footed_Albatross/img_1_000.jpg" in summary
    assert len(ds.train_x) + len(ds.val) == 59 and str(bad) not in {d.impath for d in ds.train_x + ds.val}


def test_inconsistent_annotation_files(tmp_path):
    make_cub(str(tmp_path), archived=False)
    path = tmp_path / "CUB_200_2011" / "train_test_split.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(PrepError, match="train_test_split.txt has no entry for image id 69"):
        prepare(tmp_path, "cub")
    assert_nothing_written(tmp_path, "CUB_200_2011")


def test_reader_errors(tmp_path):
    with pytest.raises(DatasetMissingError, match=r"cub: looked in .*CUB_200_2011 .*train.json.*prepare_fgvc.py"):
        build_dataset(make_cfg(tmp_path, "cub"))
    folder = tmp_path / "Stanford-dogs"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps({"Images/a.jpg": 1}))
    for split in ("val", "test"):
        (folder / f"{split}.json").write_text(json.dumps({"Images/b.jpg": 2}))
    with pytest.raises(DataError, match="class.*2 '2' have no training image"):
        build_dataset(make_cfg(tmp_path, "dogs"))
    (folder / "train.json").write_text(json.dumps({"Images/a.jpg": "2"}))
    with pytest.raises(DataError, match="mix integers and strings"):
        build_dataset(make_cfg(tmp_path, "dogs"))
    (folder / "train.json").write_text(json.dumps({"Images/a.jpg": 2.0}))
    with pytest.raises(DataError, match="must be an integer or a string"):
        build_dataset(make_cfg(tmp_path, "dogs"))
    (folder / "train.json").write_text(json.dumps({"a.jpg": 0}))
    (folder / "val.json").write_text("{}")
    (folder / "test.json").write_text("{}")
    with pytest.raises(DatasetMissingError, match="1 of the 1 images"):
        build_dataset(make_cfg(tmp_path, "dogs"))


def test_download_fetches_missing_files_then_prepares(tmp_path, monkeypatch):
    """--download against a local stand-in for the owners' host: archive and loose .mat files."""
    import functools
    import http.server
    import threading

    host = tmp_path / "host"
    host.mkdir()
    make_flowers(str(host))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(host))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setitem(
            prep.PARTS,
            "flowers",
            [
                prep.Part("jpg", prep.Source(("102flowers.tgz",), url=f"{url}/102flowers.tgz")),
                prep.Part("imagelabels.mat", url=f"{url}/imagelabels.mat"),
                prep.Part("setid.mat", url=f"{url}/setid.mat"),
            ],
        )
        root = tmp_path / "data"
        root.mkdir()
        with pytest.raises(PrepError, match="or run with --download"):
            prepare(root, "flowers")
        ds, summary = prepare(root, "flowers", download=True)
    finally:
        server.shutdown()
    assert "flowers: 3 classes, train 12, val 12, test 12" in summary
    assert sorted(os.listdir(root / "OxfordFlower")) == [
        "102flowers.tgz",
        "classnames.json",
        "imagelabels.mat",
        "jpg",
        "setid.mat",
        "test.json",
        "train.json",
        "val.json",
    ]


def make_cars_all_images(root):
    """Stanford Cars' all-images release: car_ims/ and cars_annos.mat (relative_im_path, class, test)."""
    folder = os.path.join(root, "Stanford-cars")
    rows, n = [], 0
    for label in (1, 2, 3):
        for k in range(NUM_TRAIN + NUM_TEST):
            n += 1
            rel = f"car_ims/{n:06d}.jpg"
            jpeg(os.path.join(folder, rel), n)
            rows.append((rel, label, int(k >= NUM_TRAIN)))
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test", "relative_im_path")
    annos = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (rel, label, test) in enumerate(rows):
        annos[0, i] = (*(np.array([[v]]) for v in (1, 1, 7, 7, label, test)), rel)
    names = np.empty((1, 3), dtype=object)
    names[0, :] = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Tesla Model S Sedan 2012"]
    savemat(os.path.join(folder, "cars_annos.mat"), {"annotations": annos, "class_names": names})


def test_cars_all_images_release(tmp_path):
    make_cars_all_images(str(tmp_path))
    ds, summary = prepare(tmp_path, "cars")
    assert "cars: 3 classes, train 54, val 6, test 9" in summary
    assert ds.classnames == EXPECTED["cars"][0]
    test = json.loads((tmp_path / "Stanford-cars" / "test.json").read_text())
    assert list(test)[:2] == ["car_ims/000021.jpg", "car_ims/000022.jpg"] and set(test.values()) == {0, 1, 2}
    train = json.loads((tmp_path / "Stanford-cars" / "train.json").read_text())
    assert all(p.startswith("car_ims/") for p in train) and len(train) == 54


def test_vpt_ids_and_names_without_classnames_json(tmp_path):
    """VPT's own files: CUB's string ids and Dogs' 1-based ids, names from their image folders."""
    for folder, subdir, files in (
        ("CUB_200_2011", "images", {"002.Laysan_Albatross/a.jpg": "002", "001.Black_footed_Albatross/b.jpg": "001"}),
        ("Stanford-dogs", "Images", {"n02085782-Japanese_spaniel/a.jpg": 2, "n02085620-Chihuahua/b.jpg": 1}),
    ):
        for rel in files:
            jpeg(os.path.join(tmp_path, folder, subdir, rel))
        for split in ("train", "val", "test"):
            (tmp_path / folder / f"{split}.json").write_text(json.dumps(files))
    cub = build_dataset(make_cfg(tmp_path, "cub"))
    assert cub.classnames == ["Black footed Albatross", "Laysan Albatross"]
    assert [d.label for d in cub.train_x] == [1, 0]  # "002" -> 1, "001" -> 0, in the file's order
    dogs = build_dataset(make_cfg(tmp_path, "dogs"))
    assert dogs.classnames == ["Chihuahua", "Japanese spaniel"] and [d.label for d in dogs.test] == [1, 0]
    # NABirds' non-contiguous ids, named by the official classes.txt when the folder has it
    files = {"0313/a.jpg": 313, "0295/b.jpg": 295}
    for rel in files:
        jpeg(os.path.join(tmp_path, "nabirds", "images", rel))
    for split in ("train", "val", "test"):
        (tmp_path / "nabirds" / f"{split}.json").write_text(json.dumps(files))
    assert build_dataset(make_cfg(tmp_path, "nabirds")).classnames == ["295", "313"]
    write_lines(str(tmp_path / "nabirds"), "classes.txt", ["0 Birds", "295 Black-footed Albatross", "313 Wood Duck"])
    nabirds = build_dataset(make_cfg(tmp_path, "nabirds"))
    assert nabirds.classnames == ["Black-footed Albatross", "Wood Duck"] and [d.label for d in nabirds.train_x] == [
        1,
        0,
    ]
