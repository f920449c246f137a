"""Which fault (if any) a generation request gets: deterministic ``fail_first`` counts, then rates.

Rates are laid out on [0, 1) in the order of :data:`FAULTS` and one uniform draw per request picks
at most one; the RNG is seeded with ``fault_seed`` so a sequential run is reproducible. ``fail_first``
entries stack in their order: with ``{"429": 2, "500": 1}`` the first two requests for each job key
get 429 and the third 500.
"""

from __future__ import annotations

import random
from collections import Counter

from wanbatch.mock.config import FAULTS, MockConfig

#: Faults that only make sense for some requests; drawn for others they mean "no fault".
_NEEDS_MANY = {"short_data"}
_ASYNC_ONLY = {"task_fail"}


class FaultPicker:
    def __init__(self, config: MockConfig) -> None:
        self._rates = [(name, config.faults.get(name, 0.0)) for name in FAULTS]
        self._first = list(config.fail_first.items())
        self._rng = random.Random(config.fault_seed)
        self._seen: Counter[str] = Counter()

    def pick(self, key: str, *, n: int, use_async: bool) -> str | None:
        """The fault for this request of job ``key``, or ``None``."""
        index = self._seen[key]
        self._seen[key] += 1
        for name, count in self._first:
            if index < count:
                return name if _applies(name, n, use_async) else None
            index -= count
        draw = self._rng.random()
        edge = 0.0
        for name, rate in self._rates:
            edge += rate
            if draw < edge:
                return name if _applies(name, n, use_async) else None
        return None


class FileFaultPicker:
    """Which fault (if any) a download gets: the first K downloads of each image (whichever link
    names it) get the faults of ``file_fail_first``, in order."""

    def __init__(self, config: MockConfig) -> None:
        self._first = list(config.file_fail_first.items())
        self._seen: Counter[str] = Counter()

    def pick(self, key: str) -> str | None:
        index = self._seen[key]
        self._seen[key] += 1
        for name, count in self._first:
            if index < count:
                return name
            index -= count
        return None


def _applies(name: str, n: int, use_async: bool) -> bool:
    if name in _NEEDS_MANY and n < 2:
        return False
    return not (name in _ASYNC_ONLY and not use_async)
