"""Run the shards of one spec as Ray tasks, then compact the shared dataset once.

    driver: validate spec ─▶ N tasks ``_run_shard(i, N)`` ─▶ gather as they finish ─▶ compact task
    worker: load_spec(path, text=…) ─▶ wanbatch.run(spec, RunOptions(shard=(i, N), output=ABS))

Why this is safe: ``--shard i/N`` partitions the plan by job id, so no job is in two shards; every
shard writes its own journal folder and index parts, so shards share one dataset folder; and a run
is its own resume, so a shard that Ray reruns after a worker crash (``max_retries``) requests only
what the killed attempt did not finish and re-indexes what it left on disk without paying again.

What the workers need: wanbatch installed, the dataset folder at the same absolute path (a shared
file system), and the spec's var files at the spec's absolute path. The spec text itself is shipped.
The API key never travels in task arguments or results: workers read it from their environment,
which is the cluster's or Ray's ``runtime_env["env_vars"]`` (``forward_env`` copies named variables
of this process there).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import EXIT_ABORTED, UsageError, WanbatchError
from ..runner.summary import RunSummary

RAY_MISSING = "Ray is not installed: pip install 'wanbatch[ray]'"

#: Counters of a run summary that add up across shards.
SUMMED = (
    "planned_jobs", "planned_images", "todo_jobs", "todo_images", "skipped_images", "skipped_failed",
    "adopted_images", "done_images", "failed_images", "submitted_images", "retries", "throttled",
    "ambiguous", "resumed_tasks", "pending_tasks", "paid_downloads", "regenerated_expired", "foreign_tasks",
)


class ClusterError(UsageError):
    """Ray is missing or the cluster cannot be reached: bad options (exit 2), nothing requested."""


@dataclass(frozen=True)
class ShardOutcome:
    """One shard's end: its exit code, its run summary (None if the task itself failed), an error."""

    shard: int
    exit_code: int
    summary: RunSummary | None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class RayRunReport:
    """All shards together: per-shard outcomes, summed counters, the compaction, the exit code (max)."""

    spec: str
    output: str
    shards: list[ShardOutcome]
    totals: dict[str, Any]
    compaction: dict[str, Any] | None
    exit_code: int
    elapsed_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------- worker side


def _run_shard(spec_text: str, spec_path: str, shard: int, shards: int, output: str,
               retry_failed: bool) -> dict[str, Any]:
    """Ray task body: run shard ``shard`` of ``shards``. Returns plain data (never the key)."""
    from wanbatch.runner import RunOptions, run
    from wanbatch.spec import load_spec

    try:
        spec = load_spec(spec_path, text=spec_text)
        result = run(spec, RunOptions(shard=(shard, shards), output=output, retry_failed=retry_failed))
    except WanbatchError as exc:
        return {"exit_code": exc.exit_code, "summary": None, "error": str(exc), "notes": []}
    return {"exit_code": result.exit_code, "summary": result.summary.to_dict(), "error": result.summary.error,
            "notes": result.notes}


def _compact(output: str) -> dict[str, Any] | None:
    """Ray task body: merge the index parts every shard wrote, once (a node that sees the folder, or
    any node for ``s3://``: the writer compacts through its staging folder, as ``wanbatch compact``)."""
    from wanbatch.dataset import DatasetView, DatasetWriter

    if DatasetView.find(output) is None:
        return None
    with DatasetWriter.open(output, create=False) as writer:
        return writer.compact().to_dict()


# ----------------------------------------------------------------------------------- driver side


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(RAY_MISSING) from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast on an address nobody answers at (Ray itself retries for a minute or more)."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ClusterError(f"Ray address {address!r}: the port is not a number") from None
    if not host or port is None:
        raise ClusterError(f"Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None


def _connect(ray: Any, address: str | None) -> bool:
    """Join ``address`` or start a local cluster; return whether we must disconnect afterwards."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, ignore_reinit_error=True, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    else:
        ray.init(ignore_reinit_error=True, include_dashboard=False, **quiet)
    return True


def _task_error(exc: BaseException) -> str:
    """One readable line for a failed task (a RayTaskError's str carries the whole traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def aggregate(outcomes: Sequence[ShardOutcome]) -> dict[str, Any]:
    """Sum the counters of the shards' summaries; cost only when some shard has one."""
    totals: dict[str, Any] = {key: 0 for key in SUMMED}
    errors: Counter[str] = Counter()
    costs = []
    for outcome in outcomes:
        summary = outcome.summary
        if summary is None:
            continue
        for key in SUMMED:
            totals[key] += int(getattr(summary, key))
        errors.update(summary.errors_by_kind)
        if summary.cost is not None:
            costs.append(float(summary.cost))
    totals["errors_by_kind"] = dict(sorted(errors.items()))
    totals["cost"] = round(sum(costs), 6) if costs else None
    totals["shards_failed"] = sum(1 for o in outcomes if o.summary is None)
    return totals


def run_on_ray(
    spec_path: str,
    shards: int,
    *,
    address: str | None = None,
    output: str | None = None,
    retry_failed: bool = False,
    num_cpus_per_shard: float = 1,
    runtime_env: dict[str, Any] | None = None,
    forward_env: Sequence[str] = (),
    max_retries: int = 3,
) -> RayRunReport:
    """Run ``shards`` shards of the spec as Ray tasks into one dataset folder, then compact it once.

    Joins ``address`` (or the Ray instance this process already started, or a new local one). A shard
    whose task raises is reported with exit code 3 while the others go on; Ray reruns a task whose
    worker died up to ``max_retries`` times, which resumes the shard (see the module docstring).
    ``forward_env`` names variables of this process to set on the workers via ``runtime_env``.
    Raises ``SpecError`` for a bad spec (checked here first) and ``ClusterError`` for Ray problems.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ClusterError(f"shards must be a whole number >= 1, got {shards!r}")
    if num_cpus_per_shard < 0:
        raise ClusterError(f"num_cpus_per_shard must be >= 0, got {num_cpus_per_shard!r}")
    from ..runner import RunOptions, resolve_output
    from ..spec import load_spec

    source = str(Path(spec_path).expanduser().resolve())
    spec = load_spec(source)  # every spec mistake here, before any cluster is touched
    spec_text = Path(source).read_text(encoding="utf-8-sig")
    root = str(resolve_output(spec, RunOptions(output=output)))
    env = dict(runtime_env or {})
    env_vars = dict(env.get("env_vars") or {})
    for name in forward_env:
        if name in os.environ:
            env_vars[name] = os.environ[name]
    if env_vars:
        env["env_vars"] = env_vars

    ray = _import_ray()
    started = time.monotonic()
    owned = _connect(ray, address)
    try:
        options: dict[str, Any] = {"num_cpus": num_cpus_per_shard, "max_retries": max_retries,
                                   "retry_exceptions": False}
        if env:
            options["runtime_env"] = env
        shard_task = ray.remote(_run_shard).options(**options)
        refs = {shard_task.remote(spec_text, source, i, shards, root, retry_failed): i for i in range(shards)}
        outcomes = _gather(ray, refs)
        notes: list[str] = []
        compaction = None
        try:
            compaction = ray.get(ray.remote(_compact).options(**options).remote(root))
        except ray.exceptions.RayError as exc:
            notes.append(f"compaction failed (run `wanbatch compact {root}`): {_task_error(exc)}")
    finally:
        if owned:
            ray.shutdown()
    return RayRunReport(
        spec=source, output=root, shards=outcomes, totals=aggregate(outcomes), compaction=compaction,
        exit_code=max(o.exit_code for o in outcomes), elapsed_seconds=round(time.monotonic() - started, 3),
        notes=notes,
    )


def _gather(ray: Any, refs: dict[Any, int]) -> list[ShardOutcome]:
    """Collect shards as they finish, so one failing shard never holds up the report of the rest."""
    outcomes: dict[int, ShardOutcome] = {}
    waiting = list(refs)
    while waiting:
        try:
            ready, waiting = ray.wait(waiting, num_returns=1)
        except KeyboardInterrupt:
            for ref in waiting:  # the shards stop; what they journaled is resumed by the next run
                ray.cancel(ref)
            raise
        ref = ready[0]
        shard = refs[ref]
        try:
            data = ray.get(ref)
        except ray.exceptions.RayError as exc:
            outcomes[shard] = ShardOutcome(shard, EXIT_ABORTED, None, _task_error(exc))
            continue
        summary = RunSummary.from_dict(data["summary"]) if data["summary"] is not None else None
        outcomes[shard] = ShardOutcome(shard, int(data["exit_code"]), summary, data["error"],
                                       list(data["notes"]))
    return [outcomes[i] for i in sorted(outcomes)]


__all__ = [
    "ClusterError",
    "RayRunReport",
    "ShardOutcome",
    "aggregate",
    "run_on_ray",
]
