"""What `run` and `plan` say about slots a rerun treats apart: slots in doubt (sent earlier, never
answered, maybe billed) are not "refused", and slots a rerun only downloads from kept paid links are not
priced as generations. Real loopback mock gateways; the CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import mock_stats
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.planreport import plan_report
from wanbatch.runner import RunOptions

pytestmark = pytest.mark.timeout(60)

KEY_ENV = "REPORT_TEST_KEY"
KEY = "sk-report-4f1e9a0c7d2b8e63"
POSTS = "/v1/images/generations"


def write_spec(tmp_path: Path, base: str, *, seeds: int = 4, name: str = "spec.yaml",
               concurrency: int = 2) -> tuple[Path, Path]:
    out = tmp_path / "out"
    spec = tmp_path / name
    spec.write_text(f"""
name: reports
provider: {{base_url: '{base}/v1', api_key_env: {KEY_ENV}}}
prompt: "a red door, {{style}}"
vars: {{style: [ink]}}
seeds: {{start: 0, count: {seeds}}}
sizes: [1K]
limits: {{concurrency: {concurrency}, retries: 2}}
price_per_image: 0.5
output: {out}
""", encoding="utf-8")
    return spec, out


def small(**config: Any) -> MockConfig:
    return MockConfig(**{"scale": 1 / 16, "image_kb": 2, "api_key": KEY, **config})


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=60, env=cli_env(**{KEY_ENV: KEY}))


def cells(printed: str) -> dict[str, str]:
    """The summary table's rows, label → value (box drawing and padding removed)."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in printed.splitlines() if "│" in line]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def one_in_doubt(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset with one slot in doubt: one request is on the wire (1 s) when the other meets a
    403 (the key ran dry); the run stops at once (no grace), leaving the first unanswered."""
    with run_in_thread(small(latency="1.0", dry_after=1, dry_answer="403")) as base:
        spec, out = write_spec(tmp_path, base)
        first = wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, grace_period=0.0))
    assert first.exit_code == 3
    kinds = [r["error_kind"] for r in wanbatch.read_index(out).to_pylist()]
    assert kinds == ["in_doubt"]
    return spec, out


def test_the_run_summary_says_a_slot_is_in_doubt_not_refused_and_how_to_ask_again(tmp_path: Path) -> None:
    _, out = one_in_doubt(tmp_path)
    with run_in_thread(small()) as base:  # a rerun, on a gateway whose key works
        spec, _ = write_spec(tmp_path, base, name="again.yaml")
        planned = plan_report(str(spec))  # what `plan --json` prints
        assert planned["existing"] == {"done": 0, "failed_skipped": 0, "in_doubt_skipped": 1}
        assert planned["todo_images"] == 3
        again = cli("run", str(spec), "--no-progress")
        assert again.returncode == 0, again.stderr
        assert mock_stats(base)["billed"] == 3  # the slot in doubt is not paid again
    table = cells(again.stdout)
    assert not any("refused earlier" in label for label in table)
    assert table["in doubt earlier (maybe billed; left alone)"] == "1"
    assert table["to ask again (may pay twice)"] == "--retry-failed ambiguous, or limits.in_doubt: retry"
    assert KEY not in again.stdout + again.stderr
    assert sum(r["status"] == "ok" for r in wanbatch.read_index(out).to_pylist()) == 3


def test_plan_shows_slots_a_rerun_only_downloads_apart_at_no_cost(tmp_path: Path) -> None:
    # Every image's first three downloads get a 500 from the object store: the run's retries (2) run
    # out, the four images are paid for and their links kept.
    with run_in_thread(small(file_fail_first={"500": 3})) as base:
        spec, _ = write_spec(tmp_path, base)
        first = wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, backoff_initial=0.01,
                                                                  backoff_max=0.05))
        assert first.summary.errors_by_kind == {"download": 4} and mock_stats(base)["billed"] == 4
        shown = cli("plan", str(spec))
        report = plan_report(str(spec))
        assert report["todo_images"] == 0 and report["todo_jobs"] == 0 and report["todo_cost"] == 0
        assert report["paid_downloads"] == {"images": 4, "jobs": 4, "cost": 0.0, "expired": 0}
        table = cells(shown.stdout)
        assert table["a run would request"] == "0 images (0 jobs)"
        assert table["a run would download"].startswith("4 images (4 jobs) paid for earlier")
        assert table["a run would download"].endswith("costing 0.00")
        # what the plan said is what a run does
        again = wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}))
        assert again.summary.paid_downloads == 4 and again.summary.todo_images == 4
        assert mock_stats(base)["billed"] == 4 and mock_stats(base)["requests"][POSTS] == 4


def test_plan_prices_slots_whose_links_expired_as_generations_and_says_so(tmp_path: Path) -> None:
    with run_in_thread(small(file_fail_first={"500": 3})) as base:
        spec, _ = write_spec(tmp_path, base, seeds=2)
        text = spec.read_text().replace("retries: 2", "retries: 2, link_life: 1s")
        spec.write_text(text, encoding="utf-8")
        wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, backoff_initial=0.01,
                                                          backoff_max=0.05))
        time.sleep(1.2)  # past the links' life
        report = plan_report(str(spec))
    json.dumps(report)  # as `plan --json` prints it
    assert report["paid_downloads"] == {"images": 0, "jobs": 0, "cost": 0.0, "expired": 2}
    assert report["todo_images"] == 2 and report["todo_cost"] == 1.0
