"""The typed end of a run: what the CLI prints, ``runs/<id>.json`` holds and Ray adds up.

:class:`RunSummary` is a frozen value built once, when the run ends. Its JSON form (:meth:`to_dict`)
is the file format of ``runs/<run_id>.json`` and of ``wanbatch run --json``: keys are only ever added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_ABORTED, EXIT_FAILED, EXIT_OK, WanbatchError

if TYPE_CHECKING:
    from ..stats import RunStats

#: What a run's exit code says, as recorded in the manifest's run entries.
STATUS_BY_EXIT = {EXIT_OK: "done", EXIT_FAILED: "some failed", EXIT_ABORTED: "aborted"}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Counters, timings and outcome of one run (or one shard of a run)."""

    run_id: str
    planned_jobs: int = 0
    planned_images: int = 0
    todo_jobs: int = 0
    todo_images: int = 0
    skipped_images: int = 0  # already in the dataset before this run
    skipped_failed: int = 0  # refused earlier; requested again only with --retry-failed
    adopted_images: int = 0  # on disk without a row (a crash between rename and journal): re-indexed
    done_images: int = 0
    failed_images: int = 0
    submitted_images: int = 0  # images asked of the gateway by this run (what caps count against)
    billed_images: int = 0  # images this run certainly paid for (its ledger)
    in_doubt_images: int = 0  # images this run maybe paid for (ambiguous, unanswered, tasks still running)
    in_doubt_skipped: int = 0  # slots in doubt from earlier runs not requested (limits.in_doubt: skip)
    in_doubt_retried: int = 0  # slots in doubt from earlier runs requested again (limits.in_doubt: retry)
    retries: int = 0
    throttled: int = 0
    ambiguous: int = 0
    resumed_tasks: int = 0
    pending_tasks: int = 0  # async tasks still running at the end (a rerun polls them)
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    price_per_image: float | None = None
    elapsed_seconds: float = 0.0
    images_per_second: float = 0.0
    started_at: float = 0.0
    stop_reason: str | None = None
    pipeline: str = ""
    model: str = ""
    provider: str = ""
    dialect: str = ""
    output: str = ""
    shard: tuple[int, int] | None = None
    tool_version: str = ""
    exit_code: int = EXIT_OK
    error: str | None = None
    concurrency_cuts: int = 0
    lowest_concurrency: int = 0
    #: The dataset's ledger once this run ended (billed_images, in_doubt_images, spent, max_images,
    #: max_cost), as ``wanbatch status --json`` reports it.
    ledger: dict[str, Any] = field(default_factory=dict)
    paid_downloads: int = 0  # images paid for by earlier runs, downloaded from their kept links
    regenerated_expired: int = 0  # images paid for earlier whose links expired: generated (paid) again
    foreign_tasks: int = 0  # jobs left alone: their async tasks went to another gateway
    #: A provider pool's members (empty for one provider): name, weight, state (active, cooling,
    #: probing, out) and why, requests, images, throttled (429s), failures, breaker_trips, concurrency.
    members: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return STATUS_BY_EXIT.get(self.exit_code, "error")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shard"] = list(self.shard) if self.shard else None
        return data

    @classmethod
    def from_stats(cls, stats: RunStats, **context: Any) -> RunSummary:
        """The summary of a run whose live counters are ``stats`` (:meth:`RunStats.to_dict`, by name);
        ``context`` gives the rest (model, provider, exit code, ledger, …)."""
        return cls(**{**stats.to_dict(), **context})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """Read a summary written by this or an earlier release (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        shard = values.get("shard")
        values["shard"] = (int(shard[0]), int(shard[1])) \
            if isinstance(shard, list | tuple) and len(shard) == 2 else None
        values["errors_by_kind"] = dict(values.get("errors_by_kind") or {})
        values["ledger"] = dict(values.get("ledger") or {})
        values["members"] = [dict(m) for m in values.get("members") or [] if isinstance(m, dict)]
        values.setdefault("run_id", "")
        return cls(**values)


def exit_code_for(*, error: BaseException | None, stop_reason: str | None, failed_images: int,
                  pending_tasks: int) -> int:
    """0 done, 1 some slots failed (or tasks still running), 3 aborted (a stop), or the error's own code."""
    if error is not None or stop_reason is not None:
        return error.exit_code if isinstance(error, WanbatchError) else EXIT_ABORTED
    if failed_images or pending_tasks:
        return EXIT_FAILED
    return EXIT_OK
