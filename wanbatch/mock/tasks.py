"""Async tasks: queued → processing → done (or failed), driven by the clock, settled lazily.

No background timers: every request first calls :meth:`TaskStore.settle`, which finishes the tasks
whose time has come (in completion order) and bills them through a callback. So billing happens
when the gateway "finishes generating", whether or not anybody polls, and the store works the same
in-process and over a socket.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from wanbatch.mock.dialects import GenRequest

TaskPhase = Literal["queued", "processing", "succeeded", "failed"]


@dataclass(eq=False)
class Task:
    task_id: str
    request: GenRequest
    created: float
    done_at: float
    fail: bool  # ends failed (fault task_fail)
    delivered: int  # images in the result (fewer than n with fault short_data)
    finished: bool = field(default=False)

    def phase(self, now: float) -> TaskPhase:
        if self.finished:
            return "failed" if self.fail else "succeeded"
        duration = self.done_at - self.created
        return "queued" if now < self.created + duration / 4 else "processing"

    def progress(self, now: float) -> int:
        if self.finished:
            return 100
        duration = max(self.done_at - self.created, 1e-9)
        return max(0, min(99, int(100 * (now - self.created) / duration)))


class TaskStore:
    def __init__(self, on_finish: Callable[[Task], None]) -> None:
        self._tasks: dict[str, Task] = {}
        self._due: list[tuple[float, int, Task]] = []
        self._order = itertools.count()
        self._on_finish = on_finish

    def add(self, task: Task, now: float) -> None:
        self._tasks[task.task_id] = task
        heapq.heappush(self._due, (task.done_at, next(self._order), task))
        self.settle(now)

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def settle(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            _, _, task = heapq.heappop(self._due)
            task.finished = True
            self._on_finish(task)

    @property
    def pending(self) -> int:
        """Tasks still being generated (as of the last :meth:`settle`)."""
        return len(self._due)

    def __len__(self) -> int:
        return len(self._tasks)
