"""Retry policy: which failures are retried, and how long to wait (tenacity).

Transient errors retry with exponential backoff and full jitter (a uniform draw between 0 and
``backoff_initial × 2^(n-1)``, capped at ``backoff_max``: AWS's "Exponential Backoff And Jitter"
comparison found it spreads retries best for the least waiting), never sooner than a gateway's
``Retry-After``. A lone 5xx from a healthy gateway is then retried after half a second on average
rather than one and a half, which is most of what random 5xx cost at the end of a run. ``n`` counts
the call's failures that back off, not its 429s: with a concurrency controller a 429 waits only a
moment (the controller holds the job back), and counting it would have sent a 5xx that follows a
few 429s into a 4 or 8 s draw, the tail of a run whose last job was unlucky.
Ambiguous errors (the image may already be billed) retry only while the run's ``ambiguous_retries``
allowance for that call lasts. Refused and fatal errors never retry.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt
from tenacity.wait import wait_random_exponential

from .errors import AmbiguousError, GatewayError, TransientError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 6
    ambiguous_retries: int = 0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 300.0  # a gateway's Retry-After is obeyed up to this many seconds


class _WaitRetryAfter:
    """Exponential backoff with jitter, raised to the gateway's Retry-After when it names one."""

    def __init__(self, policy: RetryPolicy, throttle_wait: Callable[[], float] | None = None) -> None:
        self._backoff = wait_random_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
        self._max = policy.retry_after_max
        self._throttle_wait = throttle_wait
        self._backed_off = 0  # failures of this call that drew from the exponential backoff

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if self._throttle_wait is not None and isinstance(exc, GatewayError) and exc.kind == "rate_limited":
            wait = self._throttle_wait()  # a concurrency controller holds the job back already
        else:
            self._backed_off += 1
            counted = copy.copy(state)  # the draw's exponent: this call's failures that back off
            counted.attempt_number = self._backed_off
            wait = float(self._backoff(counted))
        if isinstance(exc, GatewayError) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self._max))
        return wait


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[GatewayError], None] | None = None,
    allow_ambiguous: bool = True,
    throttle_wait: Callable[[], float] | None = None,
) -> tuple[T, int]:
    """Await ``fn()`` under ``policy``; return its result and the number of attempts made.

    ``on_retry`` sees each error that is about to be retried (for counters and adaptive limits).
    ``throttle_wait`` replaces the exponential backoff after a 429 (Retry-After still wins).
    """
    ambiguous_left = policy.ambiguous_retries if allow_ambiguous else 0
    # Fast path: most calls succeed at once, and building tenacity's machinery for each of them costs
    # a few percent of a run's CPU. A retryable first failure is replayed as tenacity's first attempt,
    # so waits, counters and the ambiguous allowance are exactly as if tenacity had made the call.
    try:
        return await fn(), 1
    except GatewayError as exc:
        retryable = isinstance(exc, TransientError) or (
            isinstance(exc, AmbiguousError) and ambiguous_left > 0)
        if not retryable or policy.retries == 0:
            exc.attempts = 1
            raise
        replay: GatewayError | None = exc

    async def again() -> T:
        nonlocal replay
        if replay is not None:
            first, replay = replay, None
            raise first
        return await fn()

    def should_retry(state: RetryCallState) -> bool:
        nonlocal ambiguous_left
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError):
            return True
        if isinstance(exc, AmbiguousError) and ambiguous_left > 0:
            ambiguous_left -= 1
            return True
        return False

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and isinstance(exc, GatewayError):
            on_retry(exc)

    retrying = AsyncRetrying(
        retry=should_retry,
        stop=stop_after_attempt(policy.retries + 1),
        wait=_WaitRetryAfter(policy, throttle_wait),
        sleep=anyio.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                result = await again()
    except GatewayError as exc:
        exc.attempts = attempts
        raise
    return result, attempts
