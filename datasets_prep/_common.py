"""Shared pieces of the prep scripts: safe extraction, verification, downloads, summaries.

Extraction is all-or-nothing: every member of an archive is checked before anything is written
(no absolute paths, no ``..`` that leaves the target, no links pointing outside it, no device
files), the archive is extracted into a temporary folder beside the target and its top-level
entries are renamed into place only once extraction finished. A truncated archive or a refused
member leaves the target as it was.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from mmprompt.errors import MMPromptError


class PrepError(MMPromptError):
    """Input to a prep script that cannot be used (bad archive, missing files, failed download)."""


# ------------------------------------------------------------------ archives

def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _check_member(archive: str, name: str, target: str) -> None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PrepError(f"{archive}: refusing member with an absolute path: {name!r}. "
                        f"The archive is not safe to extract; get it again from the official source.")
    if not _inside(target, os.path.join(target, name)):
        raise PrepError(f"{archive}: refusing member {name!r}, whose path escapes the target "
                        f"folder. The archive is not safe to extract; get it again from the official source.")


def _tar_members(archive: str, tar: tarfile.TarFile, target: str) -> List[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        _check_member(archive, m.name, target)
        if m.issym() or m.islnk():
            link_base = os.path.dirname(os.path.join(target, m.name)) if m.issym() else target
            if os.path.isabs(m.linkname) or not _inside(target, os.path.join(link_base, m.linkname)):
                raise PrepError(f"{archive}: refusing link {m.name!r} -> {m.linkname!r}, which points "
                                f"outside the target folder.")
        elif not (m.isfile() or m.isdir()):
            raise PrepError(f"{archive}: refusing special file {m.name!r} (device or fifo).")
    return members


def safe_extract(archive: str, dest: str, strip: str = "") -> List[str]:
    """Extract ``archive`` into folder ``dest``; returns the top-level names it placed there.

    ``strip``: a folder inside the archive whose contents are what belongs in ``dest`` (e.g.
    ``food-101`` or ``fgvc-aircraft-2013b/data``); used only when the archive has it. Refuses, and
    writes nothing, when a member would escape or when an entry already exists in ``dest``.
    """
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=".extracting-")
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    for name in z.namelist():
                        _check_member(archive, name, staging)
                    z.extractall(staging)
            else:
                with tarfile.open(archive) as t:
                    members = _tar_members(archive, t, staging)
                    t.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise PrepError(f"{archive} is not a readable tar/zip archive, or is truncated or corrupt "
                            f"({type(e).__name__}: {e}). Download it again; nothing was extracted.") from None
        source = os.path.join(staging, strip) if strip and os.path.isdir(os.path.join(staging, strip)) else staging
        return move_into(source, dest, what=f"Extracting {archive}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_into(source: str, dest: str, what: str) -> List[str]:
    """Rename folder ``source`` to ``dest``, or its entries into an existing ``dest`` (never overwriting)."""
    if not os.path.exists(dest):
        os.rename(source, dest)  # one rename: dest appears complete or not at all
        return sorted(os.listdir(dest))
    created = sorted(os.listdir(source))
    clashes = [n for n in created if os.path.lexists(os.path.join(dest, n))]
    if clashes:
        raise PrepError(f"{what} would overwrite {', '.join(clashes)} in {dest}. "
                        f"Remove the existing entries (they may be half-extracted) and run again.")
    for name in created:
        os.rename(os.path.join(source, name), os.path.join(dest, name))
    return created


def find_first(folder: str, candidates: Sequence[str]) -> Optional[str]:
    """The first of ``candidates`` (relative names) that exists in ``folder``."""
    for c in candidates:
        p = os.path.join(folder, c)
        if os.path.exists(p):
            return p
    return None


@dataclass(frozen=True)
class Source:
    """Where one part of a dataset comes from."""

    archives: Tuple[str, ...]  # file names of the official archive (any one of them will do)
    strip: str = ""  # folder inside the archive whose contents belong in place (see safe_extract)
    url: str = ""  # official download URL for --download; "" when the owners require a sign-up or no host is left
    how: str = ""  # where to get it by hand, printed when it is missing
    extracted: Tuple[str, ...] = ()  # the archive as the user extracted it (relative to the dataset or root folder): its strip folder, or wanted


def obtain(dataset: str, dataset_dir: str, wanted: str, source: Source, search_dirs: Sequence[str] = (),
           allow_download: bool = False, dest: Optional[str] = None) -> str:
    """Make ``dataset_dir/wanted`` exist and return its path.

    An already-extracted ``wanted`` is kept as it is; the archive extracted by the user in its
    own layout (``source.extracted``) is moved into place. Otherwise the first official archive
    found in ``dataset_dir`` or ``search_dirs`` (or downloaded, with ``allow_download`` and a
    URL) is extracted safely into ``dest`` (default ``dataset_dir``).
    """
    target = os.path.join(dataset_dir, wanted)
    if os.path.exists(target):
        return target
    folders = [dataset_dir, *search_dirs]
    for found in (os.path.join(f, rel) for rel in source.extracted for f in folders):
        if os.path.isdir(found):
            place = (dest or dataset_dir) if source.strip else target
            os.makedirs(os.path.dirname(os.path.abspath(place)), exist_ok=True)
            move_into(found, place, what=f"Moving the extracted {found}")
            print(f"{dataset}: moved the extracted {found} to {place}")
            if os.path.exists(target):
                return target
    archive = next((p for p in (find_first(f, source.archives) for f in folders) if p), None)
    if archive is None and allow_download and source.url:
        archive = _download_into(dataset_dir, source.url, source.archives[0])
    if archive is None:
        how = source.how or (f"Download it from {source.url}" + ("" if allow_download else " (or run with --download)")
                             if source.url else "")
        raise PrepError(f"{dataset}: {target} is missing, and none of {', '.join(source.archives)} is in "
                        f"{' or '.join(folders)}. {how}".rstrip())
    safe_extract(archive, dest or dataset_dir, strip=source.strip)
    if not os.path.exists(target):
        raise PrepError(f"{dataset}: extracted {archive} but it holds no {wanted!r}; is it the right archive?")
    return target


def _download_into(folder: str, url: str, name: str) -> str:
    """Download into ``folder``; a folder created for a download that failed at once is removed again
    (a partial ``.part`` file is kept, so the next run resumes)."""
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    try:
        return download(url, os.path.join(folder, name))
    except PrepError:
        if created and not os.listdir(folder):
            os.rmdir(folder)
        raise


def obtain_file(dataset: str, dataset_dir: str, name: str, url: str = "", how: str = "",
                allow_download: bool = False) -> str:
    """A plain file the owners publish as is (e.g. a .mat list): present, or downloaded."""
    path = os.path.join(dataset_dir, name)
    if os.path.isfile(path):
        return path
    if allow_download and url:
        return _download_into(dataset_dir, url, name)
    hint = how or (f"Download it from {url}" + ("" if allow_download else " (or run with --download)") if url else "")
    raise PrepError(f"{dataset}: {path} is missing. {hint}".rstrip())


# ------------------------------------------------------------------ verification

def require(dataset: str, folder: str, relpaths: Iterable[str], hint: str) -> None:
    """Raise one message listing every required path missing from ``folder``."""
    missing = [p for p in relpaths if not os.path.exists(os.path.join(folder, p))]
    if missing:
        raise PrepError(f"{dataset}: {folder} is missing {', '.join(missing)}. {hint}")


def require_listed_files(dataset: str, base: str, relpaths: Sequence[str], source: str) -> None:
    """Every file an annotation list names must exist (catches half-extracted image folders)."""
    missing = [p for p in relpaths if not os.path.isfile(os.path.join(base, p))]
    if missing:
        raise PrepError(f"{dataset}: {len(missing)} of the {len(relpaths)} images listed in {source} are "
                        f"missing under {base} (first: {', '.join(missing[:3])}). The image archive "
                        f"looks half-extracted: delete {base} and run the script again.")


# ------------------------------------------------------------------ downloads

def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str, sha256: Optional[str] = None, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run (HTTP
    Range), showing a progress bar, and checking ``sha256`` when given. Returns ``dest``."""
    import requests
    from tqdm import tqdm

    if os.path.isfile(dest) and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, stream=True, headers=headers, timeout=timeout) as r:
            if r.status_code == 416:  # the part file is already complete
                pass
            else:
                r.raise_for_status()
                if have and r.status_code != 206:  # server ignored Range: start over
                    have = 0
                total = int(r.headers.get("Content-Length", 0)) + have
                with open(part, "ab" if have else "wb") as f, tqdm(
                        total=total or None, initial=have, unit="B", unit_scale=True,
                        desc=os.path.basename(dest)) as bar:
                    for block in r.iter_content(1 << 20):
                        f.write(block)
                        bar.update(len(block))
    except requests.RequestException as e:
        raise PrepError(f"Downloading {url} failed ({e}). Run again to resume, or download it "
                        f"yourself to {dest}.") from None
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            os.remove(part)
            raise PrepError(f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); the partial "
                            f"file was removed, run again to download it afresh.")
    os.replace(part, dest)
    print(f"{dest}: sha256 {sha256 or sha256_of(dest)}")
    return dest


# ------------------------------------------------------------------ images and summaries

def print_summary(name: str, dataset_dir: str, counts: Dict[str, int], num_classes: int,
                  skipped: Sequence[str] = (), out=sys.stdout) -> None:
    parts = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{name}: {num_classes} classes, {parts}  [{dataset_dir}]", file=out)
    if skipped:
        print(f"  skipped {len(skipped)} undecodable image(s): {', '.join(skipped[:5])}"
              f"{' ...' if len(skipped) > 5 else ''}", file=out)


def prepare_each(names, prepare_one) -> int:
    """Prepare datasets one by one; with several, a failure is reported and the rest go on.

    A single dataset's error propagates (the CLI prints it); the exit code says whether all
    of several were prepared. Prep and reader errors are both the user's to fix, so both count.
    """
    from mmprompt.errors import MMPromptError

    failures = []
    for name in names:
        try:
            prepare_one(name)
        except MMPromptError as e:
            if len(names) == 1:
                raise
            failures.append(name)
            print(f"{name}: not prepared: {e}", file=sys.stderr)
    if failures:
        print(f"{len(names) - len(failures)} of {len(names)} datasets prepared; failed: {', '.join(failures)}",
              file=sys.stderr)
        return 1
    return 0
