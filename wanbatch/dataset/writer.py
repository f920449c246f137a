"""The dataset writer: images in place, rows journaled then indexed, tasks remembered.

One :class:`DatasetWriter` per process (or per shard) writing a root. The runner calls the small
methods (``append``, ``place``, ``journal_task``…) from its event loop and the heavy ones (``flush``,
``compact``, ``recover``) through a worker thread; the two sides never block each other for long
(separate locks for rows and tasks). Reading — what is done, failed or unindexed — is a
:class:`~wanbatch.dataset.view.DatasetView`'s job (:meth:`DatasetWriter.triage` adds the rows not
flushed yet).

Where finished files end up is the :class:`Storage` the writer is composed with: :class:`LocalStorage`
(nothing more to do) for a folder, the :class:`~wanbatch.dataset.remote.Mirror` for ``s3://…``,
which writes through a local staging folder and copies finished files to the bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import shutil
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from ..errors import DatasetError, NotADatasetError
from ..types import Job
from . import manifest as _manifest
from .compaction import CompactReport, compact
from .folds import Files, TriageFold
from .fsutil import disk_errors, explain
from .journal import NEWBORN, AppendFile, PaidLinks, TaskRef, WriterJournal, encode_lines, try_lock
from .layout import Layout, check_ext, check_image_id, fresh_folder, input_rel
from .ledger import (
    IN_DOUBT,
    LEDGER,
    RunLedger,
    intent_line,
    legacy_billed,
    ok_images_by_run,
    summary_billed_reader,
)
from .parts import part_name, read_parts, rows_to_table, write_part
from .recovery import RecoveryReport, recover
from .remote import Mirror, is_remote
from .rows import failed_row
from .schema import COLUMNS
from .view import TRIAGE_COLUMNS, DatasetView, TriageState

_COLUMN_SET = frozenset(COLUMNS)
_STATUSES = frozenset({"ok", "failed"})
_IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tiff")
FLUSH_ROWS = 5_000
FLUSH_SECONDS = 10.0
COMPACT_PARTS = 16


class Storage(Protocol):
    """Where a writer's finished files go besides its local root; every hook is called after the
    local step succeeded (blocking calls: the runner makes them from a worker thread)."""

    @property
    def location(self) -> str: ...  # the dataset as users name it (folder or URI)
    def opened(self, manifest: Path) -> None: ...  # the writer is open, its manifest exists
    def placed(self, rel: str) -> None: ...  # an image was renamed into place
    def stored_images(self) -> set[str]: ...  # relative paths of images kept elsewhere
    def stored_parts(self) -> list[str] | None: ...  # the parts kept elsewhere (full paths there), if known
    def fetch(self, rel: str, local: Path) -> None: ...  # bring such an image back to ``local``
    def flushed(self, paths: set[str]) -> None: ...  # a part was written; ``paths``: its ok images
    def compacting(self) -> None: ...
    def compacted(self) -> None: ...
    def publish(self, local: Path) -> None: ...  # a run summary or the manifest was written
    def refresh_manifest(self) -> None: ...  # before a read-modify-write of the manifest
    def recovered(self) -> None: ...  # recovery finished (it may have rescued images, written a part)
    def catch_up(self) -> None: ...  # the run now holds its lease: see what others stored since open
    def close(self) -> None: ...


class LocalStorage:
    """A plain folder: the local files are the dataset; nothing more to do."""

    def __init__(self, root: Path) -> None:
        self._location = str(root)

    @property
    def location(self) -> str:
        return self._location

    def opened(self, manifest: Path) -> None:
        pass

    def placed(self, rel: str) -> None:
        pass

    def stored_images(self) -> set[str]:
        return set()

    def stored_parts(self) -> list[str] | None:
        return None

    def fetch(self, rel: str, local: Path) -> None:
        raise FileNotFoundError(rel)

    def flushed(self, paths: set[str]) -> None:
        pass

    def compacting(self) -> None:
        pass

    def compacted(self) -> None:
        pass

    def publish(self, local: Path) -> None:
        pass

    def refresh_manifest(self) -> None:
        pass

    def recovered(self) -> None:
        pass

    def catch_up(self) -> None:
        pass

    def close(self) -> None:
        pass


def _migrate(layout: Layout) -> None:
    """A format-1 dataset (before ledgers): give its run entries the ledger their rows imply."""

    def legacy(manifest: dict[str, Any]) -> dict[str, int]:
        table = read_parts(layout, ["image_id", "status", "run_id"])

        def read(rel: str) -> bytes | None:
            try:
                return (layout.root / rel).read_bytes()
            except OSError:
                return None

        return legacy_billed(manifest, ok_images_by_run(table), summary_billed_reader(read))

    _manifest.migrate(layout, legacy)


def refuse_symlinks(layout: Layout) -> None:
    """Refuse a dataset whose own folders are symlinks (``.tmp``, ``journal``, ``index``, ``runs``,
    ``images`` and ``images/xx``, the writers' folders under ``.tmp`` and ``journal``).

    Recovery deletes inside ``.tmp`` and images are renamed into ``images/xx``: through a symlink
    that would delete the target's files, or write outside the dataset.
    """
    folders = [layout.tmp, layout.journal, layout.index, layout.runs, layout.images]
    for parent in (layout.images, layout.tmp, layout.journal):
        try:
            with os.scandir(parent) as entries:
                folders += [Path(e.path) for e in entries if e.is_symlink()]
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise explain(exc, f"list {parent}") from exc
    for folder in folders:
        if folder.is_symlink():
            raise DatasetError(
                f"{folder}: is a symlink inside the dataset's own structure; refusing to write through it "
                "(recovery deletes there and images are placed there)",
            )


class DatasetWriter:
    """A writable dataset root. Use :meth:`open`; close it (or use ``with``) to flush."""

    def __init__(self, layout: Layout, writer: str, journal: WriterJournal, storage: Storage) -> None:
        self.layout = layout
        self.root = layout.root  # the local folder (for ``s3://``: the staging folder)
        self.writer = writer
        self.journal = journal
        self.storage = storage
        self._buffer: list[dict[str, Any]] = []
        self._appended: set[str] = set()  # rel paths of ok rows appended since the last flush
        self._last_flush = time.monotonic()
        self._rows_lock = threading.Lock()  # journal write + buffer, against a flush in a thread
        self._made_dirs: set[str] = set()
        self._tmp_counter = itertools.count()
        self._files_lock = threading.Lock()
        self._files: dict[str, str] | None = None  # image_id → rel path, listed on first need
        self._written: set[str] = set()  # image ids this writer put in parts
        self._closed = False
        self._ledger_lock = threading.Lock()
        self._ledger_file: AppendFile | None = None  # journal/<writer>/ledger.jsonl, opened by begin_run
        self.ledger = RunLedger()
        self._intents = itertools.count(1)
        self._ledger_folded = False  # the ledger is in the manifest (update_manifest)
        #: image id → (job, provider) of slots billed (a settled intent) with no row or kept link yet:
        #: what a run that stops between an answer and its rows paid for and would lose (see
        #: :meth:`abandon_unstored`); only slots in flight, so it stays small.
        self._unstored: dict[str, tuple[Job, str]] = {}

    @property
    def location(self) -> str:
        """The dataset as users name it: the folder, or the object-store URI."""
        return self.storage.location

    # ----------------------------------------------------------------------------------- open

    @classmethod
    def open(cls, root: str | Path, *, create: bool = True, staging: Path | None = None,
             listing: bool = True) -> DatasetWriter:
        """Open (or create) the dataset at ``root`` for writing.

        Refuses early, with a message that says what to do: a file in the way, a non-empty folder
        that is not a dataset, a missing dataset when ``create=False``, and any folder where a probe
        file cannot be written (read-only, permissions, full disk). An object-store URI
        (``s3://…``) is written through a staging folder (``staging``, default one per URI) that a
        :class:`~wanbatch.dataset.remote.Mirror` keeps in the bucket. ``listing=False`` (a run, which
        calls ``storage.catch_up()`` once it holds its lease): the bucket's index is listed then, not
        now, so a run lists it once.
        """
        if is_remote(root):
            mirror = Mirror.open(str(root), create=create, staging=staging, listing=listing)
            try:
                writer = cls._open_local(mirror.staging, create=True, storage=mirror)
            except BaseException:
                mirror.close()
                raise
            try:
                mirror.opened(writer.layout.manifest)
            except BaseException:
                writer.close()
                raise
            return writer
        return cls._open_local(root, create=create, storage=None)

    @classmethod
    def _open_local(cls, root: str | Path, *, create: bool, storage: Storage | None) -> DatasetWriter:
        layout = Layout.of(root)
        path = layout.root
        if path.exists() and not path.is_dir():
            raise NotADatasetError(f"{path}: exists and is not a folder; choose another output")
        # A staging folder (storage given) is wanbatch's own cache, hydrated just before: not checked.
        if path.is_dir() and storage is None and not layout.is_dataset():
            try:
                entries = os.listdir(path)  # hidden ones too: a folder of someone's dotfiles is not ours
            except OSError as exc:
                raise explain(exc, "list the output folder") from exc
            # a peer creating the dataset at the same instant wrote its manifest before anything else
            if not fresh_folder(entries) and not layout.is_dataset():
                raise NotADatasetError(
                    f"{path}: the folder is not empty and is not a wanbatch dataset "
                    f"(no wanbatch.json); choose an empty or new folder"
                )
        if not layout.is_dataset() and not create:
            raise NotADatasetError(f"{path}: not a wanbatch dataset (no wanbatch.json)")
        refuse_symlinks(layout)
        with disk_errors(f"create the dataset in {path}"):
            path.mkdir(parents=True, exist_ok=True)
        # The manifest first: from then on the folder is recognisably ours, before anything else is made
        # in it (so nothing but a dataset's own files is ever swept by recovery).
        _manifest.ensure_manifest(layout)
        with disk_errors(f"create the dataset in {path}"):
            for folder in (layout.tmp, layout.journal, layout.index, layout.images):
                folder.mkdir(exist_ok=True)
        writer = f"{os.getpid():x}{secrets.token_hex(4)}"
        folder = layout.writer_journal(writer)
        tmp = layout.writer_tmp(writer)
        # The folder is born locked: made and locked under a hidden name no recovery looks at, then
        # renamed into place, so a peer starting at the same instant never takes it for a dead one.
        born = layout.journal / f"{NEWBORN}{writer}"
        with disk_errors("create the journal"):
            born.mkdir(parents=True)
        fd = try_lock(born / "lock")
        if fd is None:
            shutil.rmtree(born, ignore_errors=True)
            raise DatasetError(f"{born}: cannot lock the journal (flock refused on a folder only this "
                               "process knows); is the file system a network mount without locks?")
        try:
            with disk_errors("create the journal"):
                os.rename(born, folder)
        except BaseException:
            os.close(fd)
            shutil.rmtree(born, ignore_errors=True)
            raise
        try:
            # The probe lives in this writer's own temp folder: a SIGKILL before its unlink leaves it
            # where recovery sweeps a dead writer's temp files.
            with disk_errors(f"create the dataset in {path}"):
                tmp.mkdir(parents=True)
                probe = tmp / f"probe-{secrets.token_hex(4)}"
                probe.write_bytes(b"wanbatch")
                probe.unlink()
            _migrate(layout)
            journal = WriterJournal(folder, fd)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)
            raise
        return cls(layout, writer, journal, storage or LocalStorage(layout.root))

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            # the original error matters more; the journal keeps the rows
            with contextlib.suppress(DatasetError):
                self.close()

    def close(self) -> None:
        """Flush, then release the journal (kept on disk if tasks are pending or a flush failed)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            try:
                self.journal.close()
                if self._ledger_file is not None:
                    self._ledger_file.close()
                unfolded = not self.ledger.empty and not self._ledger_folded
                # billed slots without rows (abandon_unstored could not write them): recovery does
                clean = not self._buffer and not self.journal.tasks and not self.journal.links \
                    and not unfolded and not self._unstored
                if clean:
                    shutil.rmtree(self.journal.folder, ignore_errors=True)
                    shutil.rmtree(self.layout.writer_tmp(self.writer), ignore_errors=True)
                os.close(self.journal.lock_fd)
            finally:
                self.storage.close()

    # ----------------------------------------------------------------------------------- recovery

    def recover(self) -> RecoveryReport:
        """Reconcile what crashed writers left behind; see :mod:`wanbatch.dataset.recovery`."""
        with self._rows_lock:
            buffered = [r["image_id"] for r in self._buffer]
        self.storage.refresh_manifest()  # dead writers' ledgers are folded into the latest manifest
        report = recover(self.layout, self.writer, adopt_task=self._adopt_task,
                         adopt_links=self.journal_links, image_files=self._image_files, buffered_ids=buffered)
        if report.ledgers_folded:
            self.storage.publish(self.layout.manifest)
        self.storage.recovered()
        return report

    # ----------------------------------------------------------------------------------- images

    def tmp_path(self, suffix: str = "") -> Path:
        """A fresh path in this writer's ``.tmp`` folder (same file system as ``images/``)."""
        name = f"{next(self._tmp_counter)}-{secrets.token_hex(4)}{suffix}"
        return self.layout.writer_tmp(self.writer) / name

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
        with self._files_lock:
            if self._files is not None:
                self._files[image_id] = rel
        self.storage.placed(rel)
        return rel

    def store_input(self, src: Path | bytes, sha256: str, ext: str) -> str | None:
        """Keep a copy of an input image sent with a request, once per content:
        ``inputs/<xx>/<sha256>.<ext>`` (copied through a temp file, checked against ``sha256``, renamed
        into place; the storage then mirrors it like an image). Returns its relative path, or None
        when ``src`` is gone or no longer has that content (the provider then refuses to send it)."""
        rel = input_rel(sha256, ext)
        dest = self.root / rel
        if dest.is_file():
            return rel
        tmp = self.tmp_path(f".{ext}")
        with disk_errors(f"store input image {sha256[:12]}"):
            digest = hashlib.sha256()
            tmp.parent.mkdir(parents=True, exist_ok=True)
            try:
                if isinstance(src, bytes):  # made for the request (fit_inputs): stored as sent
                    digest.update(src)
                    tmp.write_bytes(src)
                else:
                    with src.open("rb") as fin, tmp.open("wb") as fout:
                        while chunk := fin.read(1 << 20):
                            digest.update(chunk)
                            fout.write(chunk)
            except FileNotFoundError:
                tmp.unlink(missing_ok=True)
                return None
            if digest.hexdigest() != sha256:
                tmp.unlink(missing_ok=True)
                return None
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        self.storage.placed(rel)
        return rel

    def existing_image(self, image_id: str) -> Path | None:
        """An image file for ``image_id`` (any extension), e.g. one whose row a crash lost.

        The images are listed once, on the first call (object storage included: an image only in
        the bucket is downloaded so the runner can verify it); :meth:`place` keeps that listing up
        to date, so the answer never depends on what was called before.
        """
        check_image_id(image_id)
        with self._files_lock:
            if self._files is None:
                self._files = {}
                for listed in self._image_files():
                    self._files.setdefault(listed.rsplit("/", 1)[1].rsplit(".", 1)[0], listed)
            found = self._files.get(image_id)
        if found is None:
            return None
        rel = found
        path = self.root / rel
        if path.is_file():
            return path
        if rel not in self.storage.stored_images():
            return None
        try:
            self.storage.fetch(rel, path)
        except FileNotFoundError:
            return None
        return path

    def image_files(self) -> list[str]:
        """Every image this writer knows without listing object storage: its local ones and those its
        storage uploaded or listed (relative paths, sorted, once each)."""
        return self._image_files()

    def _image_files(self) -> list[str]:
        """Every image, local or kept by the storage (relative paths, sorted, once each)."""
        with disk_errors("list the images"):
            local = self.layout.image_files()
        return sorted(set(local) | {r for r in self.storage.stored_images() if r.startswith("images/")})

    # ----------------------------------------------------------------------------------- tasks

    def journal_task(self, job_id: str, provider: str, task_id: str, gateway: str = "") -> None:
        """Remember an async task id before polling it (survives SIGKILL when this returns);
        ``gateway`` is where it was submitted (normalised), what a rerun checks before polling it."""
        if not job_id or not task_id:
            raise DatasetError("journal_task needs a job id and a task id")
        self.journal.add_task(job_id, provider, task_id, gateway)

    def _adopt_task(self, job_id: str, ref: TaskRef) -> None:
        self.journal_task(job_id, ref.provider, ref.task, ref.gateway)

    def journal_links(self, job_id: str, paid: PaidLinks) -> None:
        """Remember the links of images that were paid for and not downloaded (see
        :mod:`.journal`): a rerun within their life downloads them instead of paying again."""
        if not job_id or not paid.links:
            raise DatasetError("journal_links needs a job id and at least one link")
        self.journal.add_links(job_id, paid)
        if self._unstored:
            with self._ledger_lock:
                for k in paid.links:
                    self._unstored.pop(f"{job_id}-{k}", None)

    def drop_links(self, job_id: str) -> None:
        """The paid links of ``job_id`` are used up (downloaded, or the images made again)."""
        self.journal.drop_links(job_id)

    def paid_links(self, *, forget_before: float | None = None) -> dict[str, PaidLinks]:
        """job_id → :class:`PaidLinks` still useful: slots of those links with an ok row are left
        out (a job whose every linked slot has one is dropped), and so are links received before
        ``forget_before`` (epoch seconds)."""
        links = self.journal.links_snapshot()
        if not links:
            return {}
        ids = sorted(f"{job}-{k}" for job, paid in links.items() for k in paid.links)
        wanted = pc.field("image_id").isin(pa.array(ids)) & (pc.field("status") == "ok")
        with self._rows_lock:
            done = {r["image_id"] for r in self._buffer if r.get("status") == "ok"}
        done.update(read_parts(self.layout, ["image_id"], wanted)["image_id"].to_pylist())
        out: dict[str, PaidLinks] = {}
        for job, paid in sorted(links.items()):
            left = {k: url for k, url in paid.links.items() if f"{job}-{k}" not in done}
            if not left or (forget_before is not None and paid.at < forget_before):
                self.drop_links(job)
                continue
            out[job] = paid._replace(links=left)
        return out

    def finish_task(self, job_id: str) -> None:
        """The task of ``job_id`` has its rows (or is given up): never poll it again."""
        self.journal.finish_task(job_id)

    def pending_tasks(self, *, forget_answered: bool = False) -> dict[str, TaskRef]:
        """job_id → :class:`~.journal.TaskRef` for journaled tasks whose job has no row yet.

        With ``forget_answered``, tasks whose job already has rows (a crash fell between the rows and
        the task's "done" mark) are marked done: nobody will poll them, and a clean close can then
        drop the journal instead of carrying them from run to run.
        """
        tasks = self.journal.tasks_snapshot()
        if not tasks:
            return {}
        jobs = set(tasks)
        # An in-doubt row (a request a killed run never saw answered) does not answer a task journaled
        # since: the task is what settles that doubt, so it is polled, never forgotten and resubmitted.
        with self._rows_lock:
            with_rows = {r["job_id"] for r in self._buffer
                         if r.get("job_id") in jobs and r.get("error_kind") != IN_DOUBT}
        settling = pc.field("error_kind").is_null() | (pc.field("error_kind") != IN_DOUBT)
        wanted = pc.field("job_id").isin(pa.array(sorted(jobs))) & settling
        table = read_parts(self.layout, ["job_id"], wanted)
        with_rows.update(table["job_id"].to_pylist())
        if forget_answered:
            for job_id in sorted(with_rows & jobs):
                self.finish_task(job_id)
        return {j: t for j, t in tasks.items() if j not in with_rows}

    # ----------------------------------------------------------------------------------- the ledger

    def begin_run(self, run_id: str) -> None:
        """Start this writer's ledger (see :mod:`.ledger`) for the run ``run_id``."""
        with self._ledger_lock:
            if self._ledger_file is None:
                self._ledger_file = AppendFile(self.journal.folder / LEDGER)
            self._ledger_write({"op": "run", "run": run_id})

    def _ledger_write(self, item: dict[str, Any]) -> None:
        if self._ledger_file is None:
            raise DatasetError("the ledger is not started (begin_run)")
        self._ledger_file.write(encode_lines([item]))
        self.ledger.apply(item)

    def intend(self, job: Job, slots: list[int], provider: str = "") -> int:
        """Journal that a request that may bill ``job.n`` images is about to leave (to the provider
        named ``provider``); returns its id. Durable against SIGKILL on return: only then may the
        request be sent."""
        with self._ledger_lock:
            intent = next(self._intents)
            self._ledger_write(intent_line(intent, job, slots, provider))
            return intent

    def settle(self, intent: int, *, billed: int, in_doubt: int) -> None:
        """The outcome of ``intent``: ``billed`` images certainly billed, ``in_doubt`` maybe."""
        with self._ledger_lock:
            opened = self.ledger.open.get(intent)
            self._ledger_write({"op": "outcome", "id": intent, "billed": billed, "in_doubt": in_doubt})
            if opened is not None and billed > 0:
                for k in opened.slots:
                    self._unstored[f"{opened.job.job_id}-{k}"] = (opened.job, opened.provider)

    def resolve(self, job_id: str, *, images: int, billed: int) -> None:
        """An async task counted in doubt (``images``) has ended: ``billed`` images were billed."""
        with self._ledger_lock:
            self._ledger_write({"op": "resolve", "job": job_id, "images": images, "billed": billed})

    def abandon_open_intents(self, *, provider: str, run_id: str) -> int:
        """Requests that left and were never answered (a second Ctrl-C, the end of the grace period, a
        fatal error): settle them in doubt and give their slots ``in_doubt`` rows, so a rerun does not
        pay for them again unless told to. Returns the images in doubt."""
        with self._ledger_lock:
            if self._ledger_file is None:
                return 0
            opened = dict(self.ledger.open)
        rows = [failed_row(i.job, k, kind=IN_DOUBT, provider=provider, run_id=run_id, attempts=1,
                           message="the request was sent and never answered (the run stopped); "
                                   "it may have been billed")
                for i in opened.values() for k in i.slots]
        self.append(rows)
        for intent, entry in opened.items():
            self.settle(intent, billed=0, in_doubt=entry.images)
        return sum(i.images for i in opened.values())

    def abandon_unstored(self, *, run_id: str) -> int:
        """Slots billed in this run that got neither a row nor a kept link, and have no image file (the
        paid image was lost between the answer and its row: a download cut short by a full disk or by
        the run stopping): give them ``in_doubt`` rows, so a rerun does not pay for them again unless
        told to. Returns how many. If the rows cannot be written the journal is kept on close, and
        recovery gives them the same rows (:mod:`.recovery`)."""
        with self._ledger_lock:
            unstored = dict(self._unstored)
        rows = []
        for image_id, (job, provider) in sorted(unstored.items()):
            if self.existing_image(image_id) is not None:  # adopted by a rerun: no row needed
                with self._ledger_lock:
                    self._unstored.pop(image_id, None)
                continue
            rows.append(failed_row(job, int(image_id.rsplit("-", 1)[1]), kind=IN_DOUBT, provider=provider,
                                   run_id=run_id, attempts=1,
                                   message="delivered and billed, but the run stopped before the image "
                                           "was stored (see the run's error)"))
        self.append(rows)
        return len(rows)

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
            self._appended.update(r["path"] for r in checked if r["status"] == "ok")
        if self._unstored:
            with self._ledger_lock:
                for row in checked:
                    self._unstored.pop(row["image_id"], None)

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
            flushed, self._appended = self._appended, set()
            if not self._buffer:
                taken: list[dict[str, Any]] = []
            else:
                upto = self.journal.rotate()
                taken, self._buffer = self._buffer, []
        try:
            if taken:
                try:
                    write_part(self.layout, rows_to_table(taken), {self.writer: upto},
                               part_name("w", self.writer))
                except BaseException:
                    with self._rows_lock:
                        self._buffer = taken + self._buffer
                    raise
                self._written.update(r["image_id"] for r in taken)
                with disk_errors("drop flushed journal segments"):
                    self.journal.drop_upto(upto)
            self.storage.flushed(flushed)  # e.g. upload the part, then drop indexed local copies
        except BaseException:
            with self._rows_lock:
                self._appended |= flushed
            raise

    # ----------------------------------------------------------------------------------- reads

    def triage(self) -> TriageState:
        """Done, failed and unindexed slots of this root, rows not flushed yet included (see
        :class:`~wanbatch.dataset.view.TriageState`); a run's start-up reads the same through a
        :class:`~wanbatch.dataset.view.DatasetView`."""
        root = self.layout.root.resolve()
        view = DatasetView(pafs.LocalFileSystem(), str(root), str(self.layout.root), Layout(root))
        rows = view.fold(TRIAGE_COLUMNS, TriageFold)
        with self._rows_lock:
            buffered = list(self._buffer)
        if buffered:
            for batch in rows_to_table(buffered).select(list(TRIAGE_COLUMNS)).to_batches():
                rows.add(batch)
        done, failed, unindexed = rows.result(Files.of([self._image_files()]))
        return TriageState(done=done, failed=failed, unindexed=unindexed)

    def others_live(self) -> int:
        """How many other writers of this root are running now (their journal lock is held)."""
        live = 0
        try:
            folders = [f for f in self.layout.journal.iterdir() if f.name != self.writer and f.is_dir()]
        except OSError:
            return 0
        for folder in folders:
            if folder.name.startswith("."):
                continue
            fd = try_lock(folder / "lock")
            if fd is None:
                live += 1
            else:
                os.close(fd)
        return live

    def should_compact(self) -> bool:
        """Many parts, or slots this writer wrote that also have an older row (e.g. a retried failure);
        never while other writers of the root are running (shards): the last one to finish compacts,
        so a dataset is compacted once, not once per shard."""
        if self.others_live():
            return False
        if len(self.layout.parts()) > COMPACT_PARTS:
            return True
        if not self._written:
            return False
        mine = pc.field("image_id").isin(pa.array(sorted(self._written)))
        ids = read_parts(self.layout, ["image_id"], mine)
        return ids.num_rows > len(pc.unique(ids["image_id"]))

    def compact(self, *, target_rows: int = 1_000_000, keep_largest: bool = False,
                drop: Collection[str] | None = None) -> CompactReport:
        """Merge and deduplicate the parts (leaving out the rows of ``drop``); see
        :func:`wanbatch.dataset.compaction.compact`."""
        self.storage.compacting()
        report = compact(self.root, target_rows=target_rows, keep_largest=keep_largest, drop=drop)
        if not keep_largest:
            self._written.clear()
        self.storage.compacted()
        return report

    def tidy(self) -> None:
        """At the end of a run: a full compaction when it is due (:meth:`should_compact`), else the
        parts this run flushed merged into one, so the index is at most two parts (one large, one
        recent) without rewriting the large one every run."""
        if self.should_compact():
            self.compact()
        elif len(self.layout.parts()) > 2:
            self.compact(keep_largest=True)

    # ----------------------------------------------------------------------------------- metadata

    def write_run_summary(self, run_id: str, summary: dict[str, Any]) -> Path:
        path = _manifest.write_run_summary(self.layout, run_id, summary)
        self.storage.publish(path)
        return path

    def update_manifest(self, spec_resolved: dict[str, Any], run: dict[str, Any]) -> None:
        """Record the spec and the entry of ``run``, with this writer's ledger when it serves that run."""
        self.storage.refresh_manifest()  # runs other machines added meanwhile
        with self._ledger_lock:
            mine = self.ledger.run_id is not None and run.get("run_id") == self.ledger.run_id
            if mine:
                run = {**run, "ledger": self.ledger.entry()}
        _manifest.update_manifest(self.layout, spec_resolved, run)
        if mine:
            self._ledger_folded = True
        self.storage.publish(self.layout.manifest)
