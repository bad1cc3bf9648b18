"""``mmprompt-prep``: turn official dataset downloads into the layouts mmprompt reads.

    mmprompt-prep clip --root $DATA --dataset oxford_pets [--download]
    mmprompt-prep fgvc --root $DATA --dataset cub [--download]
    mmprompt-prep fashion-mnist --root $DATA
    mmprompt-prep text --src ~/downloads --root $DATA --task all

The first word names the preparer; the rest are that preparer's own flags (``mmprompt-prep
fgvc --help``), the same as ``python datasets_prep/prepare_<name>.py``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from ...utils.cli import run_cli

#: subcommand -> module of this package holding its ``main(argv)``
PREPARERS = {
    "clip": "prepare_clip_datasets",
    "fgvc": "prepare_fgvc",
    "fashion-mnist": "prepare_fashion_mnist",
    "text": "prepare_text_datasets",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in PREPARERS:
        print(f"error: unknown preparer '{name}'; choose one of {', '.join(PREPARERS)}.", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{PREPARERS[name]}")
    return module.main(rest)


def console_main() -> None:
    """The console script's entry point."""
    run_cli(main)
