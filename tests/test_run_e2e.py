"""End to end: spec → run → dataset, through the CLI and the Python API, against real loopback gateways."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from PIL import Image

import wanbatch
from tests.helpers import cli_env
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.runner import RunOptions

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-test-8f3e1d2c4b5a69780"

SPEC_24 = """
    name: e2e
    provider: {provider}
    prompt: "{{subject}}, {{style}}"
    vars:
      subject: [a flower shop with a wooden door, a bakery at dawn]
      style: [watercolor, photorealistic]
    seeds: {{start: 0, count: 3}}
    sizes: [1K, 1280*720]
    limits: {{concurrency: {concurrency}, retries: 4}}
    output: {output}
"""


def wanbatch_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True, timeout=timeout,
        env=env or cli_env(), cwd=cwd,
    )


def read_rows(root: Path) -> list[dict]:
    return pq.read_table(root / "index").to_pylist()


@pytest.fixture
def gateway() -> Iterator[Callable[..., str]]:
    """Start loopback mock gateways (uvicorn in a thread) with the given config; yields base URLs."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def start(**config: object) -> str:
            return stack.enter_context(run_in_thread(MockConfig(**config)))  # type: ignore[arg-type]

        yield start


def stats(base: str) -> dict:
    return httpx.get(f"{base}/_mock/stats").json()


def gateway_provider(base: str, dialect: str = "flat", use_async: bool = False) -> str:
    suffix = "" if dialect == "dashscope" else "/v1"
    extra = ", async: true, poll_interval: 0.05" if use_async else ""
    return f"{{base_url: '{base}{suffix}', api_key_env: {KEY_ENV}, dialect: {dialect}{extra}}}"


def test_quickstart_shape_through_the_cli_and_rerun_requests_nothing(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    spec = write_spec(SPEC_24.format(provider="mock", concurrency=8, output=out))
    first = wanbatch_cli("run", str(spec), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["done_images"] == 24 and summary["failed_images"] == 0
    rows = read_rows(out)
    assert len(rows) == 24 and {r["status"] for r in rows} == {"ok"}
    assert len({r["image_id"] for r in rows}) == 24
    for row in rows:
        path = out / row["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
        with Image.open(path) as img:
            assert img.size == (row["width"], row["height"])
        expected = (1024, 1024) if row["size"] == "1K" else (1280, 720)
        assert (row["width"], row["height"]) == expected
    assert (out / "wanbatch.json").exists()
    assert (out / "runs" / f"{summary['run_id']}.json").exists()

    second = wanbatch_cli("run", str(spec), "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["submitted_images"] == 0 and again["skipped_images"] == 24 and again["done_images"] == 0
    assert len(read_rows(out)) == 24


def test_rerun_against_a_gateway_bills_nothing_new(
    gateway: Callable[..., str], write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    base = gateway(latency=0.01)
    out = tmp_path / "ds"
    spec = write_spec(SPEC_24.format(provider=gateway_provider(base), concurrency=4, output=out))
    env = cli_env(**{KEY_ENV: KEY})
    assert wanbatch_cli("run", str(spec), "--json", env=env).returncode == 0
    billed = stats(base)["billed"]
    assert billed == 24
    assert wanbatch_cli("run", str(spec), "--json", env=env).returncode == 0
    assert stats(base)["billed"] == billed
    assert max(stats(base)["billed_by_key"].values()) == 1


def test_concurrency_cap_holds_at_the_gateway(
    gateway: Callable[..., str], write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    base = gateway(latency=0.15)
    spec = wanbatch.load_spec(write_spec(SPEC_24.format(
        provider=gateway_provider(base), concurrency=3, output=tmp_path / "ds")))
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert result.exit_code == 0 and result.stats.done_images == 24
    assert stats(base)["max_in_flight"] == 3  # reached, never exceeded


def test_throttling_and_server_errors_are_retried_then_succeed(
    gateway: Callable[..., str], write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    base = gateway(latency=0.0, fail_first={"429": 1, "503": 1})
    spec = wanbatch.load_spec(write_spec(SPEC_24.format(
        provider=gateway_provider(base), concurrency=4, output=tmp_path / "ds")))
    t0 = time.monotonic()
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}, backoff_initial=0.05, backoff_max=0.2))
    assert result.exit_code == 0, result.summary
    assert result.stats.done_images == 24
    assert result.stats.retries == 48 and result.stats.throttled == 24
    assert stats(base)["billed"] == 24
    assert time.monotonic() - t0 < 30


def test_moderation_refusal_is_a_failed_row_without_retry(
    gateway: Callable[..., str], write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    base = gateway(latency=0.0, moderation_words=["bakery"])
    out = tmp_path / "ds"
    spec = wanbatch.load_spec(write_spec(SPEC_24.format(
        provider=gateway_provider(base), concurrency=4, output=out)))
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}, backoff_initial=0.05))
    assert result.exit_code == 1
    rows = read_rows(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 12 and {r["error_kind"] for r in failed} == {"moderation"}
    assert all("bakery" in r["prompt"] and r["attempts"] == 1 for r in failed)
    requests = stats(base)["requests"]
    assert sum(v for k, v in requests.items() if "generations" in k) == 24  # no retry of refusals
    # A plain rerun leaves refusals alone; --retry-failed asks again.
    again = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert again.stats.submitted_images == 0 and again.stats.skipped_failed == 12


def test_bad_key_stops_the_run_fast_with_exit_3_and_no_secret_in_output(
    gateway: Callable[..., str], write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    base = gateway(latency=0.0, api_key="the-right-key")
    out = tmp_path / "ds"
    spec = write_spec(SPEC_24.format(provider=gateway_provider(base), concurrency=4, output=out))
    t0 = time.monotonic()
    proc = wanbatch_cli("run", str(spec), env=cli_env(**{KEY_ENV: KEY}))
    assert proc.returncode == 3
    assert time.monotonic() - t0 < 20
    assert "auth" in (proc.stdout + proc.stderr).lower() or "key" in (proc.stdout + proc.stderr).lower()
    assert KEY not in proc.stdout + proc.stderr
    assert stats(base)["billed"] == 0
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_bad_size_exits_2_naming_the_line(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec("""
        name: bad
        prompt: a cat
        sizes: [1K, 9K]
    """)
    proc = wanbatch_cli("run", str(spec))
    assert proc.returncode == 2
    assert f"{spec}:3:" in proc.stderr and "9K" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_reports_counts_cost_and_what_is_left(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "ds"
    spec = write_spec(SPEC_24.format(provider="mock", concurrency=8, output=out).replace(
        "output:", "price_per_image: 0.5\n    output:"))
    before = json.loads(wanbatch_cli("plan", str(spec), "--json").stdout)
    assert (before["jobs"], before["images"], before["estimated_cost"]) == (24, 24, 12.0)
    assert before["by_size"] == {"1K": 12, "1280*720": 12}
    assert wanbatch_cli("run", str(spec), "--json").returncode == 0
    after = json.loads(wanbatch_cli("plan", str(spec), "--json").stdout)
    assert after["existing"]["done"] == 24 and after["todo_images"] == 0


def test_builtin_mock_can_speak_the_parameters_dialect_with_async_tasks(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    spec = wanbatch.load_spec(write_spec(f"""
        name: mockparams
        provider: {{type: mock, dialect: parameters, async: true, latency: 0.05}}
        prompt: "a {{thing}}"
        vars: {{thing: [cat, dog, owl]}}
        params: {{thinking_mode: false, color_palette: warm tones}}
        sizes: [1K]
        n: 2
        output: {out}
    """))
    result = wanbatch.run(spec)
    assert result.exit_code == 0, result.summary
    rows = read_rows(out)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert all(r["task_id"] for r in rows)  # async: every row records its task
    assert {json.loads(r["params"])["color_palette"] for r in rows} == {"warm tones"}


def test_missing_key_stops_before_anything_is_written(write_spec: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "never"
    spec = write_spec(SPEC_24.format(provider=gateway_provider("http://127.0.0.1:9"), concurrency=2,
                                     output=out))
    env = cli_env()
    env.pop(KEY_ENV, None)
    proc = wanbatch_cli("run", str(spec), env=env)
    assert proc.returncode == 3
    assert KEY_ENV in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_an_unreachable_gateway_stops_the_run_instead_of_failing_every_job(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = wanbatch.load_spec(write_spec(SPEC_24.format(
        provider=gateway_provider(f"http://127.0.0.1:{port}"), concurrency=2, output=tmp_path / "ds")
        .replace("retries: 4", "retries: 1")))
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}, backoff_initial=0.05, backoff_max=0.1))
    assert result.exit_code == 3
    assert "cannot reach the gateway" in str(result.error)
    assert result.stats.failed_images < 24  # it stopped; the jobs were not each tried and failed


@pytest.mark.parametrize("cap, expected", [("max_cost: 5.0", 10), ("max_images: 7", 7)])
def test_budget_caps_stop_submissions_before_they_would_be_exceeded(
    cap: str, expected: int, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    text = SPEC_24.format(provider="mock", concurrency=3, output=out).replace(
        "retries: 4}", f"retries: 4, {cap}}}").replace("output:", "price_per_image: 0.5\n    output:")
    spec_path = write_spec(text)
    plan_report = json.loads(wanbatch_cli("plan", str(spec_path), "--json").stdout)
    assert plan_report["estimated_cost"] == 12.0
    result = wanbatch.run(wanbatch.load_spec(spec_path))
    assert result.exit_code == 3 and cap.split(":")[0] in (result.stats.stop_reason or "")
    assert result.stats.submitted_images == expected
    assert result.summary.cost == expected * 0.5  # never above max_cost: 10 × 0.5 = 5.0
    assert len(read_rows(out)) == expected
    # Raising the cap and rerunning continues where the cap stopped it.
    again = wanbatch.run(wanbatch.load_spec(write_spec(text.replace(cap, "max_images: 100"))))
    assert again.exit_code == 0 and again.stats.submitted_images == 24 - expected


def test_plan_counts_images_whose_rows_a_crash_lost_as_done(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "ds"
    spec = write_spec(SPEC_24.format(provider="mock", concurrency=8, output=out))
    assert wanbatch_cli("run", str(spec), "--json").returncode == 0
    shutil.rmtree(out / "index")  # the rows are gone, the 24 image files are not
    (out / "index").mkdir()
    report = json.loads(wanbatch_cli("plan", str(spec), "--json").stdout)
    assert report["existing"]["done"] == 24 and report["todo_images"] == 0
    rerun = json.loads(wanbatch_cli("run", str(spec), "--json").stdout)  # what plan promised
    assert rerun["submitted_images"] == 0 and rerun["adopted_images"] == 24


def test_the_specs_download_limits_reach_every_download(write_spec: Callable[..., Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "ds"
    text = SPEC_24.format(provider="mock", concurrency=4, output=out).replace(
        "retries: 4}", "retries: 4, max_image_bytes: 1KiB}")
    result = wanbatch.run(wanbatch.load_spec(write_spec(text)))
    assert result.exit_code == 1 and result.stats.done_images == 0
    assert result.summary.errors_by_kind == {"too_large": 24}
    assert not list((out / "images").rglob("*.*")) and not list((out / ".tmp").rglob("*.part"))
