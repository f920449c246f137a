"""RunSummary takes every counter of RunStats by name: one list (``stats.COUNTERS``), no copy to forget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import wanbatch
from wanbatch.runner import RunOptions
from wanbatch.runner.summary import RunSummary
from wanbatch.stats import COUNTERS, LIVE_ONLY, RunStats


def test_every_counter_of_the_stats_reaches_the_summary_under_its_name() -> None:
    ints = {f.name for f in fields(RunStats) if f.type == "int"}
    assert set(COUNTERS) == ints - LIVE_ONLY and len(COUNTERS) >= 19
    assert set(COUNTERS) <= {f.name for f in fields(RunSummary)}
    stats = RunStats(run_id="r1", price_per_image=0.5)
    for value, name in enumerate(COUNTERS, start=1):
        setattr(stats, name, value)  # a distinct value each: a swapped pair would show
    stats.errors["refused"] += 2
    summary = RunSummary.from_stats(stats, model="wan2.7-image-pro", exit_code=1)
    assert {n: getattr(summary, n) for n in COUNTERS} == {n: i for i, n in enumerate(COUNTERS, start=1)}
    assert summary.errors_by_kind == {"refused": 2} and summary.run_id == "r1"
    assert summary.cost == (stats.billed_images + stats.in_doubt_images) * 0.5
    assert (summary.model, summary.exit_code) == ("wan2.7-image-pro", 1)
    assert RunSummary.from_dict(summary.to_dict()) == summary


def test_a_run_reports_the_counters_it_kept(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(f"""
        name: summary
        provider: {{type: mock, latency: 0}}
        prompt: "a lighthouse, {{style}}"
        vars: {{style: [ink, watercolor]}}
        seeds: [1, 2]
        sizes: [1K]
        output: {tmp_path / 'ds'}
    """)
    result = wanbatch.run(wanbatch.load_spec(spec), RunOptions())
    assert result.exit_code == 0 and result.summary.done_images == 4
    kept = {n: getattr(result.stats, n) for n in COUNTERS}
    assert {n: getattr(result.summary, n) for n in COUNTERS} == kept
    expected = RunSummary.from_stats(result.stats, **{
        f.name: getattr(result.summary, f.name) for f in fields(RunSummary)
        if f.name not in result.stats.to_dict()})
    assert expected == result.summary
