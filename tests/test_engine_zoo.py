"""Model-zoo downloads from a loopback HTTP server: verified, resumable, nothing left on failure."""

import hashlib
import http.server
import importlib.util
import json
import os
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from test_engine_train import load_metrics, run_inprocess, write_config  # noqa: E402

from mmprompt import zoo  # noqa: E402

PAYLOAD = bytes(range(256)) * 700  # 179,200 bytes: several read chunks


class Handler(http.server.BaseHTTPRequestHandler):
    """/good: the payload with Range support; /wrong: other bytes; /truncated: never more than
    half the payload; /flaky: the first response stops at half, later ranges are served."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path.split("/")[1])
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
        data = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        mode = self.path.split("/")[1]
        limit = len(data)
        if mode == "truncated" or (mode == "flaky" and not start):
            limit = max(len(body) // 2 - start, 0)
        self.wfile.write(data[:limit])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests = []
    httpd.files = {"good": PAYLOAD, "wrong": PAYLOAD[::-1], "truncated": PAYLOAD, "flaky": PAYLOAD}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    guard = threading.Timer(120, httpd.shutdown)  # never outlives a hung test
    guard.daemon = True
    guard.start()
    try:
        yield httpd
    finally:
        guard.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def entry(server, mode, name=None, sha=None):
    host, port = server.server_address
    return {
        "name": name or f"ckpt-{mode}",
        "url": f"http://{host}:{port}/{mode}/model-final.safetensors",
        "sha256": sha or hashlib.sha256(PAYLOAD).hexdigest(),
        "size": len(PAYLOAD),
    }


def cache_files(cache):
    return sorted(os.path.relpath(os.path.join(d, f), cache) for d, _, fs in os.walk(cache) for f in fs)


def test_download_verifies_and_reuses_the_cache(server, tmp_path):
    e = entry(server, "good")
    path = zoo.download(e, cache=str(tmp_path), progress=False)
    assert path == str(tmp_path / "zoo" / "ckpt-good" / "model-final.safetensors")
    assert open(path, "rb").read() == PAYLOAD
    assert zoo.download(e, cache=str(tmp_path), progress=False) == path
    assert len(server.requests) == 1  # the second call found the verified file


def test_offline_uses_the_cache_only(server, tmp_path, monkeypatch):
    e = entry(server, "good")
    monkeypatch.setenv("MMPROMPT_OFFLINE", "1")
    with pytest.raises(zoo.OfflineError, match="MMPROMPT_OFFLINE is set"):
        zoo.download(e, cache=str(tmp_path), progress=False)
    assert server.requests == [] and cache_files(tmp_path) == []
    monkeypatch.delenv("MMPROMPT_OFFLINE")
    path = zoo.download(e, cache=str(tmp_path), progress=False)
    monkeypatch.setenv("MMPROMPT_OFFLINE", "1")
    assert zoo.download(e, cache=str(tmp_path), progress=False) == path


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    with pytest.raises(zoo.DownloadError, match="Checksum mismatch for ckpt-wrong.*deleted"):
        zoo.download(entry(server, "wrong"), cache=str(tmp_path), progress=False)
    assert cache_files(tmp_path) == []


def test_truncated_transfer_retries_with_range_then_leaves_nothing(server, tmp_path):
    with pytest.raises(zoo.DownloadError, match=r"stopped at 89600 of 179200 bytes.*Nothing was kept"):
        zoo.download(entry(server, "truncated"), cache=str(tmp_path), progress=False, retries=2)
    assert cache_files(tmp_path) == []
    assert [r for _, r in server.requests] == [None, "bytes=89600-", "bytes=89600-"]


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    path = zoo.download(entry(server, "flaky"), cache=str(tmp_path), progress=False)
    assert open(path, "rb").read() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=89600-"]
    assert cache_files(tmp_path) == ["zoo/ckpt-flaky/model-final.safetensors"]


def test_a_part_file_left_by_a_killed_download_is_continued(server, tmp_path):
    e = entry(server, "good")
    part = zoo.cached_path(e, str(tmp_path)) + ".part"
    os.makedirs(os.path.dirname(part))
    with open(part, "wb") as f:
        f.write(PAYLOAD[:1000])
    assert open(zoo.download(e, cache=str(tmp_path), progress=False), "rb").read() == PAYLOAD
    assert server.requests == [("/good/model-final.safetensors", "bytes=1000-")]


def _model_zoo():
    spec = importlib.util.spec_from_file_location("model_zoo", os.path.join(REPO, "tools", "model_zoo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_zoo_tool_list_download_eval(server, tmp_path, capsys, monkeypatch):
    cfg = write_config(tmp_path)
    trained = run_inprocess(cfg, tmp_path, tmp_path / "run", "DATASET.SUBSAMPLE_CLASSES", "base")
    checkpoint = open(tmp_path / "run" / "checkpoints" / "model-final.safetensors", "rb").read()
    server.files["real"] = checkpoint
    e = {
        **entry(server, "real", name="tiny-b2n", sha=hashlib.sha256(checkpoint).hexdigest()),
        "size": len(checkpoint),
        "dataset": "engine_test_blobs",
        "metrics": {"hm": trained["hm"]},
    }
    index = tmp_path / "index.json"
    index.write_text(json.dumps([e, entry(server, "wrong", name="broken")]))
    monkeypatch.setenv("MMPROMPT_CACHE", str(tmp_path / "cache"))
    tool = _model_zoo()

    assert tool.main(["--index", str(index), "list"]) == 0
    listed = capsys.readouterr().out
    assert "tiny-b2n" in listed and "broken" in listed

    assert (
        tool.main(
            [
                "--index",
                str(index),
                "eval",
                "tiny-b2n",
                "--root",
                str(tmp_path),
                "--output-dir",
                str(tmp_path / "zoo_eval"),
            ]
        )
        == 0
    )
    evaluated = load_metrics(tmp_path / "zoo_eval")
    assert evaluated["hm"] == trained["hm"] and evaluated["new"] == trained["new"]

    from mmprompt.utils.cli import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: tool.main(["--index", str(index), "download", "broken"]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Checksum mismatch" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "cache" / "zoo" / "broken")


def test_add_a_finished_run_then_download_it_and_render_markdown(server, tmp_path, capsys):
    cfg = write_config(tmp_path)
    trained = run_inprocess(cfg, tmp_path, tmp_path / "run")
    index = tmp_path / "index.json"
    index.write_text("[]")
    tool = _model_zoo()
    host, port = server.server_address
    url = f"http://{host}:{port}/published/model-final.safetensors"
    args = [
        "--index",
        str(index),
        "add",
        str(tmp_path / "run"),
        "--name",
        "tiny",
        "--url",
        url,
        "--config",
        "tests/_engine_doubles.py",
        "--command",
        "python tools/train_net.py ...",
    ]
    assert tool.main(args) == 0
    entry = json.loads(index.read_text())[0]
    weights = tmp_path / "run" / "checkpoints" / "model-final.safetensors"
    assert entry["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert entry["size"] == weights.stat().st_size and entry["metrics"] == {"accuracy": trained["test"]["accuracy"]}
    with pytest.raises(zoo.MMPromptError, match="already has an entry named tiny"):
        tool.main(args)
    server.files["published"] = weights.read_bytes()
    assert open(zoo.download(entry, cache=str(tmp_path / "cache"), progress=False), "rb").read() == weights.read_bytes()
    capsys.readouterr()
    assert tool.main(["--index", str(index), "markdown"]) == 0
    table = capsys.readouterr().out
    assert (
        f"| tiny | engine_test_blobs | tests/_engine_doubles.py | accuracy {trained['test']['accuracy']:.2f} |" in table
    )
    assert "`python tools/train_net.py ...`" in table


def test_packaged_index_is_a_list_without_invented_entries():
    entries = zoo.load_index()
    assert isinstance(entries, list)
    for e in entries:  # every published entry says where it came from
        assert {"name", "url", "sha256", "size", "config", "command"} <= set(e)
    with pytest.raises(zoo.MMPromptError, match="No checkpoint named 'no-such-checkpoint'"):
        zoo.find("no-such-checkpoint", entries)


def test_checkpoint_shipped_beside_the_index_downloads_verified(tmp_path):
    import hashlib
    import json

    from mmprompt import zoo

    (tmp_path / "checkpoints").mkdir()
    payload = b"prompt weights" * 100
    (tmp_path / "checkpoints" / "pt.safetensors").write_bytes(payload)
    index = tmp_path / "index.json"
    entry = {
        "name": "pt",
        "url": "checkpoints/pt.safetensors",
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    index.write_text(json.dumps([entry]))
    loaded = zoo.find("pt", zoo.load_index(str(index)))
    path = zoo.download(loaded, cache=str(tmp_path / "cache"), progress=False)
    assert open(path, "rb").read() == payload
    assert "mmprompt/zoo/checkpoints/pt.safetensors" in zoo.markdown([entry])
    zoo.add_entry(dict(entry, name="pt2"), str(index))
    assert all("source" not in e for e in json.loads(index.read_text()))


def test_packaged_zoo_entry_evaluates_to_its_recorded_metric(tmp_path, monkeypatch, capsys):
    """`mmprompt-zoo eval` on the shipped MiniLM + adap_pos checkpoint: its stored config holds keys
    an older mmprompt had (P-tuning v2's hidden-state options), which are named and ignored, and the
    test accuracy is the 91.89 the index records."""
    import json

    from mmprompt.cli import zoo as zoo_cli

    monkeypatch.setenv("MMPROMPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    argv = ["eval", "minilm-bbc_news-adap_pos-8shot-seed1", "--root", str(tmp_path), "--output-dir", str(out)]
    assert zoo_cli.main(argv) == 0
    assert "PROMPT.PTUNING_V2.INIT" in capsys.readouterr().err
    with open(out / "metrics.json", encoding="utf-8") as f:
        metrics = json.load(f)
    assert round(metrics["test"]["accuracy"], 2) == 91.89
