"""Counters behind the mock-only ``GET /_mock/stats`` endpoint: what was billed, asked and sent."""

from __future__ import annotations

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
        self.bodies: deque[dict[str, Any]] = deque(maxlen=MAX_BODIES)

    def bill(self, key: str, images: int) -> None:
        if images > 0:
            self.billed += images
            self.billed_by_key[key] += images

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def snapshot(self, *, bodies: bool = True) -> dict[str, Any]:
        out = {
            "billed": self.billed,
            "billed_by_key": dict(self.billed_by_key),
            "requests": dict(self.requests),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "download_auth_headers": self.download_auth,
        }
        if bodies:
            out["bodies"] = list(self.bodies)
        return out
