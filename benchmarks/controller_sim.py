"""The controller alone against tests/test_concurrency.py's in-process gateway: no processes, no dataset.

    python benchmarks/controller_sim.py cap change rate 5xx

Each scenario of issue 15 at a tenth of the benchmark's latency (0.1 s), 400 jobs, 64 workers, four
seeds: efficiency = ideal makespan ÷ actual, and 429s per image. What the quota scenarios of run.py
measure minus process start-up, the dataset and the mock's own time per request: the controller's
share of what is lost. (A 5xx here comes after the generation time, so 0.90 is its ceiling.)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_concurrency import SimGateway, drive
from wanbatch.concurrency import ConcurrencyController

LAT = 0.1


def ideal(jobs: int, caps: list[tuple[int, int]]) -> float:
    rounds, left = 0, jobs
    while left > 0:
        left -= [cap for start, cap in caps if start <= rounds][-1]
        rounds += 1
    return rounds * LAT


async def one(kind: str, seed: int) -> tuple[float, float]:
    caps: list[tuple[int, int]] = [(0, 8)]
    changes: tuple[tuple[float, int], ...] = ()
    rng = random.Random(seed)
    if kind == "change":
        caps = [(0, 8), (8, 4), (16, 16)]
        changes = tuple((start * LAT, cap) for start, cap in caps[1:])
        gw = SimGateway(latency=LAT, cap=8, rng=rng)
    elif kind == "5xx":
        gw = SimGateway(latency=LAT, cap=8, error_rate=0.1, rng=rng)
    elif kind == "rate":
        gw = SimGateway(latency=LAT, rate=80, window=4 * LAT, rng=rng)
    else:
        gw = SimGateway(latency=LAT, cap=8, rng=rng)
    _, _, end = await drive(ConcurrencyController(64), gw, 400, changes=changes)
    return ideal(400, caps) / end, len(gw.throttled_at) / 400


async def main(kinds: list[str]) -> None:
    for kind in kinds:
        got = [await one(kind, seed) for seed in range(4)]
        print(f"{kind:7s} efficiency {' '.join(f'{e:.3f}' for e, _ in got)}   "
              f"429s per image {' '.join(f'{t:.3f}' for _, t in got)}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:] or ["cap", "change", "rate", "5xx"])
