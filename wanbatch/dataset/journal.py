"""The durable progress record of one writer: row segments and async task ids.

Each open :class:`~wanbatch.dataset.DatasetWriter` is a *writer* with its own folder
``journal/<writer>/`` holding

- ``lock``: ``flock``-ed while the writer lives, so a recovering process can tell a crashed writer
  from a running one (several processes may write one dataset, e.g. shards);
- ``rows-<seq>.jsonl``: every appended row, one JSON line each, written with a single ``O_APPEND``
  ``write`` before :meth:`DatasetWriter.append` returns. That survives SIGKILL (the kernel has the bytes);
  power loss is covered by the fsync of the Parquet part at each flush. A flush rotates to a new
  segment, writes the buffered rows as a part whose metadata says which segments it covers, and only
  then deletes those segments;
- ``tasks.jsonl``: ``task`` and ``done`` lines for async gateway tasks, so a resumed run polls an
  already paid task instead of submitting it again; each task names the gateway it was submitted to
  (``gateway``: normalised scheme, host, port and path), so a renamed provider still polls it. And
  ``links`` / ``fetched`` lines: image links of paid generations whose download failed, with the time
  they were received, so a rerun within the link's life downloads instead of paying again. A signed
  link's query is what makes it work, so it is kept here, and only here (never in rows or messages).

A SIGKILL can tear the last line of a file; readers skip a line that does not parse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import DatasetError
from .fsutil import disk_errors, explain

_SEGMENT = re.compile(r"^rows-(\d{8})\.jsonl$")
TASKS = "tasks.jsonl"
LOCK = "lock"
#: A journal folder is made and locked as ``journal/.new-<writer>``, then renamed to ``<writer>``;
#: recovery leaves such folders alone (and removes them once older than NEWBORN_AGE: a crash between).
NEWBORN = ".new-"
NEWBORN_AGE = 60.0


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_encoder = json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False)


def encode_lines(items: list[dict[str, Any]]) -> bytes:
    try:
        return "".join([_encoder.encode(i) + "\n" for i in items]).encode()
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"a row cannot be stored: {exc}") from exc


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Undo the JSON encoding: epoch-ms ``created_at`` back to a datetime, ``vars`` pairs to a dict."""
    created = row.get("created_at")
    if isinstance(created, (int, float)):
        row["created_at"] = datetime.fromtimestamp(created / 1000, tz=UTC)
    elif isinstance(created, str):
        row["created_at"] = datetime.fromisoformat(created)
    vars_ = row.get("vars")
    if isinstance(vars_, list):
        row["vars"] = {str(k): v for k, v in vars_}
    return row


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of ``path`` and how many lines were unreadable (a torn tail)."""
    out: list[dict[str, Any]] = []
    bad = 0
    with disk_errors(f"read the journal {path.name}"):
        data = path.read_bytes()
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(item, dict):
            out.append(item)
        else:
            bad += 1
    return out, bad


def segments(folder: Path) -> list[tuple[int, Path]]:
    """``(seq, path)`` of the row segments in a writer folder, oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), folder / n) for n in names if (m := _SEGMENT.match(n))]
    return sorted(found)


class TaskRef(NamedTuple):
    """A journaled async task: the provider's name then, its id, and the gateway it was submitted to
    (``""`` in journals written before gateways were recorded: the provider's name decides then)."""

    provider: str
    task: str
    gateway: str = ""


class PaidLinks(NamedTuple):
    """Image links of a paid generation whose download failed: slot → URL, received at ``at`` (epoch
    seconds) from ``gateway`` by ``provider``."""

    provider: str
    gateway: str
    links: dict[int, str]
    at: float


def task_line(job: str, ref: TaskRef) -> dict[str, Any]:
    line: dict[str, Any] = {"op": "task", "job": job, "provider": ref.provider, "task": ref.task}
    if ref.gateway:
        line["gateway"] = ref.gateway
    return line


def links_line(job: str, paid: PaidLinks) -> dict[str, Any]:
    return {"op": "links", "job": job, "provider": paid.provider, "gateway": paid.gateway,
            "links": {str(k): url for k, url in sorted(paid.links.items())}, "at": paid.at}


def _links_of(item: dict[str, Any]) -> PaidLinks | None:
    raw, at = item.get("links"), item.get("at")
    if not isinstance(raw, dict) or not isinstance(at, (int, float)) or isinstance(at, bool):
        return None
    links = {int(k): v for k, v in raw.items() if isinstance(k, str) and k.isdigit() and isinstance(v, str)}
    if not links:
        return None
    return PaidLinks(str(item.get("provider", "")), str(item.get("gateway", "")), links, float(at))


def read_journal(path: Path) -> tuple[dict[str, TaskRef], dict[str, PaidLinks]]:
    """Tasks journaled in ``path`` and not marked done; paid links not marked fetched."""
    tasks: dict[str, TaskRef] = {}
    links: dict[str, PaidLinks] = {}
    if not path.exists():
        return tasks, links
    items, _ = read_lines(path)
    for item in items:
        job = item.get("job")
        if not isinstance(job, str):
            continue
        op = item.get("op")
        if op == "task":
            gateway = item.get("gateway")
            tasks[job] = TaskRef(str(item.get("provider", "")), str(item.get("task", "")),
                                 gateway if isinstance(gateway, str) else "")
        elif op == "done":
            tasks.pop(job, None)
        elif op == "links":
            if (paid := _links_of(item)) is not None:
                links[job] = paid
        elif op == "fetched":
            links.pop(job, None)
    return tasks, links


def read_tasks(path: Path) -> dict[str, TaskRef]:
    """job_id → :class:`TaskRef` of tasks journaled in ``path`` and not marked done."""
    return read_journal(path)[0]


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``path``, or None if another process holds it.

    Guards against the file being removed between open and lock (a recovering peer deleting it).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


class AppendFile:
    """One ``O_APPEND`` file where each call is a single ``write``; a failed write is rolled back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with disk_errors(f"open the journal {path.name}"):
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, data: bytes) -> None:
        size = -1
        try:
            size = os.fstat(self.fd).st_size
            done = os.write(self.fd, data)
            while done < len(data):  # short only near ENOSPC or for huge writes
                done += os.write(self.fd, data[done:])
        except OSError as exc:
            self._rollback(size)
            raise explain(exc, "write the journal") from exc

    def _rollback(self, size: int) -> None:
        """Cut a half-written record so the next write does not follow a torn line."""
        if size < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, size)

    def sync(self) -> None:
        with disk_errors("sync the journal"):
            os.fsync(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class WriterJournal:
    """The journal folder of the live writer (see the module docstring)."""

    def __init__(self, folder: Path, lock_fd: int) -> None:
        self.folder = folder
        self.lock_fd = lock_fd
        self._rows_lock = threading.Lock()
        self._tasks_lock = threading.Lock()
        existing = segments(folder)
        self.seq = existing[-1][0] + 1 if existing else 1
        self._rows = AppendFile(self._segment(self.seq))
        self._tasks = AppendFile(folder / TASKS)
        self.tasks: dict[str, TaskRef] = {}  # pending: journaled, not done
        self.links: dict[str, PaidLinks] = {}  # paid, not downloaded yet
        self.finished = 0

    def _segment(self, seq: int) -> Path:
        return self.folder / f"rows-{seq:08d}.jsonl"

    def append_rows(self, data: bytes) -> None:
        with self._rows_lock:
            self._rows.write(data)

    def rotate(self) -> int:
        """Start a new segment; returns the sequence number of the last closed one.

        The caller holds the lock that also covers its row buffer (see ``DatasetWriter.flush``).
        """
        with self._rows_lock:
            closed = self.seq
            new = AppendFile(self._segment(closed + 1))
            self._rows.close()
            self._rows, self.seq = new, closed + 1
            return closed

    def drop_upto(self, seq: int) -> None:
        """Delete the segments already covered by a durable index part."""
        for s, path in segments(self.folder):
            if s <= seq and s != self.seq:
                path.unlink(missing_ok=True)

    def add_task(self, job: str, provider: str, task: str, gateway: str = "") -> None:
        ref = TaskRef(provider, task, gateway)
        data = encode_lines([task_line(job, ref)])
        with self._tasks_lock:
            self._tasks.write(data)
            self.tasks[job] = ref

    def add_links(self, job: str, paid: PaidLinks) -> None:
        """Remember the links of ``job``'s paid, undownloaded images (replaces earlier ones)."""
        data = encode_lines([links_line(job, paid)])
        with self._tasks_lock:
            self._tasks.write(data)
            self.links[job] = paid

    def drop_links(self, job: str) -> None:
        """``job``'s links are no longer needed (downloaded, or its images were generated again)."""
        with self._tasks_lock:
            if job not in self.links:
                return
            self._tasks.write(encode_lines([{"op": "fetched", "job": job}]))
            del self.links[job]
            self.finished += 1

    def links_snapshot(self) -> dict[str, PaidLinks]:
        with self._tasks_lock:
            return dict(self.links)

    def finish_task(self, job: str) -> None:
        with self._tasks_lock:
            if job not in self.tasks:
                return
            self._tasks.write(encode_lines([{"op": "done", "job": job}]))
            del self.tasks[job]
            self.finished += 1

    def tasks_snapshot(self) -> dict[str, TaskRef]:
        with self._tasks_lock:
            return dict(self.tasks)

    def shrink_tasks(self) -> None:
        """Replace ``tasks.jsonl`` by the pending tasks only once it is mostly ``done`` lines.

        Holds the task lock throughout, so a task journaled meanwhile is never lost.
        """
        with self._tasks_lock:
            if self.finished <= 256 or self.finished <= 4 * (len(self.tasks) + len(self.links)):
                return
            self._rewrite_tasks_locked()
            self.finished = 0

    def _rewrite_tasks_locked(self) -> None:
        lines = [task_line(j, ref) for j, ref in self.tasks.items()]
        lines += [links_line(j, paid) for j, paid in self.links.items()]
        target = self.folder / TASKS
        tmp = self.folder / f".{TASKS}.tmp"
        with disk_errors("rewrite the task journal"):
            tmp.write_bytes(encode_lines(lines))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            self._tasks.close()
            self._tasks = AppendFile(target)

    def sync(self) -> None:
        with self._tasks_lock:
            self._tasks.sync()

    def close(self) -> None:
        with self._rows_lock:
            self._rows.close()
        with self._tasks_lock:
            self._tasks.close()
