"""Request pacing for the runner (adaptive concurrency lives in :mod:`wanbatch.concurrency`).

It is anyio-native (works under any backend) and costs nothing when unused.
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
