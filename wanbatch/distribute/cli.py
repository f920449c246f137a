"""``wanbatch ray-run``: the shards of one spec as Ray tasks, one combined report, ``run``'s exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from wanbatch.cli import err, out, user_errors


@click.command("ray-run")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--shards", type=click.IntRange(min=1), required=True, help="How many shards (Ray tasks).")
@click.option("--address",
              help="Ray cluster to join: HOST:PORT, ray://HOST:PORT or auto (default: start a local one).")
@click.option("--output", help="Dataset folder, the same path on every node (default: the spec's `output`).")
@click.option("--retry-failed", is_flag=True, help="Also request jobs that were refused in earlier runs.")
@click.option("--cpus-per-shard", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Ray CPUs reserved by each shard task.")
@click.option("--env", "env_names", multiple=True, metavar="NAME",
              help="Copy this environment variable to the workers (repeatable).")
@click.option("--forward-key/--no-forward-key", default=True, show_default=True,
              help="Copy the spec's api_key_env variable to the workers through Ray's runtime_env.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def ray_run(spec_path: str, shards: int, address: str | None, output: str | None, retry_failed: bool,
            cpus_per_shard: float, env_names: tuple[str, ...], forward_key: bool, as_json: bool) -> None:
    """Run SPEC as N shards on a Ray cluster into one dataset folder, then compact it (rerun to resume)."""
    from wanbatch.spec import load_spec

    from .ray_runner import run_on_ray

    with user_errors(as_json):
        spec = load_spec(spec_path)
        forward = list(env_names)
        if forward_key and spec.provider.kind == "gateway":
            forward.append(spec.provider.api_key_env)
        report = run_on_ray(spec_path, shards, address=address, output=output, retry_failed=retry_failed,
                            num_cpus_per_shard=cpus_per_shard, forward_env=forward)
    data = report.to_dict()
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        _print(data)
    sys.exit(report.exit_code)


def _print(data: dict[str, Any]) -> None:
    table = Table(title=f"ray-run: {data['output']}", title_justify="left")
    for column in ("shard", "exit", "done", "failed", "skipped", "requested", "retries", "error"):
        table.add_column(column, justify="left" if column == "error" else "right")
    for shard in data["shards"]:
        s = shard["summary"] or {}
        table.add_row(str(shard["shard"]), str(shard["exit_code"]), *(str(s.get(k, "–")) for k in (
            "done_images", "failed_images", "skipped_images", "submitted_images", "retries")),
            shard["error"] or "")
    t = data["totals"]
    table.add_row("all", str(data["exit_code"]), *(str(t[k]) for k in (
        "done_images", "failed_images", "skipped_images", "submitted_images", "retries")), "", style="bold")
    out.print(table)
    if t["cost"] is not None:
        out.print(f"cost: {t['cost']:,.2f}")
    if data["compaction"]:
        c = data["compaction"]
        out.print(f"index: {c['rows_after']:,} rows in {c['parts_after']} part(s)")
    for note in data["notes"]:
        err.print(f"[dim]note:[/] {note}")
    if data["exit_code"] == 3:
        err.print(f"[yellow]stopped early.[/] Resume with the same command: wanbatch ray-run {data['spec']} "
                  f"--shards {len(data['shards'])}")
    elif data["exit_code"] == 1:
        err.print(f"[yellow]{t['failed_images']} image(s) failed[/] — see `wanbatch status {data['output']}`")
