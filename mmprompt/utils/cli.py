"""Running a command-line tool so that user errors print a message, not a traceback.

Contract of every tool (``tools/*.py``, ``datasets_prep/*.py``): exit code 0 on success, 2 for
an input the user must fix (one ``error: ...`` line on stderr, no traceback), 130 when
interrupted, 1 when a worker process failed; a Python traceback only for a bug in mmprompt.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Optional, Sequence

from ..errors import MMPromptError

# Failures of the machine rather than of mmprompt: the user fixes them (free space, permissions)
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def call_cli(main: Callable[..., Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)`` (``main()`` when ``argv`` is None) as its command would; the exit code.

    Tests call tools in-process through this, so it never calls ``sys.exit`` itself.
    """
    # Hub libraries retry for about 45 s per call when the network is missing; a user who set
    # nothing still gets an immediate, explained failure from the loaders instead.
    try:
        code = main() if argv is None else main(list(argv))
    except MMPromptError as e:
        print(f"{_error_prefix()}: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    except SystemExit as e:  # argparse's usage errors (already printed), or a tool's own exit
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr, flush=True)
        return 1
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(
            f"{_error_prefix()}: cannot write or read{where}: {e.strerror}. Free some space or fix the permissions, "
            "then run the command again (a training run continues with --resume).",
            file=sys.stderr,
            flush=True,
        )
        return 2
    return code or 0


def _error_prefix() -> str:
    """``error``, or ``error (rank R)`` in one of several torchrun workers (each prints its own)."""
    if os.environ.get("RANK") is not None and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return f"error (rank {os.environ['RANK']})"
    return "error"


def run_cli(main: Callable[..., Optional[int]]) -> None:
    sys.exit(call_cli(main))


def is_offline() -> bool:
    return any(
        os.environ.get(k, "") not in ("", "0")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "MMPROMPT_OFFLINE")
    )
