"""Hostile and broken archives: nothing is written outside the target, nothing half-extracted stays.

Every case of the matrix runs in the sandbox (tests/_sandbox.py), whose teardown checks that the
canary folder the archives aim at is unchanged.
"""

import io
import os
import stat
import tarfile
import zipfile

import pytest
from _sandbox import call, refused, sandbox  # noqa: F401  (sandbox is a fixture)

from datasets_prep._common import PrepError, safe_extract

DEEP = "../" * 16  # more than any path's depth: resolves to "/"


def _tar(path, members, mode="w:gz"):
    """members: (name, kind, data_or_linkname) with kind file, dir, sym, lnk, chr, blk, fifo."""
    kinds = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "sym": tarfile.SYMTYPE,
        "lnk": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "blk": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    with tarfile.open(path, mode) as t:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            data = None
            if kind == "file":
                data = payload if isinstance(payload, bytes) else (payload or "x").encode()
                info.size = len(data)
            elif kind in ("sym", "lnk"):
                info.linkname = payload
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def _zip(path, members):
    """members: (name, data, unix_mode or None)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            z.writestr(info, data)
    return str(path)


def _outside(box, *parts):
    return str(box.outside.joinpath(*parts))


def tar_cases(box):
    out = _outside(box)
    return {
        "symlink_chain_then_file": [
            ("a", "sym", "."),
            ("b", "sym", "a/a/a/a/a"),
            ("c", "sym", "b/b/b/" + DEEP),
            ("d", "sym", "c" + out),
            ("d/escaped.txt", "file", "owned"),
        ],
        "symlink_absolute": [("l", "sym", out)],
        "symlink_then_file_through_it": [
            ("dir", "dir", None),
            ("dir/l", "sym", DEEP + out.lstrip("/")),
            ("dir/l/canary.txt", "file", "overwritten"),
        ],
        "symlink_inside_target": [("real.txt", "file", "x"), ("alias.txt", "sym", "real.txt")],
        "hardlink_outside": [("h", "lnk", _outside(box, "canary.txt"))],
        "hardlink_inside": [("f.txt", "file", "x"), ("g.txt", "lnk", "f.txt")],
        "absolute_member": [(_outside(box, "abs.txt"), "file", "owned")],
        "dotdot_member": [(DEEP + _outside(box, "up.txt").lstrip("/"), "file", "owned")],
        "nested_dotdot": [("a/b/../../../x.txt", "file", "owned")],
        "backslash_dotdot": [("..\\..\\x.txt", "file", "owned")],
        "drive_letter": [("C:/x.txt", "file", "owned")],
        "character_device": [("null", "chr", None)],
        "block_device": [("sda", "blk", None)],
        "fifo": [("pipe", "fifo", None)],
        "file_then_folder_same_name": [("x", "file", "a"), ("x", "dir", None), ("x/y.txt", "file", "b")],
    }


REFUSALS = {
    "symlink_chain_then_file": "symbolic link 'a'",
    "symlink_absolute": "symbolic link 'l'",
    "symlink_then_file_through_it": "symbolic link 'dir/l'",
    "symlink_inside_target": "symbolic link 'alias.txt'",
    "hardlink_outside": "hard link 'h'",
    "hardlink_inside": "hard link 'g.txt'",
    "absolute_member": "absolute path",
    "dotdot_member": "contains '..'",
    "nested_dotdot": "contains '..'",
    "backslash_dotdot": "contains '..'",
    "drive_letter": "absolute path",
    "character_device": "character device 'null'",
    "block_device": "block device 'sda'",
    "fifo": "fifo 'pipe'",
    "file_then_folder_same_name": "folder 'x', which is also a file",
}


def _assert_nothing_extracted(box, dest):
    assert not os.path.exists(dest)
    leftovers = [n for n in os.listdir(os.path.dirname(dest)) if n.startswith(".extracting-")]
    assert leftovers == []


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_hostile_tar_is_refused(sandbox, case):
    members = tar_cases(sandbox)[case]
    archive = _tar(sandbox.root / f"{case}.tar.gz", members)
    dest = sandbox.path("data", "target")
    with pytest.raises(PrepError) as info:
        safe_extract(archive, dest)
    assert REFUSALS[case] in str(info.value) and "nothing was extracted" in str(info.value)
    _assert_nothing_extracted(sandbox, dest)


@pytest.mark.parametrize("mode", ["w", "w:bz2", "w:xz"])
def test_every_tar_compression_goes_through_the_same_checks(sandbox, mode):
    archive = _tar(sandbox.root / "a.tar", tar_cases(sandbox)["symlink_then_file_through_it"], mode=mode)
    with pytest.raises(PrepError, match="symbolic link 'dir/l'"):
        safe_extract(archive, sandbox.path("data", "t"))
    _assert_nothing_extracted(sandbox, sandbox.path("data", "t"))


ZIP_CASES = {
    "zip_dotdot": ([("../../escaped.txt", b"owned", None)], "contains '..'"),
    "zip_absolute": ([("/tmp/escaped.txt", b"owned", None)], "absolute path"),
    "zip_symlink": ([("link", b"/etc", stat.S_IFLNK | 0o777)], "symbolic link 'link'"),
    "zip_backslash_dotdot": ([("..\\..\\escaped.txt", b"owned", None)], "contains '..'"),
    "zip_fifo": ([("pipe", b"", stat.S_IFIFO | 0o644)], "special file 'pipe'"),
}


@pytest.mark.parametrize("case", sorted(ZIP_CASES))
def test_hostile_zip_is_refused(sandbox, case):
    members, needle = ZIP_CASES[case]
    archive = _zip(sandbox.root / f"{case}.zip", [("ok/first.txt", b"fine", None)] + members)
    dest = sandbox.path("data", "target")
    with pytest.raises(PrepError, match=needle.replace("(", r"\(")):
        safe_extract(archive, dest)
    _assert_nothing_extracted(sandbox, dest)


def _good_tar(path):
    return _tar(
        path,
        [
            ("pkg", "dir", None),
            ("pkg/images", "dir", None),
            ("pkg/images/a.jpg", "file", "jpeg"),
            ("pkg/run.sh", "file", "#!/bin/sh\n"),
        ],
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_broken_archive_says_download_again(sandbox, damage):
    good = _good_tar(sandbox.root / "good.tar.gz")
    raw = open(good, "rb").read()
    broken = sandbox.root / f"{damage}.tar.gz"
    broken.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    dest = sandbox.path("data", "target")
    with pytest.raises(PrepError, match="not a readable tar/zip archive.*Download it again"):
        safe_extract(str(broken), dest)
    _assert_nothing_extracted(sandbox, dest)


def test_zip_with_a_corrupt_member_is_refused(sandbox):
    archive = _zip(sandbox.root / "crc.zip", [("a.txt", b"A" * 5000, None)])
    raw = bytearray(open(archive, "rb").read())
    raw[40:44] = b"ZZZZ"  # inside the stored member's data: the CRC check fails while reading
    open(archive, "wb").write(bytes(raw))
    with pytest.raises(PrepError, match="truncated or corrupt"):
        safe_extract(archive, sandbox.path("data", "t"))
    _assert_nothing_extracted(sandbox, sandbox.path("data", "t"))


def test_good_archives_extract_with_strip_modes_and_no_overwrite(sandbox):
    dest = sandbox.path("data", "pets")
    assert safe_extract(_good_tar(sandbox.root / "good.tar.gz"), dest, strip="pkg") == ["images", "run.sh"]
    assert open(os.path.join(dest, "images", "a.jpg")).read() == "jpeg"
    assert os.stat(os.path.join(dest, "run.sh")).st_mode & 0o777 == 0o644  # the archive's mode, no more
    zipped = _zip(sandbox.root / "more.zip", [("extra/", b"", None), ("extra/b.txt", b"bee", stat.S_IFREG | 0o755)])
    assert safe_extract(zipped, dest) == ["extra"]
    assert os.stat(os.path.join(dest, "extra", "b.txt")).st_mode & 0o111
    with pytest.raises(PrepError, match="would overwrite extra"):
        safe_extract(zipped, dest)
    assert sorted(os.listdir(dest)) == ["extra", "images", "run.sh"]


def test_unwritable_target_folder_is_one_message(sandbox):
    parent = sandbox.root / "readonly"
    parent.mkdir()
    os.chmod(parent, 0o555)
    if os.access(parent, os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(PrepError, match="Choose a writable --root"):
        safe_extract(_good_tar(sandbox.root / "good.tar.gz"), str(parent / "x"))


@pytest.mark.parametrize("case", ["symlink_chain_then_file", "hardlink_outside", "dotdot_member"])
def test_prep_script_refuses_hostile_archive(sandbox, capsys, case):
    """The whole command: exit code 2, one message, the dataset folder as it was."""
    folder = sandbox.root / "data" / "oxford_pets"
    folder.mkdir(parents=True)
    _tar(folder / "images.tar.gz", tar_cases(sandbox)[case])
    outcome = call(capsys, "prepare_clip_datasets", ["--root", sandbox.root / "data", "--dataset", "oxford_pets"])
    refused(outcome, "images.tar.gz", REFUSALS[case])
    assert sorted(os.listdir(folder)) == ["images.tar.gz"]
