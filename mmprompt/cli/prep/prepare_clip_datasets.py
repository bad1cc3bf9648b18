"""Turn the official downloads of the CLIP benchmark into CoOp's layout under one root.

    python datasets_prep/prepare_clip_datasets.py --root $DATA --dataset oxford_pets [--download]
    python datasets_prep/prepare_clip_datasets.py --root $DATA --dataset all

For each dataset, put the official archives in ``$DATA/<folder>/`` or ``$DATA/`` (or extract them
there yourself); the script extracts what is missing (safely, all or nothing), writes the split
file ``split_zhou_<Name>.json`` with CoOp's procedure unless one is already there (reproducing the
published files of Pets, Cars, Flowers and UCF101 exactly; see CLIP_DATASETS.md), and prints the
classes and images per split. ``--download`` fetches archives from the owners' own hosts where
they allow it; ImageNet needs a sign-up, so the script says what to fetch and where to put it.
No checksums are published by the owners for most archives, so none are enforced; the sha256 of
each downloaded file is printed for your records.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from typing import Callable, Dict, List

from ...data import clip_datasets as clip
from ._common import PrepError, Source, obtain, obtain_file, prepare_each, print_summary, safe_extract

VGG = "https://www.robots.ox.ac.uk/~vgg/data"


def _dirs(root: str, folder: str):
    dataset_dir = os.path.join(root, folder)
    return dataset_dir, [root]


def prep_caltech101(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "caltech-101")
    if os.path.isdir(os.path.join(dataset_dir, "101_ObjectCategories")):
        return
    inner = Source(("101_ObjectCategories.tar.gz",), extracted=("101_ObjectCategories",))
    outer = Source(
        ("caltech-101.zip",),
        strip="caltech-101",
        url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
    )
    if not any(os.path.isfile(os.path.join(d, inner.archives[0])) for d in [dataset_dir, *search]):
        obtain("caltech101", dataset_dir, inner.archives[0], outer, search, download)
    obtain("caltech101", dataset_dir, "101_ObjectCategories", inner, search)


def prep_oxford_pets(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "oxford_pets")
    for part in ("images", "annotations"):
        obtain(
            "oxford_pets",
            dataset_dir,
            part,
            Source((f"{part}.tar.gz",), url=f"{VGG}/pets/data/{part}.tar.gz"),
            search,
            download,
        )


CARS_HOW = (
    "The owners' host (ai.stanford.edu) no longer serves Stanford Cars; get cars_train.tgz, "
    "cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat from a mirror you trust."
)


def prep_stanford_cars(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "stanford_cars")
    for wanted, archive in (
        ("cars_train", "cars_train.tgz"),
        ("cars_test", "cars_test.tgz"),
        ("devkit", "car_devkit.tgz"),
    ):
        obtain("stanford_cars", dataset_dir, wanted, Source((archive,), how=CARS_HOW), search, download)
    obtain_file("stanford_cars", dataset_dir, "cars_test_annos_withlabels.mat", how=CARS_HOW)


def prep_oxford_flowers(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "oxford_flowers")
    obtain(
        "oxford_flowers",
        dataset_dir,
        "jpg",
        Source(("102flowers.tgz",), url=f"{VGG}/flowers/102/102flowers.tgz"),
        search,
        download,
    )
    obtain_file(
        "oxford_flowers", dataset_dir, "imagelabels.mat", f"{VGG}/flowers/102/imagelabels.mat", allow_download=download
    )
    obtain_file(
        "oxford_flowers",
        dataset_dir,
        "cat_to_name.json",
        how="It maps labels '1'..'102' to flower names; the owners do not publish it: CoOp's "
        "README links the copy its split uses.",
    )


def prep_food101(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "food-101")
    obtain(
        "food101",
        dataset_dir,
        "images",
        Source(("food-101.tar.gz",), strip="food-101", url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz"),
        search,
        download,
    )


def prep_fgvc_aircraft(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "fgvc_aircraft")
    obtain(
        "fgvc_aircraft",
        dataset_dir,
        "images",
        Source(
            ("fgvc-aircraft-2013b.tar.gz",),
            strip="fgvc-aircraft-2013b/data",
            extracted=("fgvc-aircraft-2013b/data",),
            url=f"{VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
        ),
        search,
        download,
    )


def prep_sun397(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "sun397")
    obtain(
        "sun397",
        dataset_dir,
        "SUN397",
        Source(
            ("SUN397.tar.gz",), extracted=("SUN397",), url="http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz"
        ),
        search,
        download,
    )
    obtain(
        "sun397",
        dataset_dir,
        "Training_01.txt",
        Source(
            ("Partitions.zip",),
            strip="Partitions",
            url="https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip",
        ),
        search,
        download,
    )


def prep_dtd(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "dtd")
    obtain(
        "dtd",
        dataset_dir,
        "images",
        Source(("dtd-r1.0.1.tar.gz",), strip="dtd", url=f"{VGG}/dtd/download/dtd-r1.0.1.tar.gz"),
        search,
        download,
    )


def prep_eurosat(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "eurosat")
    obtain(
        "eurosat",
        dataset_dir,
        "2750",
        Source(
            ("EuroSAT.zip", "EuroSAT_RGB.zip"),
            extracted=("2750",),
            url="https://madm.dfki.de/files/sentinel/EuroSAT.zip",
        ),
        search,
        download,
    )


def _video_middle_frame_reader():
    """A function video_path -> PIL image of its middle frame, from whichever decoder is installed."""
    from PIL import Image

    try:
        import cv2

        def read_cv2(path):
            cap = cv2.VideoCapture(path)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.set(cv2.CAP_PROP_POS_FRAMES, max(count // 2, 0))
            ok, frame = cap.read()
            cap.release()
            if not ok:
                raise PrepError(f"ucf101: OpenCV could not read a frame of {path}")
            return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))

        return read_cv2
    except ImportError:
        pass
    try:
        import av

        def read_av(path):
            with av.open(path) as container:
                frames = [f.to_image() for f in container.decode(video=0)]
            if not frames:
                raise PrepError(f"ucf101: PyAV decoded no frame from {path}")
            return frames[len(frames) // 2]

        return read_av
    except ImportError:
        pass
    raise PrepError(
        "ucf101: extracting middle frames needs a video decoder, and neither OpenCV nor PyAV is "
        "installed here (pip install opencv-python-headless, or av). Alternatively put CoOp's "
        "UCF-101-midframes.zip in the ucf101 folder."
    )


def extract_middle_frames(video_root: str, out_dir: str) -> int:
    """UCF-101/<Action>/v_*.avi -> out_dir/<Renamed_Action>/v_*.jpg; written to a staging folder
    and renamed into place, so an interrupted run leaves no partial folder."""
    read_middle = _video_middle_frame_reader()
    staging = tempfile.mkdtemp(dir=os.path.dirname(out_dir), prefix=".midframes-")
    try:
        count = 0
        for action in clip.list_folders(video_root):
            target = os.path.join(staging, clip.ucf_folder_name(action))
            os.makedirs(target)
            for video in sorted(os.listdir(os.path.join(video_root, action))):
                if video.endswith(".avi"):
                    read_middle(os.path.join(video_root, action, video)).save(
                        os.path.join(target, video[:-4] + ".jpg"), quality=95
                    )
                    count += 1
        os.rename(staging, out_dir)
        return count
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prep_ucf101(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "ucf101")
    obtain(
        "ucf101",
        dataset_dir,
        "ucfTrainTestlist",
        Source(
            ("UCF101TrainTestSplits-RecognitionTask.zip",),
            url="https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip",
        ),
        search,
        download,
    )
    frames = os.path.join(dataset_dir, "UCF-101-midframes")
    if os.path.isdir(frames):
        return
    videos = next((p for p in (os.path.join(d, "UCF-101") for d in (dataset_dir, *search)) if os.path.isdir(p)), None)
    if videos:
        extract_middle_frames(videos, frames)
        return
    rar = next((p for p in (os.path.join(d, "UCF101.rar") for d in (dataset_dir, *search)) if os.path.isfile(p)), None)
    how = (
        f"Python cannot open {rar} (RAR); extract it with `unrar x` or `7z x` into {dataset_dir} so that "
        f"UCF-101/<Action>/*.avi exists, then run again."
        if rar
        else "Put CoOp's UCF-101-midframes.zip there, or the extracted videos as UCF-101/<Action>/*.avi "
        "(from https://www.crcv.ucf.edu/data/UCF101/UCF101.rar, extracted with unrar or 7z)."
    )
    obtain("ucf101", dataset_dir, "UCF-101-midframes", Source(("UCF-101-midframes.zip",), how=how), search)


IMAGENET_HOW = (
    "ImageNet needs a sign-up at https://image-net.org/download-images.php: fetch "
    "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz and put "
    "them in {dir}, or extract them yourself as images/train/<wnid>/ and images/val/<wnid>/."
)


def write_imagenet_classnames(dataset_dir: str) -> None:
    path = os.path.join(dataset_dir, "classnames.txt")
    if os.path.isfile(path):
        return
    os.makedirs(dataset_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.writelines(f"{wnid} {name}\n" for wnid, name in clip.imagenet_classnames_table())
    os.replace(path + ".tmp", path)


def _imagenet_train(dataset_dir: str, search: List[str]) -> None:
    target = os.path.join(dataset_dir, "images", "train")
    if os.path.isdir(target):
        return
    how = IMAGENET_HOW.format(dir=dataset_dir)
    work = tempfile.mkdtemp(dir=dataset_dir, prefix=".train-")
    try:
        obtain(
            "imagenet",
            work,
            "tars",
            Source(("ILSVRC2012_img_train.tar",), how=how),
            [dataset_dir, *search],
            dest=os.path.join(work, "tars"),
        )
        os.makedirs(os.path.join(work, "train"))
        for inner in sorted(os.listdir(os.path.join(work, "tars"))):
            if inner.endswith(".tar"):  # one tar of JPEGs per class; removed once extracted to bound disk use
                safe_extract(os.path.join(work, "tars", inner), os.path.join(work, "train", inner[:-4]))
                os.remove(os.path.join(work, "tars", inner))
        os.makedirs(os.path.join(dataset_dir, "images"), exist_ok=True)
        os.rename(os.path.join(work, "train"), target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _val_ground_truth(dataset_dir: str, search: List[str]) -> List[str]:
    """The wnid of ILSVRC2012_val_00000001.JPEG, ...00000002, ... from the devkit."""
    from scipy.io import loadmat

    devkit = obtain(
        "imagenet",
        dataset_dir,
        "ILSVRC2012_devkit_t12",
        Source(("ILSVRC2012_devkit_t12.tar.gz",), how=IMAGENET_HOW.format(dir=dataset_dir)),
        search,
    )
    synsets = loadmat(os.path.join(devkit, "data", "meta.mat"), squeeze_me=True)["synsets"]
    wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    with open(os.path.join(devkit, "data", "ILSVRC2012_validation_ground_truth.txt")) as f:
        return [wnid_of[int(line)] for line in f if line.strip()]


def sort_val_into_class_folders(flat: str, out: str, truth: List[str]) -> None:
    """Move flat ILSVRC2012_val_*.JPEG files of ``flat`` into ``out/<wnid>/``. Safe to run again
    after an interruption: files already moved are found in their class folder."""
    for index, wnid in enumerate(truth, start=1):
        name = f"ILSVRC2012_val_{index:08d}.JPEG"
        folder = os.path.join(out, wnid)
        if os.path.isfile(os.path.join(folder, name)):
            continue
        if not os.path.isfile(os.path.join(flat, name)):
            raise PrepError(
                f"imagenet: {name} is missing from {flat}, but the devkit's ground truth lists "
                f"{len(truth)} images; extract ILSVRC2012_img_val.tar again."
            )
        os.makedirs(folder, exist_ok=True)
        os.rename(os.path.join(flat, name), os.path.join(folder, name))


def _imagenet_val(dataset_dir: str, search: List[str]) -> None:
    """The official val archive is flat; the devkit's ground truth sorts it into wnid folders.
    A flat images/val the user extracted already is sorted in place."""
    target = os.path.join(dataset_dir, "images", "val")
    if os.path.isdir(target):
        if any(n.endswith(".JPEG") for n in os.listdir(target)):
            sort_val_into_class_folders(target, target, _val_ground_truth(dataset_dir, search))
        return
    truth = _val_ground_truth(dataset_dir, search)
    work = tempfile.mkdtemp(dir=dataset_dir, prefix=".val-")
    try:
        flat = obtain(
            "imagenet",
            work,
            "flat",
            Source(("ILSVRC2012_img_val.tar",), how=IMAGENET_HOW.format(dir=dataset_dir)),
            [dataset_dir, *search],
            dest=os.path.join(work, "flat"),
        )
        sort_val_into_class_folders(flat, os.path.join(work, "val"), truth)
        os.rename(os.path.join(work, "val"), target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prep_imagenet(root: str, download: bool) -> None:
    dataset_dir, search = _dirs(root, "imagenet")
    if download and not os.path.isdir(os.path.join(dataset_dir, "images", "train")):
        print(IMAGENET_HOW.format(dir=dataset_dir))
    needs = {"train": ("ILSVRC2012_img_train.tar",), "val": ("ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz")}
    for part, archives in needs.items():
        if os.path.isdir(os.path.join(dataset_dir, "images", part)):
            continue
        absent = [a for a in archives if not any(os.path.isfile(os.path.join(d, a)) for d in (dataset_dir, *search))]
        if part == "val" and os.path.isdir(os.path.join(dataset_dir, "ILSVRC2012_devkit_t12")):
            absent = [a for a in absent if not a.startswith("ILSVRC2012_devkit")]
        if absent:  # checked before anything is written
            raise PrepError(
                f"imagenet: {os.path.join(dataset_dir, 'images', part)} is missing and so is "
                f"{', '.join(absent)}. " + IMAGENET_HOW.format(dir=dataset_dir)
            )
    _imagenet_train(dataset_dir, search)
    _imagenet_val(dataset_dir, search)
    write_imagenet_classnames(dataset_dir)


def _variant(folder: str, wanted: str, source: Source, dest_subdir: str = ""):
    def prep(root: str, download: bool) -> None:
        dataset_dir, search = _dirs(root, folder)
        dest = os.path.join(dataset_dir, dest_subdir) if dest_subdir else None
        obtain(folder, dataset_dir, wanted, source, search, download, dest=dest)
        write_imagenet_classnames(dataset_dir)

    return prep


PREPARERS: Dict[str, Callable[[str, bool], None]] = {
    "imagenet": prep_imagenet,
    "caltech101": prep_caltech101,
    "oxford_pets": prep_oxford_pets,
    "stanford_cars": prep_stanford_cars,
    "oxford_flowers": prep_oxford_flowers,
    "food101": prep_food101,
    "fgvc_aircraft": prep_fgvc_aircraft,
    "sun397": prep_sun397,
    "dtd": prep_dtd,
    "eurosat": prep_eurosat,
    "ucf101": prep_ucf101,
    "imagenet_v2": _variant(
        "imagenetv2",
        "imagenetv2-matched-frequency-format-val",
        Source(
            ("imagenetv2-matched-frequency.tar.gz",),
            extracted=("imagenetv2-matched-frequency-format-val",),
            url="https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
        ),
    ),
    "imagenet_sketch": _variant(
        "imagenet-sketch",
        "images",
        Source(
            ("ImageNet-Sketch.zip",),
            strip="sketch",
            extracted=("sketch",),
            how="Get ImageNet-Sketch.zip from the links at https://github.com/HaohanWang/ImageNet-Sketch.",
        ),
        dest_subdir="images",
    ),
    "imagenet_a": _variant(
        "imagenet-adversarial",
        "imagenet-a",
        Source(
            ("imagenet-a.tar",),
            extracted=("imagenet-a",),
            url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
        ),
    ),
    "imagenet_r": _variant(
        "imagenet-rendition",
        "imagenet-r",
        Source(
            ("imagenet-r.tar",),
            extracted=("imagenet-r",),
            url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
        ),
    ),
}


def prepare(root: str, name: str, download: bool = False, out=None):
    """Arrange one dataset, write its split, print and return its summary (the dataset object)."""
    from ...config import get_cfg
    from ...registry import DATASETS

    PREPARERS[name](root, download)
    cfg = get_cfg()
    cfg.DATASET.ROOT = root
    dataset = DATASETS.get(name)(cfg)
    counts = {"train": len(dataset.train_x), "val": len(dataset.val), "test": len(dataset.test)}
    if name.startswith("imagenet_"):
        counts = {"test": len(dataset.test)}
    print_summary(
        name, dataset.dataset_dir, counts, dataset.num_classes, getattr(dataset, "skipped_images", []), out=out
    )
    return dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder that holds (or will hold) every dataset ($DATA)")
    parser.add_argument("--dataset", required=True, choices=sorted(PREPARERS) + ["all"])
    parser.add_argument(
        "--download", action="store_true", help="fetch missing archives from the owners' hosts where they allow it"
    )
    args = parser.parse_args(argv)
    root = os.path.abspath(os.path.expanduser(args.root))
    if os.path.exists(root) and not os.path.isdir(root):
        raise PrepError(f"--root {root} is a file, not a folder.")
    if not os.path.isdir(root):
        raise PrepError(
            f"--root {root} does not exist. Create it and put the downloaded archives in it (or run with --download)."
        )
    names = list(PREPARERS) if args.dataset == "all" else [args.dataset]
    return prepare_each(names, lambda name: prepare(root, name, args.download))


if __name__ == "__main__":
    from ...utils.cli import run_cli

    run_cli(main)
