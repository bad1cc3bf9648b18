"""The bad-input matrix's harness: each case runs in a sandbox and must leave everything else alone.

``sandbox`` (a fixture; import it into a test module) makes ``tmp_path/sandbox`` the working
directory, ``$HOME`` and ``$MMPROMPT_CACHE`` parent, and ``tmp_path/outside`` a folder of canary
files that hostile inputs aim at. After the case it asserts that the canaries are unchanged,
that nothing appeared in ``tmp_path`` besides those two folders, and that the repository's files
(tracked, untracked and ignored, bytecode aside) are as they were.

``call(tool, argv)`` runs ``tools/<tool>.py``'s ``main(argv)`` in-process exactly as its command
line does (through :func:`mmprompt.utils.cli.call_cli`), returning the exit code and output;
``refused`` asserts the user-error contract: exit code 2, no traceback, the message names the
problem.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from mmprompt.utils.cli import call_cli  # noqa: E402

_TOOLS: Dict[str, object] = {}


def tool(name: str):
    """tools/<name>.py (or datasets_prep/<name>.py) as a module, loaded once."""
    if name not in _TOOLS:
        folder = "datasets_prep" if name.startswith("prepare_") else "tools"
        spec = importlib.util.spec_from_file_location(f"_matrix_{name}", os.path.join(REPO, folder, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        _TOOLS[name] = module
    return _TOOLS[name]


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def call(capsys, name: str, argv) -> Outcome:
    capsys.readouterr()
    code = call_cli(tool(name).main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def refused(outcome: Outcome, *needles: str, code: int = 2) -> Outcome:
    assert outcome.code == code, (outcome.code, outcome.err, outcome.out)
    assert "Traceback" not in outcome.err and "Traceback" not in outcome.out, outcome.err
    for needle in needles:
        assert needle in outcome.err, f"{needle!r} not in: {outcome.err}"
    return outcome


def _tree(folder: str) -> Dict[str, str]:
    """relative path -> sha256 of every file (and link target) under ``folder``."""
    out = {}
    for d, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _repo_state() -> str:
    proc = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=all", "--ignored"],
        capture_output=True,
        text=True,
    )
    lines = [
        line
        for line in proc.stdout.splitlines()
        if "__pycache__" not in line and not line.endswith(".pyc") and ".pytest_cache" not in line
    ]
    return "\n".join(lines)


class Sandbox:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.root = tmp_path / "sandbox"
        self.outside = tmp_path / "outside"
        self.cache = self.root / "cache"
        (self.root / "home").mkdir(parents=True)
        (self.outside / "deep").mkdir(parents=True)
        (self.outside / "canary.txt").write_text("must not change\n")
        (self.outside / "deep" / "canary.bin").write_bytes(bytes(range(256)))

    def path(self, *parts) -> str:
        return str(self.root.joinpath(*parts))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    box = Sandbox(tmp_path)
    outside_before, repo_before = _tree(str(box.outside)), _repo_state()
    monkeypatch.chdir(box.root)
    monkeypatch.setenv("HOME", str(box.root / "home"))
    monkeypatch.setenv("MMPROMPT_CACHE", str(box.cache))
    monkeypatch.delenv("MMPROMPT_ZOO_INDEX", raising=False)
    monkeypatch.delenv("MMPROMPT_OFFLINE", raising=False)
    yield box
    # a case that chmod-ed something read-only gives it back, so the checks can read it
    for d, dirs, _ in os.walk(tmp_path):
        for name in dirs:
            os.chmod(os.path.join(d, name), 0o755)
    assert _tree(str(box.outside)) == outside_before, "a file outside the sandbox changed"
    assert sorted(os.listdir(tmp_path)) == ["outside", "sandbox"], os.listdir(tmp_path)
    assert _repo_state() == repo_before, "the repository changed"
