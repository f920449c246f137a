"""Hidden quotas of the mock gateway: generations in flight and generations accepted per window.

Real gateways throttle per account without saying where the line is (docs/protocol.md: 429
``Throttling.RateQuota``, usually no ``Retry-After``). The mock can do the same so clients and
benchmarks can be held to finding that line:

- ``max_inflight``: at most N generations in progress (sync calls being generated and async tasks
  not yet finished); one more is answered 429 at once.
- ``rpm``: at most ``rpm`` generations accepted in any sliding ``window`` seconds (scaled:
  ``rpm * window / 60``); the default window is a minute, tests shorten it.

A throttled request is answered before anything is generated, so it is never billed. The quota can
be read and changed while the server runs (``GET``/``POST /_mock/quota``), so a test can move the
line mid-run; ``/_mock/reset`` restores the configured values. A ``schedule`` moves it at times counted
from the first generation request after it was set (``[[4, {"max_inflight": 4}], [8, {...}]]``), so a
benchmark's quota changes land at the same point of every contender's run, whatever its start-up
costs. Pure Python apart from the two functions that build Starlette responses, so importing the
config stays cheap.
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from wanbatch.mock.answers import Family

#: The fields ``POST /_mock/quota`` accepts (``null`` lifts a limit).
FIELDS = ("max_inflight", "rpm", "window", "retry_after")
SCHEDULE = "schedule"


def check(max_inflight: object, rpm: object, window: object, retry_after: object) -> None:
    """Raise ``ValueError`` with a readable message when a quota value is out of range."""
    if max_inflight is not None and (isinstance(max_inflight, bool) or not isinstance(max_inflight, int)
                                     or max_inflight < 1):
        raise ValueError(f"max_inflight must be an integer >= 1, not {max_inflight!r}")
    if rpm is not None and not _positive(rpm):
        raise ValueError(f"quota rpm must be a number > 0, not {rpm!r}")
    if not _positive(window):
        raise ValueError(f"quota window must be > 0 seconds, not {window!r}")
    if retry_after is not None and not (_positive(retry_after) or retry_after == 0):
        raise ValueError(f"quota retry_after must be >= 0 seconds, not {retry_after!r}")


def _positive(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and value > 0)


class Quota:
    """The admission check of one gateway. ``admit`` is called once per generation request."""

    def __init__(self, max_inflight: int | None = None, rpm: float | None = None, *, window: float = 60.0,
                 retry_after: float | None = None) -> None:
        check(max_inflight, rpm, window, retry_after)
        self.max_inflight = max_inflight
        self.rpm = rpm
        self.window = float(window)
        self.retry_after = retry_after
        self.accepted = 0
        self.throttled = 0
        self._recent: deque[float] = deque()
        self._schedule: list[tuple[float, dict[str, Any]]] = []  # (seconds after the first request, changes)
        self._first: float | None = None

    @property
    def per_window(self) -> float | None:
        return None if self.rpm is None else self.rpm * self.window / 60.0

    def admit(self, now: float, in_progress: int) -> bool:
        """True (and counted in the window) when a generation may start with ``in_progress`` running."""
        if self._schedule:
            self._move(now)
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        over_inflight = self.max_inflight is not None and in_progress >= self.max_inflight
        allowed = self.per_window
        over_rate = allowed is not None and len(self._recent) + 1 > allowed
        if over_inflight or over_rate:
            self.throttled += 1
            return False
        self._recent.append(now)
        self.accepted += 1
        return True

    def _move(self, now: float) -> None:
        if self._first is None:
            self._first = now
        while self._schedule and self._first + self._schedule[0][0] <= now:
            self._apply(self._schedule.pop(0)[1])

    def update(self, changes: dict[str, Any]) -> None:
        """Change some limits now (or set a ``schedule``); bad fields or values raise ``ValueError``."""
        changes = dict(changes)
        schedule = _schedule(changes.pop(SCHEDULE)) if SCHEDULE in changes else None
        self._apply(changes)
        if schedule is not None:
            self._schedule, self._first = schedule, None

    def _apply(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown quota field(s) {sorted(unknown)}; known: {', '.join(FIELDS)}, "
                             f"{SCHEDULE}")
        values = {name: changes.get(name, getattr(self, name)) for name in FIELDS}
        check(values["max_inflight"], values["rpm"], values["window"], values["retry_after"])
        self.max_inflight = values["max_inflight"]
        self.rpm = values["rpm"]
        self.window = float(values["window"])
        self.retry_after = values["retry_after"]

    def snapshot(self) -> dict[str, Any]:
        return {"max_inflight": self.max_inflight, "rpm": self.rpm, "window": self.window,
                "retry_after": self.retry_after, "accepted": self.accepted, "throttled": self.throttled,
                SCHEDULE: [[at, changes] for at, changes in self._schedule]}


def _schedule(value: object) -> list[tuple[float, dict[str, Any]]]:
    """``[[seconds, {field: value}], …]`` checked and sorted; every step must be a valid change."""
    if not isinstance(value, list):
        raise ValueError(f"schedule must be a list of [seconds, {{field: value}}] pairs, not {value!r}")
    steps: list[tuple[float, dict[str, Any]]] = []
    for step in value:
        if (not isinstance(step, list) or len(step) != 2 or not isinstance(step[1], dict)
                or not (_positive(step[0]) or step[0] == 0)):
            raise ValueError(f"schedule step must be [seconds >= 0, {{field: value}}], not {step!r}")
        Quota()._apply(step[1])  # the same checks as a direct change, on a throwaway quota
        steps.append((float(step[0]), dict(step[1])))
    return sorted(steps, key=lambda s: s[0])


def throttled_response(quota: Quota, family: Family, request_id: str) -> Response:
    """The 429 a real gateway sends when the account's quota is exhausted."""
    from wanbatch.mock import answers

    headers = {} if quota.retry_after is None else {"Retry-After": f"{quota.retry_after:g}"}
    message = "Requests rate limit exceeded, please try again later."
    return answers.error(family, 429, "Throttling.RateQuota", message,
                         request_id=request_id, headers=headers)


async def endpoint(quota: Quota, request: Request) -> Response:
    """``GET /_mock/quota``: the limits and counters; ``POST`` with a JSON object changes limits."""
    from starlette.responses import JSONResponse

    if request.method == "POST":
        try:
            changes = json.loads(await request.body())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object such as {\"max_inflight\": 4}")
            quota.update(changes)
        except ValueError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error", "param": "",
                                           "code": "invalid_quota"}}, status_code=400)
    return JSONResponse(quota.snapshot())
