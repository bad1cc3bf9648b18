"""docs/api.md runs as written: its ```python blocks, in order, in one namespace, and every
``print(...)  # expected`` line prints what its comment says (up to a parenthesised remark)."""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "api.md")


def blocks():
    with open(DOC, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def expected_outputs(code: str):
    """The comments of top-level print lines: what each should print."""
    out = []
    for line in code.splitlines():
        m = re.match(r"\s*print\(.*\)\s+# (.*)$", line)
        if m:
            out.append(re.sub(r"\s+\(.*\)$", "", m.group(1)).strip())
    return out


def test_docs_api_examples_run_and_print_what_they_say(tmp_path, monkeypatch):
    pytest.importorskip("open_clip")
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)  # outside the repository, as a user's notebook
    namespace = {}
    found = blocks()
    assert len(found) >= 6
    for code in found:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, DOC, "exec"), namespace)
        printed = buffer.getvalue().splitlines()
        wanted = expected_outputs(code)
        assert len(printed) == len(wanted), (code, printed)
        for want, got in zip(wanted, printed):
            if not want.startswith("the "):  # "# the prompts and the head only" describes, not quotes
                assert got == want, (code, printed)
