#!/usr/bin/env python
"""Shim for checkouts that are not installed: :mod:`mmprompt.cli.prep.prepare_fgvc` (see
:func:`datasets_prep.stand_in`)."""

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from datasets_prep import stand_in  # noqa: E402

stand_in(__name__, "prepare_fgvc", globals())
