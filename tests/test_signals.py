"""Ctrl-C and SIGTERM on a real `wanbatch run`: stop submitting, finish what is in flight, flush, exit 3
with a hint to resume; a second signal exits at once. Either way a rerun completes the dataset.

(Compaction racing a reader of ``index/*.parquet`` is covered by tests/test_dataset_compact.py.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import assert_consistent, mock_stats
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.runner import RunOptions

pytestmark = pytest.mark.slow

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-signals-9a8b7c6d5e4f3021"
POSTS = "/v1/images/generations"
CONCURRENCY = 4
JOBS = 40

SPEC = """\
name: signals
model: wan2.7-image-pro
provider: {{base_url: '{base}/v1', api_key_env: {key_env}, dialect: flat}}
prompt: "a lighthouse, {{style}}"
vars:
  style: [watercolor, ink, photorealistic, pixel art]
seeds: {{start: 0, count: {seeds}}}
sizes: [1K]
limits: {{concurrency: {concurrency}, retries: 2}}
output: {output}
"""


def write_spec(tmp_path: Path, base: str, jobs: int = JOBS) -> tuple[Path, Path]:
    out = tmp_path / "ds"
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(base=base, key_env=KEY_ENV, seeds=jobs // 4, concurrency=CONCURRENCY,
                                output=out), encoding="utf-8")
    return path, out


def gateway(latency: str) -> MockConfig:
    return MockConfig(latency=latency, scale=1 / 16, image_kb=2)


def start(spec: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(**{KEY_ENV: KEY}))


def wait_for_posts(base: str, count: int, proc: subprocess.Popen[str], limit: float = 30) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        posts = mock_stats(base)["requests"].get(POSTS, 0)
        if posts >= count:
            return posts
        time.sleep(0.03)
    raise AssertionError(f"the run never reached {count} requests: {proc.communicate()}")


def finish(spec: Path, jobs: int = JOBS, *, retry_failed: bool = False) -> None:
    """A rerun completes the dataset (slots left in doubt need ``retry_failed``)."""
    result = wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, retry_failed=retry_failed))
    assert result.exit_code == 0, result.summary
    assert result.stats.skipped_images + result.stats.done_images == jobs


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_finishes_in_flight_work_flushes_and_exits_3(signum: int, tmp_path: Path) -> None:
    with run_in_thread(gateway("uniform:0.2,0.4")) as base:
        spec, out = write_spec(tmp_path, base)
        proc = start(spec, "--grace", "20")
        at_signal = wait_for_posts(base, 8, proc)
        proc.send_signal(signum)
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - t0
        stats = mock_stats(base)
        assert proc.returncode == 3, stderr
        assert "Resume with: wanbatch run" in stderr and "Traceback" not in stdout + stderr
        assert took < 5, f"in-flight requests take 0.4 s at most, yet the run took {took:.1f} s to stop"
        # Stopped submitting: only requests already on their way when the signal came arrived after it.
        assert stats["requests"][POSTS] - at_signal <= CONCURRENCY
        assert stats["requests"][POSTS] < JOBS
        # Let in-flight work finish: everything billed is stored and indexed, nothing paid is lost.
        ok = assert_consistent(out)
        assert len(ok) == stats["billed"] > 0
        finish(spec)
        assert mock_stats(base)["billed"] == JOBS  # the rerun paid only for what was never asked
    assert len(assert_consistent(out)) == JOBS


@pytest.mark.timeout(150)
def test_a_second_sigint_exits_at_once_and_a_rerun_completes(tmp_path: Path) -> None:
    jobs = 8
    # Requests stay in flight for 6–7 s, so "exits at once" (well under 4 s even on a loaded machine,
    # where interpreter exit alone has taken 1.9 s) and "waited for in-flight work" (over 5 s) are far
    # apart: no timing race decides this test.
    with run_in_thread(gateway("uniform:6,7")) as base:
        spec, out = write_spec(tmp_path, base, jobs)
        proc = start(spec, "--grace", "60")
        wait_for_posts(base, CONCURRENCY, proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None, "the first signal must wait for in-flight work, not exit"
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - t0
        assert proc.returncode == 3, stderr
        assert "Traceback" not in stdout + stderr
        print(f"\n[second SIGINT] exited {took:.2f} s after it; in-flight requests had >= 5.4 s to go")
        assert took < 4.0, f"the second signal took {took:.1f} s to stop the run"
        assert_consistent(out)  # whatever was cut short left nothing half-done
        # The requests cut short are in doubt: a plain rerun leaves them, --retry-failed asks again.
        in_doubt = [r for r in wanbatch.read_index(out).to_pylist() if r["error_kind"] == "in_doubt"]
        assert 0 < len(in_doubt) <= CONCURRENCY
        finish(spec, jobs, retry_failed=True)
        billed = mock_stats(base)["billed"]
    assert len(assert_consistent(out)) == jobs
    assert billed <= jobs + CONCURRENCY  # only the requests cut short were paid twice
