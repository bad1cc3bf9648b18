"""Running a command-line tool so that user errors print a message, not a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable

from ..errors import MMPromptError


def run_cli(main: Callable[[], int | None]) -> None:
    # Hub libraries retry for about 45 s per call when the network is missing; a user who set
    # nothing still gets an immediate, explained failure from the loaders instead.
    try:
        code = main()
    except MMPromptError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def is_offline() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in
               ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "MMPROMPT_OFFLINE"))
