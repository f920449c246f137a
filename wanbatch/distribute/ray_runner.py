"""Run one spec on Ray as many small units of work into one dataset, then compact it once.

    driver: validate spec ─▶ triage task: which units still have work (one read of the index)
            ─▶ a Ray task per such unit ``_run_unit(i, K)`` ─▶ gather as they finish
            ─▶ finish task: recover, compact once, read back what every attempt persisted
    unit i: load_spec(path, text=…) ─▶ wanbatch.run(spec, RunOptions(shard=(i, K), run_label=TAG-u<i>))

**Units.** A unit is the shard ``i/K`` of ``wanbatch run --shard`` with ``K`` far above the number of
workers (default 8 per worker), so the load balances itself (a worker that finishes early takes the
next unit), a retry after a crash redoes one small slice, and a unit composes with the lease a run
holds on its slice. Units with nothing left at the start (by one triage of the whole dataset) are not
scheduled: they cost no request and no writer.

Why this is safe: ``--shard i/K`` partitions the plan by job id, so no job is in two units; every unit
writes its own journal folder and index parts, so units share one dataset; and a run is its own
resume, so a unit that Ray reruns after a worker crash (``max_retries``) requests only what the
killed attempt did not finish and re-indexes what it left without paying again.

**Totals** come from what the dataset persisted, not from the tasks' return values: every attempt's
run id carries this ray-run's tag, so after the final recovery the driver reads every attempt's
``runs/<run_id>.json`` and its ledger (the manifest entry, which recovery writes for a killed attempt
too). A retried unit's first attempt is counted: the gateway billed it.

What the workers need: wanbatch installed, the dataset (a shared folder at the same absolute path, or
``s3://``), and the spec's var files at the spec's absolute path. The spec text itself is shipped. The
environment travels in Ray's ``runtime_env["env_vars"]`` (see :func:`forwarded_env`): the API key's
*value* never appears in task arguments, results or the report.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import EXIT_ABORTED, UsageError, WanbatchError
from ..runner.summary import RunSummary

RAY_MISSING = "Ray is not installed: pip install 'wanbatch[ray]'"
#: Units per worker when ``units`` is not given: small units balance the load and make retries cheap.
UNITS_PER_WORKER = 8

#: What every attempt did: counters of run summaries that add up over units and attempts.
ACTIVITY = (
    "adopted_images", "done_images", "failed_images", "submitted_images", "retries", "throttled",
    "ambiguous", "resumed_tasks", "paid_downloads", "regenerated_expired", "foreign_tasks",
)
#: What the dataset held for each unit when the ray-run started (the triage, or the units' first runs).
STATE = ("planned_jobs", "planned_images", "todo_jobs", "todo_images", "skipped_images", "skipped_failed")
#: Kept for callers of earlier releases: every counter a total carries.
SUMMED = STATE + ACTIVITY + ("pending_tasks",)

#: Variables every worker needs when the driver has them: object storage credentials and endpoints,
#: wanbatch's own settings (staging folder, config).
FORWARD_PREFIXES = ("AWS_", "WANBATCH_")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ClusterError(UsageError):
    """Ray is missing or the cluster cannot be reached: bad options (exit 2), nothing requested."""


@dataclass(frozen=True)
class ShardOutcome:
    """One unit's end: its exit code, its (last attempt's) run summary (None if the task itself
    failed), an error."""

    shard: int
    exit_code: int
    summary: RunSummary | None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


UnitOutcome = ShardOutcome


@dataclass
class RayRunReport:
    """All units together: per-unit outcomes (of the units that ran), totals from what the dataset
    persisted, the compaction, the exit code (the highest of the units')."""

    spec: str
    output: str
    shards: list[ShardOutcome]
    totals: dict[str, Any]
    compaction: dict[str, Any] | None
    exit_code: int
    elapsed_seconds: float
    notes: list[str] = field(default_factory=list)
    units: int = 0  # K: the plan is cut into this many units
    units_skipped: int = 0  # units with nothing left at the start (not scheduled)
    tag: str = ""  # in the run id of every attempt of this ray-run (``…-<tag>-u<i>``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------- worker side


def unit_of(job_id: str, units: int) -> int:
    """The unit of a job: the shard of :func:`wanbatch.plan.plan` (``int(job_id[:8], 16) % K``)."""
    return int(job_id[:8], 16) % units


def _triage_units(spec_text: str, spec_path: str, units: int, output: str,
                  retry_failed: bool) -> dict[int, dict[str, int]]:
    """Ray task body: one triage of the whole dataset → unit → its STATE counters, for the units that
    hold any job. A unit needs a run when ``todo_images`` or ``unindexed`` is non-zero."""
    from wanbatch.dataset import DatasetView
    from wanbatch.plan import plan
    from wanbatch.resume import triage_stream
    from wanbatch.spec import load_spec

    spec = load_spec(spec_path, text=spec_text)
    view = DatasetView.find(output)
    held = view.triage() if view is not None else None
    jobs = plan(spec).jobs()
    out: dict[int, dict[str, int]] = {}

    def counts(unit: int) -> dict[str, int]:
        return out.setdefault(unit, {k: 0 for k in (*STATE, "unindexed")})

    if held is None:
        for job in jobs:
            c = counts(unit_of(job.job_id, units))
            c["planned_jobs"] += 1
            c["todo_jobs"] += 1
            c["planned_images"] += job.n
            c["todo_images"] += job.n
        return out
    for job, slots in triage_stream(jobs, held.done, held.failed, retry_failed=retry_failed,
                                    retry_in_doubt=spec.limits.in_doubt == "retry", batch=4096):
        c = counts(unit_of(job.job_id, units))
        c["planned_jobs"] += 1
        c["planned_images"] += job.n
        c["skipped_images"] += slots.done
        c["skipped_failed"] += slots.refused + slots.in_doubt
        if slots.need:
            c["todo_jobs"] += 1
            c["todo_images"] += len(slots.need)
    for image_id in held.unindexed:  # an image without a row: its unit's run re-indexes it
        if re.match(r"^[0-9a-f]{8}", image_id):
            counts(unit_of(image_id, units))["unindexed"] += 1
    return out


def _run_unit(spec_text: str, spec_path: str, unit: int, units: int, output: str,
              retry_failed: bool, label: str) -> dict[str, Any]:
    """Ray task body: run unit ``unit`` of ``units``. Returns plain data (never the key)."""
    from wanbatch.runner import RunOptions, run
    from wanbatch.spec import load_spec

    try:
        spec = load_spec(spec_path, text=spec_text)
        # wait: a unit Ray retries on another node may find the lease of its killed attempt there,
        # alive until it expires (30 s); waiting beats failing the unit.
        result = run(spec, RunOptions(shard=(unit, units), output=output, retry_failed=retry_failed,
                                      run_label=label, wait=True))
    except WanbatchError as exc:
        return {"exit_code": exc.exit_code, "summary": None, "error": str(exc), "notes": []}
    return {"exit_code": result.exit_code, "summary": result.summary.to_dict(), "error": result.summary.error,
            "notes": result.notes}


def _compact(output: str) -> dict[str, Any] | None:
    """Merge the index parts every unit wrote, once, after recovering what dead attempts left (a
    node that sees the folder, or any node for ``s3://``: the writer works through its staging
    folder there, as ``wanbatch compact``)."""
    from wanbatch.dataset import DatasetView, DatasetWriter

    if DatasetView.find(output) is None:
        return None
    with DatasetWriter.open(output, create=False) as writer:
        writer.recover()
        return writer.compact().to_dict()


def _finish(output: str, tag: str) -> dict[str, Any]:
    """Ray task body: compact once, then read back every attempt of this ray-run (see
    :func:`attempts_of`). Errors of the compaction are reported, not raised."""
    compaction: dict[str, Any] | None = None
    error = None
    try:
        compaction = _compact(output)
    except WanbatchError as exc:
        error = str(exc)
    return {"compaction": compaction, "compaction_error": error, **attempts_of(output, tag)}


def attempts_of(output: str, tag: str) -> dict[str, Any]:
    """Every run of the dataset whose id carries ``-<tag>-u<i>``: its unit, its summary
    (``runs/<run_id>.json``; None for a killed attempt) and its ledger (the manifest entry, or the
    journal of a dead writer nobody recovered yet). ``done_by_run``: ok images each such run put in
    the index (read only when some attempt left no summary: a killed attempt's recovered rows)."""
    import json

    from wanbatch.dataset import DatasetView
    from wanbatch.dataset.folds import StatusFold

    view = DatasetView.find(output)
    if view is None:
        return {"attempts": [], "done_by_run": {}}
    pattern = re.compile(rf"-{re.escape(tag)}-u(\d+)$")
    manifest = view.manifest()
    attempts: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("runs") or []:
        run_id = str(entry.get("run_id")) if isinstance(entry, dict) else ""
        found = pattern.search(run_id)
        if found:
            ledger = entry.get("ledger")
            attempts[run_id] = {"run_id": run_id, "unit": int(found.group(1)), "status": entry.get("status"),
                                "ledger": ledger if isinstance(ledger, dict) else None}
    for journal in view.journal_ledgers():
        run_id = journal.run_id or ""
        found = pattern.search(run_id)
        if found and (run_id not in attempts or attempts[run_id]["ledger"] is None):
            attempts[run_id] = {"run_id": run_id, "unit": int(found.group(1)), "status": "running or dead",
                                "ledger": {**journal.entry(), "in_doubt_images": journal.in_doubt_total}}
    for run_id in _summary_ids(view):  # an entry two writers' manifest updates lost (s3): its summary
        found = pattern.search(run_id)
        if found and run_id not in attempts:
            attempts[run_id] = {"run_id": run_id, "unit": int(found.group(1)), "status": None, "ledger": None}
    for attempt in attempts.values():
        raw = view.read_bytes(f"runs/{attempt['run_id']}.json")
        try:
            attempt["summary"] = json.loads(raw) if raw is not None else None
        except ValueError:
            attempt["summary"] = None
    done_by_run: dict[str, int] = {}
    if any(a["summary"] is None for a in attempts.values()):
        columns = ("image_id", "status", "error_kind", "created_at", "bytes", "run_id")
        by_run = view.fold(columns, StatusFold).result()[4]
        done_by_run = {str(k): v for k, v in by_run.items() if k in attempts}
    return {"attempts": sorted(attempts.values(), key=lambda a: a["run_id"]), "done_by_run": done_by_run}


def _summary_ids(view: Any) -> list[str]:
    """Run ids of the summaries in ``runs/`` (one listing of that prefix)."""
    import pyarrow.fs as pafs

    try:
        infos = view.fs.get_file_info(pafs.FileSelector(f"{view.base}/runs", allow_not_found=True))
    except OSError:
        return []
    return [i.base_name[:-5] for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".json")]


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
    """Join ``address`` or start a local cluster; return whether we must disconnect afterwards.
    Workers' output stays on the workers (``log_to_driver=False``) and Ray logs only warnings."""
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


def forwarded_env(spec_text: str, key_env: str | None, names: Sequence[str] = (),
                  environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a worker needs, from ``environ`` (default: this process): every ``AWS_*`` and
    ``WANBATCH_*`` variable (object storage, the staging folder), the variables the spec names as
    ``${NAME}``, the API key's variable ``key_env`` and ``names``. Only those present are forwarded."""
    env = os.environ if environ is None else environ
    wanted = [n for n in env if n.startswith(FORWARD_PREFIXES)]
    wanted += _ENV_REF.findall(spec_text)
    wanted += [key_env] if key_env else []
    wanted += list(names)
    return {name: env[name] for name in dict.fromkeys(wanted) if name in env}


def aggregate(outcomes: Sequence[ShardOutcome], attempts: Sequence[Mapping[str, Any]] | None = None, *,
              state: Mapping[int, Mapping[str, int]] | None = None,
              done_by_run: Mapping[str, int] | None = None,
              price_per_image: float | None = None) -> dict[str, Any]:
    """The totals of a ray-run.

    Without ``attempts``: the counters of the units' returned summaries, summed. With them (what
    :func:`attempts_of` read back from the dataset): activity counters summed over *every* attempt's
    persisted summary, ``billed_images``/``in_doubt_images`` summed over every attempt's ledger (a
    killed attempt's too), ``done_images`` from the index where an attempt left no summary, ``cost`` =
    (billed + in doubt) × price, the dataset's state at the start from ``state`` (the triage)."""
    totals: dict[str, Any] = {key: 0 for key in SUMMED}
    errors: Counter[str] = Counter()
    totals["units_failed"] = totals["shards_failed"] = sum(1 for o in outcomes if o.summary is None)
    if attempts is None:
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
        return totals

    billed = in_doubt = 0
    first: dict[int, dict[str, Any]] = {}
    for attempt in attempts:
        summary = attempt.get("summary")
        ledger = attempt.get("ledger")
        if not isinstance(ledger, dict):  # no manifest entry: the summary says what the run's ledger held
            ledger = summary if isinstance(summary, dict) else {}
        billed += _int(ledger.get("billed_images"))
        in_doubt += _int(ledger.get("in_doubt_images")) - _int(ledger.get("resolved_images"))
        if isinstance(summary, dict):
            for key in ACTIVITY:
                totals[key] += _int(summary.get(key))
            errors.update({str(k): _int(v) for k, v in (summary.get("errors_by_kind") or {}).items()})
            unit = int(attempt["unit"])
            if unit not in first or summary.get("started_at", 0) < first[unit].get("started_at", 0):
                first[unit] = summary
        elif done_by_run:
            totals["done_images"] += int(done_by_run.get(str(attempt["run_id"]), 0))
    for outcome in outcomes:  # tasks still running at the end: the units' last attempts
        if outcome.summary is not None:
            totals["pending_tasks"] += outcome.summary.pending_tasks
    for unit, counts in (state or {}).items():
        for key in STATE:
            totals[key] += _int(counts.get(key))
        first.pop(unit, None)
    for earliest in first.values():  # no triage: each unit's first attempt says what was left
        for key in STATE:
            totals[key] += _int(earliest.get(key))
    totals["billed_images"] = billed
    totals["in_doubt_images"] = max(in_doubt, 0)
    totals["attempts"] = len(attempts)
    totals["killed_attempts"] = sum(1 for a in attempts if not isinstance(a.get("summary"), dict))
    totals["errors_by_kind"] = dict(sorted(errors.items()))
    totals["cost"] = round((billed + max(in_doubt, 0)) * price_per_image, 6) \
        if price_per_image is not None else None
    return totals


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def run_on_ray(
    spec_path: str,
    units: int | None = None,
    *,
    address: str | None = None,
    output: str | None = None,
    retry_failed: bool = False,
    num_cpus_per_unit: float = 1,
    runtime_env: dict[str, Any] | None = None,
    forward_env: Sequence[str] = (),
    forward_key: bool = True,
    max_retries: int = 3,
    num_cpus_per_shard: float | None = None,
) -> RayRunReport:
    """Run the spec as ``units`` units (shards ``i/units``) of Ray tasks into one dataset, then
    compact it once and add up what every attempt persisted.

    ``units`` defaults to :data:`UNITS_PER_WORKER` × the workers the cluster has room for (its CPUs
    / ``num_cpus_per_unit``). Joins ``address`` (or the Ray instance this process already started, or
    a new local one). A unit whose task raises is reported with exit code 3 while the others go on;
    Ray reruns a unit whose worker died up to ``max_retries`` times (a rerun resumes it).
    The workers get, through ``runtime_env["env_vars"]``, the variables of :func:`forwarded_env` (the
    API key's variable unless ``forward_key`` is false) and those named in ``forward_env``.
    Raises ``SpecError`` for a bad spec (checked here first) and ``ClusterError`` for Ray problems.
    """
    if units is not None and (isinstance(units, bool) or not isinstance(units, int) or units < 1):
        raise ClusterError(f"units must be a whole number >= 1, got {units!r}")
    cpus = num_cpus_per_unit if num_cpus_per_shard is None else num_cpus_per_shard
    if cpus < 0:
        raise ClusterError(f"num_cpus_per_unit must be >= 0, got {cpus!r}")
    from ..runner import RunOptions, resolve_output
    from ..spec import load_spec

    source = str(Path(spec_path).expanduser().resolve())
    spec = load_spec(source)  # every spec mistake here, before any cluster is touched
    spec_text = Path(source).read_text(encoding="utf-8-sig")
    root = str(resolve_output(spec, RunOptions(output=output)))
    key_env = spec.provider.api_key_env if forward_key and spec.provider.kind == "gateway" else None
    if key_env is not None and spec.provider.members:  # a pool: every member's key
        forward_env = (*forward_env, *(m.api_key_env for m in spec.provider.members))
    env = dict(runtime_env or {})
    env_vars = {**forwarded_env(spec_text, key_env, forward_env), **dict(env.get("env_vars") or {})}
    if env_vars:
        env["env_vars"] = env_vars

    ray = _import_ray()
    started = time.monotonic()
    owned = _connect(ray, address)
    tag = "rr" + secrets.token_hex(4)
    notes: list[str] = []
    try:
        if units is None:
            workers = float(ray.cluster_resources().get("CPU", 1)) / cpus if cpus else 1.0
            units = UNITS_PER_WORKER * max(1, int(workers))
        options: dict[str, Any] = {"num_cpus": cpus, "max_retries": max_retries, "retry_exceptions": False}
        if env:
            options["runtime_env"] = env
        state: dict[int, dict[str, int]] | None = None
        try:
            state = ray.get(ray.remote(_triage_units).options(**options).remote(
                spec_text, source, units, root, retry_failed))
        except ray.exceptions.RayError as exc:
            notes.append(f"the triage of units failed, every unit runs: {_task_error(exc)}")
        todo = sorted(range(units)) if state is None else sorted(
            u for u, c in state.items() if c["todo_images"] or c["unindexed"])
        unit_task = ray.remote(_run_unit).options(**options)
        refs = {unit_task.remote(spec_text, source, i, units, root, retry_failed, f"{tag}-u{i}"): i
                for i in todo}
        outcomes = _gather(ray, refs)
        finished: dict[str, Any] = {"attempts": None, "compaction": None, "done_by_run": {}}
        try:
            finished = ray.get(ray.remote(_finish).options(**options).remote(root, tag))
        except ray.exceptions.RayError as exc:
            notes.append(f"compaction failed (run `wanbatch compact {root}`): {_task_error(exc)}")
        if finished.get("compaction_error"):
            notes.append(f"compaction failed (run `wanbatch compact {root}`): {finished['compaction_error']}")
    finally:
        if owned:
            ray.shutdown()
    totals = aggregate(outcomes, finished["attempts"], state=state, done_by_run=finished["done_by_run"],
                       price_per_image=spec.price_per_image)
    if totals.get("killed_attempts"):
        notes.append(f"{totals['killed_attempts']} attempt(s) died (a worker or node was lost): their "
                     "requests are in the totals (billed, in doubt), their images were recovered")
    return RayRunReport(
        spec=source, output=root, shards=outcomes, totals=totals, compaction=finished["compaction"],
        exit_code=max((o.exit_code for o in outcomes), default=0),
        elapsed_seconds=round(time.monotonic() - started, 3), notes=notes, units=units,
        units_skipped=units - len(todo), tag=tag,
    )


def _gather(ray: Any, refs: dict[Any, int]) -> list[ShardOutcome]:
    """Collect units as they finish, so one failing unit never holds up the report of the rest."""
    outcomes: dict[int, ShardOutcome] = {}
    waiting = list(refs)
    while waiting:
        try:
            ready, waiting = ray.wait(waiting, num_returns=1)
        except KeyboardInterrupt:
            for ref in waiting:  # the units stop; what they journaled is resumed by the next run
                ray.cancel(ref)
            raise
        ref = ready[0]
        unit = refs[ref]
        try:
            data = ray.get(ref)
        except ray.exceptions.RayError as exc:
            outcomes[unit] = ShardOutcome(unit, EXIT_ABORTED, None, _task_error(exc))
            continue
        summary = RunSummary.from_dict(data["summary"]) if data["summary"] is not None else None
        outcomes[unit] = ShardOutcome(unit, int(data["exit_code"]), summary, data["error"],
                                      list(data["notes"]))
    return [outcomes[i] for i in sorted(outcomes)]


__all__ = [
    "ClusterError",
    "RayRunReport",
    "ShardOutcome",
    "UnitOutcome",
    "aggregate",
    "attempts_of",
    "forwarded_env",
    "run_on_ray",
]
