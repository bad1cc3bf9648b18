"""Turn the official GLUE / SuperGLUE releases into one ``save_to_disk`` folder per task.

    python datasets_prep/prepare_text_datasets.py --src ~/downloads --root $DATA --task all
    python datasets_prep/prepare_text_datasets.py --src ~/downloads --root $DATA --task superglue_boolq glue_sst2
    python datasets_prep/prepare_text_datasets.py --root $DATA --task glue --download   # from the hub

``--src`` is a folder holding the releases as their owners distribute them, zipped or
extracted, at most two folders deep: SuperGLUE ``BoolQ.zip`` (``BoolQ/train.jsonl``,
``val.jsonl``, ``test.jsonl``), ``CB.zip``, ``COPA.zip``, ``MultiRC.zip``, ``ReCoRD.zip``,
``RTE.zip``, ``WiC.zip``, ``WSC.zip``; GLUE ``CoLA/``, ``SST-2/``, ``MRPC/``, ``QQP/``,
``STS-B/``, ``MNLI/``, ``QNLI/``, ``RTE/`` with ``train.tsv``, ``dev.tsv`` (MNLI:
``dev_matched.tsv``, ``dev_mismatched.tsv``) and ``test.tsv``, or the zips that hold those
folders. Zip members are read in memory, never extracted, so no member can write outside the
output. The rows get the hub's schema (see :mod:`mmprompt.data.text_tasks`), so a prepared
folder, the hub and the official files read identically.

Output: ``<root>/glue/<task>`` and ``<root>/superglue/<task>`` (DatasetDict with train,
validation, and test when present; MNLI also validation_mismatched/test_mismatched), the
folders the readers look in. Each is written to a temporary folder and renamed into place, so
a failed run leaves nothing half-written; an existing folder is kept unless ``--overwrite``.
``--download`` fetches the task from the hub with ``datasets.load_dataset`` instead (online only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import zipfile
from typing import Dict, List, Optional, Tuple

from ...data.text import default_disk_dir
from ...data.text_tasks import TASKS, TextTask, parse_official
from ...utils.cli import is_offline, run_cli
from ._common import PrepError, decode_text, read_text

GROUPS = {
    "all": sorted(TASKS),
    "glue": sorted(n for n in TASKS if n.startswith("glue_")),
    "superglue": sorted(n for n in TASKS if n.startswith("superglue_")),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default="", help="folder with the official releases (zips or extracted folders)")
    p.add_argument("--root", required=True, help="data root; tasks go to ROOT/glue/<task> and ROOT/superglue/<task>")
    p.add_argument(
        "--task",
        nargs="+",
        default=["all"],
        help=f"tasks to prepare: all, glue, superglue or names ({', '.join(sorted(TASKS))})",
    )
    p.add_argument("--download", action="store_true", help="fetch from the Hugging Face hub instead of --src")
    p.add_argument("--overwrite", action="store_true", help="replace an already prepared task folder")
    return p


def selected_tasks(names: List[str]) -> List[str]:
    out: List[str] = []
    for n in names:
        if n in GROUPS:
            out.extend(GROUPS[n])
        elif n in TASKS:
            out.append(n)
        else:
            raise PrepError(f"Unknown task {n!r}; use all, glue, superglue or one of: {', '.join(sorted(TASKS))}")
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------ finding the official files


def _candidate_dirs(src: str) -> List[str]:
    """``src`` and the folders up to two levels below it, in sorted order."""
    dirs, level = [src], [src]
    for _ in range(2):
        below = []
        for d in level:
            try:
                below.extend(sorted(e.path for e in os.scandir(d) if e.is_dir() and not e.name.startswith(".")))
            except OSError:
                continue
        dirs.extend(below)
        level = below
    return dirs


class _Source:
    """Official files of one task, in a folder or inside a zip."""

    def __init__(self, where: str, folder: Optional[str] = None, zip_path: Optional[str] = None, prefix: str = ""):
        self.where, self.folder, self.zip_path, self.prefix = where, folder, zip_path, prefix

    def read(self, filename: str) -> Optional[str]:
        if self.folder is not None:
            path = os.path.join(self.folder, filename)
            if not os.path.isfile(path):
                return None
            return read_text(path)
        with zipfile.ZipFile(self.zip_path) as z:
            name = self.prefix + filename
            if name not in z.namelist():
                return None
            return decode_text(z.read(name), self.name_of(filename))

    def name_of(self, filename: str) -> str:
        if self.folder is not None:
            return os.path.join(self.folder, filename)
        return f"{self.zip_path}!{self.prefix}{filename}"


def find_official(task: TextTask, src: str) -> Optional[_Source]:
    train = task.official_files["train"]
    dirs = _candidate_dirs(src)
    for d in dirs:
        folder = os.path.join(d, task.folder)
        if os.path.isfile(os.path.join(folder, train)):
            return _Source(folder, folder=folder)
    for d in dirs:
        for entry in sorted(os.listdir(d)):
            path = os.path.join(d, entry)
            if not (entry.lower().endswith(".zip") and os.path.isfile(path)):
                continue
            try:
                with zipfile.ZipFile(path) as z:
                    names = z.namelist()
            except zipfile.BadZipFile:
                raise PrepError(
                    f"{path} is not a readable zip archive (truncated download?). Download it again."
                ) from None
            for name in names:
                parts = name.split("/")
                if len(parts) >= 2 and parts[-2] == task.folder and parts[-1] == train:
                    return _Source(path, zip_path=path, prefix=name[: -len(train)])
    return None


def read_official_splits(task: TextTask, source: _Source) -> Dict[str, List[dict]]:
    texts = {split: source.read(filename) for split, filename in task.official_files.items()}
    for split in ("train", "validation"):
        if texts[split] is None:
            raise PrepError(
                f"{task.name}: {source.where} has {task.official_files['train']} but not "
                f"{task.official_files[split]}; the release looks incomplete. Get it again from "
                f"the official site."
            )
    return {
        split: parse_official(task, text, source.name_of(task.official_files[split]))
        for split, text in texts.items()
        if text is not None
    }


def download_splits(task: TextTask) -> Dict[str, List[dict]]:
    if is_offline():
        raise PrepError(
            "--download needs the network, but an offline switch (HF_DATASETS_OFFLINE, HF_HUB_OFFLINE, "
            "TRANSFORMERS_OFFLINE or MMPROMPT_OFFLINE) is set. Unset it, or use --src with the "
            "official files."
        )
    import datasets

    loaded = datasets.load_dataset(task.hub_path, task.config)
    rename = {"validation_matched": "validation", "test_matched": "test"} if task.config == "mnli" else {}
    return {rename.get(k, k): v.to_list() for k, v in loaded.items()}


# ------------------------------------------------------------------ writing


def save_task(splits: Dict[str, List[dict]], out_dir: str) -> None:
    """save_to_disk into a temporary folder beside ``out_dir``, then rename it into place."""
    import datasets

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}-")
    try:
        dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
        dd.save_to_disk(os.path.join(staging, "data"))
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(os.path.join(staging, "data"), out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare(args) -> List[Tuple[str, Dict[str, int], str]]:
    if not args.download and not args.src:
        raise PrepError("Pass --src FOLDER with the official releases, or --download to fetch from the hub.")
    if args.src and not os.path.isdir(args.src):
        raise PrepError(f"--src {args.src} is not a folder.")
    names = selected_tasks(args.task)
    explicit = not any(n in GROUPS for n in args.task)
    work = []
    missing = []
    for name in names:  # read everything first: a bad file stops the run before anything is written
        task = TASKS[name]
        out_dir = default_disk_dir(args.root, task)
        if os.path.isdir(out_dir) and not args.overwrite:
            work.append((name, None, out_dir))
            continue
        if args.download:
            work.append((name, download_splits(task), out_dir))
            continue
        source = find_official(task, args.src)
        if source is None:
            missing.append(task)
            continue
        work.append((name, read_official_splits(task, source), out_dir))
    if missing and (explicit or len(missing) == len(names)):
        listed = "; ".join(f"{t.name}: {t.folder}/{t.official_files['train']} (or a zip holding it)" for t in missing)
        raise PrepError(
            f"No official files under {args.src} (searched two folders deep) for {listed}. "
            f"Download the {', '.join(sorted({t.benchmark.upper() for t in missing}))} release "
            f"and point --src at it."
        )
    done = []
    for name, splits, out_dir in work:
        if splits is None:
            print(f"{name}: kept the prepared folder {out_dir} (--overwrite to redo it)")
            continue
        save_task(splits, out_dir)
        counts = {k: len(v) for k, v in splits.items()}
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" rows  [{out_dir}]")
        done.append((name, counts, out_dir))
    for task in missing:
        print(f"{task.name}: skipped, no {task.folder}/{task.official_files['train']} under {args.src}")
    return done


def main(argv=None) -> int:
    prepare(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
