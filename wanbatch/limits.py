"""Request pacing and adaptive concurrency for the runner.

Both are anyio-native (they work under any backend) and cost nothing when unused.
"""

from __future__ import annotations

import anyio


class RatePacer:
    """Spaces request starts evenly: at most one every ``60 / rpm`` seconds, never a burst.

    A token bucket would let ``rpm`` requests through at once after an idle minute; gateways count
    per second as well as per minute, so we pace instead (GCRA with a burst of one).
    """

    def __init__(self, rpm: float | None) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = anyio.current_time()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await anyio.sleep(slot - now)


class AdaptiveConcurrency:
    """A capacity limiter that halves on sustained throttling and grows back one slot at a time.

    Superseded by :class:`wanbatch.concurrency.ConcurrencyController` (issue 15: 0.36 of the ideal
    makespan at a hidden 8-in-flight quota); kept until the runner switches over.

    AIMD as in TCP: ``throttled()`` cuts the limit in half at most once per ``cooldown`` seconds when
    at least ``burst`` throttles arrived within that window; ``succeeded()`` adds one slot back after
    a full round (as many successes as the current limit) without throttling.
    """

    def __init__(self, maximum: int, *, cooldown: float = 5.0, burst: int = 3) -> None:
        self.maximum = maximum
        self.limiter = anyio.CapacityLimiter(maximum)
        self.cooldown = cooldown
        self.burst = burst
        self.cuts = 0
        self.lowest = maximum
        self._recent: list[float] = []
        self._last_cut = -1e9
        self._streak = 0

    @property
    def current(self) -> int:
        return int(self.limiter.total_tokens)

    def throttled(self) -> None:
        now = anyio.current_time()
        self._streak = 0
        self._recent = [t for t in self._recent if now - t < self.cooldown]
        self._recent.append(now)
        if len(self._recent) >= self.burst and now - self._last_cut >= self.cooldown and self.current > 1:
            self.limiter.total_tokens = max(1, self.current // 2)
            self._last_cut = now
            self._recent.clear()
            self.cuts += 1
            self.lowest = min(self.lowest, self.current)

    def succeeded(self) -> None:
        if self.current >= self.maximum:
            return
        self._streak += 1
        if self._streak >= self.current:
            self._streak = 0
            self.limiter.total_tokens = self.current + 1
