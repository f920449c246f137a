"""Pacing, on virtual time: Trio's ``MockClock`` jumps to the next timer as soon as every task waits,
so the spacing is exactly what the pacer asked for, whatever the machine's load."""


import itertools

import anyio
import pytest
from trio.testing import MockClock

from wanbatch.limits import RatePacer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return "trio", {"clock": MockClock(autojump_threshold=0)}


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
    # never two within one interval, even when all ask at once: one start per interval
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.1] * 5), starts


async def test_pacer_unlimited_does_not_wait() -> None:
    pacer = RatePacer(rpm=None)
    t0 = anyio.current_time()
    for _ in range(1000):
        await pacer.wait()
    assert anyio.current_time() == t0
