"""Pacing and adaptive concurrency, on anyio's real clock."""

import anyio
import pytest

from wanbatch.limits import AdaptiveConcurrency, RatePacer


@pytest.mark.anyio
async def test_pacer_spaces_requests_evenly_without_burst() -> None:
    pacer = RatePacer(rpm=600)  # one every 0.1 s
    starts: list[float] = []

    async def one() -> None:
        await pacer.wait()
        starts.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    starts.sort()
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.095, gaps  # never two within one interval, even when all ask at once
    assert starts[-1] - starts[0] == pytest.approx(0.5, abs=0.08)


@pytest.mark.anyio
async def test_pacer_unlimited_does_not_wait() -> None:
    pacer = RatePacer(rpm=None)
    t0 = anyio.current_time()
    for _ in range(1000):
        await pacer.wait()
    assert anyio.current_time() - t0 < 0.2


@pytest.mark.anyio
async def test_adaptive_halves_on_sustained_throttling_then_recovers() -> None:
    adaptive = AdaptiveConcurrency(16, cooldown=10.0, burst=3)
    adaptive.throttled()
    adaptive.throttled()
    assert adaptive.current == 16  # two 429s are not yet "sustained"
    adaptive.throttled()
    assert adaptive.current == 8
    for _ in range(5):
        adaptive.throttled()  # within the cooldown: no second cut
    assert adaptive.current == 8 and adaptive.cuts == 1
    for _ in range(8):
        adaptive.succeeded()
    assert adaptive.current == 9  # one slot back after a full round of successes
    for _ in range(200):
        adaptive.succeeded()
    assert adaptive.current == 16  # never above the configured maximum
    assert adaptive.lowest == 8
