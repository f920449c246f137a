"""Atomic file writes and one translation of OS errors into :class:`DatasetError`.

Every disk operation of the dataset goes through :func:`disk_errors`, so a full disk or a read-only
folder reaches the user as one readable sentence that says what to do, never as a traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DatasetError

_ADVICE: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free some space and run again (nothing already indexed is lost)",
    errno.EDQUOT: "the disk quota is exceeded: free some space and run again (nothing indexed is lost)",
    errno.EACCES: "permission denied: choose an output folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose an output folder you can write to",
    errno.EROFS: "the file system is read-only: choose an output folder on a writable disk",
    errno.EMFILE: "too many open files: raise `ulimit -n` or lower the concurrency",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter output folder",
    errno.ENOTDIR: "a path component is a file, not a folder: choose another output folder",
    errno.EIO: "an I/O error occurred: check the disk",
    errno.ENOENT: "the path does not exist and cannot be created here: choose another output folder",
}


def explain(exc: OSError, what: str) -> DatasetError:
    """Turn ``exc`` into a :class:`DatasetError` naming ``what`` failed and how to fix it."""
    where = exc.filename if exc.filename is not None else ""
    advice = _ADVICE.get(exc.errno or 0, exc.strerror or str(exc))
    place = f" ({where})" if where else ""
    return DatasetError(f"cannot {what}{place}: {advice}")


@contextmanager
def disk_errors(what: str) -> Iterator[None]:
    """Re-raise any ``OSError`` inside as a :class:`DatasetError` (see :func:`explain`)."""
    try:
        yield
    except OSError as exc:
        raise explain(exc, what) from exc


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(target: Path, tag: str) -> Path:
    """A hidden sibling of ``target`` that no ``*.parquet`` / ``*.json`` glob matches."""
    return target.with_name(f".{target.name}.{tag}-{secrets.token_hex(4)}.tmp")


def atomic_write(target: Path, data: bytes, *, tag: str = "w") -> None:
    """Write ``data`` to ``target`` so that a reader (or a crash) sees the old file or the new one."""

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    with disk_errors(f"write {target.name}"):
        target.parent.mkdir(parents=True, exist_ok=True)
        commit_via(temp_name(target, tag), target, write)


def commit_via(tmp: Path, target: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)``, then fsync it, rename it over ``target`` and fsync the folder; a failure at any
    step removes ``tmp`` and leaves ``target`` as it was."""
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
