"""Money: the dataset's ledger (billed + in doubt) against what a loopback gateway billed, caps that
hold for the dataset, unreadable 200s that are not paid twice, and datasets of the previous format."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import mock_stats, posts_reached
from tests.helpers.specs import gateway_spec
from tests.helpers.synthetic import make_dataset
from wanbatch.dataset import DatasetWriter
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.runner import RunOptions

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-money-1f2e3d4c5b6a7980"

write_spec = functools.partial(gateway_spec, label="money", key_env=KEY_ENV)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(**{KEY_ENV: KEY}), check=False)


def ledger(out: Path) -> dict[str, Any]:
    done = cli("status", str(out), "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)["ledger"]
    return data


def run(spec: Path, **options: Any) -> wanbatch.RunResult:
    return wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, **options))


def small(**config: Any) -> MockConfig:
    return MockConfig(**{"scale": 1 / 16, "image_kb": 2, **config})


# ----------------------------------------------------------------------------------- the ledger


def test_status_ledger_equals_the_bill_after_a_plain_run(tmp_path: Path) -> None:
    with run_in_thread(small()) as base:
        spec, out = write_spec(tmp_path, base)
        result = run(spec)
        billed = mock_stats(base)["billed"]
    assert result.exit_code == 0 and billed == 8
    assert ledger(out) == {"billed_images": 8, "in_doubt_images": 0, "spent": 4.0, "max_images": None,
                           "max_cost": None}
    assert result.summary.ledger["billed_images"] == 8 and result.summary.billed_images == 8
    saved = json.loads((out / "runs" / f"{result.run_id}.json").read_text())
    assert saved["ledger"]["billed_images"] == 8 and saved["in_doubt_images"] == 0


@pytest.mark.timeout(150)
def test_a_second_sigint_leaves_the_unanswered_requests_in_doubt_and_a_rerun_does_not_pay_them_again(
    tmp_path: Path,
) -> None:
    with run_in_thread(small(latency="uniform:1.5,2")) as base:
        spec, out = write_spec(tmp_path, base, seeds=4, concurrency=4)
        proc = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress",
                                 "--grace", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=cli_env(**{KEY_ENV: KEY}))
        posts_reached(base, 4, 30)  # (30 s at most: the signal below is sent either way)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 3, stderr
        assert "in doubt" in stderr
        time.sleep(2.2)  # the abandoned requests finish at the gateway, and bill
        billed = mock_stats(base)["billed"]
        account = ledger(out)
        assert billed == 4
        # Billed + in doubt covers the bill, and exceeds it by no more than what was in flight.
        assert billed <= account["billed_images"] + account["in_doubt_images"] <= billed + 4
        assert account["in_doubt_images"] == 4
        # The rerun leaves in-doubt slots alone (limits.in_doubt: skip) and says so.
        again = run(spec)
        assert again.summary.in_doubt_skipped == 4
        assert any("in doubt" in note and "limits.in_doubt" in note for note in again.notes)
        assert mock_stats(base)["billed"] == 8  # only the four slots never asked
        # Under limits.in_doubt: retry they are requested again, and the run says how many.
        retry, _ = write_spec(tmp_path, base, seeds=4, limits="in_doubt: retry", name="retry.yaml")
        third = run(retry)
        assert third.summary.in_doubt_retried == 4 and third.exit_code == 0
        assert mock_stats(base)["billed"] == 12
    assert ledger(out)["billed_images"] + ledger(out)["in_doubt_images"] == 12


def test_a_fatal_403_mid_run_keeps_what_was_in_flight_and_the_ledger_covers_the_bill(tmp_path: Path) -> None:
    # The third request of one job is refused 403 (the account ran dry); the rest are on the wire.
    with run_in_thread(small(latency="uniform:0.2,0.4", faults={"403": 0.15}, fault_seed=3)) as base:
        spec, out = write_spec(tmp_path, base, seeds=20, concurrency=4)
        result = run(spec)
        time.sleep(0.5)
        billed = mock_stats(base)["billed"]
    assert result.exit_code == 3 and "access denied" in str(result.error).lower()  # the gateway's words, kept
    account = ledger(out)
    assert billed <= account["billed_images"] + account["in_doubt_images"] <= billed + 4
    assert account["billed_images"] == billed  # in flight when the 403 came: answered and stored
    rows = wanbatch.read_index(out).to_pylist()
    assert sum(r["status"] == "ok" for r in rows) == billed


@pytest.mark.parametrize("fault", ["200_html", "200_truncated", "200_not_a_list"])
def test_an_unreadable_200_is_paid_once_under_default_limits(fault: str, tmp_path: Path) -> None:
    with run_in_thread(small(fail_first={fault: 1})) as base:
        spec, out = write_spec(tmp_path, base, seeds=1, concurrency=1)
        first = run(spec)
        assert mock_stats(base)["billed"] == 2  # both jobs made once; neither retried
        assert first.summary.ambiguous == 2 and first.summary.errors_by_kind == {"unreadable_answer": 2}
        again = run(spec)
        assert mock_stats(base)["billed"] == 2 and again.summary.in_doubt_skipped == 2
    assert ledger(out)["in_doubt_images"] == 2 and ledger(out)["billed_images"] == 0


# ----------------------------------------------------------------------------------- caps


def test_max_images_holds_for_the_dataset_across_reruns_and_shards(tmp_path: Path) -> None:
    with run_in_thread(small()) as base:
        spec, out = write_spec(tmp_path, base, seeds=10, concurrency=1, limits="max_images: 6")
        plan = cli("plan", str(spec))
        assert plan.returncode == 0 and "limits.max_images" in plan.stderr, plan.stderr
        first = run(spec, shard=(0, 2))
        second = run(spec, shard=(1, 2))
        third = run(spec)
        assert mock_stats(base)["billed"] == 6
        assert first.stats.submitted_images + second.stats.submitted_images == 6
        assert third.stats.submitted_images == 0
        done = cli("run", str(spec), "--no-progress")
        assert done.returncode == 3 and "cap reached" in done.stderr and "Resume with" not in done.stderr
        assert mock_stats(base)["billed"] == 6
        # A per-run cap: this run may spend 2 more once the dataset cap allows it.
        bigger, _ = write_spec(tmp_path, base, seeds=10, concurrency=1, limits="max_cost: 5.0",
                               name="bigger.yaml")
        more = cli("run", str(bigger), "--no-progress", "--max-images-this-run", "2")
        assert more.returncode == 3 and "--max-images-this-run 2" in more.stderr
        assert mock_stats(base)["billed"] == 8
        last = cli("run", str(bigger), "--no-progress")  # max_cost 5.0 at 0.5 each: 10 in all
        assert last.returncode == 3 and "limits.max_cost" in last.stderr
        assert mock_stats(base)["billed"] == 10
    assert ledger(out)["billed_images"] == 10 and ledger(out)["spent"] == 5.0


# ----------------------------------------------------------------------------------- format 1


def test_a_dataset_of_the_previous_format_has_a_ledger_and_is_migrated(tmp_path: Path) -> None:
    """Format 1 (before ledgers), as the previous release wrote it: run entries without ``ledger``,
    ``runs/<id>.json`` whose ``billed_images`` counted delivered and ambiguous images."""
    old = make_dataset(tmp_path / "ds", prompts=2, seeds=3, failed=1)  # 5 ok rows, 1 failed, run-0001
    manifest = json.loads((old.root / "wanbatch.json").read_text())
    manifest.update(format_version=1, runs=[{"run_id": "run-0001", "status": "some failed"}])
    (old.root / "wanbatch.json").write_text(json.dumps(manifest))
    (old.root / "runs").mkdir()
    (old.root / "runs" / "run-0001.json").write_text(json.dumps({"run_id": "run-0001", "billed_images": 6}))
    assert ledger(old.root)["billed_images"] == 6  # read as is: the summary's count (ok rows: 5)
    with DatasetWriter.open(old.root, create=False):
        pass
    migrated = json.loads((old.root / "wanbatch.json").read_text())
    assert migrated["format_version"] == 2
    assert migrated["runs"][0]["ledger"]["billed_images"] == 6
    assert ledger(old.root)["billed_images"] == 6
