"""An adaptive concurrency limit that finds a gateway's hidden quota and holds it.

Gateways throttle per account (an in-flight cap, a per-minute rate, or both) without saying where
the line is; a 429 is the only signal. The controller is AIMD as in TCP congestion control and
Netflix's concurrency-limits, with four refinements that matter at a quota:

- **Slow start**: from a small ``initial`` the limit grows by one per success (doubling per round)
  until the first 429, so it reaches the quota in a few round trips instead of starting at the
  spec's maximum and cutting down through a wall of 429s.
- **Cut once per round trip, to what was known to fit**: a 429 on a request sent *after* the last
  cut, at least one smoothed latency later (as TCP cuts once per window), lowers the limit to
  ``min(limit * backoff, in_flight_when_sent - 1)``; other 429s say nothing new and are only counted
  (a full rate window would otherwise cut the limit to 1 in a cascade). With an in-flight cap the
  second term lands exactly on the cap; with a rate quota the limit settles where limit / latency
  matches the rate (Little's law), so no separate rate estimate is needed. A probe refused above the
  level the last cut set (``in_flight_when_sent - 1`` at or above it) is cut to
  ``in_flight_when_sent - 1`` alone, without the multiplicative term: the gateway took that many since
  the cut, and going below would leave the pipe short for a round after every probe. Any other cut
  never goes below the delivered rate × latency over the last four round trips (BBR's bandwidth-delay
  product): what the gateway demonstrably carried. (Not the probe's: with latencies that vary, more
  than a cap completes in one mean round trip, and that floor set above the cap made the next probe
  look like a cap that shrank.) A 429 that does not cut, on a request sent after the cut,
  still says the cut was not quite enough: the limit stops growing for a round trip (it is not lowered
  again: with a rate quota, 429s within a window would then drag it below the rate), and the round
  starts over.
- **Probe by one, then search when there is room**: after a cut the limit grows by one per round (one
  round = as many successes as the limit), so at a steady quota the probe that ends a round is
  refused and the limit stays on the quota. Room shows as a request sent with more in flight than
  the cut level that succeeds, counting only requests sent after the last 429 that counted (answers
  to requests sent before it say nothing about now): the quota grew mid-run. Growth then returns to
  slow start, doubling per round until the next 429, so a quota that grows twelvefold is found in
  about five rounds instead of the nine additive probing needs (BIC and CUBIC probe past the last
  maximum the same way). Not while a rate is what binds: a 429 to a request sent at or below the cut
  level (the gateway refused what it took before) means a window is spent, not that a cap moved, and
  for four round trips after one, room is only the window refilling; searching it would burst into
  the window and bring a round of 429s. (Counting successes per round as room, as the first version
  did, read every second round at a steady cap as growth.) The limit grows only while it binds (at
  least half of it in use when the request was sent, as concurrency-limits samples it: answers of
  one round arrive together, and counting what is in flight as they come back would stop the growth
  half-way through each round), so a quiet phase does not inflate it.
- **Pace while a rate binds**: for those four round trips, admissions are spaced ``latency /
  limit`` apart (BBR paces to its bandwidth estimate the same way), and up to the next whole number
  above the limit are admitted at once. An in-flight limit alone admits a round's requests as the
  previous round's answers come back, together; a sliding window refuses the tail of such a burst, and
  the exact cut then lands one below what the rate carries on average. And a whole-number limit
  wastes the fraction: 6/s at 1.55 s is 9.3 in flight, and a limit of 9 carries 5.8/s. Paced, the
  limit's fractional part becomes rate, and the limit settles where Little's law puts it. A cap that
  only moved is paced for four round trips at most.

Latency is not a congestion signal here (no Vegas / Gradient2 growth brake): a generation takes 10 to
60 s depending on prompt and size, so its spread says little about queueing, and a gateway with a
hidden quota refuses beyond it rather than queueing. Latency times everything else: what a round is,
how long a throttled slot is held, the delivered-rate floor, the pacing, the spread of a release.
A request's latency is timed from its slot, never from the caller's wait for one.

Only 429s are congestion: 5xx and other errors (``on_error``) leave the limit alone. A Retry-After
pauses every new request until it has passed, then releases them spread over one round trip (the
smoothed latency, or the pause itself if shorter) with a random start, so a pause does not turn
into one synchronised burst that trips the quota again.

A throttled request that did not cause a cut keeps its slot for one smoothed latency after it was
sent, as if it had been accepted: a 429 comes back at once, and without this hold the freed slot
would be refilled at once, so against a full rate window the attempt rate would be bounded by
nothing but the callers' backoff. With it, attempts stay near ``limit / latency``. (The 429 that
cuts holds nothing: the cut already took its slot away, and holding it too would leave the pipe one
short for a round after every probe.)

A slot is otherwise held only while a request is on the wire: callers sleep their retry backoff
outside it.
``on_success``/``on_throttled``/``on_error`` are called inside the slot (the controller reads the
slot's start from a context variable); called outside a slot they count as sent just now.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import anyio

__all__ = ["ConcurrencyController", "ControllerStats"]

#: How long after a 429 to a request sent at or below the level that fit the quota counts as a rate
#: (round trips): no search for room, and admissions paced ``latency / limit`` apart.
RATE_BOUND_RTTS = 4


@dataclass(frozen=True, slots=True)
class ControllerStats:
    """What the controller did: for the run summary and for tests."""

    limit: int
    cuts: int
    lowest: int
    highest: int
    throttled: int
    errors: int
    successes: int
    paused_seconds: float


@dataclass(slots=True)
class _Slot:
    started: float
    in_flight: int  # requests on the wire when this one was sent, itself included
    throttled: bool = False


@dataclass(slots=True)
class _Waiter:
    event: anyio.Event | None = None  # set to wake it; None while it is not waiting


_CURRENT: ContextVar[_Slot | None] = ContextVar("wanbatch_concurrency_slot", default=None)


class ConcurrencyController:
    """Admit at most ``limit`` requests at once; learn ``limit`` from 429s (see the module doc).

    ``max_limit`` is the spec's concurrency; ``initial`` the starting limit (default
    ``min(max_limit, 4)``); ``backoff`` the multiplicative cut; ``clock`` and ``rng`` may be
    injected (default: anyio's clock and a fresh ``random.Random``).
    """

    def __init__(
        self,
        max_limit: int,
        *,
        initial: int | None = None,
        min_limit: int = 1,
        backoff: float = 0.9,
        clock: Callable[[], float] = anyio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        if max_limit < 1 or min_limit < 1 or min_limit > max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit} and {max_limit}")
        if not 0 < backoff < 1:
            raise ValueError(f"backoff must be in (0, 1), not {backoff!r}")
        start = min(max_limit, 4) if initial is None else initial
        if not min_limit <= start <= max_limit:
            raise ValueError(f"initial must be within [{min_limit}, {max_limit}], not {start!r}")
        self.max_limit = max_limit
        self.min_limit = min_limit
        self.backoff = backoff
        self._clock = clock
        self._rng = rng or random.Random()
        self._limit = float(start)
        self._slow_start = True
        self._last_cut = -math.inf
        self._fit: float | None = None  # the limit the last cut set: what the gateway was known to take
        self._throttled_at = -math.inf  # last 429 that did not cut, of a request sent after the cut
        self._refused_within_fit = -math.inf  # last 429 to a request sent at or below the level that fit
        self._in_flight = 0
        self._rtt: float | None = None  # smoothed latency of successes (short term)
        self._pause_until = -math.inf
        self._next_admit = -math.inf  # paced release after a pause
        self._release_interval = 0.0
        self._paced_left = 0
        self._delivered: deque[float] = deque()  # completion times of recent successes
        self._holds: list[float] = []  # until when throttled slots still count (a heap)
        self._waiters: deque[_Waiter] = deque()
        self._cuts = self._throttled = self._errors = self._successes = 0
        self._lowest = self._highest = start
        self._paused = 0.0

    # -- reading ----------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """Requests admitted at once right now."""
        return max(self.min_limit, int(self._limit))

    @property
    def latency(self) -> float | None:
        """Smoothed latency of recent successes (seconds), ``None`` before the first."""
        return self._rtt

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def stats(self) -> ControllerStats:
        return ControllerStats(self.limit, self._cuts, self._lowest, self._highest, self._throttled,
                               self._errors, self._successes, round(self._paused, 3))

    # -- the slot ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for room under the limit (and any Retry-After pause); hold it while the request runs."""
        await self._acquire()
        self._in_flight += 1
        token = _CURRENT.set(_Slot(self._clock(), self._in_flight))
        try:
            yield
        finally:
            slot = _CURRENT.get()
            _CURRENT.reset(token)
            self._in_flight -= 1
            if slot is not None and slot.throttled and self._rtt is not None:
                until = slot.started + self._rtt
                if until > self._clock():
                    heapq.heappush(self._holds, until)
            self._notify()

    async def _acquire(self) -> None:
        me = _Waiter()
        self._waiters.append(me)
        try:
            while True:
                wake: float | None = None
                if self._waiters[0] is me:
                    now = self._clock()
                    while self._holds and self._holds[0] <= now:
                        heapq.heappop(self._holds)
                    if self._in_flight + len(self._holds) < self._admit_limit(now):
                        wake = max(self._pause_until, self._next_admit)
                        if wake <= now:
                            break
                    elif self._holds and self._in_flight < self._admit_limit(now):
                        wake = self._holds[0]
                me.event = event = anyio.Event()
                if wake is None:
                    await event.wait()
                else:
                    with anyio.move_on_after(wake - self._clock()):
                        await event.wait()
        except BaseException:
            self._waiters.remove(me)
            self._notify()
            raise
        self._waiters.popleft()
        now = self._clock()
        if self._paced_left > 0:
            self._paced_left -= 1
            self._next_admit = max(now, self._next_admit) + self._release_interval
        elif self._rtt is not None and self._rate_bound(now):
            self._next_admit = max(now, self._next_admit) + self._rtt / max(self._limit, 1.0)
        self._notify()  # the next in line may fit too

    def _notify(self) -> None:
        """Something changed: the first in line looks again (only it can be admitted, and it wakes the
        next when it is; waking every waiter would cost each admission one wake-up per waiting task)."""
        if self._waiters:
            head = self._waiters[0]
            if head.event is not None:
                head.event.set()
                head.event = None

    # -- signals ----------------------------------------------------------------------------------

    def on_success(self, latency_s: float | None = None) -> None:
        """The request went through: grow (only while the limit binds).

        ``latency_s`` defaults to the time since the current slot was taken: the request's own time,
        never the caller's wait for a slot (an async task's caller once timed it from before that
        wait, and its "latency" of 5-12 s against 1.6 s paced and held everything eightfold).
        """
        self._successes += 1
        now = self._clock()
        self._delivered.append(now)
        slot = _CURRENT.get()
        if latency_s is None and slot is not None:
            latency_s = now - slot.started
        if latency_s is not None and latency_s >= 0:
            self._rtt = latency_s if self._rtt is None else 0.8 * self._rtt + 0.2 * latency_s
        # sent after the last 429 that counted: evidence about the quota as it is now
        fresh = slot is None or slot.started >= max(self._last_cut, self._throttled_at)
        if self._rtt is not None and now - self._throttled_at < self._rtt:
            return  # a request sent after the last cut was refused within a round trip: hold, not grow
        busy = max(self._in_flight, slot.in_flight if slot is not None else 0)
        if busy * 2 < self._limit:
            return  # the limit is not what holds us back: no evidence it could be higher
        if self._slow_start:
            self._set(self._limit + 1)
            return
        self._set(self._limit + 1 / self._limit)
        fit = self._fit if self._fit is not None else self._limit
        if fresh and not self._rate_bound(now) and slot is not None and slot.in_flight > fit:
            self._slow_start = True  # room above the cut level: the quota grew, search for it

    def on_throttled(self, retry_after_s: float | None = None) -> None:
        """A 429: the quota is exceeded. Cut (once per signal) and honour ``retry_after_s``."""
        self._throttled += 1
        now = self._clock()
        slot = _CURRENT.get() or _Slot(now, self._in_flight + 1)
        if self._fit is not None and slot.in_flight <= self._fit:
            self._refused_within_fit = now  # not an in-flight cap alone: a rate (window) is spent
        if retry_after_s is not None and retry_after_s > 0:
            self._pause(now, retry_after_s)
        if slot.started < self._last_cut or now - self._last_cut < (self._rtt or 0.0):
            slot.throttled = True  # keeps its slot for a round trip (see the module doc)
            if slot.started >= self._last_cut:  # the cut was not quite enough: no growth for a round trip
                self._throttled_at = now
            return  # sent before the last cut, or within a round trip of it: already accounted for
        self._slow_start = False
        self._last_cut = now
        self._cuts += 1
        if self._fit is not None and slot.in_flight - 1 >= self._fit:
            # a probe past the level that fitted: back to the last that did (no delivered floor: with
            # latencies that vary, more than the cap can complete in one mean round trip)
            cut = slot.in_flight - 1.0
        else:
            cut = max(min(self._limit * self.backoff, slot.in_flight - 1), self._delivered_per_round(now))
        self._set(min(self._limit, cut))
        self._fit = float(self.limit)  # whole requests: a fractional floor must not hide the next probe

    def on_error(self) -> None:
        """Any other failure (5xx, timeout, refused): not a congestion signal, the limit stays."""
        self._errors += 1

    # -- internals --------------------------------------------------------------------------------

    def _set(self, value: float) -> None:
        self._limit = min(float(self.max_limit), max(float(self.min_limit), value))
        self._lowest = min(self._lowest, self.limit)
        self._highest = max(self._highest, self.limit)
        self._notify()

    def _admit_limit(self, now: float) -> int:
        """Requests admitted at once: the limit, or while a rate binds the next whole number above it
        (the pacing then keeps the rate at ``limit / latency``, fractional part included)."""
        if self._rate_bound(now):
            return max(self.min_limit, min(self.max_limit, math.ceil(self._limit)))
        return self.limit

    def _rate_bound(self, now: float) -> bool:
        """A rate (window) binds, not only an in-flight cap: a request sent at or below the level that
        fit was refused within the last few round trips."""
        return self._rtt is not None and now - self._refused_within_fit < RATE_BOUND_RTTS * self._rtt

    def _delivered_per_round(self, now: float) -> float:
        """Successes per smoothed latency over the last few round trips: what the gateway let through.

        Little's law (BBR's bandwidth × delay): the concurrency that carries the delivered rate. It is
        the floor of a cut, so a full rate window (429s to everything for a while) does not drive the
        limit to 1 while the gateway still delivers at its quota.
        """
        if self._rtt is None or self._rtt <= 0:
            return 0.0
        span = 4 * self._rtt
        while self._delivered and self._delivered[0] < now - span:
            self._delivered.popleft()
        if len(self._delivered) < 4:
            return 0.0
        return len(self._delivered) / span * self._rtt

    def _pause(self, now: float, seconds: float) -> None:
        until = now + seconds
        if until <= self._pause_until:
            return
        self._paused += until - max(now, self._pause_until)
        self._pause_until = until
        spread = max(0.05, min(seconds, self._rtt if self._rtt is not None else seconds))
        count = max(1, self.limit)
        self._release_interval = spread / count
        self._paced_left = count
        self._next_admit = until + self._rng.uniform(0, self._release_interval)
        self._notify()
