"""The run's orchestration: open the dataset, triage the plan, fan jobs out, stop cleanly.

    producer ──(job, slots)──▶ N workers (JobRunner) ──JobOutcome──▶ writer task ──▶ dataset

Only the writer task touches the dataset once the run has started (see :mod:`.writer`); every
blocking call goes through a worker thread. SIGINT/SIGTERM stop submissions and give in-flight work
a grace period; a second signal stops at once.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import time
from collections.abc import Mapping, Set as AbstractSet
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._version import __version__
from ..concurrency import ConcurrencyController
from ..dataset import DatasetView, DatasetWriter
from ..dataset.journal import PaidLinks, TaskRef
from ..dataset.lease import Lease, LeaseHeld, LeaseStore, SharedCaps, new_holder, open_store, try_acquire
from ..dataset.ledger import IN_DOUBT, DatasetLedger
from ..errors import DatasetError, FatalError, GatewayError, WanbatchError
from ..fetch import DownloadLimits
from ..hosts import allow_list
from ..limits import RatePacer
from ..plan import Plan, plan as make_plan
from ..providers.factory import check_settings, load_client_modules, make_provider, open_client
from ..redact import redact
from ..resume import triage_stream
from ..retry import RetryPolicy
from ..spec import Spec
from ..stats import RunStats
from ..types import Job
from .budget import Budget
from .job import JobRunner
from .options import Notes, RunOptions, RunResult, resolve_output
from .paid import gateway_of, split_tasks
from .pool import Member, Pool
from .summary import RunSummary, exit_code_for
from .writer import WriterTask

_Work = tuple[Job, list[int]]  # a job and the slots it still needs

#: The notes a run ends with for each of these counters (``RunStats`` fields) that is not 0, in this order.
_COUNTER_NOTES = (
    ("in_doubt_skipped",
     "{} slot(s) in doubt from earlier runs (maybe billed) were not requested (limits.in_doubt: skip); set "
     "limits.in_doubt: retry or use --retry-failed to request them again"),
    ("paid_downloads",
     "downloaded {} image(s) paid for earlier, from the links their run kept (no new generation)"),
    ("regenerated_expired",
     "generated {} image(s) again that an earlier run paid for and could not download: their links had "
     "expired (limits.link_life)"),
    ("foreign_tasks",
     "{} job(s) left alone: their async tasks were submitted to another gateway (see above)"),
    ("in_doubt_retried",
     "{} slot(s) in doubt from earlier runs were requested again (limits.in_doubt: retry)"),
)


@dataclass(frozen=True, slots=True)
class _Triage:
    """What the dataset holds, read once at start-up."""

    done: AbstractSet[str]
    failed: dict[str, str]
    unindexed: set[str]
    pending: dict[str, TaskRef]
    links: dict[str, PaidLinks]  # images paid for by earlier runs and not downloaded
    spent_before: int  # the dataset's ledger (billed + in doubt) when the run started, runs in progress aside
    shared: SharedCaps | None  # the images runs in progress reserve, live (from their leases)


class _Run:
    def __init__(self, spec: Spec, options: RunOptions) -> None:
        self.spec = spec
        self.options = options
        self.limits = spec.limits
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3) \
            + (f"-{options.run_label}" if options.run_label else "")
        self.stats = RunStats(run_id=self.run_id, price_per_image=spec.price_per_image)
        self.root = resolve_output(spec, options)
        self.members = spec.provider.member_configs()  # (config, weight): one, or a pool's members
        self.pool: Pool | None = None
        self.stopping = anyio.Event()
        self.error: WanbatchError | None = None
        self.crash: BaseException | None = None  # an unexpected exception (a bug), for the record
        self.notes: list[str] = Notes(options.on_note)
        self.dataset: DatasetWriter | None = None
        self.jobs: JobRunner | None = None
        self.workers_scope = anyio.CancelScope()
        self.base_ledger = DatasetLedger()
        self.fatal = anyio.Event()
        self.lease: Lease | None = None
        self.writer: WriterTask | None = None

    # ----------------------------------------------------------------------------------- control

    def stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.stats.stop_reason = reason
            self.stopping.set()

    def _env(self) -> Mapping[str, str]:
        return self.options.env if self.options.env is not None else os.environ

    async def execute(self) -> RunResult:
        try:  # a missing key or base URL stops the run before anything is written
            for config, _ in self.members:  # every key of a pool: the error names the variable
                check_settings(config, self._env())
        except FatalError as exc:
            self.error = exc
            self.stop(f"fatal: {exc.kind}")
            self.stats.finished = time.monotonic()
            return self._result()
        try:
            # s3://: the index is listed once, under the lease (catch_up), not when the writer opens
            self.dataset = await anyio.to_thread.run_sync(
                lambda: DatasetWriter.open(self.root, create=True, listing=False))
            self.lease = await self._take_lease(open_store(self.root))
            await anyio.to_thread.run_sync(self.dataset.storage.catch_up)
            state = await anyio.to_thread.run_sync(self._start_up, self.dataset, self.lease)
            the_plan = make_plan(self.spec, shard=self.options.shard)
            self.stats.planned_jobs = the_plan.job_count
            self.stats.planned_images = the_plan.image_count
            self.stats.concurrency = min(self.limits.concurrency, 4) * len(self.members)
            if self.options.on_start:
                self.options.on_start(self.stats)
            await self._fan_out(the_plan, self.dataset, state)
        except WanbatchError as exc:
            self.error = exc
            self.stop(f"error: {exc.kind if isinstance(exc, GatewayError) else type(exc).__name__}")
        except Exception as exc:  # a bug: recorded as what happened (aborted, exit 3), then raised
            self.crash = _first_leaf(exc)
            self.stop(f"crashed: {type(self.crash).__name__}")
            raise
        finally:
            self.stats.finished = time.monotonic()
            with anyio.CancelScope(shield=True):
                if self.lease is not None:
                    await self._finalise()
                    await anyio.to_thread.run_sync(self.lease.release)
                elif self.dataset is not None:  # the run never began (the slice is held): nothing to record
                    await anyio.to_thread.run_sync(self.dataset.close)
        return self._result()

    async def _take_lease(self, store: LeaseStore) -> Lease:
        """The lease on this run's slice (see :mod:`wanbatch.dataset.lease`); with ``wait``, waits until
        the runs holding an overlapping slice are done (a note every half minute)."""
        holder = new_holder(self.run_id, self.options.shard)
        noted = -1e9
        while True:
            try:
                lease = await anyio.to_thread.run_sync(try_acquire, store, holder, str(self.root))
                break
            except LeaseHeld as exc:
                if not self.options.wait:
                    raise
                if time.monotonic() - noted >= 30:
                    noted = time.monotonic()
                    who = exc.holder.describe() if exc.holder else "another run"
                    self.notes.append(f"waiting for {who} to finish (it holds work this run would request)")
                await anyio.sleep(store.beat * (0.5 + secrets.randbelow(1000) / 1000))
        for dead in lease.taken_over:
            self.notes.append(f"took over the lease of {dead.describe()}: it is no longer running")
        return lease

    def _start_up(self, dataset: DatasetWriter, lease: Lease) -> _Triage:
        """Recover what crashed writers left, then read what the dataset holds (in a worker thread)."""
        recovered = dataset.recover()
        if recovered.rows_recovered:
            self.notes.append(f"recovered {recovered.rows_recovered} rows from an interrupted run")
        if recovered.images_in_doubt:
            self.notes.append(f"{recovered.images_in_doubt} image(s) requested by a killed run were never "
                              "answered: counted in doubt (maybe billed)")
        # for s3://, the bucket (recovery synced it); a shard reads only its slice
        view = DatasetView.open(self.root)
        view.known_parts(dataset.storage.stored_parts())  # s3://: the mirror's listing, not another
        held = view.triage(self.options.shard,  # s3://: images known from the index, plus the staged ones
                           staged=[dataset.image_files()] if view.is_remote else ())
        # Runs in progress are counted from their leases as they go (SharedCaps), not from their
        # journals as they were: the live leases read before and after the ledger are left out of it.
        token = lease.holder.token
        running = SharedCaps.live_others(lease.store, token)
        manifest = view.manifest()
        ok_by_run = view.ok_by_run()
        self.base_ledger = view.ledger(ok_by_run=ok_by_run, manifest=manifest)
        running += SharedCaps.live_others(lease.store, token)
        base = view.ledger(ok_by_run=ok_by_run, manifest=manifest,
                           exclude_runs={e.holder.run_id for e in running if e.holder})
        in_manifest = {str(r.get("run_id")) for r in manifest.get("runs") or []
                       if isinstance(r, dict) and isinstance(r.get("ledger"), dict)}
        shared = SharedCaps(lease, running, folded=self._folded, counted=in_manifest)
        if lease.store.settle:  # object storage: other runs' numbers are read at each heartbeat
            lease.on_beat = shared.refresh
        dataset.begin_run(self.run_id)
        # links older than their life are kept a week, so the rows of what is generated again say why
        links = dataset.paid_links(forget_before=time.time() - self.limits.link_life - 7 * 86400)
        return _Triage(done=held.done, failed=held.failed, unindexed=set(held.unindexed),
                       pending=dataset.pending_tasks(forget_answered=True), links=links,
                       spent_before=base.images, shared=shared)

    def _folded(self, run_id: str) -> int | None:
        """Billed + in doubt of ``run_id``'s manifest entry (None if it has none): a run that ended."""
        try:
            runs = DatasetView.open(self.root).manifest().get("runs") or []
        except WanbatchError:
            return None
        for run in runs:
            entry = run.get("ledger") if isinstance(run, dict) and run.get("run_id") == run_id else None
            if isinstance(entry, dict):
                return sum(max(int(entry.get(k) or 0), 0) for k in ("billed_images", "in_doubt_images"))
        return None

    async def _fan_out(self, the_plan: Plan, dataset: DatasetWriter, state: _Triage) -> None:
        writer = WriterTask(dataset, self.stats, run_id=self.run_id, on_error=self._writer_failed,
                            provider=lambda: self.spec.provider.name)
        self.writer = writer
        async with anyio.create_task_group() as outer:
            if self.options.handle_signals:
                outer.start_soon(self._watch_signals)
            writer_done = anyio.Event()

            async def write() -> None:
                try:
                    await writer.run()
                finally:
                    writer_done.set()

            outer.start_soon(write)
            try:
                with self.workers_scope:
                    async with AsyncExitStack() as clients:
                        self.pool = await self._open_pool(clients)
                        writer.gateway = gateway_of(self.pool.members[0].provider.base_url)
                        self.jobs = self._job_runner(self.pool, writer, dataset, state)
                        await self._workers(the_plan, state, self.jobs)
            except* FatalError as group:
                self.error = _first(group)  # type: ignore[assignment]
                self.stop(f"fatal: {self.error.kind}")  # type: ignore[union-attr]
            except* DatasetError as group:
                self.error = self.error or _first(group)  # type: ignore[assignment]
                self.stop("dataset error")
            finally:
                writer.close_input()
            await writer_done.wait()
            if writer.error is not None and self.error is None:
                self.error = writer.error
            outer.cancel_scope.cancel()  # the signal watcher

    async def _open_pool(self, clients: AsyncExitStack) -> Pool:
        """One provider, client, controller and rate pacer per member (a single provider: a pool of one);
        ``limits.concurrency`` and ``limits.rpm`` apply to each member: quotas are per key."""
        members = []
        for config, weight in self.members:
            client = await clients.enter_async_context(open_client(
                config, concurrency=self.limits.concurrency, timeout=self.limits.request_timeout))
            provider = make_provider(config, client, request_timeout=self.limits.request_timeout,
                                     env=self._env())
            members.append(Member(name=config.name, weight=weight, provider=provider, client=client,
                                  controller=ConcurrencyController(self.limits.concurrency),
                                  pacer=RatePacer(self.limits.rpm)))
        return Pool(members, name=self.spec.provider.name, notes=self.notes)

    def _job_runner(self, pool: Pool, writer: WriterTask, dataset: DatasetWriter,
                    state: _Triage) -> JobRunner:
        initial, most = self.options.backoff_initial, self.options.backoff_max
        pending: dict[str, Any] = {}
        left = dict(state.pending)
        for m in pool.members:  # a task is this run's if one member is at its gateway (a pool: any)
            ours, other = split_tasks(left, gateway_of(m.provider.base_url), m.name)
            pending.update(ours)
            left = {job: ref for job, ref in left.items() if job in other.jobs}
        _, foreign = split_tasks(left, writer.gateway, pool.members[0].name)
        if foreign.jobs and self.options.abandon_tasks:
            where = ", ".join(sorted(foreign.where))
            self.notes.append(f"--abandon-tasks: forgetting {len(foreign.jobs)} async task(s) submitted to "
                              f"another gateway ({where}); they were paid (counted in doubt) and their jobs "
                              "are submitted again")
            foreign.jobs.clear()
        elif foreign.jobs:
            self.notes.append(foreign.message(writer.gateway))
        return JobRunner(
            pool=pool, writer=writer, stats=self.stats,
            budget=Budget(self.stats, max_images=self.limits.max_images, max_cost=self.limits.max_cost,
                          price_per_image=self.spec.price_per_image, spent_before=state.spent_before,
                          run_max_images=self.options.max_images_this_run,
                          run_max_cost=self.options.max_cost_this_run, shared=state.shared),
            policy=RetryPolicy(retries=self.limits.retries, ambiguous_retries=self.limits.ambiguous_retries,
                               backoff_initial=initial, backoff_max=most),
            download_policy=RetryPolicy(retries=self.limits.retries, backoff_initial=initial,
                                        backoff_max=most),
            tmp_path=dataset.tmp_path,
            request_timeout=self.limits.request_timeout, download_timeout=self.limits.download_timeout,
            download_limits=DownloadLimits(
                max_bytes=self.limits.max_image_bytes, min_rate=self.limits.min_download_rate,
                hosts=allow_list(self.limits.download_hosts), gateway=self.spec.provider.base_url),
            submit_concurrency=self.limits.submit_concurrency, unindexed=state.unindexed,
            pending=pending, notes=self.notes, stop=self.stop, foreign=foreign.jobs, links=state.links,
            link_life=self.limits.link_life,
        )

    def _writer_failed(self, exc: DatasetError) -> None:
        if self.error is None:
            self.error = exc
        self.stop("dataset error")
        self.workers_scope.cancel()

    async def _workers(self, the_plan: Plan, state: _Triage, jobs: JobRunner) -> None:
        width = self.limits.concurrency * len(self.members)  # each member has its own limits
        send, recv = anyio.create_memory_object_stream[_Work](width * 2)
        async with anyio.create_task_group() as guard:
            guard.start_soon(self._drain_after_fatal)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._produce, the_plan, state, send)
                async with recv:
                    for _ in range(width):
                        tg.start_soon(self._worker, recv.clone(), jobs)
            guard.cancel_scope.cancel()

    def _fatal(self, exc: FatalError) -> None:
        """A fatal answer (bad key, quota, wrong route): stop submitting; requests already on the
        wire get the grace period to come back (they may be billed: their images are kept)."""
        if self.error is None:
            self.error = exc
            self.stop(f"fatal: {exc.kind}")
        self.fatal.set()

    async def _drain_after_fatal(self) -> None:
        await self.fatal.wait()
        await anyio.sleep(self.options.grace_period)
        self.workers_scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if not self.stopping.is_set():  # the first signal: in-flight work gets a grace period
                    self.stop("interrupted")
                    n = self.stats.in_flight
                    self.notes.append(f"stopping: finishing {n} request{'' if n == 1 else 's'} in flight "
                                      f"(up to {self.options.grace_period:g} s), Ctrl-C again to stop now")
                    with anyio.move_on_after(self.options.grace_period):
                        async for _ in signals:  # ... which a second signal cuts short
                            break
                break
        self.workers_scope.cancel()

    async def _produce(self, the_plan: Plan, state: _Triage, jobs: MemoryObjectSendStream[_Work]) -> None:
        async with jobs:
            for job, slots in triage_stream(the_plan.jobs(), state.done, state.failed,
                                            retry_failed=self.options.retry_failed,
                                            retry_in_doubt=self.limits.in_doubt == "retry", batch=512):
                if self.stopping.is_set():
                    return
                self.stats.skipped_images += slots.done
                self.stats.skipped_failed += slots.refused + slots.in_doubt
                self.stats.in_doubt_skipped += slots.in_doubt
                self.stats.in_doubt_retried += slots.in_doubt_retried
                need = slots.need
                paid = state.links.get(job.job_id)
                if paid is not None and time.time() - paid.at < self.limits.link_life:
                    # a download paid for earlier costs nothing: fetched whatever its row's kind; after
                    # the link's life only the kinds a rerun retries anyway are generated again
                    extra = [k for k in paid.links if k not in need and 0 <= k < job.n
                             and f"{job.job_id}-{k}" not in state.done]
                    self.stats.skipped_failed -= len(extra)
                    need = sorted(need + extra)
                if not need:
                    continue
                try:
                    await jobs.send((job, need))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return  # every worker has stopped (a fatal error): nothing left to hand out
                self.stats.todo_jobs += 1
                self.stats.todo_images += len(need)

    async def _worker(self, jobs: MemoryObjectReceiveStream[_Work], runner: JobRunner) -> None:
        async with jobs:
            async for job, need in jobs:
                if self.stopping.is_set():
                    continue
                try:
                    outcome = await runner.run(job, need)
                except FatalError as exc:
                    self._fatal(exc)
                    continue
                if outcome is not None:
                    await runner.writer.deliver(outcome)

    # ----------------------------------------------------------------------------------- the end

    async def _finalise(self) -> None:
        dataset = self.dataset
        if dataset is None:
            return
        writer = self.writer
        if writer is not None and writer.lost:
            try:
                rows = await anyio.to_thread.run_sync(writer.lost_rows)
                await anyio.to_thread.run_sync(dataset.append, rows)
                lost = sum(r["error_kind"] == IN_DOUBT for r in rows)
                if lost:
                    self.notes.append(f"{lost} image(s) were delivered (billed) but could not be stored: "
                                      "recorded in doubt, so a rerun does not pay for them again unless "
                                      "limits.in_doubt is retry")
            except DatasetError as exc:
                self.notes.append(f"could not record the images delivered but not stored: {exc}")
        try:
            unstored = await anyio.to_thread.run_sync(lambda: dataset.abandon_unstored(run_id=self.run_id))
            if unstored:
                self.notes.append(f"{unstored} image(s) were delivered (billed) but the run stopped before "
                                  "they were stored: recorded in doubt, so a rerun does not pay for them "
                                  "again unless limits.in_doubt is retry")
        except DatasetError as exc:
            self.notes.append(f"could not record the images delivered but not stored: {exc} (the journal is "
                              "kept: the next run records them)")
        try:
            provider = self.spec.provider.name
            abandoned = await anyio.to_thread.run_sync(
                lambda: dataset.abandon_open_intents(provider=provider, run_id=self.run_id))
        except DatasetError as exc:
            abandoned = 0
            self.notes.append(f"could not record the requests left unanswered: {exc}")
        if abandoned:
            self.notes.append(f"{abandoned} image(s) were requested and never answered (the run stopped): "
                              "counted in doubt, maybe billed; a rerun leaves them alone unless "
                              "limits.in_doubt is retry")
        ledger = dataset.ledger
        self.stats.billed_images = ledger.billed
        self.stats.in_doubt_images = max(ledger.in_doubt_total - ledger.resolved, 0)
        for counter, note in _COUNTER_NOTES:
            if count := getattr(self.stats, counter):
                self.notes.append(note.format(count))
        summary = self.summary()
        entry = self._run_entry(summary)
        try:
            await anyio.to_thread.run_sync(self._write_out, dataset, summary, entry)
        except DatasetError as exc:
            if self.error is None:
                self.error = exc
            self.notes.append(f"could not finish writing the dataset: {exc}")
        finally:
            try:
                await anyio.to_thread.run_sync(dataset.close)
            except DatasetError as exc:
                self.notes.append(f"could not close the dataset cleanly: {exc}")

    def _write_out(self, dataset: DatasetWriter, summary: RunSummary, entry: dict[str, Any]) -> None:
        dataset.flush()
        dataset.tidy()  # at most two index parts after a run
        dataset.write_run_summary(self.run_id, summary.to_dict())
        dataset.update_manifest(self.spec.resolved(), entry)

    def _run_entry(self, summary: RunSummary) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.stats.started_at,
            "finished_at": time.time(),
            "status": summary.status,
            "tool_version": __version__,
            "shard": list(self.options.shard) if self.options.shard else None,
            "spec": spec_record(self.spec.source),
        }

    def _result(self) -> RunResult:
        summary = self.summary()
        return RunResult(run_id=self.run_id, root=self.root, stats=self.stats, summary=summary,
                         exit_code=summary.exit_code, error=self.error, notes=[redact(n) for n in self.notes])

    def _error_text(self) -> str | None:
        if self.error is not None:
            return redact(str(self.error))
        if self.crash is not None:
            return redact(f"crashed: {type(self.crash).__name__}: {self.crash}")
        return None

    def summary(self) -> RunSummary:
        stats = self.stats
        code = exit_code_for(error=self.error, stop_reason=stats.stop_reason,
                             failed_images=stats.failed_images, pending_tasks=stats.pending_tasks)
        return RunSummary.from_stats(
            stats, pipeline=self.spec.name, model=self.spec.model, provider=self.spec.provider.name,
            dialect=self.spec.provider.dialect, output=str(self.root), shard=self.options.shard,
            tool_version=__version__, exit_code=code, error=self._error_text(),
            concurrency_cuts=sum(m.controller.stats.cuts for m in self.pool.members) if self.pool else 0,
            lowest_concurrency=min(m.controller.stats.lowest for m in self.pool.members) if self.pool else 0,
            members=self.pool.summary() if self.pool and not self.pool.single else [],
            ledger=self.dataset_ledger().to_dict(),
        )

    def dataset_ledger(self) -> DatasetLedger:
        """The dataset's ledger now: as it was when the run started, plus this run's."""
        base, spec = self.base_ledger, self.spec
        billed, in_doubt = self.stats.billed_images, self.stats.in_doubt_images
        if self.dataset is not None:
            mine = self.dataset.ledger
            billed, in_doubt = mine.billed, mine.in_doubt_total - mine.resolved
        return DatasetLedger(
            billed_images=base.billed_images + billed,
            in_doubt_images=max(base.in_doubt_images + in_doubt, 0),
            price_per_image=spec.price_per_image, max_images=self.limits.max_images,
            max_cost=self.limits.max_cost,
        )


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first error of a (possibly nested: task groups inside task groups) exception group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: what actually went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def spec_record(source: str) -> dict[str, str | None]:
    """Which spec file ran (absolute path, sha256 of its text): `prune` keeps what every spec that
    ran into a dataset still plans, so it must know them."""
    path = Path(source).expanduser().resolve()
    try:
        digest: str | None = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # a spec given as text (Ray workers) or since removed
        digest = None
    return {"path": str(path), "sha256": digest}


async def run_async(spec: Spec, options: RunOptions | None = None) -> RunResult:
    """Run ``spec``: request what the output dataset still lacks and index it. Never raises for
    gateway or dataset failures: they are in ``RunResult.error`` and ``exit_code``."""
    for config, _ in spec.provider.member_configs():  # imports, before the run's clock starts
        load_client_modules(config)
    return await _Run(spec, options or RunOptions()).execute()


def run(spec: Spec, options: RunOptions | None = None) -> RunResult:
    """Synchronous :func:`run_async`."""
    return anyio.run(run_async, spec, options)


__all__ = ["run", "run_async"]
