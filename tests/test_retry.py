"""The retry policy: what is retried, how often, and how long it waits."""

import anyio
import pytest

from wanbatch.errors import AmbiguousError, FatalError, RefusedError, TransientError
from wanbatch.retry import RetryPolicy, call_with_retries

FAST = RetryPolicy(retries=3, backoff_initial=0.01, backoff_max=0.05)


def failing(errors: list[Exception], result: str = "ok"):
    calls = {"n": 0}

    async def fn() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


@pytest.mark.anyio
async def test_transient_errors_are_retried_until_success() -> None:
    fn, calls = failing([TransientError("429", kind="rate_limited"),
                         TransientError("503", kind="server_error")])
    seen: list[str] = []
    result, attempts = await call_with_retries(fn, FAST, on_retry=lambda e: seen.append(e.kind))
    assert (result, attempts, calls["n"]) == ("ok", 3, 3)
    assert seen == ["rate_limited", "server_error"]


@pytest.mark.anyio
@pytest.mark.parametrize("exc", [RefusedError("no", kind="moderation"), FatalError("key", kind="auth")])
async def test_refused_and_fatal_are_never_retried(exc: Exception) -> None:
    fn, calls = failing([exc])
    with pytest.raises(type(exc)):
        await call_with_retries(fn, FAST)
    assert calls["n"] == 1


@pytest.mark.anyio
async def test_retries_stop_after_the_limit_and_report_attempts() -> None:
    fn, calls = failing([TransientError("x", kind="server_error") for _ in range(10)])
    with pytest.raises(TransientError) as info:
        await call_with_retries(fn, FAST)
    assert calls["n"] == 4 and info.value.attempts == 4


@pytest.mark.anyio
async def test_ambiguous_errors_use_their_own_allowance() -> None:
    fn, calls = failing([AmbiguousError("524", kind="ambiguous")] * 5)
    with pytest.raises(AmbiguousError):
        await call_with_retries(fn, FAST)  # ambiguous_retries=0: one attempt only
    assert calls["n"] == 1
    fn, calls = failing([AmbiguousError("524", kind="ambiguous")])
    policy = RetryPolicy(retries=3, ambiguous_retries=1, backoff_initial=0.01, backoff_max=0.05)
    assert (await call_with_retries(fn, policy))[0] == "ok"
    assert calls["n"] == 2


@pytest.mark.anyio
async def test_retry_after_is_honoured() -> None:
    fn, _ = failing([TransientError("slow down", kind="rate_limited", retry_after=0.3)])
    t0 = anyio.current_time()
    await call_with_retries(fn, FAST)
    assert anyio.current_time() - t0 >= 0.29


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_5xx_after_429s_backs_off_like_a_first_failure() -> None:
    # With a concurrency controller a 429 waits only a moment (throttle_wait); counting the 429s in
    # the exponent sent a 5xx after twelve of them into a draw of up to 100 s here, the tail of a run.
    fn, calls = failing([TransientError("429", kind="rate_limited")] * 12
                        + [TransientError("503", kind="server_error")])
    policy = RetryPolicy(retries=20, backoff_initial=0.05, backoff_max=100.0)
    t0 = anyio.current_time()
    result, attempts = await call_with_retries(fn, policy, throttle_wait=lambda: 0.0)
    assert (result, attempts, calls["n"]) == ("ok", 14, 14)
    assert anyio.current_time() - t0 < 0.5  # one draw between 0 and 0.05 s, and twelve of 0 s
