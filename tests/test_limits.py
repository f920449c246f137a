"""Pacing and adaptive concurrency, on anyio's real clock."""


import anyio
import pytest

from wanbatch.limits import RatePacer


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
    # never two within one interval, even when all ask at once: the k-th start comes no sooner than
    # k intervals after the first. (Not each gap: a waiter the event loop wakes late, on a loaded
    # machine, leaves a shorter gap to the next one, which still starts on its own slot.)
    early = [s - starts[0] - k * 0.1 for k, s in enumerate(starts)]
    assert min(early) >= -0.005, (early, starts)
    assert starts[-1] - starts[0] == pytest.approx(0.5, abs=0.08)


@pytest.mark.anyio
async def test_pacer_unlimited_does_not_wait() -> None:
    pacer = RatePacer(rpm=None)
    t0 = anyio.current_time()
    for _ in range(1000):
        await pacer.wait()
    assert anyio.current_time() - t0 < 0.2
