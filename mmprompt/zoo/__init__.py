"""The model zoo: an index of checkpoints trained with this toolkit, and a verified download.

``index.json`` (in this package) is a list of entries::

    {"name": "maple_adap_pos-imagenet-b2n-seed1",   # what `tools/model_zoo.py download` takes
     "url": "https://.../model-final.safetensors",
     "sha256": "<hex>", "size": 3551234,             # bytes
     "config": "configs/maple_adap_pos.yaml", "dataset": "imagenet",
     "metrics": {"base": ..., "new": ..., "hm": ...},
     "command": "python tools/train_net.py ..."}     # how it was trained

It lists only checkpoints that exist; ``model_zoo.md`` is its readable form. Downloads go to
``$MMPROMPT_CACHE/zoo/<name>/`` (default ``~/.cache/mmprompt``) through a ``.part`` file that
resumes with an HTTP Range request; the file enters the cache only when its sha256 matches.
With ``MMPROMPT_OFFLINE=1`` only cached files are used.
A checksum mismatch or a transfer that stays short after the retries deletes what was fetched.

Everything stays inside ``<cache>/zoo``: entry names and file names must be plain names (one path
component), every path is checked to resolve inside the cache before it is written or deleted,
and only files the download itself wrote are ever removed.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import os
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, List, Optional

from ..errors import MMPromptError, OfflineError

INDEX_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.json")
CHUNK = 1 << 16
# The most a download without a known size (no "size" in the entry, no Content-Length) may write:
# prompt checkpoints are kilobytes to megabytes, and a source that never ends must not fill the disk.
MAX_UNSIZED_BYTES = 4 << 30


class DownloadError(MMPromptError):
    """A zoo download that failed; nothing of it is left in the cache."""


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("MMPROMPT_CACHE") or os.path.join("~", ".cache", "mmprompt"))


# A zoo name or file name is one path component of the cache: no separators, no leading dot
# (so neither "." nor ".." nor a hidden file), no drive letters.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def load_index(path: Optional[str] = None) -> List[Dict]:
    """The zoo entries (``path`` or ``$MMPROMPT_ZOO_INDEX`` to read another index).

    Every entry is checked before any is used; one message lists every problem of the file.
    """
    path = path or os.environ.get("MMPROMPT_ZOO_INDEX") or INDEX_PATH
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise MMPromptError(f"Model-zoo index {path} does not exist.") from None
    except (IsADirectoryError, PermissionError) as e:
        raise MMPromptError(f"Model-zoo index {path} cannot be read: {e.strerror}.") from None
    try:
        entries = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MMPromptError(f"Model-zoo index {path} is not UTF-8 text (byte {e.start}: {e.reason}).") from None
    except json.JSONDecodeError as e:
        raise MMPromptError(
            f"Model-zoo index {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}."
        ) from None
    if not isinstance(entries, list):
        raise MMPromptError(f"Model-zoo index {path} must be a JSON list of entries, got {type(entries).__name__}.")
    problems = [f"entry {i}: {p}" for i, e in enumerate(entries) for p in _entry_problems(e)]
    names = [e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]
    problems += [f"the name {n!r} appears {names.count(n)} times" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise MMPromptError(f"Model-zoo index {path} has invalid entries:\n  " + "\n  ".join(problems))
    for e in entries:
        e["source"] = _source_url(e["url"], os.path.dirname(os.path.abspath(path)))
    return entries


def _entry_problems(e) -> List[str]:
    """What is wrong with one index entry (empty when nothing)."""
    if not isinstance(e, dict):
        return [f"must be an object with name, url and sha256, got {type(e).__name__} {e!r:.60}"]
    label = repr(e["name"]) if isinstance(e.get("name"), str) else ""
    problems = [f"{label} lacks {k}".lstrip() for k in ("name", "url", "sha256") if k not in e]
    for key, want in (
        ("name", str),
        ("url", str),
        ("sha256", str),
        ("filename", str),
        ("config", str),
        ("dataset", str),
        ("command", str),
        ("metrics", dict),
    ):
        if key in e and not isinstance(e[key], want):
            problems.append(
                f"{label} {key} must be a {want.__name__}, got {type(e[key]).__name__} {e[key]!r:.60}".lstrip()
            )
    if isinstance(e.get("name"), str) and not SAFE_NAME.match(e["name"]):
        problems.append(
            f"name {e['name']!r} is not a plain name (letters, digits, . _ + -; no path): "
            "it becomes a folder of the download cache"
        )
    if isinstance(e.get("filename"), str) and not SAFE_NAME.match(e["filename"]):
        problems.append(f"{label} filename {e['filename']!r} is not a plain file name (no folders, no '..')".lstrip())
    if isinstance(e.get("sha256"), str) and not SHA256.match(e["sha256"]):
        problems.append(f"{label} sha256 must be 64 hex digits, got {e['sha256']!r:.80}".lstrip())
    if isinstance(e.get("url"), str):
        parsed = urllib.parse.urlparse(e["url"])
        if not e["url"] or parsed.scheme not in ("", "http", "https", "file"):
            problems.append(
                f"{label} url {e['url']!r:.80} must be http(s)://, file:// or a path beside the index".lstrip()
            )
        elif not parsed.scheme and (os.path.isabs(e["url"]) or ".." in e["url"].replace("\\", "/").split("/")):
            problems.append(f"{label} url {e['url']!r} must be a path inside the index's folder".lstrip())
    if "size" in e and (isinstance(e["size"], bool) or not isinstance(e["size"], int) or e["size"] < 0):
        problems.append(f"{label} size must be a number of bytes, got {e['size']!r:.60}".lstrip())
    if isinstance(e.get("metrics"), dict):
        bad = [k for k, v in e["metrics"].items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            problems.append(f"{label} metrics {', '.join(bad)} must be numbers".lstrip())
    return problems


def _source_url(url: str, index_dir: str) -> str:
    """Where to fetch from: a URL as is; a bare path is a file shipped beside the index (the
    KB-sized prompt checkpoints live in the package), fetched through a file:// URL so it goes
    through the same verified download."""
    if urllib.parse.urlparse(url).scheme:
        return url
    return "file://" + urllib.request.pathname2url(os.path.join(index_dir, url))


def find(name: str, entries: List[Dict]) -> Dict:
    for e in entries:
        if e["name"] == name:
            return e
    names = [e["name"] for e in entries]
    if not names:
        raise MMPromptError(
            f"No checkpoint named '{name}': the model zoo is empty (no checkpoint has "
            "been published yet; see model_zoo.md)."
        )
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise MMPromptError(
        f"No checkpoint named '{name}' in the model zoo.{hint} `tools/model_zoo.py list` shows them all."
    )


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _filename(entry: Dict) -> str:
    name = entry.get("filename") or os.path.basename(urllib.parse.urlparse(entry["url"]).path)
    return name if name and SAFE_NAME.match(name) else "checkpoint.safetensors"


def _zoo_root(cache: Optional[str]) -> str:
    return os.path.realpath(os.path.join(cache or cache_dir(), "zoo"))


def cached_path(entry: Dict, cache: Optional[str] = None) -> str:
    """``<cache>/zoo/<name>/<filename>``; refused unless it resolves inside ``<cache>/zoo``."""
    if not isinstance(entry.get("name"), str) or not SAFE_NAME.match(entry["name"]):
        raise MMPromptError(
            f"Model-zoo entry name {entry.get('name')!r} is not a plain name; refusing to use it as a cache folder."
        )
    root = _zoo_root(cache)
    path = os.path.join(root, entry["name"], _filename(entry))
    if not _inside(root, path):
        raise MMPromptError(
            f"The cache path of {entry['name']} ({path}) resolves outside the cache {root} "
            "(a link in the cache?); remove it and run again."
        )
    return path


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real.startswith(root + os.sep)


def _remove(root: str, *paths: str) -> None:
    """Delete files of the cache, never anything that resolves outside it."""
    for p in paths:
        if os.path.lexists(p) and _inside(root, p) and not os.path.isdir(p):
            os.remove(p)


class _TooLong(Exception):
    """The source sent more bytes than the entry (or the server) said the file has."""


def _check_local_source(url: str, name: str) -> None:
    """A file:// source must be a regular file: a fifo would block the open forever, a device
    (``/dev/zero`` through a link) would never end."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return
    path = urllib.request.url2pathname(parsed.path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the fetch reports a missing file with the usual retries and message
    if not stat.S_ISREG(mode):
        raise DownloadError(
            f"The source of {name}, {path}, is not a regular file (a folder, fifo or device); nothing was downloaded."
        )


def _fetch_into(url: str, part: str, progress: bool, timeout: float, limit: Optional[int] = None) -> Optional[int]:
    """Append the rest of ``url`` to ``part`` (Range request when part has bytes); the expected
    total size when the server said it. Raises :class:`_TooLong` once ``part`` would exceed
    ``limit`` bytes (or the server's Content-Length, or :data:`MAX_UNSIZED_BYTES`)."""
    from tqdm import tqdm

    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after what we have: the part is complete
            return have
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        cap = limit if limit is not None else total if total is not None else MAX_UNSIZED_BYTES
        written = have
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=os.path.basename(part)[:-5],
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError):
                    break  # keep what arrived; the caller resumes with a Range request
                if not chunk:
                    break
                written += len(chunk)
                if written > cap:
                    raise _TooLong(cap)
                f.write(chunk)
                bar.update(len(chunk))
    return total


def download(
    entry: Dict, cache: Optional[str] = None, progress: bool = True, retries: int = 3, timeout: float = 60.0
) -> str:
    """The verified checkpoint file of ``entry`` in the cache, downloading what is missing."""
    dest = cached_path(entry, cache)
    root = _zoo_root(cache)
    expected = entry["sha256"].lower()
    if os.path.isfile(dest):
        if sha256_of(dest) == expected:
            return dest
        _remove(root, dest)  # a file that changed in the cache is fetched again
    if os.environ.get("MMPROMPT_OFFLINE", "") not in ("", "0"):
        raise OfflineError(
            f"{entry['name']} is not in the cache ({dest}) and MMPROMPT_OFFLINE is set. "
            f"Download it on a connected machine ({entry['url']}) and put it at that path."
        )
    source = entry.get("source", entry["url"])
    _check_local_source(source, entry["name"])
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest + ".part", "ab"):
            pass
    except OSError as e:
        raise DownloadError(
            f"The model-zoo cache {os.path.dirname(dest)} is not writable ({e.strerror}). Set "
            "MMPROMPT_CACHE (or --cache-dir) to a folder you can write."
        ) from None
    part = dest + ".part"
    if not _inside(root, part):
        raise DownloadError(f"{part} resolves outside the cache {root} (a link?); remove it and run again.")
    size = entry.get("size")
    reason = ""
    for _ in range(retries + 1):
        try:
            total = _fetch_into(source, part, progress, timeout, limit=size)
        except _TooLong as e:
            _remove(root, part)
            _cleanup_empty(dest)
            raise DownloadError(
                f"{entry['url']} sent more than the {e.args[0]} bytes {entry['name']} has "
                f"({'the index says so' if size is not None else 'the most a download without a size may write'}); "
                "nothing was kept in the cache. The file on the server is not the one the index lists."
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            continue
        got = os.path.getsize(part) if os.path.exists(part) else 0
        want = size if size is not None else total
        if want is not None and got < want:
            reason = f"the transfer stopped at {got} of {want} bytes"
            continue
        break
    else:
        _remove(root, part)
        _cleanup_empty(dest)
        raise DownloadError(
            f"Could not download {entry['name']} from {entry['url']}: {reason} "
            f"(after {retries + 1} attempts). Nothing was kept in the cache; run the "
            "command again when the connection is stable."
        )
    digest = sha256_of(part)
    if digest != expected:
        _remove(root, part)
        _cleanup_empty(dest)
        raise DownloadError(
            f"Checksum mismatch for {entry['name']}: expected sha256 {expected}, got {digest}. "
            "The downloaded file was deleted. The file on the server is not the one the "
            "index lists; report it, or check the URL."
        )
    os.replace(part, dest)
    return dest


def _cleanup_empty(dest: str) -> None:
    folder = os.path.dirname(dest)
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


# ---- publishing: index entries from finished runs, and model_zoo.md from the index ----------


def entry_from_run(run_dir: str, *, name: str, url: str, config: str, command: str) -> Dict:
    """An index entry for the final weights of a finished run (checksum, size, its metrics)."""
    weights = os.path.join(run_dir, "checkpoints", "model-final.safetensors")
    metrics_file = os.path.join(run_dir, "metrics.json")
    for path in (weights, metrics_file):
        if not os.path.isfile(path):
            raise MMPromptError(
                f"{path} is missing: only a finished run (train_net wrote its final "
                "weights and metrics.json) can enter the model zoo."
            )
    try:
        with open(metrics_file, encoding="utf-8") as f:
            run = json.load(f)
        main = run.get("main_metric", "accuracy")
        if "hm" in run:
            metrics = {"base": run["base"][main], "new": run["new"][main], "hm": run["hm"]}
        else:
            metrics = {main: run[run.get("split", "test")][main]}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise MMPromptError(
            f"{metrics_file} is not the metrics.json of a finished train_net run ({type(e).__name__}: {e})."
        ) from None
    return {
        "name": name,
        "url": url,
        "filename": os.path.basename(weights),
        "sha256": sha256_of(weights),
        "size": os.path.getsize(weights),
        "config": config,
        "dataset": run.get("dataset", ""),
        "num_shots": run.get("num_shots"),
        "seed": run.get("seed"),
        "trainable_params": (run.get("num_params") or {}).get("trainable"),
        "metrics": metrics,
        "command": command,
    }


def add_entry(entry: Dict, index_path: str = INDEX_PATH) -> None:
    problems = _entry_problems(entry)
    if problems:
        raise MMPromptError(f"The new entry cannot enter the index: {'; '.join(problems)}.")
    entries = load_index(index_path)
    if any(e["name"] == entry["name"] for e in entries):
        raise MMPromptError(f"The index {index_path} already has an entry named {entry['name']}.")
    tmp = f"{index_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump([{k: v for k, v in e.items() if k != "source"} for e in entries + [entry]], f, indent=1)
        f.write("\n")
    os.replace(tmp, index_path)


def markdown(entries: List[Dict]) -> str:
    """The table of model_zoo.md."""
    lines = [
        "| name | dataset | config | metrics | trainable params | size | sha256 | download |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in (e.get("metrics") or {}).items())
        size = f"{e['size'] / 1024:.1f} KiB" if e.get("size") else ""
        lines.append(
            f"| {e['name']} | {e.get('dataset', '')} | {e.get('config', '')} | {metrics} | "
            f"{e.get('trainable_params') or ''} | {size} | `{e['sha256'][:16]}…` | [file]({_link(e['url'])}) |"
        )
    commands = [f"- **{e['name']}**: `{e['command']}`" for e in entries if e.get("command")]
    return "\n".join(lines + (["", "Trained with:", ""] + commands if commands else []))


def _link(url: str) -> str:
    """model_zoo.md's link: files shipped with the package are linked from the repo root."""
    return url if urllib.parse.urlparse(url).scheme else f"mmprompt/zoo/{url}"
