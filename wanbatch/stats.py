"""Live counters of a run, shared by the runner (writes) and the progress display (reads)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class RunStats:
    run_id: str
    planned_jobs: int = 0
    planned_images: int = 0
    todo_jobs: int = 0
    todo_images: int = 0
    skipped_images: int = 0  # already in the dataset before this run
    skipped_failed: int = 0  # refused earlier; retried only with --retry-failed
    adopted_images: int = 0  # on disk without a row (a crash between rename and journal): re-indexed
    done_images: int = 0
    failed_images: int = 0
    in_flight: int = 0
    submitted_images: int = 0  # images asked of the gateway by this run (what caps count against)
    billed_images: int = 0  # images this run's requests certainly billed (the writer's ledger)
    in_doubt_images: int = 0  # images maybe billed: ambiguous answers, unanswered requests, running tasks
    in_doubt_skipped: int = 0  # slots in doubt from earlier runs left alone (limits.in_doubt: skip)
    in_doubt_retried: int = 0  # ... requested again (limits.in_doubt: retry or --retry-failed)
    retries: int = 0
    throttled: int = 0
    ambiguous: int = 0
    resumed_tasks: int = 0
    pending_tasks: int = 0  # async tasks still running at the end (a rerun polls them)
    foreign_tasks: int = 0  # journaled tasks of another gateway: left alone (not polled, not resubmitted)
    paid_downloads: int = 0  # images paid for by an earlier run, downloaded from their journaled links
    regenerated_expired: int = 0  # images paid for earlier, links expired: generated (and paid) again
    concurrency: int = 0
    price_per_image: float | None = None
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)  # kind → its first row message (masked)
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    finished: float | None = None
    stop_reason: str | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def finished_images(self) -> int:
        return self.done_images + self.failed_images

    @property
    def images_per_second(self) -> float:
        return self.done_images / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def accounted_images(self) -> int:
        """Slots of the plan settled so far: already there, refused earlier, or done/failed now."""
        return self.skipped_images + self.skipped_failed + self.finished_images

    @property
    def eta_seconds(self) -> float | None:
        rate = self.finished_images / self.elapsed if self.elapsed > 0 else 0.0
        left = max(self.planned_images - self.accounted_images, 0)
        return left / rate if rate > 0 else None

    @property
    def spent(self) -> float | None:
        """Estimated spend of this run: images billed or in doubt × price."""
        if self.price_per_image is None:
            return None
        return round((self.billed_images + self.in_doubt_images) * self.price_per_image, 6)

    def to_dict(self) -> dict[str, Any]:
        """The run's counters as :class:`wanbatch.runner.summary.RunSummary` names them (its
        ``from_stats`` is built from this, so a counter added to :data:`COUNTERS` reaches the summary)."""
        return {
            "run_id": self.run_id,
            **{name: getattr(self, name) for name in COUNTERS},
            "errors_by_kind": dict(sorted(self.errors.items())),
            "cost": self.spent,
            "price_per_image": self.price_per_image,
            "elapsed_seconds": round(self.elapsed, 3),
            "images_per_second": round(self.images_per_second, 3),
            "started_at": self.started_at,
            "stop_reason": self.stop_reason,
        }


#: Counters only the live display reads.
LIVE_ONLY = frozenset({"in_flight", "concurrency"})
#: The counters a run's summary carries under the same names: every other int field above, in order.
COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(RunStats)
                                  if f.type == "int" and f.name not in LIVE_ONLY)
