"""The `wanbatch` command line. Turns every WanbatchError into a readable message and the exit code it
carries (``exc.exit_code``): 0 done, 1 some jobs failed, 2 bad input, 3 aborted."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._version import __version__
from .errors import EXIT_ABORTED, EXIT_BAD_INPUT, EXIT_FAILED, SpecError, WanbatchError
from .redact import redact

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class LazyGroup(click.Group):
    """Commands are imported when used, so `wanbatch --help` and `plan` start fast."""

    lazy: ClassVar[dict[str, str]] = {
        "mock-server": "wanbatch.mock.cli:mock_server",
        "ray-run": "wanbatch.distribute.cli:ray_run",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[name]} is not a click command")
            return command
        return super().get_command(ctx, name)


def fail(message: str, code: int, hint: str | None = None) -> NoReturn:
    """Print ``message`` (plain text, brackets such as ``[ray]`` kept, keys masked); exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(redact(message))}", markup=True, soft_wrap=True)
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}")
    sys.exit(code)


@contextmanager
def user_errors(json_output: bool = False) -> Iterator[None]:
    """The one place errors become messages and exit codes: each WanbatchError exits with its own
    ``exit_code``; only a real bug shows a traceback (with WANBATCH_DEBUG=1)."""
    try:
        yield
    except SpecError as exc:
        if json_output:
            errors = getattr(exc, "errors", [exc])
            print(json.dumps({"ok": False, "errors": [_spec_error_dict(e) for e in errors]}, indent=2))
            sys.exit(exc.exit_code)
        err.print(f"[bold red]error[/] in spec:\n{escape(exc.render())}", markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except WanbatchError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_ABORTED)
    except (OSError, ValueError) as exc:
        if os.environ.get("WANBATCH_DEBUG"):
            raise
        fail(f"{type(exc).__name__}: {exc}", EXIT_BAD_INPUT, "set WANBATCH_DEBUG=1 to see the traceback")
    except Exception as exc:  # a bug in wanbatch: one clear line, exit 3 (rerun resumes), no traceback
        if os.environ.get("WANBATCH_DEBUG"):
            raise
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]  # type: ignore[assignment]
        fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_ABORTED,
             "this is a bug in wanbatch; set WANBATCH_DEBUG=1 to see the traceback and report it")


def _spec_error_dict(e: SpecError) -> dict[str, Any]:
    return {"file": e.file, "line": e.line, "column": e.column, "field": e.field, "message": e.message,
            "hint": e.hint}


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter("expected i/N, e.g. 0/4 (shards are numbered from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise click.BadParameter(f"shard {i}/{n}: need 0 <= i < N")
    return i, n


def parse_retry_failed(value: str | None) -> bool | frozenset[str]:
    """``--retry-failed``: absent → False, bare → True, ``a,b`` → those kinds or kind classes."""
    from .resume import RETRY_CHOICES

    if value is None:
        return False
    if value == "all":
        return True
    kinds = frozenset(k.strip() for k in value.split(",") if k.strip())
    unknown = sorted(kinds - set(RETRY_CHOICES))
    if os.path.exists(value):
        raise click.BadParameter(f"{value!r} is a file, not a kind: write the spec first "
                                 "(wanbatch run SPEC --retry-failed) or --retry-failed=all",
                                 param_hint="--retry-failed")
    if unknown or not kinds:
        raise click.BadParameter(f"unknown kind {', '.join(unknown) or repr(value)}; choose from: all, "
                                 f"{', '.join(RETRY_CHOICES)}", param_hint="--retry-failed")
    return kinds


def parse_split(value: str | None) -> dict[str, float] | None:
    """``train=0.9,val=0.1`` → ``{"train": 0.9, "val": 0.1}`` (checked by the export)."""
    if value is None:
        return None
    out: dict[str, float] = {}
    for item in value.split(","):
        name, _, fraction = item.partition("=")
        try:
            out[name.strip()] = float(fraction)
        except ValueError:
            raise click.BadParameter(f"expected name=fraction, e.g. train=0.9,val=0.1; got {item!r}",
                                     param_hint="--split") from None
    return out


def planned_by(spec_path: str | None) -> dict[str, int] | None:
    """The image ids ``--spec SPEC`` plans (None without --spec)."""
    if spec_path is None:
        return None
    from .plan import plan as make_plan
    from .spec import load_spec

    return make_plan(load_spec(spec_path, require_env=False)).image_ids()


spec_filter_option = click.option(
    "--spec", "spec_path", type=click.Path(dir_okay=False),
    help="Only the images this spec plans (leaves out those of an earlier version of it).")
shard_option = click.option("--shard", metavar="i/N", help="Run only shard i of N (0-based, deterministic).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None,
    help="The wanbatch.yaml that defines named providers (default: the one beside the spec, then "
         "$XDG_CONFIG_HOME/wanbatch/wanbatch.yaml; never the current directory's).")



def _allow_read(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    from .spec.paths import add_allowed

    add_allowed(value)


allow_read_option = click.option(
    "--allow-read", multiple=True, metavar="DIR", type=click.Path(file_okay=False, exists=True),
    callback=_allow_read, expose_value=False,
    help="Let specs read files (vars, rows, input images) under DIR too (repeatable; also "
         "WANBATCH_ALLOW_READ). By default only under the spec's folder or the current one, none hidden.")


def provider_line(spec: Any) -> str:
    """Where requests go and which file said so (a named provider's wanbatch.yaml, or the spec)."""
    where = spec.provider.defined_in or spec.source
    members = spec.provider.members
    pool = (f", a pool of {', '.join(f'{m.name} ×{m.weight}' for m in members)}" if members else "")
    return f"provider {spec.provider.name} ({spec.provider.kind}{pool}) defined in {where}"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wanbatch")
def main() -> None:
    """Reproducible, resumable batches of Wan 2.7 image generations, as a Parquet-indexed dataset."""
    arrow_without_pandas()


def arrow_without_pandas() -> None:
    """Have pyarrow treat pandas as absent in this process, as in a plain install.

    The first time pyarrow turns Python objects into an array it imports pandas (0.6 s of a command's
    start, when pandas happens to be installed) only to ask whether the objects are pandas ones.
    wanbatch never hands it any, so the command lets that one attempt fail. Later explicit pandas
    use (``Table.to_pandas``) still imports pandas then; a process that already holds pandas is left
    as it is.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    sys.meta_path.insert(0, _NoPandas)
    try:  # both of pyarrow's pandas look-ups (its Python shim, its C++ converter) try once, here
        pa.array(["x"])
    finally:
        sys.meta_path.remove(_NoPandas)


class _NoPandas:
    """An import finder that refuses pandas (pyarrow then remembers it as not installed)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is left out of wanbatch commands")


# ----------------------------------------------------------------------------------- validate / plan


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
@config_option
@allow_read_option
def validate(specs: tuple[str, ...], as_json: bool, config: str | None) -> None:
    """Check specs without sending anything: every file is checked and reported (exit 2 if any is bad)."""
    from .plan import plan as make_plan
    from .spec import load_spec

    results: list[dict[str, Any]] = []
    for i, path in enumerate(specs):
        try:
            # nothing is sent: an unset ${VAR} only warns; earlier specs are stages that feed this one
            spec = load_spec(path, config=config, require_env=False, upstream=chain_outputs(specs[:i]))
            p = make_plan(spec)
            result = {"spec": path, "ok": True, "jobs": p.job_count, "images": p.image_count,
                      "warnings": list(spec.warnings)}
        except SpecError as exc:
            errors = getattr(exc, "errors", [exc])
            result = {"spec": path, "ok": False, "errors": [_spec_error_dict(e) for e in errors]}
            if not as_json:
                err.print(f"[bold red]✗[/] {escape(path)}:\n{escape(exc.render())}", markup=True,
                          soft_wrap=True)
        else:
            if not as_json:
                show_warnings(spec.warnings)
                out.print(f"[green]✓[/] {escape(path)}: {p.job_count} jobs, {p.image_count} images")
        results.append(result)
    if as_json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    bad = sum(not r["ok"] for r in results)
    if bad:
        if not as_json and len(results) > 1:
            err.print(f"{bad} of {len(results)} specs have mistakes")
        sys.exit(EXIT_BAD_INPUT)


def show_warnings(warnings: Iterable[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True, soft_wrap=True)


@main.command("plan")
@click.argument("spec_paths", metavar="SPEC...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@shard_option
@click.option("--output", help="Dataset folder or s3:// URI (default: the spec's `output`; one SPEC only).")
@click.option("--samples", default=5, show_default=True, help="How many rendered prompts to show.")
@json_option
@config_option
@allow_read_option
def plan_cmd(spec_paths: tuple[str, ...], shard: str | None, output: str | None, samples: int, as_json: bool,
             config: str | None) -> None:
    """Expand specs into jobs and show counts, sizes, sample prompts, cost and what is left to do.

    Several SPECs are stages of one chain, in order: a stage whose images come from an earlier
    stage's dataset plans nothing until that stage has run."""
    from .planreport import plan_report

    _one_output(spec_paths, output)
    reports = []
    for i, spec_path in enumerate(spec_paths):
        with user_errors(as_json):
            report = plan_report(spec_path, shard=parse_shard(shard), output=output, samples=samples,
                                 config=config, upstream=chain_outputs(spec_paths[:i]))
        _warn_seeds(spec_path, config=config)
        if not as_json:
            _print_plan(report)
        reports.append(report)
    if as_json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, ensure_ascii=False))


def chain_outputs(earlier: Sequence[str]) -> list[str]:
    """The outputs (absolute) of the earlier stages of a chain: a later stage may read them before
    they exist (``plan a.yaml b.yaml``), as what those stages will write."""
    from .spec.inputs import spec_output

    outputs = []
    for path in earlier:
        try:
            out_ = spec_output(Path(path))
        except SpecError:
            continue
        if "://" not in out_:
            outputs.append(str(Path(out_).expanduser().resolve()))
    return outputs


def _one_output(spec_paths: Sequence[str], output: str | None) -> None:
    if output is not None and len(spec_paths) > 1:
        fail("--output names one dataset; it applies to one SPEC only", EXIT_BAD_INPUT,
             "set output: in each spec of a chain")


def _print_plan(report: dict[str, Any]) -> None:
    table = Table(title=f"plan: {report['name']}  ({report['model']} via {report['provider']})",
                  title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("jobs", f"{report['jobs']:,}")
    table.add_row("images", f"{report['images']:,}  (n={report['n']} per job)")
    for size, count in report["by_size"].items():
        table.add_row(f"  {size}", f"{count:,}")
    if report["estimated_cost"] is not None:
        table.add_row("estimated cost",
                      f"{report['estimated_cost']:,.2f}  ({report['price_per_image']} / image)")
    if report["existing"] is not None:
        table.add_row("already in output", f"{report['existing']['done']:,} images")
        if report["existing"]["failed_skipped"]:
            table.add_row("refused earlier",
                          f"{report['existing']['failed_skipped']:,} (rerun with --retry-failed)")
        if doubt := report["existing"].get("in_doubt_skipped"):
            table.add_row("in doubt earlier", f"{doubt:,} (maybe billed; left alone: --retry-failed "
                          "ambiguous or limits.in_doubt: retry asks again, may pay twice)")
        table.add_row("a run would request",
                      f"{report['todo_images']:,} images ({report['todo_jobs']:,} jobs)")
        if report["todo_cost"] is not None:
            table.add_row("  costing", f"{report['todo_cost']:,.2f}")
        paid = report.get("paid_downloads") or {}
        if paid.get("images"):
            table.add_row("a run would download", f"{paid['images']:,} images ({paid['jobs']:,} jobs) paid "
                          "for earlier, from their kept links: no request"
                          + (f", costing {paid['cost']:,.2f}" if paid.get("cost") is not None else ""))
        if paid.get("expired"):
            table.add_row("  links expired", f"{paid['expired']:,} images paid for earlier are generated "
                          "(paid) again: their links are past limits.link_life (in the request above)")
    if report.get("ledger"):
        ledger = report["ledger"]
        spent = f", spent {ledger['spent']:,.2f}" if ledger.get("spent") is not None else ""
        table.add_row("dataset ledger", f"{ledger['billed_images']:,} billed + {ledger['in_doubt_images']:,} "
                                        f"in doubt{spent}")
    if report["not_in_spec"]:
        table.add_row("not in this spec", f"{report['not_in_spec']:,} ok images in the output that this "
                      "spec no longer plans (export/gallery --spec, or wanbatch prune, leave them out)")
    table.add_row("output", report["output"])
    table.add_row("provider from", report["provider_defined_in"] or report["spec"])
    out.print(table)
    if report["output_state"] != "dataset":  # a resume from another directory must not pay again
        state = "does not exist yet" if report["output_state"] == "new" else "is an empty folder"
        out.print(f"note: the output {report['output_resolved']} {state}: a run starts from nothing "
                  "(a relative output is relative to the current directory)", soft_wrap=True, markup=False)
    for warning in report.get("warnings") or []:
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if report["samples"]:
        out.print("[bold]sample prompts[/]")
        for prompt in report["samples"]:
            out.print(f"  • {prompt}", soft_wrap=True)


# ----------------------------------------------------------------------------------- run


@main.command()
@click.argument("spec_paths", metavar="SPEC...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@shard_option
@click.option("--output", help="Dataset folder or s3:// URI (default: the spec's `output`; one SPEC only).")
@click.option("--retry-failed", "retry_failed", is_flag=False, flag_value="all", default=None,
              metavar="[KINDS]",
              help="Also request slots that failed for good earlier: all of them (bare flag), or the kinds "
                   "named, e.g. moderation,timeout, or a class: refused, ambiguous (may be billed).")
@click.option("--grace", default=30.0, show_default=True,
              help="Seconds in-flight work may take after Ctrl-C.")
@click.option("--progress/--no-progress", default=None,
              help="Live display on a terminal, else a progress line every --log-every seconds "
                   "(--no-progress: neither).")
@click.option("--log-every", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between progress lines when stderr is not a terminal.")
@click.option("--max-images-this-run", type=click.IntRange(min=1),
              help="Cap this run alone (limits.max_images caps the whole dataset, over all runs).")
@click.option("--max-cost-this-run", type=click.FloatRange(min=0),
              help="Cap this run's cost alone (limits.max_cost caps the whole dataset).")
@click.option("--abandon-tasks", is_flag=True,
              help="Forget async tasks an earlier run submitted to another gateway (they were paid: "
                   "they stay in doubt) and submit their jobs again, paying again.")
@click.option("--wait", is_flag=True,
              help="If another run holds work this run would request (the same spec, or an overlapping "
                   "--shard), wait until it ends instead of stopping (exit 3).")
@json_option
@config_option
@allow_read_option
def run(spec_paths: tuple[str, ...], shard: str | None, output: str | None, retry_failed: str | None,
        grace: float, progress: bool | None, log_every: float, max_images_this_run: int | None,
        max_cost_this_run: float | None, abandon_tasks: bool, wait: bool, as_json: bool,
        config: str | None) -> None:
    """Generate what the output dataset still lacks (rerun to resume).

    Several SPECs are stages run in order, like a Makefile: each is loaded only when the ones before
    it have run, so its images drawn from their datasets include what they just made. A stage that
    leaves failed slots (exit 1) lets the next ones run; any other failure stops the chain. The exit
    code is the first failing stage's."""
    _one_output(spec_paths, output)
    first_failure = 0
    summaries: list[Any] = []
    for i, spec_path in enumerate(spec_paths):
        if len(spec_paths) > 1 and not as_json:
            err.print(f"stage {i + 1}/{len(spec_paths)}: {spec_path}", markup=False, highlight=False)
        try:
            _run_stage(spec_path, shard, output, retry_failed, grace, progress, log_every,
                       max_images_this_run, max_cost_this_run, abandon_tasks, wait, as_json, config,
                       summaries, print_json=len(spec_paths) == 1)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
        first_failure = first_failure or code
        if code not in (0, EXIT_FAILED):
            if len(spec_paths) > 1 and not as_json and i + 1 < len(spec_paths):
                err.print(f"stage {i + 1} stopped the chain (exit {code}); later stages were not run",
                          markup=False, highlight=False)
            break
    if as_json and len(spec_paths) > 1:
        print(json.dumps(summaries, indent=2, ensure_ascii=False))
    sys.exit(first_failure)


def _run_stage(spec_path: str, shard: str | None, output: str | None, retry_failed: str | None, grace: float,
               progress: bool | None, log_every: float, max_images_this_run: int | None,
               max_cost_this_run: float | None, abandon_tasks: bool, wait: bool, as_json: bool,
               config: str | None, summaries: list[Any], *, print_json: bool = True) -> None:
    """One spec's run; exits (``SystemExit``) with its exit code. Its summary is added to
    ``summaries`` (``--json`` of a chain prints them all at the end, not one by one)."""
    from .progress import LiveProgress, LogProgress, summary_table
    from .runner import RunOptions, run as run_spec
    from .runner.budget import CAP_REACHED
    from .spec import load_spec

    with user_errors(as_json):
        spec = load_spec(spec_path, config=config)
    err.print(provider_line(spec), soft_wrap=True, highlight=False, markup=False)
    _warn_seeds(spec_path, spec)
    if not as_json:
        show_warnings(spec.warnings)
    tty = sys.stderr.isatty()
    display: LiveProgress | LogProgress | None = None
    if progress is True or (progress is None and tty and not as_json):
        display = LiveProgress(err, spec.name)
    elif progress is None and not tty:  # a log (nohup, CI, a cluster job): plain lines on stderr
        display = LogProgress(err, spec.name, every=log_every)

    def note(text: str) -> None:  # as it happens, above the live panel or between log lines
        err.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)

    options = RunOptions(
        retry_failed=parse_retry_failed(retry_failed), shard=parse_shard(shard), output=output,
        handle_signals=True,
        grace_period=grace, on_start=display.attach if display else None, on_note=note,
        max_images_this_run=max_images_this_run, max_cost_this_run=max_cost_this_run,
        abandon_tasks=abandon_tasks, wait=wait,
    )
    with user_errors(as_json):
        try:
            result = run_spec(spec, options)
        finally:
            if display:
                display.close()
    summaries.append(result.summary.to_dict())
    if as_json:
        if print_json:
            print(json.dumps(result.summary.to_dict(), indent=2, ensure_ascii=False))
    else:
        if not (result.error is not None and result.stats.planned_jobs == 0):  # stopped before starting
            out.print(summary_table(result.summary))
        if result.error is not None:
            err.print(f"[bold red]stopped:[/] {escape(redact(str(result.error)))}", soft_wrap=True)
        reason = result.stats.stop_reason or ""
        if result.exit_code == EXIT_ABORTED and result.error is None and reason.startswith(CAP_REACHED):
            err.print(f"[yellow]stopped: {escape(reason)}.[/] Nothing more is requested while the cap "
                      "holds; raise it in the spec (or the --…-this-run flag) to spend more.", soft_wrap=True)
        elif result.exit_code == EXIT_ABORTED and result.error is None:
            err.print(f"[yellow]stopped early ({result.stats.stop_reason}).[/] "
                      f"Resume with: wanbatch run {spec_path}")
        elif result.exit_code == EXIT_FAILED:
            err.print(f"[yellow]{result.stats.failed_images} image(s) failed[/] — see "
                      f"`wanbatch status {result.root}`")
            for kind, example in list(result.stats.error_examples.items())[:3]:  # why, at a glance
                err.print(f"  {kind} ({result.stats.errors[kind]}): {escape(redact(example))}",
                          soft_wrap=True)
    sys.exit(result.exit_code)


def _warn_seeds(spec_path: str, spec: Any = None, *, config: str | None = None) -> None:
    """Warn (stderr) when the spec sweeps seeds through a provider whose seed handling is unverified."""
    from .probe import seed_warning
    from .spec import load_spec

    try:
        spec = spec if spec is not None else load_spec(spec_path, config=config)
    except WanbatchError:
        return
    if (warning := seed_warning(spec, spec_path)) is not None:
        err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask before spending (the cost is printed first).")
@json_option
@config_option
@allow_read_option
def probe(spec_path: str, yes: bool, as_json: bool, config: str | None) -> None:
    """Check with a few paid requests what the spec's gateway honours (key, model, body, size, n, seed,
    async); write the verdict beside the spec (SPEC.probe.json)."""
    from .probe import probe_cost, probe_pool, write_probe
    from .spec import load_spec

    with user_errors(as_json):
        spec = load_spec(spec_path, config=config)
    err.print(provider_line(spec), soft_wrap=True, highlight=False, markup=False)
    requests, images, cost = probe_cost(spec)
    priced = f", costing {cost:,.2f}" if cost is not None else " (set price_per_image to see the cost)"
    members = spec.provider.members
    to = (f"{len(members)} members of {spec.provider.name} ({requests // len(members)} each: "
          f"{', '.join(m.name for m in members)})" if members else spec.provider.name)
    err.print(f"probe sends {requests} requests to {to} for up to {images} images{priced}", soft_wrap=True)
    if not yes and not click.confirm("go on?", err=True, default=False):
        fail("nothing was sent", EXIT_BAD_INPUT, "rerun with --yes to skip the question")
    with user_errors(as_json):
        verdict = probe_pool(spec)
    path = write_probe(spec_path, verdict)
    if as_json:
        print(redact(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False)))
    else:
        colours = {"ok": "green", "failed": "red", "unknown": "yellow"}
        for one in verdict.members:  # each member: its name, its gateway, what it honours
            title = (f"probe: {one.provider} at {one.host} ({one.dialect}, {one.model}): "
                     f"{'failed' if one.failed else 'ok'}" if members
                     else f"probe: {one.provider} ({one.dialect}, {one.model})")
            table = Table(title=escape(redact(title)), title_justify="left")
            table.add_column("check")
            table.add_column("verdict")
            table.add_column("detail")
            for name, (status, detail) in one.checks.items():
                table.add_row(name, f"[{colours[status]}]{status}[/]", escape(redact(detail)))
            out.print(table)
        if members:
            failing = [m.provider for m in verdict.members if m.failed]
            err.print(f"{len(verdict.members) - len(failing)} of {len(verdict.members)} members passed"
                      + (f"; failed: {', '.join(failing)}" if failing else ""), soft_wrap=True)
        err.print(f"verdict written to {path}")
    sys.exit(EXIT_FAILED if verdict.failed else 0)


# ----------------------------------------------------------------------------------- dataset tools


@main.command()
@click.argument("dataset")
@json_option
def status(dataset: str, as_json: bool) -> None:
    """Counts by status and error kind, pending async tasks, runs."""
    from .dataset import status as dataset_status

    with user_errors(as_json):
        report = dataset_status(dataset)  # read-only: also on a read-only mount or s3://
    data = report.to_dict()
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    table = Table(title=f"dataset {dataset}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in data.items():
        if isinstance(value, dict):
            table.add_row(key, "" if value else "–")
            for k, v in value.items():
                table.add_row(f"  {k}", str(v))
        elif key == "leases":
            table.add_row("runs holding work", str(sum(1 for h in value if h.get("live"))) if value else "–")
            for h in value:
                since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h.get("since") or 0))
                part = f"shard {h['slice'][0]}/{h['slice'][1]}" if h.get("slice") else "whole plan"
                state = "running" if h.get("live") else "dead (taken over by the next run)"
                table.add_row(f"  {h.get('run_id')}", f"{part}, host {h.get('host')}, pid {h.get('pid')}, "
                              f"since {since}, {h.get('reserved', 0)} reserved, {state}")
        elif isinstance(value, list):
            table.add_row(key, str(len(value)))
        elif key.endswith("bytes") and isinstance(value, int):
            table.add_row(key, f"{value / 1e6:,.1f} MB")
        else:
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--output", help="Dataset folder (default: the spec's `output`).")
@click.option("--yes", is_flag=True, help="Delete; without it prune only says what it would delete.")
@click.option("--forget", multiple=True, metavar="PATH",
              help="A spec that ran into the dataset but is gone: let prune remove its images too.")
@json_option
@allow_read_option
def prune(spec_path: str, output: str | None, yes: bool, forget: tuple[str, ...], as_json: bool) -> None:
    """Remove images no spec that ran into the dataset still plans (a dry run without --yes)."""
    from .prune import prune as prune_dataset
    from .spec import load_spec

    with user_errors(as_json):
        spec = load_spec(spec_path, require_env=False)
        report = prune_dataset(spec, output=output, yes=yes, forget=forget)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    verb = "removed" if report.deleted else "would remove"
    out.print(f"{verb} {report.images:,} image(s) ({report.bytes / 1e6:,.1f} MB) and {report.failed_rows:,} "
              f"failed row(s) from {report.dataset}", soft_wrap=True)
    for prompt in report.sample:
        out.print(f"  • {prompt}", soft_wrap=True, markup=False)
    out.print("kept: everything planned by " + ", ".join(report.kept_by), soft_wrap=True, markup=False)
    if not report.deleted and (report.images or report.failed_rows):
        out.print(f"dry run: nothing deleted. Delete with: wanbatch prune {spec_path} --yes")


@main.command()
@click.argument("dataset")
@json_option
def compact(dataset: str, as_json: bool) -> None:
    """Merge the index parts into few large ones (one row per image)."""
    from .dataset import DatasetView, DatasetWriter

    with user_errors(as_json):
        DatasetView.open(dataset)  # a clear error when there is no dataset there
        with DatasetWriter.open(dataset, create=False) as opened:  # also s3://, through its staging
            report = opened.compact()
    data = report.to_dict() if hasattr(report, "to_dict") else vars(report)
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        out.print(f"[green]✓[/] compacted {dataset}: " + ", ".join(f"{k} {v}" for k, v in data.items()))


@main.command()
@click.argument("dataset")  # a folder or an object-store URI (s3://…)
@click.option("--to", "to", required=True, type=click.Path(), help="The HTML file to write.")
@click.option("--rows", help="Grid rows: prompt, seed, size, model, a var name, or source (edit datasets: "
              "the input image(s), e.g. --rows source --cols prompt).")
@click.option("--cols", help="Grid columns: seed (default for sweeps), size, prompt, model or a var name.")
@click.option("--limit", type=int, help="Show at most this many image slots (default 2000).")
@click.option("--thumb", default=256, show_default=True, help="Thumbnail edge in pixels.")
@spec_filter_option
@allow_read_option
def gallery(dataset: str, to: str, rows: str | None, cols: str | None, limit: int | None, thumb: int,
            spec_path: str | None) -> None:
    """Write a static HTML gallery (works from file://, no server)."""
    from .gallery import build_gallery

    with user_errors():
        only = planned_by(spec_path)
        order = None
        if only is None:  # rows in the order of the spec that last ran into the dataset
            from .prune import last_spec_order

            order = last_spec_order(dataset)
        page = build_gallery(dataset, Path(to), rows=rows, cols=cols, limit=limit, thumb=thumb,
                             only=only, order=order)
    out.print(f"[green]✓[/] gallery: {page}  (open file://{Path(page).resolve()})")


@main.command()
@click.argument("dataset")  # a folder or an object-store URI (s3://…)
@click.option("--format", "fmt", required=True, help="hf, webdataset, imagefolder (or a registered format).")
@click.option("--to", "to", required=True, type=click.Path(), help="Destination folder.")
@click.option("--include-failed", is_flag=True,
              help="Also export failed slots (hf: null image; webdataset: json only; "
                   "refused for imagefolder).")
@click.option("--shard-rows", type=int, help="Rows per shard (default: about 500 MB per shard).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in the destination.")
@spec_filter_option
@click.option("--max-side", type=int, help="Shrink images so their longest side is at most N pixels.")
@click.option("--image-format", type=click.Choice(["png", "jpeg", "webp"]),
              help="Re-encode images (default: as delivered).")
@click.option("--quality", type=click.IntRange(1, 100), help="jpeg/webp quality (default 90).")
@click.option("--split", "split", metavar="NAME=F,...",
              help="Deterministic splits by image id, e.g. train=0.9,val=0.1.")
@json_option
@allow_read_option
def export(dataset: str, fmt: str, to: str, include_failed: bool, shard_rows: int | None, overwrite: bool,
           spec_path: str | None, max_side: int | None, image_format: str | None, quality: int | None,
           split: str | None, as_json: bool) -> None:
    """Export for Hugging Face datasets, WebDataset, or an image folder with metadata.jsonl."""
    from .export import ImageOptions, export_dataset

    with user_errors(as_json):
        images = ImageOptions(max_side=max_side, fmt=image_format, quality=quality)
        report = export_dataset(dataset, fmt, Path(to), include_failed=include_failed,
                                shard_rows=shard_rows, overwrite=overwrite, only=planned_by(spec_path),
                                images=images, split=parse_split(split))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return
    out.print(f"[green]✓[/] exported {report.rows:,} rows ({report.bytes / 1e6:,.1f} MB) as {fmt} "
              f"in {len(report.files)} file(s) to {to}")
    if report.missing:
        err.print(f"[yellow]{len(report.missing)} image file(s) were missing and left out[/]")


if __name__ == "__main__":
    main()
