"""Reading the text files a spec names (the spec itself, vars files) without trusting them.

A path may name a FIFO (``open`` would wait forever for a writer), ``/dev/zero`` (reading never
ends) or a multi-gigabyte file. So the file is opened non-blocking, must be a regular file, and is
read only up to a size cap: anything else is a clear error before a byte is parsed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Largest spec file read (a spec is a page of YAML; long lists belong in vars files).
MAX_SPEC_BYTES = 4 << 20
#: Largest vars file read: ~1 M values of 64 characters, already far beyond a sensible batch.
MAX_VARS_FILE_BYTES = 64 << 20


class FileProblem(Exception):
    """A file that cannot be used: ``message`` says why (without naming the file: callers do),
    ``hint`` how to fix it (or None)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def read_text_capped(path: Path, max_bytes: int, *, what: str = "file") -> str:
    """The UTF-8 text (BOM dropped) of the regular file ``path``, at most ``max_bytes`` long.

    Raises FileNotFoundError when missing (callers word that themselves) and :class:`FileProblem`
    for a directory, device, FIFO or socket, a file over the cap, unreadable bytes or an OS error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise FileProblem(f"is a directory, not a {what}") from None
    except OSError as exc:
        raise FileProblem(f"cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileProblem(f"is a directory, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem("is not a regular file (a pipe, device or socket)",
                              f"point the {what} at an ordinary file")
        if info.st_size > max_bytes:
            raise FileProblem(f"is {info.st_size} bytes; a {what} may hold at most {max_bytes}",
                              "split it, or keep only the values you mean to use")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes and (chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise FileProblem(f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew while we read it
        raise FileProblem(f"holds more than {max_bytes} bytes; a {what} may hold at most {max_bytes}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileProblem("is not UTF-8 text", "save it as UTF-8") from None
