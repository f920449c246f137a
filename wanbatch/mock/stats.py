"""Counters behind the mock-only ``GET /_mock/stats`` endpoint: what was billed, asked and sent."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

MAX_BODIES = 500


class Stats:
    def __init__(self) -> None:
        self.billed = 0
        self.billed_by_key: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.download_auth = 0
        #: When the first generation started and the last ended (wall clock): the pipe as the gateway
        #: saw it, without the client's start-up or its last download and index write.
        self.first_generation_at: float | None = None
        self.last_generation_at: float | None = None
        self.bodies: deque[dict[str, Any]] = deque(maxlen=MAX_BODIES)

    def bill(self, key: str, images: int) -> None:
        if images > 0:
            self.billed += images
            self.billed_by_key[key] += images

    def enter(self) -> None:
        if self.first_generation_at is None:
            self.first_generation_at = time.time()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1
        self.last_generation_at = time.time()

    def snapshot(self, *, bodies: bool = True) -> dict[str, Any]:
        out = {
            "billed": self.billed,
            "billed_by_key": dict(self.billed_by_key),
            "requests": dict(self.requests),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "download_auth_headers": self.download_auth,
            "first_generation_at": self.first_generation_at,
            "last_generation_at": self.last_generation_at,
        }
        if bodies:
            out["bodies"] = list(self.bodies)
        return out
