"""Shared pieces of the prep scripts: safe extraction, verification, downloads, summaries.

Extraction is all-or-nothing and cannot leave the target: only folders and regular files are
written (links, devices and fifos are refused), never through a link, at paths checked against
the real target before and after each member; the archive is extracted into a temporary folder
beside the target and its top-level entries are renamed into place only once extraction
finished. A truncated archive or a refused member leaves the target as it was.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ...errors import MMPromptError


class PrepError(MMPromptError):
    """Input to a prep script that cannot be used (bad archive, missing files, failed download)."""


# ------------------------------------------------------------------ archives
#
# Members are written by this module, never by tarfile's or zipfile's extractall: those create
# links (which a later member can then write through, link after link), and tarfile's safety
# ``filter`` exists only on some Python releases and has been escaped more than once. Official
# dataset archives hold only folders and regular files, so anything else (symbolic or hard links,
# devices, fifos, unknown member types) is refused. A member's name must be relative with no
# ``..`` part; before and after each write its resolved path is checked against the real staging
# folder, and files are opened without following links.

_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _refuse(archive: str, what: str) -> PrepError:
    return PrepError(
        f"{archive}: refusing {what}. Official dataset archives hold only folders and regular "
        f"files, so this one is not safe to extract; nothing was extracted. Get the archive "
        f"again from the official source."
    )


class _WriteFailed(PrepError):
    """The disk, not the archive: no space, no permission."""


def _write_failed(archive: str, path: str, error: OSError) -> PrepError:
    return _WriteFailed(
        f"Extracting {archive} failed writing {path}: {error.strerror or error}. Free some "
        f"space or fix the folder's permissions and run again; nothing was extracted."
    )


def _member_relpath(archive: str, name: str) -> str:
    """The relative path (``/``-separated, normalised) a member name stands for; "" for the root."""
    raw = name.replace("\\", "/")  # archives made on Windows may use either separator
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or "\x00" in raw:
        raise _refuse(archive, f"member {name!r}, which has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(
            archive,
            f"member {name!r}, whose path contains '..' (a member that escapes the target folder is never extracted)",
        )
    return "/".join(parts)


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def _checked_target(archive: str, root_real: str, rel: str, name: str) -> str:
    target = os.path.join(root_real, *rel.split("/"))
    parent = os.path.dirname(target)
    if not _inside(root_real, parent):
        raise _refuse(archive, f"member {name!r}, whose folder resolves outside the target")
    return target


def _write_dir(archive: str, root_real: str, rel: str, name: str) -> None:
    target = _checked_target(archive, root_real, rel, name)
    if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
        raise _refuse(archive, f"folder {name!r}, which is also a file in the archive")
    os.makedirs(target, exist_ok=True)
    if not _inside(root_real, target):
        raise _refuse(archive, f"folder {name!r}, which resolves outside the target")


def _write_file(
    archive: str, root_real: str, rel: str, name: str, source, executable: bool, mtime: Optional[float]
) -> None:
    target = _checked_target(archive, root_real, rel, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not _inside(root_real, os.path.dirname(target)):
        raise _refuse(archive, f"member {name!r}, whose folder resolves outside the target")
    if os.path.islink(target) or os.path.isdir(target):
        raise _refuse(archive, f"file {name!r}, which is also a folder in the archive")
    try:
        fd = os.open(target, _OPEN_FLAGS, 0o755 if executable else 0o644)
    except OSError as e:
        raise _write_failed(archive, target, e) from None
    with os.fdopen(fd, "wb") as out:
        while True:
            block = source.read(_CHUNK)  # a read error is the archive's (truncated, corrupt)
            if not block:
                break
            try:
                out.write(block)
            except OSError as e:
                raise _write_failed(archive, target, e) from None
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    if not _inside(root_real, target):
        raise _refuse(archive, f"file {name!r}, which resolves outside the target")


def _extract_tar(archive: str, root_real: str) -> None:
    with tarfile.open(archive) as tar:
        for m in tar:
            rel = _member_relpath(archive, m.name)
            if m.issym() or m.islnk():
                kind = "symbolic link" if m.issym() else "hard link"
                raise _refuse(archive, f"{kind} {m.name!r} -> {m.linkname!r}")
            if m.isdir():
                if rel:
                    _write_dir(archive, root_real, rel, m.name)
            elif m.isreg():
                if not rel:
                    raise _refuse(archive, f"file member {m.name!r} without a name")
                with tar.extractfile(m) as source:
                    _write_file(archive, root_real, rel, m.name, source, bool(m.mode & 0o111), m.mtime)
            else:
                kind = {
                    tarfile.CHRTYPE: "character device",
                    tarfile.BLKTYPE: "block device",
                    tarfile.FIFOTYPE: "fifo",
                }.get(m.type, f"member of type {m.type!r}")
                raise _refuse(archive, f"{kind} {m.name!r}")


def _extract_zip(archive: str, root_real: str) -> None:
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            rel = _member_relpath(archive, info.filename)
            file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when made without unix modes
            if file_type == stat.S_IFLNK:
                raise _refuse(archive, f"symbolic link {info.filename!r}")
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, f"special file {info.filename!r}")
            if info.is_dir():
                if rel:
                    _write_dir(archive, root_real, rel, info.filename)
                continue
            if not rel:
                raise _refuse(archive, f"file member {info.filename!r} without a name")
            with z.open(info) as source:
                mtime = _zip_mtime(info)
                _write_file(
                    archive, root_real, rel, info.filename, source, bool((info.external_attr >> 16) & 0o111), mtime
                )


def _zip_mtime(info: zipfile.ZipInfo) -> Optional[float]:
    try:
        return time.mktime(info.date_time + (0, 0, -1))
    except (OverflowError, ValueError):
        return None


def safe_extract(archive: str, dest: str, strip: str = "") -> List[str]:
    """Extract ``archive`` into folder ``dest``; returns the top-level names it placed there.

    ``strip``: a folder inside the archive whose contents are what belongs in ``dest`` (e.g.
    ``food-101`` or ``fgvc-aircraft-2013b/data``); used only when the archive has it. Refuses, and
    writes nothing, when a member is not a plain folder or file, when its path would escape, or
    when an entry already exists in ``dest``.
    """
    parent = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent, prefix=".extracting-")
    except OSError as e:
        raise PrepError(
            f"Cannot extract {archive} next to {dest}: {e.strerror or e} ({parent}). Choose a writable --root."
        ) from None
    try:
        root_real = os.path.realpath(staging)
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, root_real)
            else:
                _extract_tar(archive, root_real)
        except _WriteFailed:
            raise
        except (
            tarfile.TarError,
            zipfile.BadZipFile,
            EOFError,
            OSError,
            zlib.error,
            lzma.LZMAError,
            RuntimeError,
            ValueError,
        ) as e:  # RuntimeError: an encrypted zip member
            raise PrepError(
                f"{archive} is not a readable tar/zip archive, or is truncated or corrupt "
                f"({type(e).__name__}: {' '.join(str(e).split())}). Download it again; nothing was "
                "extracted."
            ) from None
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
        raise PrepError(
            f"{what} would overwrite {', '.join(clashes)} in {dest}. "
            f"Remove the existing entries (they may be half-extracted) and run again."
        )
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
    extracted: Tuple[
        str, ...
    ] = ()  # the archive as the user extracted it (relative to the dataset or root folder): its strip folder, or wanted


def obtain(
    dataset: str,
    dataset_dir: str,
    wanted: str,
    source: Source,
    search_dirs: Sequence[str] = (),
    allow_download: bool = False,
    dest: Optional[str] = None,
) -> str:
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
        how = source.how or (
            f"Download it from {source.url}" + ("" if allow_download else " (or run with --download)")
            if source.url
            else ""
        )
        raise PrepError(
            f"{dataset}: {target} is missing, and none of {', '.join(source.archives)} is in "
            f"{' or '.join(folders)}. {how}".rstrip()
        )
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


def obtain_file(
    dataset: str, dataset_dir: str, name: str, url: str = "", how: str = "", allow_download: bool = False
) -> str:
    """A plain file the owners publish as is (e.g. a .mat list): present, or downloaded."""
    path = os.path.join(dataset_dir, name)
    if os.path.isfile(path):
        return path
    if allow_download and url:
        return _download_into(dataset_dir, url, name)
    hint = how or (f"Download it from {url}" + ("" if allow_download else " (or run with --download)") if url else "")
    raise PrepError(f"{dataset}: {path} is missing. {hint}".rstrip())


# ------------------------------------------------------------------ text files


def decode_text(data: bytes, where: str) -> str:
    """``data`` as UTF-8; otherwise one message naming ``where`` and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PrepError(f"{where}:{line} is not UTF-8 text (byte {e.start}); is this the official file?") from None


def read_text(path: str) -> str:
    """A text file of an official release, read as UTF-8 (see :func:`decode_text`)."""
    try:
        with open(path, "rb") as f:
            return decode_text(f.read(), path)
    except OSError as e:
        raise PrepError(f"Cannot read {path}: {e.strerror or e}.") from None


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
        raise PrepError(
            f"{dataset}: {len(missing)} of the {len(relpaths)} images listed in {source} are "
            f"missing under {base} (first: {', '.join(missing[:3])}). The image archive "
            f"looks half-extracted: delete {base} and run the script again."
        )


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
                with (
                    open(part, "ab" if have else "wb") as f,
                    tqdm(
                        total=total or None, initial=have, unit="B", unit_scale=True, desc=os.path.basename(dest)
                    ) as bar,
                ):
                    for block in r.iter_content(1 << 20):
                        f.write(block)
                        bar.update(len(block))
    except requests.RequestException as e:
        raise PrepError(
            f"Downloading {url} failed ({e}). Run again to resume, or download it yourself to {dest}."
        ) from None
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            os.remove(part)
            raise PrepError(
                f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); the partial "
                f"file was removed, run again to download it afresh."
            )
    os.replace(part, dest)
    print(f"{dest}: sha256 {sha256 or sha256_of(dest)}")
    return dest


# ------------------------------------------------------------------ images and summaries


def print_summary(
    name: str, dataset_dir: str, counts: Dict[str, int], num_classes: int, skipped: Sequence[str] = (), out=None
) -> None:
    # out=None: sys.stdout as it is at the call (a default bound at import would keep a stream
    # that a caller, e.g. pytest's capture, has since closed); print(file=None) does the same.
    parts = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{name}: {num_classes} classes, {parts}  [{dataset_dir}]", file=out)
    if skipped:
        print(
            f"  skipped {len(skipped)} undecodable image(s): {', '.join(skipped[:5])}"
            f"{' ...' if len(skipped) > 5 else ''}",
            file=out,
        )


def prepare_each(names, prepare_one) -> int:
    """Prepare datasets one by one; with several, a failure is reported and the rest go on.

    A single dataset's error propagates (the CLI prints it); the exit code says whether all
    of several were prepared. Prep and reader errors are both the user's to fix, so both count.
    """
    from ...errors import MMPromptError

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
        print(
            f"{len(names) - len(failures)} of {len(names)} datasets prepared; failed: {', '.join(failures)}",
            file=sys.stderr,
        )
        return 1
    return 0
