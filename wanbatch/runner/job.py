"""One job's way through the gateway: adopt what is on disk, generate (or submit and poll), download.

The result is a :class:`JobOutcome` for the writer task; nothing here touches the dataset. Errors that
concern only this job become failed slots; a :class:`FatalError` stops the run. Work an earlier run
paid for (journaled tasks, links of undownloaded images) is finished first: see :mod:`.paid`.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, NamedTuple

import anyio

from ..dataset.journal import PaidLinks, TaskRef
from ..errors import AmbiguousError, FatalError, GatewayError, RefusedError, TransientError
from ..fetch import DownloadLimits, fetch_verified
from ..retry import RetryPolicy, call_with_retries
from ..stats import RunStats
from ..types import DeliveredImage, Generation, Job
from .budget import Budget
from .outcome import Adopted, Fetched, JobOutcome, Slot, SlotFailed
from .paid import LinkPlan, age, gateway_of, plan_links
from .pool import Member, Pool
from .writer import WriterTask

#: Download failures of a delivered (paid) image whose link is kept for a rerun to try again.
RETRIABLE_DOWNLOADS = frozenset({"download", "url_expired", "too_slow"})


class _Paid(NamedTuple):
    """A synchronous generation and its intent, still to be settled (see ``JobRunner._paid``)."""

    generation: Generation
    intent: int


class JobRunner:
    """The per-job state machine, shared by every worker of a run."""

    def __init__(
        self, *, pool: Pool, writer: WriterTask, stats: RunStats,
        budget: Budget, policy: RetryPolicy, download_policy: RetryPolicy,
        tmp_path: Callable[[str], Any], request_timeout: float,
        download_timeout: float, download_limits: DownloadLimits, unindexed: set[str],
        pending: dict[str, TaskRef], notes: list[str], stop: Callable[[str], None],
        submit_concurrency: int = 1, foreign: set[str] | None = None,
        links: Mapping[str, PaidLinks] | None = None, link_life: float = 86400.0,
    ) -> None:
        self.pool = pool
        self.use_async = pool.members[0].provider.use_async  # members share the dialect and its mode
        self.writer = writer
        self.stats = stats
        self.budget = budget
        self.policy = policy
        self.download_policy = download_policy
        self.tmp_path = tmp_path
        self.request_timeout = request_timeout
        self.download_timeout = download_timeout
        # Each member's images are downloaded through its own client and under its gateway's rules (a
        # private gateway's images may be on private hosts): the member that served them, not the first.
        self.download_limits = {m.name: dataclasses.replace(download_limits, gateway=m.provider.base_url)
                                for m in pool.members}
        self.missing_members: set[str] = set()  # members named by paid links and not in this pool: noted
        self.unindexed = unindexed
        self.pending = pending
        self.notes = notes
        self.stop = stop
        self.answered = False  # the gateway has answered a generation in this run
        self.foreign = foreign or set()  # jobs whose journaled task went to another gateway: left alone
        self.links = dict(links or {})  # job → links of images paid for earlier, not downloaded
        self.link_life = link_life
        self.submit_slots = anyio.Semaphore(submit_concurrency)

    async def run(self, job: Job, need: list[int]) -> JobOutcome | None:
        """The outcome of ``job`` for the slots in ``need`` (None: nothing to record)."""
        slots: list[Slot] = []
        pending = self.pending.pop(job.job_id, None)
        for k in list(need):  # an image on disk without its row is never requested again
            image_id = f"{job.job_id}-{k}"
            if image_id in self.unindexed:
                stored = await self.writer.adopt(image_id)
                if stored is not None:
                    slots.append(Adopted(k, stored))
                    need.remove(k)
        if not need:  # adopted whole: a task journaled for it is answered, never poll it again
            return JobOutcome(job, slots, attempts=0, finishes_task=pending is not None) if slots or pending \
                else None
        if job.job_id in self.foreign:  # its task went to another gateway: neither polled nor paid again
            self.stats.foreign_tasks += 1
            self.stats.pending_tasks += 1
            return JobOutcome(job, slots, attempts=0) if slots else None
        paid = self.links.pop(job.job_id, None)
        links = plan_links(paid, need, self.link_life)
        note, kept = "", {}
        if links is not None and paid is not None:  # paid for earlier: download, or say why it is paid again
            got = await self._download_paid(links, self._links_member(paid)) if links.download else []
            slots += got
            # a link the object store calls gone is not kept: the slot stays failed (url_expired)
            kept = {s.slot: links.download[s.slot] for s in got
                    if isinstance(s, SlotFailed) and s.kind != "url_expired"}
            need = [k for k in need if k not in links.download]
            again = [k for k in need if k in links.expired]
            if again:
                note = (f"generated again: the image was paid for {age(time.time() - links.received)} ago, "
                        "could not be downloaded, and its link has expired (limits.link_life)")
                self.stats.regenerated_expired += len(again)
            if not need:  # the rows and any link kept still name the member that received them
                return JobOutcome(job, slots, attempts=0, links=kept, links_at=links.received,
                                  drops_links=True, finishes_task=pending is not None,
                                  provider=paid.provider or None, links_by=(paid.provider, paid.gateway))
        if pending is None and (reason := self.budget.reserve(job.n)) is not None:
            self.stop(reason)
            return JobOutcome(job, slots, attempts=0) if slots else None
        started = time.monotonic()
        try:
            generation, attempts, task_id, member = await self._generate(job, pending, need)
        except (RefusedError, TransientError, AmbiguousError) as exc:
            return self._failed_job(job, need, slots, exc, started)
        if generation is None:  # async task still running past the deadline: poll on resume
            self.stats.pending_tasks += 1
            return JobOutcome(job, slots, attempts=0) if slots else None
        self.answered = True
        latency = int((time.monotonic() - started) * 1000)
        received = time.time()
        fetched, failed = await self._download_all(job, need, generation, member, note)  # hold no slot
        if links is not None and kept:  # one time per job's links: the older (never past a link's life)
            received = links.received
        return JobOutcome(job, slots + fetched, attempts=max(attempts, 1), latency_ms=latency,
                          task_id=task_id, finishes_task=task_id is not None, links={**kept, **failed},
                          links_at=received, drops_links=links is not None,
                          provider=member.name, links_by=self._links_by(member, paid, failed))

    @staticmethod
    def _links_by(member: Member, paid: PaidLinks | None, failed: dict[int, str]) -> tuple[str, str]:
        """Who received the links an outcome keeps: ``member`` for links it just delivered, else (only
        earlier links kept) the member that received those. A job with both keeps them under ``member``."""
        if failed or paid is None:
            return member.name, gateway_of(member.provider.base_url)
        return paid.provider, paid.gateway

    def _failed_job(self, job: Job, need: list[int], slots: list[Slot], exc: GatewayError,
                    started: float) -> JobOutcome:
        if isinstance(exc, AmbiguousError):
            self.stats.ambiguous += 1
        if exc.status is not None:
            self.answered = True
        if exc.kind == "network" and self.stats.done_images == 0 and not self.answered and self.pool.single:
            # Never reached the gateway at all, retries spent: every other job would wait the same
            # minute for the same answer. Stop and say what to check.
            raise FatalError(f"cannot reach the gateway ({exc.message}); check base_url and the network",
                             kind="network") from None
        slots += [SlotFailed(k, exc.kind, exc.message) for k in need]
        latency_ms = int((time.monotonic() - started) * 1000)
        return JobOutcome(job, slots, attempts=exc.attempts, latency_ms=latency_ms,
                          finishes_task=self.use_async)

    # ------------------------------------------------------------------ the gateway

    def on_retry(self, exc: GatewayError) -> None:
        """Count a retry (what it may have billed is in the ledger)."""
        self.stats.retries += 1
        if exc.kind == "rate_limited":
            self.stats.throttled += 1
        elif isinstance(exc, AmbiguousError):
            self.stats.ambiguous += 1

    def throttle_wait(self) -> float:
        """How long a throttled call waits before its retry: a jittered tenth of a round trip at most.

        The controller is the back-pressure: the retry waits its turn for a slot under the lowered
        limit, and a refused request that did not cut keeps its slot for a round trip, so attempts stay
        near ``limit / latency`` whatever this wait. Sleeping longer (it was half a round trip to one and
        a half) only left a tail of late retries when the run's last images were the refused ones.
        """
        known = [m.controller.latency for m in self.pool.members if m.controller.latency]
        return random.uniform(0.0, 0.1) * (max(known) if known else self.policy.backoff_initial)

    async def _on_wire(self, call: Callable[[Member], Awaitable[Any]], hold: AsyncExitStack | None = None, *,
                       paced: bool = True, member: Member | None = None) -> tuple[Member, Any]:
        """One attempt through ``member``, or the next member of the pool by weight.

        A member the gateway takes out (its key ran dry: 401, 403 quota, Arrearage; those answers bill
        nothing) hands the attempt to the next member at once; only when none is left is the fatal
        error raised. With ``member`` given (a task is polled where it was submitted) there is no other.
        """
        while True:
            chosen = member or await self.pool.choose()
            try:
                return chosen, await self._attempt(chosen, call, hold, paced)
            except FatalError as exc:
                if member is not None or not self.pool.scoped(exc):
                    raise
                if self.pool.exhausted():
                    raise self.pool.exhausted_error() from None

    async def _attempt(self, m: Member, call: Callable[[Member], Awaitable[Any]],
                       hold: AsyncExitStack | None, paced: bool) -> Any:
        """One attempt, paced and in a slot of the member's controller, which hears how it went.

        The slot is held only while the request is on the wire (backoff sleeps are outside it); with
        ``hold`` it stays held after success, until the caller closes ``hold`` (an async task runs at the
        gateway until its poll settles).
        """
        if paced:
            await m.pacer.wait()
        stack = hold if hold is not None else AsyncExitStack()
        await stack.enter_async_context(m.controller.slot())
        self.stats.in_flight += 1
        stack.callback(self._left_wire)
        if m.error is not None and paced:  # taken out while this request waited for its slot
            await stack.aclose()
            raise m.error
        if paced:
            self.pool.sent(m)
        try:
            result = await call(m)
        except GatewayError as exc:
            if exc.kind == "rate_limited":
                m.controller.on_throttled(exc.retry_after)
            else:
                m.controller.on_error()
            self.pool.failed(m, exc)
            await stack.aclose()
            raise
        except BaseException:
            await stack.aclose()
            raise
        if hold is None:
            m.controller.on_success()  # timed from its slot
            await stack.aclose()
        if paced:  # a request the gateway answered (a submission's images count when its poll ends)
            generation = result.generation if isinstance(result, _Paid) else result
            self.pool.answered(m, len(generation.images) if isinstance(generation, Generation) else 0)
        return result

    def _left_wire(self) -> None:
        self.stats.in_flight -= 1
        self.stats.concurrency = self.pool.concurrency

    async def _generate(
        self, job: Job, pending: TaskRef | None, need: list[int]
    ) -> tuple[Generation | None, int, str | None, Member]:
        if not self.use_async:
            (member, (generation, intent)), attempts = await call_with_retries(
                lambda: self._on_wire(lambda m: self._paid(job, need, lambda: m.provider.generate(job))),
                self.policy, on_retry=self.on_retry, throttle_wait=self.throttle_wait,
            )
            # settled once the slot is free: the next request need not wait for this journal line
            await self.writer.settle(intent, billed=len(generation.images))
            return generation, attempts, None, member
        took = self.pool.member_for(pending) if pending is not None else None
        if pending is not None and took is not None:  # polled through the member that took it (see .paid)
            self.stats.resumed_tasks += 1
            try:
                async with AsyncExitStack() as hold:
                    # a poll, not a new generation
                    await self._on_wire(self._noop, hold, paced=False, member=took)
                    generation = await self._settle(job, took, pending.task)
                    return generation, 0, pending.task, took
            except RefusedError as exc:
                if exc.kind != "task_unknown":  # older than 24 h or unknown: only then submit again
                    raise
                self.notes.append(
                    f"task {pending.task} of job {job.job_id} is unknown to the gateway: resubmitted")
        async with AsyncExitStack() as hold:
            # The task holds its slot from submission until it settles: it is a generation in flight.
            (member, task_id), attempts = await call_with_retries(
                lambda: self._on_wire(lambda m: self._submit(job, need, m), hold), self.policy,
                on_retry=self.on_retry, throttle_wait=self.throttle_wait,
            )
            return await self._settle(job, member, task_id), attempts, task_id, member

    @staticmethod
    async def _noop(_member: Member) -> None:
        return None

    async def _settle(self, job: Job, member: Member, task_id: str) -> Generation | None:
        """Poll a task in the caller's slot; the member's controller hears the task's whole duration,
        from the submission that took the slot (not from the wait for it, nor earlier refused ones)."""
        try:
            generation = await self._poll(job, member, task_id)
        except GatewayError:
            member.controller.on_error()
            raise
        if generation is not None:
            member.controller.on_success()
            self.pool.answered(member, len(generation.images))
        return generation

    @asynccontextmanager
    async def _intent(self, job: Job, need: list[int]) -> AsyncIterator[int]:
        """A write-ahead intent (:mod:`wanbatch.dataset.ledger`), durable before the request leaves.

        A failure settles it: all ``n`` in doubt for an ambiguous one, nothing billed for any other.
        Cancelled mid-request (a second signal, a fatal error elsewhere), it stays open: in doubt.
        The caller settles a success (or hands the intent to a journaled task).
        """
        intent = await self.writer.intend(job, need)
        try:
            yield intent
        except AmbiguousError:
            await self.writer.settle(intent, billed=0, in_doubt=job.n)
            raise
        except GatewayError:
            await self.writer.settle(intent, billed=0)
            raise

    async def _paid(self, job: Job, need: list[int], call: Callable[[], Awaitable[Generation]]) -> _Paid:
        """One synchronous generation under its intent; returns it with the intent, which the caller
        settles as billed for the images delivered (left open, as by a kill, it counts in doubt)."""
        async with self._intent(job, need) as intent:
            generation = await call()
        return _Paid(generation, intent)

    async def _submit(self, job: Job, need: list[int], member: Member) -> str:
        """One submission under its intent, its task id journaled before its slot is given to another.

        A task is paid for once submitted, and only its journaled id lets a resumed run poll instead
        of paying again; so at most ``submit_concurrency`` submissions are ever between the gateway and
        the journal, and a crash at any moment costs at most that many tasks (in doubt). Polls stay
        concurrent. The task stays in doubt until a poll sees it end.
        """
        async with self.submit_slots:
            async with self._intent(job, need) as intent:
                task_id = await member.provider.submit(job)
            # the member's name, never its key: a rerun polls the task through the same member
            await self.writer.journal_task(job.job_id, member.name, task_id, intent=intent,
                                           images=job.n, gateway=gateway_of(member.provider.base_url))
        return task_id

    async def _poll(self, job: Job, member: Member, task_id: str) -> Generation | None:
        poll_policy = RetryPolicy(retries=self.policy.retries, backoff_initial=self.policy.backoff_initial,
                                  backoff_max=self.policy.backoff_max)
        with anyio.move_on_after(max(self.request_timeout, 60.0)):
            while True:
                try:
                    state, _ = await call_with_retries(
                        lambda: member.provider.poll(task_id), poll_policy, on_retry=self.on_retry
                    )
                except RefusedError as exc:
                    if exc.kind != "task_unknown":  # the task failed: it bills nothing
                        await self.writer.resolve(job.job_id, images=job.n, billed=0)
                    raise
                if state.generation is not None:
                    await self.writer.resolve(job.job_id, images=job.n, billed=len(state.generation.images))
                    return state.generation
                await anyio.sleep(member.provider.poll_interval)
        return None

    # ------------------------------------------------------------------ the images

    async def _download_all(self, job: Job, need: list[int], generation: Generation, member: Member,
                            why: str = "") -> tuple[list[Slot], dict[int, str]]:
        """The slots of ``need`` from ``generation``, and the links of those whose download failed in
        a way a later attempt may not (:data:`RETRIABLE_DOWNLOADS`): journaled, they are paid for."""
        delivered: dict[int, DeliveredImage] = {}
        for position, item in enumerate(generation.images):
            delivered.setdefault(item.index if item.index is not None else position, item)
        slots: list[Slot] = []
        failed: dict[int, str] = {}
        note = "; ".join(n for n in (why, generation.note) if n)
        for k in need:
            found = delivered.get(k)
            if found is None:
                slots.append(SlotFailed(k, "missing_image",
                                        f"the gateway delivered {len(generation.images)} of {job.n} images"))
                continue
            try:
                slots.append(await self._download(member, k, found, note))
            except (RefusedError, TransientError) as exc:
                slots.append(SlotFailed(k, exc.kind, _paid_message(exc, found)))
                if exc.kind in RETRIABLE_DOWNLOADS and found.url:
                    failed[k] = found.url
        return slots, failed

    def _links_member(self, paid: PaidLinks) -> Member:
        """The member whose client and rules download ``paid``'s links (see :meth:`Pool.member_for_links`).
        A member no longer in the pool: the links are still the object store's, so the first member
        downloads them under its own rules (a private host beside a public gateway is refused), noted."""
        member = self.pool.member_for_links(paid)
        if member is not None:
            return member
        first = self.pool.members[0]
        who = paid.provider or "an earlier provider"
        if who not in self.missing_members:
            self.missing_members.add(who)
            self.notes.append(
                f"images paid for through {who} ({paid.gateway or 'gateway not recorded'}) are downloaded "
                f"from their kept links through {first.name} under its rules: {who} is not one of this run's "
                "providers (a link its rules refuse stays failed and kept; put the member back to "
                "fetch it)")
        return first

    async def _download_paid(self, links: LinkPlan, member: Member) -> list[Slot]:
        """Download images an earlier run paid for from their journaled links (no generation, no
        budget, no intent), through ``member`` (the one that received them, when it is in the pool)."""
        slots: list[Slot] = []
        when = age(time.time() - links.received)
        for k, url in sorted(links.download.items()):
            try:
                fetched = await self._download(member, k, DeliveredImage(index=k, url=url),
                                               f"downloaded from a link paid for {when} before")
            except (RefusedError, TransientError) as exc:
                message = exc.message if exc.kind == "url_expired" else _paid_message(exc, None)
                slots.append(SlotFailed(k, exc.kind, message))
                continue
            slots.append(fetched)
            self.stats.paid_downloads += 1
        return slots

    async def _download(self, member: Member, slot: int, image: DeliveredImage, note: str = "") -> Fetched:
        """One image to a temp file through ``member``'s client and under its rules, verified (retried
        under the download policy)."""
        tmp = self.tmp_path(".part")
        try:
            (nbytes, sha, (fmt, width, height)), _ = await call_with_retries(
                lambda: fetch_verified(member.client, image, tmp, timeout=self.download_timeout,
                                       limits=self.download_limits[member.name]),
                self.download_policy, on_retry=self.on_retry,
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        notes = [note] if note else []
        if image.claimed_size and image.claimed_size.replace("x", "*") != f"{width}*{height}":
            notes.append(f"the gateway reported size {image.claimed_size} but delivered {width}*{height}")
        return Fetched(slot, tmp, fmt, width, height, nbytes, sha, image.revised_prompt or "",
                       "; ".join(notes))


def _paid_message(exc: GatewayError, image: DeliveredImage | None) -> str:
    """A failed download's row message: it was paid for, and whether a rerun can still fetch it."""
    if (image is not None and not image.url) or exc.kind not in RETRIABLE_DOWNLOADS:
        return exc.message
    return (f"{exc.message} (the image was paid for; its link is kept: a rerun within limits.link_life "
            "downloads it instead of paying again)")
