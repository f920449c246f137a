"""The dataset writer: images in place, rows journaled then indexed, tasks remembered.

One :class:`Dataset` per process (or per shard) writing a root. The runner calls the small methods
(``append``, ``place``, ``journal_task``…) from its event loop and the heavy ones (``flush``,
``compact``, ``recover``, ``done_image_ids``) through a worker thread; the two sides never block each
other for long (separate locks for rows and tasks).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DatasetError, NotADatasetError
from . import manifest as _manifest
from .compaction import CompactReport, compact
from .reader import failed_from
from .recovery import RecoveryReport, recover
from .fsutil import disk_errors, explain
from .journal import WriterJournal, encode_lines, try_lock
from .layout import Layout, check_ext, check_image_id
from .parts import part_name, read_parts, rows_to_table, write_part
from .schema import COLUMNS

_COLUMN_SET = frozenset(COLUMNS)
_STATUSES = frozenset({"ok", "failed"})
FLUSH_ROWS = 5_000
FLUSH_SECONDS = 10.0
COMPACT_PARTS = 16


class Dataset:
    """A writable dataset root. Use :meth:`open`; close it (or use ``with``) to flush."""

    def __init__(self, layout: Layout, writer: str, journal: WriterJournal) -> None:
        self.layout = layout
        self.root = layout.root
        self.writer = writer
        self.journal = journal
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._rows_lock = threading.Lock()  # journal write + buffer, against a flush in a thread
        self._made_dirs: set[str] = set()
        self._tmp_counter = itertools.count()
        self._unplaced: dict[str, str] | None = None  # image_id → file name, from the last listing
        self._known_failed: set[str] = set()
        self._superseded = False
        self._closed = False

    # ----------------------------------------------------------------------------------- open

    @classmethod
    def open(cls, root: str | Path, *, create: bool = True) -> Dataset:
        """Open (or create) the dataset at ``root`` for writing.

        Refuses early, with a message that says what to do: a file in the way, a non-empty folder
        that is not a dataset, a missing dataset when ``create=False``, and any folder where a probe
        file cannot be written (read-only, permissions, full disk). An object-store URI
        (``s3://…``) opens a staging folder mirrored to it: see :mod:`wanbatch.dataset.remote`.
        """
        if isinstance(root, str) and "://" in root:
            from .remote import RemoteDataset, is_remote

            if is_remote(root):
                return RemoteDataset.open_remote(root, create=create)
        layout = Layout.of(root)
        path = layout.root
        if path.exists() and not path.is_dir():
            raise NotADatasetError(f"{path}: exists and is not a folder; choose another output")
        if path.is_dir() and not layout.is_dataset():
            try:
                entries = [e for e in os.listdir(path) if not e.startswith(".")]
            except OSError as exc:
                raise explain(exc, "list the output folder") from exc
            if entries:
                raise NotADatasetError(
                    f"{path}: the folder is not empty and is not a wanbatch dataset "
                    f"(no wanbatch.json); choose an empty or new folder"
                )
        if not layout.is_dataset() and not create:
            raise NotADatasetError(f"{path}: not a wanbatch dataset (no wanbatch.json or index/)")
        with disk_errors(f"create the dataset in {path}"):
            path.mkdir(parents=True, exist_ok=True)
            for folder in (layout.tmp, layout.journal, layout.index, layout.images):
                folder.mkdir(exist_ok=True)
            probe = layout.tmp / f"probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"wanbatch")
            probe.unlink()
        _manifest.ensure_manifest(layout)
        writer = f"{os.getpid():x}{secrets.token_hex(4)}"
        folder = layout.writer_journal(writer)
        with disk_errors("create the journal"):
            folder.mkdir(parents=True)
            layout.writer_tmp(writer).mkdir(parents=True)
        fd = try_lock(folder / "lock")
        if fd is None:
            raise DatasetError(f"{folder}: cannot lock the journal; is the file system a network mount "
                               "without locks?")
        return cls(layout, writer, WriterJournal(folder, fd))

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except DatasetError:
                pass  # the original error matters more; the journal keeps the rows

    def close(self) -> None:
        """Flush, then release the journal (kept on disk if tasks are pending or a flush failed)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self.journal.close()
            clean = not self._buffer and not self.journal.tasks
            if clean:
                shutil.rmtree(self.journal.folder, ignore_errors=True)
                shutil.rmtree(self.layout.writer_tmp(self.writer), ignore_errors=True)
            os.close(self.journal.lock_fd)

    # ----------------------------------------------------------------------------------- recovery

    def recover(self) -> RecoveryReport:
        """Reconcile what crashed writers left behind; see :mod:`wanbatch.dataset.recovery`."""
        return recover(self)

    # ----------------------------------------------------------------------------------- images

    def tmp_path(self, suffix: str = "") -> Path:
        """A fresh path in this writer's ``.tmp`` folder (same file system as ``images/``)."""
        return self.layout.writer_tmp(self.writer) / f"{next(self._tmp_counter)}-{secrets.token_hex(4)}{suffix}"

    def image_path(self, image_id: str, ext: str) -> Path:
        check_image_id(image_id)
        check_ext(ext)
        return self.layout.image_path(image_id, ext)

    def place(self, tmp: Path, image_id: str, ext: str) -> str:
        """Atomically move a finished download into ``images/``; returns its relative path."""
        check_image_id(image_id)
        check_ext(ext)
        rel = self.layout.image_rel(image_id, ext)
        prefix = image_id[:2]
        with disk_errors(f"store image {image_id}"):
            if prefix not in self._made_dirs:
                (self.layout.images / prefix).mkdir(parents=True, exist_ok=True)
                self._made_dirs.add(prefix)
            os.replace(tmp, self.root / rel)
        if self._unplaced is not None:  # on disk without a row until append() brings it
            self._unplaced[image_id] = rel.rsplit("/", 1)[1]
        return rel

    def existing_image(self, image_id: str) -> Path | None:
        """An image file on disk for ``image_id`` (any extension), e.g. one whose row was lost."""
        check_image_id(image_id)
        folder = self.layout.images / image_id[:2]
        if self._unplaced is not None:
            name = self._unplaced.get(image_id)
            if name is not None and (folder / name).is_file():
                return folder / name
            return None
        for ext in ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tiff"):
            candidate = folder / f"{image_id}.{ext}"
            if candidate.is_file():
                return candidate
        return None

    # ----------------------------------------------------------------------------------- tasks

    def journal_task(self, job_id: str, provider: str, task_id: str) -> None:
        """Remember an async task id before polling it (survives SIGKILL when this returns)."""
        if not job_id or not task_id:
            raise DatasetError("journal_task needs a job id and a task id")
        self.journal.add_task(job_id, provider, task_id)

    def finish_task(self, job_id: str) -> None:
        """The task of ``job_id`` has its rows (or is given up): never poll it again."""
        self.journal.finish_task(job_id)

    def pending_tasks(self, *, forget_answered: bool = False) -> dict[str, tuple[str, str]]:
        """job_id → (provider, task_id) for journaled tasks whose job has no row yet.

        With ``forget_answered``, tasks whose job already has rows (a crash fell between the rows and
        the task's "done" mark) are marked done: nobody will poll them, and a clean close can then
        drop the journal instead of carrying them from run to run.
        """
        tasks = self.journal.tasks_snapshot()
        if not tasks:
            return {}
        jobs = set(tasks)
        with self._rows_lock:
            with_rows = {r["job_id"] for r in self._buffer if r.get("job_id") in jobs}
        table = read_parts(self.layout, ["job_id"], pc.field("job_id").isin(pa.array(sorted(jobs))))
        with_rows.update(table["job_id"].to_pylist())
        if forget_answered:
            for job_id in sorted(with_rows & jobs):
                self.finish_task(job_id)
        return {j: t for j, t in tasks.items() if j not in with_rows}

    # ----------------------------------------------------------------------------------- rows

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Journal ``rows`` (durable against SIGKILL on return), then buffer them for the next part."""
        if not rows:
            return
        if self._closed:
            raise DatasetError("the dataset is closed")
        checked = [self._check(row) for row in rows]
        data = encode_lines(checked)
        with self._rows_lock:
            self.journal.append_rows(data)
            self._buffer.extend(checked)
        if self._unplaced:
            for row in checked:
                self._unplaced.pop(row["image_id"], None)
        if self._known_failed and not self._superseded:
            self._superseded = any(r["image_id"] in self._known_failed for r in checked)

    @staticmethod
    def _check(row: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise DatasetError(f"a row must be a dict, not {type(row).__name__}")
        extra = row.keys() - _COLUMN_SET
        if extra:
            raise DatasetError(f"unknown index column(s) {sorted(extra)}; see wanbatch/dataset/schema.py")
        if not row.get("image_id") or not row.get("job_id") or row.get("status") not in _STATUSES:
            raise DatasetError(
                f"a row needs image_id, job_id and status 'ok' or 'failed': got {row.get('image_id')!r}, "
                f"{row.get('job_id')!r}, {row.get('status')!r}"
            )
        if row["status"] == "ok" and not row.get("path"):
            raise DatasetError(f"ok row {row['image_id']}: needs the relative path of its image")
        return dict(row)

    def should_flush(self) -> bool:
        return len(self._buffer) >= FLUSH_ROWS or (
            bool(self._buffer) and time.monotonic() - self._last_flush >= FLUSH_SECONDS
        )

    def flush(self) -> None:
        """Write the buffered rows as one new part, then drop the journal segments they came from.

        If writing fails (disk full…) the rows stay buffered and journaled, nothing indexed is touched,
        and the error says what to do; the next flush (or a recovery) writes them.
        """
        self._last_flush = time.monotonic()
        self.journal.sync()
        self.journal.shrink_tasks()
        with self._rows_lock:
            if not self._buffer:
                return
            upto = self.journal.rotate()
            taken, self._buffer = self._buffer, []
        try:
            write_part(self.layout, rows_to_table(taken), {self.writer: upto}, part_name("w", self.writer))
        except BaseException:
            with self._rows_lock:
                self._buffer = taken + self._buffer
            raise
        with disk_errors("drop flushed journal segments"):
            self.journal.drop_upto(upto)

    # ----------------------------------------------------------------------------------- reads

    def done_image_ids(self) -> set[str]:
        """Image ids with an ``ok`` row whose file exists (one listing of ``images/``, no stat per row).

        Also remembers image files that no ok row claims, for :meth:`existing_image`.
        """
        on_disk = self._list_images()
        ok = read_parts(self.layout, ["image_id", "path"], pc.field("status") == "ok")
        buffered = [r for r in self._buffer if r["status"] == "ok"]
        if buffered:
            ok = pa.concat_tables([ok, pa.Table.from_pylist(
                [{"image_id": r["image_id"], "path": r.get("path")} for r in buffered], schema=ok.schema)])
        existing = pa.array(list(on_disk.keys()), pa.string())
        mask = pc.is_in(ok["path"], value_set=existing)
        done: set[str] = set(ok["image_id"].filter(mask).to_pylist())
        unplaced: dict[str, str] = {}
        for rel in on_disk:
            name = rel.rsplit("/", 1)[1]
            image_id = name.rsplit(".", 1)[0]
            if image_id not in done:
                unplaced[image_id] = name
        self._unplaced = unplaced
        return done

    def unindexed_image_ids(self) -> set[str]:
        """Image files on disk that no ok row claims yet (a crash came between the file and its row);
        a run re-indexes them without a request. Valid after :meth:`done_image_ids`."""
        return set(self._unplaced or ())

    def _list_images(self) -> dict[str, None]:
        """Relative paths of every file under ``images/*/`` (an ordered set)."""
        found: dict[str, None] = {}
        with disk_errors("list the images"):
            try:
                top = os.scandir(self.layout.images)
            except FileNotFoundError:
                return found
            with top:
                for sub in top:
                    if not sub.is_dir():
                        continue
                    prefix = f"images/{sub.name}/"
                    found.update(dict.fromkeys(prefix + n for n in os.listdir(sub.path) if n[0] != "."))
        return found

    def failed_image_ids(self) -> dict[str, str]:
        """image_id → error_kind of slots whose deciding row is failed (no ok row; latest failure)."""
        table = read_parts(self.layout, ["image_id", "status", "error_kind", "created_at"])
        if self._buffer:
            table = pa.concat_tables([table, rows_to_table(self._buffer).select(table.column_names)])
        failed = failed_from(table)
        self._known_failed = set(failed)
        return failed

    def should_compact(self) -> bool:
        return self._superseded or len(self.layout.parts()) > COMPACT_PARTS

    def compact(self, *, target_rows: int = 1_000_000) -> CompactReport:
        """Merge and deduplicate the parts; see :func:`wanbatch.dataset.compaction.compact`."""
        report = compact(self.root, target_rows=target_rows)
        self._superseded = False
        return report

    # ----------------------------------------------------------------------------------- metadata

    def write_run_summary(self, run_id: str, summary: dict[str, Any]) -> Path:
        return _manifest.write_run_summary(self.layout, run_id, summary)

    def update_manifest(self, spec_resolved: dict[str, Any], run: dict[str, Any]) -> None:
        _manifest.update_manifest(self.layout, spec_resolved, run)
