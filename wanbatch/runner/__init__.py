"""The run: a plan's missing jobs fanned out to workers, their outcomes funnelled to one writer task.

    engine   open, triage, producer → N workers → writer task, signals, the end   (:mod:`.engine`)
    job      one job: adopt, generate or submit → journal → poll, download          (:mod:`.job`)
    writer   the only owner of the dataset during a run                             (:mod:`.writer`)
    summary  the typed :class:`RunSummary` the CLI, the progress display and Ray use (:mod:`.summary`)

Never paying twice rests on three rules: a slot whose file is on disk is never requested (it is
re-indexed if its row was lost); an async task id is journaled before the first poll and polled on
resume; an ambiguous sync failure (timeout, 524) is retried only within ``ambiguous_retries``.
"""

from __future__ import annotations

from .engine import run, run_async
from .options import RunOptions, RunResult, resolve_output
from .summary import RunSummary

__all__ = ["RunOptions", "RunResult", "RunSummary", "resolve_output", "run", "run_async"]
