"""What a person sees during and after a run: a live panel on a terminal, or one plain progress line
every few seconds without one (nohup, CI, a cluster job's log); then a summary table (rich)."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .errors import kind_class
from .runner.summary import RunSummary
from .stats import RunStats


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def render_live(stats: RunStats, title: str) -> RenderableType:
    """Progress over every image slot of the plan: already there, refused earlier, done or failed now."""
    total = max(stats.planned_images, 1)
    accounted = stats.accounted_images
    head = Text.assemble(
        (f"{title}  ", "bold"),
        (f"{accounted:,}/{stats.planned_images:,} images", "bold cyan"),
        f"  {100 * accounted / total:3.0f}%   ",
        ("elapsed ", "dim"), _duration(stats.elapsed), ("   eta ", "dim"),
        _duration(stats.eta_seconds) if stats.finished is None else "–",
    )
    parts: list[tuple[str, str]] = [
        (f"done {stats.done_images:,}", "green"),
        (f"failed {stats.failed_images:,}", "bold red" if stats.failed_images else "dim"),
        (f"skipped {stats.skipped_images + stats.skipped_failed:,}", "dim"),
        (f"in flight {stats.in_flight}/{stats.concurrency}", "yellow"),
        (f"{stats.images_per_second:.1f} img/s", ""),
    ]
    if stats.spent is not None:
        parts.append((f"spent {_money(stats.spent)}", "magenta"))
    if stats.retries:
        parts.append((f"retries {stats.retries} ({stats.throttled} throttled)", "dim"))
    if stats.ambiguous:
        parts.append((f"sent without an answer {stats.ambiguous}", "yellow"))
    if stats.resumed_tasks:
        parts.append((f"resumed tasks {stats.resumed_tasks}", "dim"))
    counters = Text("  ·  ").join(Text(text, style) for text, style in parts)
    grid = Table.grid()
    grid.add_column()
    grid.add_row(head)
    grid.add_row(ProgressBar(total=total, completed=accounted, width=60))
    grid.add_row(counters)
    if stats.stop_reason:
        grid.add_row(Text(f"stopping: {stats.stop_reason}", "bold yellow"))
    return grid


class LiveProgress:
    """A rich Live panel refreshed from its own thread; the runner only bumps counters."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.stats: RunStats | None = None
        self._live: Live | None = None

    def attach(self, stats: RunStats) -> None:
        self.stats = stats
        self._live = Live(
            get_renderable=lambda: render_live(stats, self.title),
            console=self.console,
            refresh_per_second=4,
            transient=False,
        )
        self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()


def log_line(stats: RunStats, title: str) -> str:
    """One line a log reader can grep: done/total, rate, ETA, failures by kind, spend."""
    total = stats.planned_images
    accounted = stats.accounted_images
    pct = f" ({100 * accounted / total:.0f}%)" if total else ""
    parts = [f"{title}: {accounted:,}/{total:,} images{pct}",
             f"{stats.images_per_second:.2f} img/s",
             f"eta {_duration(stats.eta_seconds) if stats.finished is None else '0:00'}"]
    if stats.failed_images:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(stats.errors.items()))
        parts.append(f"failed {stats.failed_images:,} ({kinds})")
    else:
        parts.append("failed 0")
    if stats.retries:
        parts.append(f"retries {stats.retries}")
    if stats.spent is not None:
        parts.append(f"spent {_money(stats.spent)}")
    if stats.stop_reason:
        parts.append(f"stopping ({stats.stop_reason})")
    return time.strftime("%H:%M:%S") + " " + " · ".join(parts)


class LogProgress:
    """Without a terminal: a :func:`log_line` every ``every`` seconds from its own thread, and a last
    one when the run ends; the runner only bumps counters."""

    def __init__(self, console: Console, title: str, every: float = 10.0) -> None:
        self.console = console
        self.title = title
        self.every = every
        self.stats: RunStats | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, stats: RunStats) -> None:
        self.stats = stats
        self._thread = threading.Thread(target=self._loop, name="wanbatch-log", daemon=True)
        self._thread.start()

    def _print(self) -> None:
        if self.stats is not None:
            self.console.print(log_line(self.stats, self.title), markup=False, highlight=False,
                               soft_wrap=True)

    def _loop(self) -> None:
        while not self._done.wait(self.every):
            self._print()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._print()


def summary_table(summary: RunSummary) -> Table:
    table = Table(title=f"run {summary.run_id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")

    def row(label: str, value: Any, style: str = "") -> None:
        table.add_row(label, Text(str(value), style=style))

    row("planned", f"{summary.planned_jobs} jobs, {summary.planned_images} images")
    row("already in dataset", summary.skipped_images, "dim")
    refused = max(summary.skipped_failed - summary.in_doubt_skipped, 0)  # skipped_failed counts both
    if refused:
        row("refused earlier (use --retry-failed)", refused, "dim")
    if summary.in_doubt_skipped:  # sent earlier, never answered: maybe billed, so not sent again
        row("in doubt earlier (maybe billed; left alone)", summary.in_doubt_skipped, "yellow")
        row("  to ask again (may pay twice)", "--retry-failed ambiguous, or limits.in_doubt: retry", "dim")
    if summary.adopted_images:
        row("re-indexed from disk", summary.adopted_images)
    row("done", summary.done_images, "green")
    row("failed", summary.failed_images, "red" if summary.failed_images else "")
    by_class: dict[str, list[str]] = {}
    for kind, count in summary.errors_by_kind.items():
        by_class.setdefault(kind_class(kind), []).append(f"{kind} {count}")
    for cls, label in (("refused", "refused (same answer again)"),
                       ("transient", "transient (a rerun asks again)"),
                       ("ambiguous", "ambiguous (may be billed)")):
        if cls in by_class:
            row(f"  {label}", ", ".join(by_class[cls]), "red")
    row("retries", f"{summary.retries} ({summary.throttled} throttled)")
    if summary.ambiguous:
        row("  sent without an answer", f"{summary.ambiguous} (counted as billed)", "yellow")
    if summary.resumed_tasks:
        row("async tasks resumed", summary.resumed_tasks)
    if summary.pending_tasks:
        row("async tasks still running", summary.pending_tasks, "yellow")
        if summary.foreign_tasks:
            row("  of them at another gateway", summary.foreign_tasks, "yellow")
    if summary.paid_downloads:
        row("downloaded, paid for earlier", summary.paid_downloads)
    if summary.regenerated_expired:
        row("paid again (links expired)", summary.regenerated_expired, "yellow")
    if summary.cost is not None:
        row("spent (estimated)", _money(summary.cost), "magenta")
    for m in summary.members:  # a provider pool: each member's share and state
        state = m.get("state", "")
        style = "" if state == "active" else "yellow" if state in ("cooling", "probing") else "red"
        why = f" ({m['why']})" if m.get("why") and state != "active" else ""
        row(f"  provider {m.get('name')} (weight {m.get('weight')})",
            f"{m.get('images', 0)} images, {m.get('requests', 0)} requests, {m.get('throttled', 0)} 429s, "
            f"{state}{why}", style)
    row("elapsed", f"{summary.elapsed_seconds:.1f} s ({summary.images_per_second:.1f} img/s)")
    if summary.stop_reason:
        row("stopped", summary.stop_reason, "yellow")
    row("output", summary.output)
    return table
