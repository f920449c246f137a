"""The writer task: the one owner of the dataset during a run (img2dataset's downloader/writer split).

Workers send :class:`JobOutcome` s and two kinds of request that need an answer — journal an async
task id before polling it, adopt an image found on disk — through one bounded stream. The task applies
them in order, in batches, each batch in one worker-thread hop (renames, journal appends, flushes are
blocking I/O and never run on the event loop). Counters are bumped back on the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..dataset import DatasetWriter
from ..dataset.journal import PaidLinks
from ..dataset.ledger import IN_DOUBT
from ..dataset.rows import failed_row, ok_row
from ..errors import DatasetError, RefusedError
from ..fetch import ext_for, verify_image
from ..images import fit_input
from ..models import INPUT_EXT
from ..stats import RunStats
from ..types import Job, StoredImage
from .outcome import Adopted, Fetched, JobOutcome, SlotFailed

BATCH = 64  # messages applied per thread hop at most


@dataclass(slots=True)
class _Reply:
    """The answer to a request, set on the event loop once the batch holding it is applied."""

    done: anyio.Event = field(default_factory=anyio.Event)
    value: Any = None
    error: BaseException | None = None

    async def wait(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True, slots=True)
class _JournalTask:
    job_id: str
    provider: str
    task_id: str
    reply: _Reply
    intent: int | None = None  # the submission's intent: settled in doubt until a poll resolves it
    images: int = 0
    gateway: str | None = None  # the pool member's gateway (None: the run's)


@dataclass(frozen=True, slots=True)
class _Intend:
    job: Job
    slots: list[int]
    reply: _Reply


@dataclass(frozen=True, slots=True)
class _Settle:
    intent: int
    billed: int
    in_doubt: int
    reply: _Reply


@dataclass(frozen=True, slots=True)
class _Resolve:
    job_id: str
    images: int
    billed: int
    reply: _Reply


@dataclass(frozen=True, slots=True)
class _Adopt:
    image_id: str
    reply: _Reply


_Message = JobOutcome | _JournalTask | _Adopt | _Intend | _Settle | _Resolve
_Request = _JournalTask | _Adopt | _Intend | _Settle | _Resolve


@dataclass(slots=True)
class _Applied:
    """What a batch did, for the counters (applied on the event loop)."""

    done: int = 0
    adopted: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # kind → the first message, as written
    replies: list[tuple[_Reply, Any]] = field(default_factory=list)


class WriterTask:
    """Owns ``dataset`` for the run. Start :meth:`run` in a task group; close with :meth:`close_input`."""

    def __init__(self, dataset: DatasetWriter, stats: RunStats, *, provider: Callable[[], str], run_id: str,
                 on_error: Callable[[DatasetError], None]) -> None:
        self.dataset = dataset
        self.stats = stats
        self.provider = provider
        self.run_id = run_id
        self.on_error = on_error
        self._send: MemoryObjectSendStream[_Message]
        self._recv: MemoryObjectReceiveStream[_Message]
        # No buffer: a worker's outcome waits in the worker until the writer takes it, so at most one
        # outcome per worker is unapplied at any moment (what a SIGKILL can lose, as before).
        self._send, self._recv = anyio.create_memory_object_stream[_Message](0)
        self.error: DatasetError | None = None
        #: The gateway this run talks to (``runner.paid.gateway_of``), recorded with tasks and links.
        self.gateway = ""
        self._stored_inputs: set[str] = set()
        #: Outcomes the writer could not record (the dataset failed: a full disk): their images were
        #: paid for; :meth:`lost_rows` turns them into rows a rerun does not pay for again.
        self.lost: list[JobOutcome] = []

    # ------------------------------------------------------------------ what workers call

    async def deliver(self, outcome: JobOutcome) -> None:
        """Hand over a job's outcome (returns once the writer has taken it; applied in order)."""
        try:
            await self._put(outcome)
        except BaseException:  # the writer failed, or the run stopped this worker: paid, not recorded
            self.lost.append(outcome)
            raise

    async def journal_task(self, job_id: str, provider: str, task_id: str, *, intent: int | None = None,
                           images: int = 0, gateway: str | None = None) -> None:
        """Returns once the task id is durable (survives SIGKILL): only then may it be polled. With
        ``intent``, the submission's intent is settled in the same step: ``images`` in doubt until
        :meth:`resolve`."""
        reply = _Reply()
        await self._put(_JournalTask(job_id, provider, task_id, reply, intent, images, gateway))
        await reply.wait()

    async def intend(self, job: Job, slots: list[int]) -> int:
        """Journal the intent of a paid request (see :mod:`wanbatch.dataset.ledger`); returns once it
        is durable, with its id. Only then may the request leave."""
        reply = _Reply()
        await self._put(_Intend(job, list(slots), reply))
        intent: int = await reply.wait()
        return intent

    async def settle(self, intent: int, *, billed: int, in_doubt: int = 0) -> None:
        """Journal the outcome of ``intent``."""
        reply = _Reply()
        await self._put(_Settle(intent, billed, in_doubt, reply))
        await reply.wait()

    async def resolve(self, job_id: str, *, images: int, billed: int) -> None:
        """An async task counted in doubt has ended (``billed`` images, 0 for a failed task)."""
        reply = _Reply()
        await self._put(_Resolve(job_id, images, billed, reply))
        await reply.wait()

    async def adopt(self, image_id: str) -> StoredImage | None:
        """The image already on disk for ``image_id``, verified (a broken file is removed: None)."""
        reply = _Reply()
        await self._put(_Adopt(image_id, reply))
        result: StoredImage | None = await reply.wait()
        return result

    def close_input(self) -> None:
        """No more messages: :meth:`run` applies what is queued, flushes, and returns."""
        self._send.close()

    async def _put(self, message: _Message) -> None:
        if self.error is not None:
            raise self.error
        try:
            await self._send.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise self.error or DatasetError("the dataset writer has stopped") from None

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        async with self._recv:
            async for first in self._recv:
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                if self.error is not None:
                    self._fail(batch)
                    continue
                try:
                    applied = await anyio.to_thread.run_sync(self._apply, batch)
                    if self.dataset.should_flush():
                        await anyio.to_thread.run_sync(self.dataset.flush)
                except DatasetError as exc:
                    self.error = exc
                    self._fail(batch)
                    self.on_error(exc)
                    continue
                self._count(applied)

    def _fail(self, batch: list[_Message]) -> None:
        error = self.error or DatasetError("the dataset writer has stopped")
        self.lost += [m for m in batch if isinstance(m, JobOutcome)]
        for message in batch:
            if isinstance(message, _Request) and not message.reply.done.is_set():
                message.reply.error = error
                message.reply.done.set()

    def _count(self, applied: _Applied) -> None:
        self.stats.done_images += applied.done + applied.adopted
        self.stats.adopted_images += applied.adopted
        for kind, count in applied.failed.items():
            self.stats.failed_images += count
            self.stats.errors[kind] += count
            self.stats.error_examples.setdefault(kind, applied.examples.get(kind, ""))
        ledger = self.dataset.ledger
        self.stats.billed_images = ledger.billed
        self.stats.in_doubt_images = max(ledger.in_doubt_total - ledger.resolved, 0)
        for reply, value in applied.replies:
            reply.value = value
            reply.done.set()

    def lost_rows(self) -> list[dict[str, Any]]:
        """Rows for the outcomes the writer could not record (in a worker thread, at the run's end).

        A delivered image still in its temp file was paid for and is lost: its row is ``in_doubt`` (a
        rerun leaves it alone unless ``limits.in_doubt: retry``), and the temp file goes, freeing the
        space these rows need. An image already renamed into place is adopted by the rerun: no row.
        """
        rows: list[dict[str, Any]] = []
        for outcome in self.lost:
            job, provider = outcome.job, outcome.provider or self.provider()
            for slot in outcome.slots:
                if isinstance(slot, SlotFailed):
                    rows.append(failed_row(job, slot.slot, kind=slot.kind, message=slot.message,
                                           provider=provider, run_id=self.run_id, attempts=outcome.attempts))
                elif isinstance(slot, Fetched) and slot.tmp.exists():
                    slot.tmp.unlink(missing_ok=True)
                    rows.append(failed_row(
                        job, slot.slot, kind=IN_DOUBT, provider=provider, run_id=self.run_id,
                        attempts=outcome.attempts, task_id=outcome.task_id,
                        message="delivered and billed, but the dataset could not be written before the image "
                                "was stored (see the run's error)"))
        self.lost.clear()
        return rows

    # ------------------------------------------------------------------ in the worker thread

    def _apply(self, batch: list[_Message]) -> _Applied:
        applied = _Applied()
        rows: list[dict[str, Any]] = []
        finished: list[str] = []
        for message in batch:
            if isinstance(message, _JournalTask):
                self.dataset.journal_task(message.job_id, message.provider, message.task_id,
                                          message.gateway or self.gateway)
                if message.intent is not None:
                    self.dataset.settle(message.intent, billed=0, in_doubt=message.images)
                applied.replies.append((message.reply, None))
            elif isinstance(message, _Intend):
                self._store_inputs(message.job)  # before the request that sends them leaves
                applied.replies.append((message.reply, self.dataset.intend(message.job, message.slots,
                                                                           self.provider())))
            elif isinstance(message, _Settle):
                self.dataset.settle(message.intent, billed=message.billed, in_doubt=message.in_doubt)
                applied.replies.append((message.reply, None))
            elif isinstance(message, _Resolve):
                self.dataset.resolve(message.job_id, images=message.images, billed=message.billed)
                applied.replies.append((message.reply, None))
            elif isinstance(message, _Adopt):
                applied.replies.append((message.reply, self._adopt(message.image_id)))
            else:
                if message.links:  # before the rows: a kill between them leaves links, never rows alone
                    by, gateway = message.links_by or (self.provider(), self.gateway)
                    self.dataset.journal_links(message.job.job_id, PaidLinks(
                        by, gateway, dict(message.links), message.links_at))
                elif message.drops_links:
                    self.dataset.drop_links(message.job.job_id)
                self._store_inputs(message.job)
                rows += self._rows(message, applied)
                if message.finishes_task:
                    finished.append(message.job.job_id)
        self.dataset.append(rows)  # journaled (durable) before any task is marked finished
        for job_id in finished:
            self.dataset.finish_task(job_id)
        return applied

    def _rows(self, outcome: JobOutcome, applied: _Applied) -> list[dict[str, Any]]:
        job, provider = outcome.job, outcome.provider or self.provider()
        rows: list[dict[str, Any]] = []
        for slot in outcome.slots:
            if isinstance(slot, SlotFailed):
                rows.append(failed_row(job, slot.slot, kind=slot.kind, message=slot.message,
                                       provider=provider, run_id=self.run_id, attempts=outcome.attempts,
                                       latency_ms=outcome.latency_ms, task_id=outcome.task_id))
                applied.failed[slot.kind] = applied.failed.get(slot.kind, 0) + 1
                applied.examples.setdefault(slot.kind, rows[-1]["error_message"] or "")
            elif isinstance(slot, Adopted):
                rows.append(ok_row(job, slot.slot, slot.stored, provider=provider, run_id=self.run_id,
                                   attempts=0))
                applied.adopted += 1
            else:
                stored = self._place(job.job_id, slot)
                rows.append(ok_row(job, slot.slot, stored, provider=provider, run_id=self.run_id,
                                   revised_prompt=slot.revised_prompt, note=slot.note,
                                   task_id=outcome.task_id,
                                   attempts=max(outcome.attempts, 1), latency_ms=outcome.latency_ms))
                applied.done += 1
        return rows

    def _store_inputs(self, job: Job) -> None:
        """The job's local input images into the dataset's ``inputs/`` (once each per run)."""
        for image in job.inputs:
            if image.path is None or image.sha256 is None or image.sha256 in self._stored_inputs:
                continue
            ext = INPUT_EXT.get(image.format or "", "png")
            try:
                src: Path | bytes = fit_input(Path(image.path))[0] if image.fitted else Path(image.path)
            except (OSError, ValueError):
                continue  # gone or changed: the provider refuses to send it (input_changed)
            if self.dataset.store_input(src, image.sha256, ext) is not None:
                self._stored_inputs.add(image.sha256)

    def _place(self, job_id: str, fetched: Fetched) -> StoredImage:
        rel = self.dataset.place(fetched.tmp, f"{job_id}-{fetched.slot}", ext_for(fetched.format))
        return StoredImage(path=rel, format=fetched.format, width=fetched.width, height=fetched.height,
                           bytes=fetched.bytes, sha256=fetched.sha256)

    def _adopt(self, image_id: str) -> StoredImage | None:
        path = self.dataset.existing_image(image_id)
        if path is None:
            return None
        try:
            fmt, width, height = verify_image(path)
        except RefusedError:
            path.unlink(missing_ok=True)
            return None
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        rel = Path(path).relative_to(self.dataset.root).as_posix()
        return StoredImage(path=rel, format=fmt, width=width, height=height, bytes=path.stat().st_size,
                           sha256=digest.hexdigest())
