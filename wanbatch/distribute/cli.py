"""``wanbatch ray-run``: one spec as many units of work (Ray tasks), one report, ``run``'s exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.table import Table

from wanbatch.cli import allow_read_option, err, out, user_errors

from .ray_runner import UNITS_PER_WORKER


@click.command("ray-run")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--units", "--shards", "units", type=click.IntRange(min=1),
              help="Cut the plan into K units of work (shards i/K), scheduled as Ray tasks "
                   f"[default: {UNITS_PER_WORKER} per worker the cluster has room for].")
@click.option("--address",
              help="Ray cluster to join: HOST:PORT, ray://HOST:PORT or auto (default: start a local one).")
@click.option("--output", help="Dataset folder (the same path on every node) or s3://… "
                               "(default: the spec's `output`).")
@click.option("--retry-failed", is_flag=True, help="Also request jobs that were refused in earlier runs.")
@click.option("--cpus-per-unit", "--cpus-per-shard", "cpus_per_unit", default=1.0, show_default=True,
              type=click.FloatRange(min=0), help="Ray CPUs reserved by each unit's task.")
@click.option("--env", "env_names", multiple=True, metavar="NAME",
              help="Also copy this environment variable to the workers (repeatable); AWS_*, WANBATCH_* "
                   "and the variables the spec names are copied anyway.")
@click.option("--forward-key/--no-forward-key", default=True, show_default=True,
              help="Copy the spec's api_key_env variable to the workers through Ray's runtime_env.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout (only JSON).")
@allow_read_option
def ray_run(spec_path: str, units: int | None, address: str | None, output: str | None, retry_failed: bool,
            cpus_per_unit: float, env_names: tuple[str, ...], forward_key: bool, as_json: bool) -> None:
    """Run SPEC as many units of work on a Ray cluster into one dataset, then compact it (rerun to resume)."""
    from .ray_runner import run_on_ray

    with user_errors(as_json), _stdout_to_stderr(as_json):
        report = run_on_ray(spec_path, units, address=address, output=output, retry_failed=retry_failed,
                            num_cpus_per_unit=cpus_per_unit, forward_env=env_names, forward_key=forward_key)
    data = report.to_dict()
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str), flush=True)
    else:
        _print(data)
    sys.exit(report.exit_code)


@contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """While Ray runs, whatever anyone writes to file descriptor 1 (Ray's C++ core, a raylet's warning
    when a worker dies, a library's print) goes to stderr: with ``--json``, stdout holds the JSON only."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _print(data: dict[str, Any]) -> None:
    """Totals, and a row per unit only for units that did not end cleanly (a ray-run has many)."""
    table = Table(title=f"ray-run: {data['output']}", title_justify="left")
    for column in ("unit", "exit", "done", "failed", "skipped", "requested", "retries", "error"):
        table.add_column(column, justify="left" if column == "error" else "right")
    for unit in data["shards"]:
        if unit["exit_code"] == 0 and not unit["error"]:
            continue
        s = unit["summary"] or {}
        table.add_row(str(unit["shard"]), str(unit["exit_code"]), *(str(s.get(k, "–")) for k in (
            "done_images", "failed_images", "skipped_images", "submitted_images", "retries")),
            unit["error"] or "")
    t = data["totals"]
    ran = len(data["shards"])
    table.add_row(f"all {ran}/{data['units']}", str(data["exit_code"]), *(str(t[k]) for k in (
        "done_images", "failed_images", "skipped_images", "submitted_images", "retries")), "", style="bold")
    out.print(table)
    if "billed_images" in t:
        out.print(f"billed: {t['billed_images']:,} image(s), in doubt (maybe billed): "
                  f"{t['in_doubt_images']:,} — over {t['attempts']} attempt(s) of {ran} unit(s); "
                  f"{data['units_skipped']} unit(s) had nothing left")
    if t["cost"] is not None:
        out.print(f"cost: {t['cost']:,.2f}")
    if data["compaction"]:
        c = data["compaction"]
        out.print(f"index: {c['rows_after']:,} rows in {c['parts_after']} part(s)")
    for note in data["notes"]:
        err.print(f"[dim]note:[/] {note}")
    if data["exit_code"] == 3:
        err.print(f"[yellow]stopped early.[/] Resume with the same command: wanbatch ray-run {data['spec']} "
                  f"--units {data['units']}")
    elif data["exit_code"] == 1:
        err.print(f"[yellow]{t['failed_images']} image(s) failed[/] — see `wanbatch status {data['output']}`")
