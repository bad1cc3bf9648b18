"""The model zoo on hostile or broken indexes and caches: one message, nothing outside the cache touched.

Downloads use checkpoints shipped beside the index (file:// sources), so no server is needed.
"""

import hashlib
import json
import os
import sys

import pytest
import torch
from _sandbox import HERE, call, refused, sandbox  # noqa: F401  (sandbox is a fixture)
from safetensors.torch import save_file

sys.path.insert(0, HERE)
PAYLOAD = b"prompt weights " * 64
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def write_index(box, entries, raw=None):
    folder = box.root / "zoo"
    folder.mkdir(exist_ok=True)
    (folder / "ckpt.safetensors").write_bytes(PAYLOAD)
    index = folder / "index.json"
    if raw is not None:
        index.write_bytes(raw)
    else:
        index.write_text(json.dumps(entries))
    return str(index)


def good(**changes):
    return {"name": "tiny", "url": "ckpt.safetensors", "sha256": SHA, "size": len(PAYLOAD), **changes}


BAD_INDEXES = {
    "not_utf8": (None, b'[{"name": "caf\xe9"}]', "is not UTF-8 text"),
    "not_json": (None, b'[{"name": "x",]', "is not valid JSON"),
    "not_a_list": (None, b'{"name": "x"}', "must be a JSON list of entries, got dict"),
    "entry_not_object": (["tiny"], None, "entry 0: must be an object"),
    "name_dotdot": ([good(name="../../outside")], None, "is not a plain name"),
    "name_absolute": ([good(name="/tmp/outside")], None, "is not a plain name"),
    "name_dot": ([good(name="..")], None, "is not a plain name"),
    "name_backslash": ([good(name="..\\..\\x")], None, "is not a plain name"),
    "name_not_string": ([good(name=7)], None, "name must be a str, got int"),
    "filename_dotdot": ([good(filename="../../../canary.txt")], None, "filename '../../../canary.txt' is not a plain"),
    "filename_absolute": ([good(filename="/etc/passwd")], None, "is not a plain file name"),
    "sha_not_string": ([good(sha256=123)], None, "sha256 must be a str, got int"),
    "sha_not_hex": ([good(sha256="xyz")], None, "sha256 must be 64 hex digits"),
    "size_string": ([good(size="big")], None, "size must be a number of bytes"),
    "size_negative": ([good(size=-1)], None, "size must be a number of bytes"),
    "size_bool": ([good(size=True)], None, "size must be a number of bytes"),
    "metrics_list": ([good(metrics=[1, 2])], None, "metrics must be a dict"),
    "metric_text": ([good(metrics={"hm": "high"})], None, "metrics hm must be numbers"),
    "url_list": ([good(url=["a"])], None, "url must be a str, got list"),
    "url_scheme": ([good(url="ftp://host/x")], None, "must be http(s)://, file:// or a path"),
    "url_dotdot": ([good(url="../../outside/canary.txt")], None, "must be a path inside the index's folder"),
    "url_empty": ([good(url="")], None, "must be http(s)://"),
    "missing_keys": ([{"name": "tiny"}], None, "'tiny' lacks url"),
    "duplicate_names": ([good(), good()], None, "the name 'tiny' appears 2 times"),
    "config_not_string": ([good(config=["a.yaml"])], None, "config must be a str"),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_bad_index_is_one_message(sandbox, capsys, case):
    entries, raw, needle = BAD_INDEXES[case]
    index = write_index(sandbox, entries, raw)
    refused(call(capsys, "model_zoo", ["--index", index, "list"]), "Model-zoo index", needle)
    assert not sandbox.cache.exists()


def test_every_problem_of_an_index_in_one_message(sandbox, capsys):
    index = write_index(sandbox, [good(name="../x"), good(name="b", sha256="no"), good(name="c", size="s")])
    err = refused(call(capsys, "model_zoo", ["--index", index, "list"])).err
    assert "entry 0" in err and "entry 1" in err and "entry 2" in err


def test_index_missing_or_a_folder(sandbox, capsys):
    refused(call(capsys, "model_zoo", ["--index", sandbox.path("nope.json"), "list"]), "does not exist")
    refused(call(capsys, "model_zoo", ["--index", sandbox.path(), "list"]), "cannot be read")


def test_checksum_mismatch_removes_only_the_partial_file_in_the_cache(sandbox, capsys):
    outside_file = sandbox.outside / "canary.txt"
    entry = good(url="file://" + str(outside_file))  # a source outside: read, never written or deleted
    del entry["size"]
    index = write_index(sandbox, [entry])
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny"]), "Checksum mismatch for tiny")
    assert os.listdir(sandbox.cache / "zoo") == []
    assert outside_file.read_text() == "must not change\n"


def test_a_source_longer_than_its_size_stops_at_the_size(sandbox, capsys):
    """A source that never ends (here a link to /dev/zero's stand-in: a file longer than the entry
    says) must not be read to the end of the disk."""
    index = write_index(sandbox, [good(size=len(PAYLOAD) // 2)])
    refused(
        call(capsys, "model_zoo", ["--index", index, "download", "tiny"]),
        f"sent more than the {len(PAYLOAD) // 2} bytes tiny has",
    )
    assert os.listdir(sandbox.cache / "zoo") == []


def test_a_source_without_a_size_is_capped(sandbox, capsys, monkeypatch):
    """No size in the entry and no Content-Length from the server: a stream that never ends stops
    at MAX_UNSIZED_BYTES."""
    import io
    import urllib.request

    import mmprompt.zoo as zoo

    class Endless(io.RawIOBase):
        status, headers = 200, {}

        def read(self, n=-1):
            return b"\0" * n

    monkeypatch.setattr(zoo, "MAX_UNSIZED_BYTES", 100)
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: Endless())
    entry = good(url="https://example.invalid/ckpt.safetensors")
    del entry["size"]
    refused(
        call(capsys, "model_zoo", ["--index", write_index(sandbox, [entry]), "download", "tiny"]),
        "sent more than the 100 bytes",
        "the most a download without a size may write",
    )


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_source_that_is_not_a_regular_file_is_refused_without_reading(sandbox, capsys, kind):
    index = write_index(sandbox, [good(url="src.safetensors")])
    source = sandbox.root / "zoo" / "src.safetensors"
    if kind == "fifo":
        os.mkfifo(source)  # opening it would block forever
    elif kind == "device":
        os.symlink("/dev/zero", source)  # would never end
    else:
        source.mkdir()
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny"]), "is not a regular file")
    assert not (sandbox.cache / "zoo" / "tiny").exists()


def test_a_link_in_the_cache_pointing_outside_is_refused(sandbox, capsys):
    index = write_index(sandbox, [good(sha256="0" * 64)])
    (sandbox.cache / "zoo").mkdir(parents=True)
    os.symlink(sandbox.outside, sandbox.cache / "zoo" / "tiny")
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny"]), "resolves outside the cache")


def test_a_linked_part_file_is_refused(sandbox, capsys):
    index = write_index(sandbox, [good(filename="canary.txt", sha256="0" * 64)])
    folder = sandbox.cache / "zoo" / "tiny"
    folder.mkdir(parents=True)
    os.symlink(sandbox.outside / "canary.txt", folder / "canary.txt.part")
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny"]), "resolves outside the cache")


def test_a_changed_cached_file_is_fetched_again(sandbox, capsys):
    index = write_index(sandbox, [good()])
    assert call(capsys, "model_zoo", ["--index", index, "download", "tiny"]).code == 0
    cached = sandbox.cache / "zoo" / "tiny" / "ckpt.safetensors"
    cached.write_bytes(b"tampered")
    outcome = call(capsys, "model_zoo", ["--index", index, "download", "tiny"])
    assert outcome.code == 0 and cached.read_bytes() == PAYLOAD


def test_cache_that_is_a_file_says_so(sandbox, capsys):
    index = write_index(sandbox, [good()])
    sandbox.cache.write_text("a file where the cache folder should be")
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny"]), "is not writable", "MMPROMPT_CACHE")


def test_read_only_cache_says_so(sandbox, capsys):
    index = write_index(sandbox, [good()])
    sandbox.cache.mkdir()
    os.chmod(sandbox.cache, 0o555)
    if os.access(sandbox.cache, os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny"]), "is not writable")


def test_offline_without_a_cached_file(sandbox, capsys, monkeypatch):
    index = write_index(sandbox, [good()])
    monkeypatch.setenv("MMPROMPT_OFFLINE", "1")
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny"]), "MMPROMPT_OFFLINE is set")


def test_unknown_name_suggests_close_ones(sandbox, capsys):
    index = write_index(sandbox, [good()])
    refused(
        call(capsys, "model_zoo", ["--index", index, "download", "tinny"]),
        "No checkpoint named 'tinny'",
        "Did you mean tiny",
    )


def test_stray_arguments_are_usage_errors(sandbox, capsys):
    index = write_index(sandbox, [good()])
    refused(call(capsys, "model_zoo", ["--index", index, "download", "tiny", "EXTRA"]), "unrecognized arguments")
    refused(
        call(capsys, "model_zoo", ["--index", index, "eval", "tiny", "--root", "r", "--bogus"]),
        "unrecognized arguments: --bogus",
    )


def test_add_needs_a_finished_run_with_readable_metrics(sandbox, capsys):
    index = write_index(sandbox, [])
    run = sandbox.root / "run"
    args = ["--index", index, "add", run, "--name", "x", "--url", "http://h/x", "--config", "c.yaml", "--command", "c"]
    refused(call(capsys, "model_zoo", args), "only a finished run")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "model-final.safetensors").write_bytes(PAYLOAD)
    (run / "metrics.json").write_bytes(b"\xff\xfe not json")
    refused(call(capsys, "model_zoo", args), "is not the metrics.json of a finished train_net run")
    (run / "metrics.json").write_text('{"main_metric": "accuracy", "split": "test", "test": 5}')
    refused(call(capsys, "model_zoo", args), "is not the metrics.json")


def test_add_refuses_an_entry_name_that_is_a_path(sandbox, capsys):
    index = write_index(sandbox, [])
    run = sandbox.root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "model-final.safetensors").write_bytes(PAYLOAD)
    (run / "metrics.json").write_text('{"main_metric": "accuracy", "split": "test", "test": {"accuracy": 5.0}}')
    refused(
        call(
            capsys,
            "model_zoo",
            [
                "--index",
                index,
                "add",
                run,
                "--name",
                "../../x",
                "--url",
                "http://h/x",
                "--config",
                "c.yaml",
                "--command",
                "c",
            ],
        ),
        "cannot enter the index",
        "is not a plain name",
    )
    assert json.loads(open(index).read()) == []


def _zoo_checkpoint(box, metadata):
    folder = box.root / "zoo"
    folder.mkdir(exist_ok=True)
    path = folder / "ckpt.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    payload = path.read_bytes()
    return write_index_raw(box, [good(sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))])


def write_index_raw(box, entries):
    index = box.root / "zoo" / "index.json"
    index.write_text(json.dumps(entries))
    return str(index)


def test_eval_of_a_checkpoint_without_a_usable_config(sandbox, capsys):
    index = _zoo_checkpoint(sandbox, {"format": "x"})
    refused(call(capsys, "model_zoo", ["--index", index, "eval", "tiny", "--root", sandbox.root]), "carries no config")
    index = _zoo_checkpoint(sandbox, {"config": "[1, 2"})
    refused(
        call(capsys, "model_zoo", ["--index", index, "eval", "tiny", "--root", sandbox.root]), "is not a yaml mapping"
    )


def test_eval_of_a_file_that_is_not_safetensors(sandbox, capsys):
    index = write_index(sandbox, [good()])  # PAYLOAD: checksummed, but no safetensors header
    refused(
        call(capsys, "model_zoo", ["--index", index, "eval", "tiny", "--root", sandbox.root]),
        "is not a readable safetensors checkpoint",
    )


@pytest.mark.parametrize("order", ["flags_first", "pairs_first"])
def test_eval_accepts_key_value_pairs_after_the_flags(sandbox, capsys, order):
    """``eval NAME --root R KEY VALUE`` (the documented order) and ``eval NAME KEY VALUE --root R``."""
    from test_engine_train import run_inprocess, write_config

    cfg = write_config(sandbox.root)
    run_inprocess(cfg, sandbox.root, sandbox.root / "run", "OPTIM.MAX_EPOCH", "1")
    weights = (sandbox.root / "run" / "checkpoints" / "model-final.safetensors").read_bytes()
    (sandbox.root / "zoo").mkdir()
    (sandbox.root / "zoo" / "ckpt.safetensors").write_bytes(weights)
    index = write_index_raw(sandbox, [good(sha256=hashlib.sha256(weights).hexdigest(), size=len(weights))])
    flags = ["--root", sandbox.root, "--output-dir", sandbox.root / "ev"]
    pairs = ["TEST.SPLIT", "val"]
    argv = ["--index", index, "eval", "tiny", *(flags + pairs if order == "flags_first" else pairs + flags)]
    outcome = call(capsys, "model_zoo", argv)
    assert outcome.code == 0, outcome.err
    with open(sandbox.root / "ev" / "metrics.json") as f:
        assert json.load(f)["split"] == "val"
