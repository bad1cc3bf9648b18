"""Opening files a user names, refusing what only looks like one.

A fifo, socket or device node where a split file, config or image is expected makes a plain
``open`` (or the read after it) wait forever for a writer. :func:`open_regular` opens without
blocking, checks the opened descriptor (so nothing can be swapped in between) and raises a
:class:`~mmprompt.errors.MMPromptError` naming the path and what it is, instead of hanging.
"""

from __future__ import annotations

import io
import os
import stat
from typing import IO, Optional

from ..errors import MMPromptError

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (fifo)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


def open_regular(path: str, encoding: Optional[str] = None) -> IO:
    """``open(path, "rb")`` (or text mode with ``encoding``) for a regular file (or a link to
    one) only; anything else raises MMPromptError at once. Missing or unreadable files raise the
    usual OSError (FileNotFoundError, PermissionError), which callers already explain."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise MMPromptError(f"{path} is {kind}, not a file; point to the file itself.")
        os.set_blocking(fd, True)
        binary = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return binary if encoding is None else io.TextIOWrapper(binary, encoding=encoding)
