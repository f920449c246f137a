"""The run: a plan's missing jobs fanned out to workers, their images funnelled to one writer.

    producer ──jobs──▶ N workers ──(rows)──▶ writer ──▶ Dataset (journal → Parquet parts)
                         │
                         ├─ pacing (rpm), adaptive concurrency (halved on sustained 429s)
                         ├─ provider call under tenacity retries (sync, or submit → journal → poll)
                         └─ stream each image to a temp file → verify → rename into place

Never paying twice rests on three rules: a slot whose file is on disk is never requested (it is
re-indexed if its row was lost); an async task id is journaled before the first poll and polled on
resume; an ambiguous sync failure (timeout, 524) is retried only within ``ambiguous_retries``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import __version__
from .dataset import Dataset
from .dataset.rows import failed_row, ok_row
from .errors import (
    EXIT_ABORTED,
    EXIT_FAILED,
    EXIT_OK,
    AmbiguousError,
    DatasetError,
    FatalError,
    GatewayError,
    RefusedError,
    TransientError,
    WanbatchError,
)
from .fetch import ext_for, fetch_verified, verify_image
from .limits import AdaptiveConcurrency, RatePacer
from .plan import Plan, plan as make_plan
from .providers.base import Provider
from .providers.factory import check_settings, make_provider, open_client
from .resume import triage
from .retry import RetryPolicy, call_with_retries
from .spec import Spec
from .stats import RunStats
from .types import DeliveredImage, Generation, Job, StoredImage


_Batch = tuple[list[dict[str, Any]], str | None]  # rows, and the job whose async task they finish
_Work = tuple[Job, list[int]]  # a job and the slots it still needs


@dataclass
class RunOptions:
    """How to run a spec (what the spec itself does not say)."""

    retry_failed: bool = False
    shard: tuple[int, int] | None = None
    output: str | None = None  # overrides spec.output
    handle_signals: bool = False  # SIGINT/SIGTERM: stop submitting, finish in-flight work, exit 3
    grace_period: float = 30.0  # seconds in-flight work may take after the first signal
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    env: Mapping[str, str] | None = None  # where API keys are read from (default: os.environ)
    on_start: Callable[[RunStats], None] | None = None  # e.g. to attach a progress display


@dataclass
class RunResult:
    run_id: str
    root: Path | str  # a local folder, or the object-store URI (``s3://…``) of a remote output
    stats: RunStats
    summary: dict[str, Any]
    exit_code: int
    error: WanbatchError | None = None
    notes: list[str] = field(default_factory=list)


def resolve_output(spec: Spec, options: RunOptions) -> Path | str:
    """The output folder (absolute), or an object-store URI as is (a staging folder mirrors it)."""
    out = options.output or spec.output
    if "://" in out:
        from .dataset.remote import is_remote

        if is_remote(out):
            return out
        raise DatasetError(f"output {out!r}: use a plain folder path instead of a file:// URI")
    return Path(out).expanduser().resolve()


class _Run:
    def __init__(self, spec: Spec, options: RunOptions) -> None:
        self.spec = spec
        self.options = options
        self.limits = spec.limits
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
        self.stats = RunStats(run_id=self.run_id, price_per_image=spec.price_per_image)
        self.root = resolve_output(spec, options)
        self.policy = RetryPolicy(
            retries=self.limits.retries,
            ambiguous_retries=self.limits.ambiguous_retries,
            backoff_initial=options.backoff_initial,
            backoff_max=options.backoff_max,
        )
        self.download_policy = RetryPolicy(
            retries=self.limits.retries, backoff_initial=options.backoff_initial,
            backoff_max=options.backoff_max,
        )
        self.pacer = RatePacer(self.limits.rpm)
        self.adaptive = AdaptiveConcurrency(self.limits.concurrency)
        self.stopping = anyio.Event()
        self.submit_lock = anyio.Lock()
        self.answered = False  # the gateway has answered a generation in this run
        self.error: WanbatchError | None = None
        self.notes: list[str] = []
        self.dataset: Dataset
        self.provider: Provider
        self.client: httpx.AsyncClient
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.pending: dict[str, tuple[str, str]] = {}

    # ----------------------------------------------------------------------------------- control

    def stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.stats.stop_reason = reason
            self.stopping.set()

    async def execute(self) -> RunResult:
        try:  # a missing key or base URL stops the run before anything is written
            check_settings(self.spec.provider, self._env())
        except FatalError as exc:
            self.error = exc
            self.stop(f"fatal: {exc.kind}")
            self.stats.finished = time.monotonic()
            return self._result()
        self.dataset = await anyio.to_thread.run_sync(lambda: Dataset.open(self.root, create=True))
        try:
            recovered = await anyio.to_thread.run_sync(self.dataset.recover)
            if getattr(recovered, "rows_recovered", 0):
                self.notes.append(f"recovered {recovered.rows_recovered} rows from an interrupted run")
            self.done = await anyio.to_thread.run_sync(self.dataset.done_image_ids)
            self.failed = await anyio.to_thread.run_sync(self.dataset.failed_image_ids)
            self.pending = self.dataset.pending_tasks(forget_answered=True)
            the_plan = make_plan(self.spec, shard=self.options.shard)
            self.stats.planned_jobs = the_plan.job_count
            self.stats.planned_images = the_plan.image_count
            self.stats.concurrency = self.adaptive.current
            if self.options.on_start:
                self.options.on_start(self.stats)
            async with open_client(
                self.spec.provider, concurrency=self.limits.concurrency, timeout=self.limits.request_timeout
            ) as client:
                self.client = client
                self.provider = make_provider(
                    self.spec.provider, client, request_timeout=self.limits.request_timeout,
                    env=self._env(),
                )
                await self._fan_out(the_plan)
        except WanbatchError as exc:
            self.error = exc
            self.stop(f"error: {exc.kind if isinstance(exc, GatewayError) else type(exc).__name__}")
        finally:
            self.stats.finished = time.monotonic()
            with anyio.CancelScope(shield=True):
                await self._finalise()
        return self._result()

    def _result(self) -> RunResult:
        return RunResult(
            run_id=self.run_id, root=self.root, stats=self.stats, summary=self.summary(),
            exit_code=self.exit_code(), error=self.error, notes=self.notes,
        )

    def _env(self) -> Mapping[str, str]:
        return self.options.env if self.options.env is not None else os.environ

    async def _fan_out(self, the_plan: Plan) -> None:
        rows_send, rows_recv = anyio.create_memory_object_stream[_Batch](256)
        async with anyio.create_task_group() as outer:
            if self.options.handle_signals:
                outer.start_soon(self._watch_signals)
            writer_done = anyio.Event()
            outer.start_soon(self._writer, rows_recv, writer_done)
            try:
                with anyio.CancelScope() as self.workers_scope:
                    await self._workers(the_plan, rows_send)
            except* FatalError as group:
                self.error = group.exceptions[0]  # type: ignore[assignment]
                self.stop(f"fatal: {self.error.kind}")  # type: ignore[union-attr]
            except* DatasetError as group:
                self.error = group.exceptions[0]  # type: ignore[assignment]
                self.stop("dataset error")
            finally:
                rows_send.close()
            await writer_done.wait()
            outer.cancel_scope.cancel()  # the signal watcher

    async def _workers(self, the_plan: Plan, rows_send: MemoryObjectSendStream[_Batch]) -> None:
        width = self.limits.concurrency
        jobs_send, jobs_recv = anyio.create_memory_object_stream[_Work](width * 2)
        async with anyio.create_task_group() as tg, rows_send:
            tg.start_soon(self._produce, the_plan, jobs_send)
            async with jobs_recv:
                for _ in range(width):
                    tg.start_soon(self._worker, jobs_recv.clone(), rows_send.clone())

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if not self.stopping.is_set():  # the first signal: in-flight work gets a grace period
                    self.stop("interrupted")
                    self.notes.append("interrupted: finishing in-flight requests (signal again to stop now)")
                    with anyio.move_on_after(self.options.grace_period):
                        async for _ in signals:  # ... which a second signal cuts short
                            break
                break
        self.workers_scope.cancel()

    # ----------------------------------------------------------------------------------- stages

    async def _produce(self, the_plan: Plan, jobs: MemoryObjectSendStream[_Work]) -> None:
        async with jobs:
            for job in the_plan.jobs():
                if self.stopping.is_set():
                    return
                slots = triage(job, self.done, self.failed, retry_failed=self.options.retry_failed)
                self.stats.skipped_images += slots.done
                self.stats.skipped_failed += slots.refused
                need = slots.need
                if not need:
                    continue
                try:
                    await jobs.send((job, need))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return  # every worker has stopped (a fatal error): nothing left to hand out
                self.stats.todo_jobs += 1
                self.stats.todo_images += len(need)

    async def _worker(
        self, jobs: MemoryObjectReceiveStream[_Work], rows_out: MemoryObjectSendStream[_Batch]
    ) -> None:
        async with jobs, rows_out:
            async for job, need in jobs:
                if self.stopping.is_set():
                    continue
                batch = await self._job(job, need)
                if batch[0] or batch[1]:
                    await rows_out.send(batch)

    async def _writer(self, rows_in: MemoryObjectReceiveStream[_Batch], done: anyio.Event) -> None:
        try:
            async with rows_in:
                async for rows, finished_task in rows_in:
                    if rows:
                        self.dataset.append(rows)
                    if finished_task:
                        self.dataset.finish_task(finished_task)
                    if self.dataset.should_flush():
                        await anyio.to_thread.run_sync(self.dataset.flush)
        except DatasetError as exc:
            self.error = exc
            self.stop("dataset error")
            self.workers_scope.cancel()
        finally:
            done.set()

    # ----------------------------------------------------------------------------------- one job

    async def _job(self, job: Job, need: list[int]) -> _Batch:
        rows: list[dict[str, Any]] = []
        pending = self.pending.pop(job.job_id, None)
        for k in list(need):  # an image on disk without its row is never requested again
            path = self.dataset.existing_image(f"{job.job_id}-{k}")
            if path is not None:
                stored = await anyio.to_thread.run_sync(self._adopt, path)
                if stored is not None:
                    rows.append(ok_row(job, k, stored, provider=self.provider.name, run_id=self.run_id,
                                       attempts=0))
                    self.stats.adopted_images += 1
                    self.stats.done_images += 1
                    need.remove(k)
        if not need:  # adopted whole: a task journaled for it is answered, never poll it again
            return rows, job.job_id if pending is not None else None
        if pending is None and not self._within_budget(job):
            return rows, None
        started = time.monotonic()
        async with self.adaptive.limiter:
            self.stats.in_flight += 1
            try:
                try:
                    generation, attempts, task_id = await self._generate(job, pending)
                except (RefusedError, TransientError, AmbiguousError) as exc:
                    if isinstance(exc, AmbiguousError):
                        self.stats.ambiguous += 1
                        self.stats.billed_images += job.n
                    if exc.status is not None:
                        self.answered = True
                    if exc.kind == "network" and self.stats.done_images == 0 and not self.answered:
                        # Never reached the gateway at all, retries spent: every other job would wait
                        # the same minute for the same answer. Stop and say what to check.
                        raise FatalError(f"cannot reach the gateway ({exc.message}); check base_url and "
                                         "the network", kind="network") from None
                    rows += self._failed(job, need, exc.kind, exc.message, started, attempts=exc.attempts)
                    return rows, job.job_id if self.provider.use_async else None
                if generation is None:  # async task still running past the deadline: poll on resume
                    self.stats.pending_tasks += 1
                    return rows, None
                self.adaptive.succeeded()
                self.answered = True
                self.stats.billed_images += len(generation.images)
                latency = int((time.monotonic() - started) * 1000)
                rows += await self._store(job, need, generation, attempts, latency, task_id)
            finally:
                self.stats.in_flight -= 1
        return rows, job.job_id if task_id else None

    def _within_budget(self, job: Job) -> bool:
        after = self.stats.submitted_images + job.n
        if self.limits.max_images is not None and after > self.limits.max_images:
            self.stop(f"max_images reached ({self.limits.max_images})")
            return False
        price = self.spec.price_per_image
        if self.limits.max_cost is not None and price is not None and after * price > self.limits.max_cost:
            self.stop(f"max_cost reached ({self.limits.max_cost:g})")
            return False
        self.stats.submitted_images += job.n
        return True

    def _on_retry(self, exc: GatewayError, images: int = 0) -> None:
        """Count a retry; ``images`` is what an ambiguous failure of this call may have billed."""
        self.stats.retries += 1
        if exc.kind == "rate_limited":
            self.stats.throttled += 1
            self.adaptive.throttled()
            self.stats.concurrency = self.adaptive.current
        elif isinstance(exc, AmbiguousError):
            self.stats.ambiguous += 1
            self.stats.billed_images += images

    async def _paced(self, call: Callable[[], Any]) -> Any:
        await self.pacer.wait()
        return await call()

    async def _generate(
        self, job: Job, pending: tuple[str, str] | None
    ) -> tuple[Generation | None, int, str | None]:
        provider = self.provider
        if not provider.use_async:
            generation, attempts = await call_with_retries(
                lambda: self._paced(lambda: provider.generate(job)), self.policy,
                on_retry=lambda exc: self._on_retry(exc, job.n),
            )
            return generation, attempts, None
        if pending is not None and pending[0] == provider.name:
            self.stats.resumed_tasks += 1
            try:
                return await self._poll(pending[1]), 0, pending[1]
            except RefusedError as exc:
                if exc.kind != "task_unknown":  # older than 24 h or unknown: only then submit again
                    raise
                self.notes.append(f"task {pending[1]} of job {job.job_id} is unknown to the gateway: resubmitted")
        task_id, attempts = await call_with_retries(
            lambda: self._paced(lambda: self._submit(job)), self.policy,
            on_retry=lambda exc: self._on_retry(exc, job.n),
        )
        return await self._poll(task_id), attempts, task_id

    async def _submit(self, job: Job) -> str:
        """One submission, journaled before any other may start.

        A task is paid for once submitted, and only its journaled id lets a resumed run poll instead
        of paying again; so at most one submission is ever between the gateway and the journal, and a
        crash at any moment costs at most one task. Submissions are short (no generation happens in
        them), so sending them one at a time barely slows a run; polls stay concurrent.
        """
        async with self.submit_lock:
            task_id = await self.provider.submit(job)
            self.dataset.journal_task(job.job_id, self.provider.name, task_id)
        return task_id

    async def _poll(self, task_id: str) -> Generation | None:
        poll_policy = RetryPolicy(retries=self.limits.retries, backoff_initial=self.policy.backoff_initial,
                                  backoff_max=self.policy.backoff_max)
        with anyio.move_on_after(max(self.limits.request_timeout, 60.0)):
            while True:
                state, _ = await call_with_retries(
                    lambda: self.provider.poll(task_id), poll_policy, on_retry=self._on_retry
                )
                if state.generation is not None:
                    return state.generation
                await anyio.sleep(self.provider.poll_interval)
        return None

    async def _store(
        self, job: Job, need: list[int], generation: Generation, attempts: int, latency: int,
        task_id: str | None,
    ) -> list[dict[str, Any]]:
        delivered: dict[int, DeliveredImage] = {}
        for position, image in enumerate(generation.images):
            delivered.setdefault(image.index if image.index is not None else position, image)
        rows: list[dict[str, Any]] = []
        for k in need:
            slot_image = delivered.get(k)
            if slot_image is None:
                rows += self._failed(job, [k], "missing_image",
                                     f"the gateway delivered {len(generation.images)} of {job.n} images",
                                     None, attempts=attempts, task_id=task_id)
                continue
            try:
                stored = await self._download(job, k, slot_image)
            except (RefusedError, TransientError) as exc:
                rows += self._failed(job, [k], exc.kind, exc.message, None, attempts=attempts,
                                     task_id=task_id)
                continue
            rows.append(ok_row(job, k, stored, provider=self.provider.name, run_id=self.run_id,
                               revised_prompt=slot_image.revised_prompt or "", task_id=task_id,
                               attempts=max(attempts, 1), latency_ms=latency))
            self.stats.done_images += 1
        return rows

    async def _download(self, job: Job, slot: int, image: DeliveredImage) -> StoredImage:
        tmp = self.dataset.tmp_path(".part")
        try:
            (nbytes, sha, (fmt, width, height)), _ = await call_with_retries(
                lambda: fetch_verified(self.client, image, tmp, timeout=self.limits.download_timeout),
                self.download_policy, on_retry=self._on_retry,
            )
            rel = self.dataset.place(tmp, f"{job.job_id}-{slot}", ext_for(fmt))
        finally:
            if tmp.exists():
                tmp.unlink(missing_ok=True)
        return StoredImage(path=rel, format=fmt, width=width, height=height, bytes=nbytes, sha256=sha)

    def _adopt(self, path: Path) -> StoredImage | None:
        try:
            fmt, width, height = verify_image(path)
        except RefusedError:
            path.unlink(missing_ok=True)
            return None
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        rel = path.relative_to(self.dataset.root).as_posix()
        return StoredImage(path=rel, format=fmt, width=width, height=height, bytes=path.stat().st_size,
                           sha256=digest.hexdigest())

    def _failed(
        self, job: Job, slots: list[int], kind: str, message: str, started: float | None, *,
        attempts: int, task_id: str | None = None,
    ) -> list[dict[str, Any]]:
        latency = int((time.monotonic() - started) * 1000) if started is not None else None
        self.stats.failed_images += len(slots)
        self.stats.errors[kind] += len(slots)
        return [
            failed_row(job, k, kind=kind, message=message, provider=self.provider.name, run_id=self.run_id,
                       attempts=attempts, latency_ms=latency, task_id=task_id)
            for k in slots
        ]

    # ----------------------------------------------------------------------------------- the end

    async def _finalise(self) -> None:
        dataset = getattr(self, "dataset", None)
        if dataset is None:
            return
        try:
            await anyio.to_thread.run_sync(dataset.flush)
            if dataset.should_compact():
                await anyio.to_thread.run_sync(dataset.compact)
            dataset.write_run_summary(self.run_id, self.summary())
            dataset.update_manifest(self.spec.resolved(), self._run_entry())
        except DatasetError as exc:
            if self.error is None:
                self.error = exc
            self.notes.append(f"could not finish writing the dataset: {exc}")
        finally:
            try:
                dataset.close()
            except DatasetError as exc:
                self.notes.append(f"could not close the dataset cleanly: {exc}")

    def _run_entry(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.stats.started_at,
            "finished_at": time.time(),
            "status": self.status(),
            "tool_version": __version__,
            "shard": list(self.options.shard) if self.options.shard else None,
        }

    def status(self) -> str:
        code = self.exit_code()
        return {EXIT_OK: "done", EXIT_FAILED: "some failed", EXIT_ABORTED: "aborted"}.get(code, "error")

    def exit_code(self) -> int:
        if self.error is not None or self.stats.stop_reason is not None:
            return EXIT_ABORTED
        if self.stats.failed_images or self.stats.pending_tasks:
            return EXIT_FAILED
        return EXIT_OK

    def summary(self) -> dict[str, Any]:
        out = self.stats.to_dict()
        out.update(
            pipeline=self.spec.name,
            model=self.spec.model,
            provider=getattr(getattr(self, "provider", None), "name", self.spec.provider.name),
            dialect=self.spec.provider.dialect,
            output=str(self.root),
            shard=list(self.options.shard) if self.options.shard else None,
            tool_version=__version__,
            exit_code=self.exit_code(),
            error=str(self.error) if self.error else None,
            concurrency_cuts=self.adaptive.cuts,
            lowest_concurrency=self.adaptive.lowest,
        )
        return out


async def run_async(spec: Spec, options: RunOptions | None = None) -> RunResult:
    """Run ``spec``: request what the output dataset still lacks and index it. Never raises for
    gateway or dataset failures: they are in ``RunResult.error`` and ``exit_code``."""
    return await _Run(spec, options or RunOptions()).execute()


def run(spec: Spec, options: RunOptions | None = None) -> RunResult:
    """Synchronous :func:`run_async`."""
    return anyio.run(run_async, spec, options)
