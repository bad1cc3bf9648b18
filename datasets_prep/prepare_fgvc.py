#!/usr/bin/env python
"""Shim for checkouts that are not installed: the body is :mod:`mmprompt.cli.prep.prepare_fgvc`
(``mmprompt-prep`` once installed). Imported, this name is that module itself, so attributes
set on it (tests monkeypatch them) reach the code that reads them; loaded from its path, it holds
that module's names."""

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from mmprompt.cli.prep import prepare_fgvc as _body  # noqa: E402

globals().update({k: v for k, v in vars(_body).items() if not k.startswith("__")})

if __name__ == "__main__":
    from mmprompt.utils.cli import run_cli

    run_cli(_body.main)
else:
    sys.modules[__name__] = _body
