"""Scale-out: shards as Ray tasks on a local cluster, writing one dataset folder, against a loopback
mock gateway that runs in this process (so billing is counted across every worker)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

import wanbatch
from tests.helpers import cli_env
from wanbatch.mock import MockConfig, billing_key, run_in_thread

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
ray = pytest.importorskip("ray")

from wanbatch.distribute import run_on_ray  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # ~40 s quiet; the suite runs 4 files at once

KEY_ENV = "WANBATCH_RAY_TEST_KEY"
KEY = "sk-ray-5c1e9a7d3b2f40861"

SPEC_30 = """
    name: ray-e2e
    provider: {{base_url: '{base}/v1', api_key_env: {key_env}, dialect: flat}}
    prompt: "{{subject}}, {{style}}"
    vars:
      subject: [a flower shop, a bakery at dawn, a lighthouse]
      style: [watercolor, photorealistic]
    seeds: {{start: 0, count: 5}}
    sizes: [1K]
    limits: {{concurrency: 4, retries: 3}}
    output: {output}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One local Ray cluster for the module (starting one costs seconds); its address, for drivers
    in other processes. The key is NOT in this process's environment when it starts, so workers can
    only get it through runtime_env."""
    assert KEY_ENV not in os.environ
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield str(context.address_info["gcs_address"])
    ray.shutdown()


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with run_in_thread(MockConfig(api_key=KEY, latency=0.005, image_kb=2)) as base:
        yield base


def mock_stats(base: str) -> dict[str, Any]:
    return httpx.get(f"{base}/_mock/stats").json()


def expected_plan(spec_path: Path) -> tuple[set[str], dict[str, int]]:
    """Image ids and billing keys of the whole plan (n=1: one image per job)."""
    jobs = list(wanbatch.plan(wanbatch.load_spec(spec_path)).jobs())
    ids = {f"{job.job_id}-{k}" for job in jobs for k in range(job.n)}
    return ids, {billing_key(j.model, j.prompt, j.size, j.seed, j.n): j.n for j in jobs}


def index_rows(root: Path) -> list[dict[str, Any]]:
    return pq.read_table(root / "index").to_pylist()


def key_in_files(root: Path) -> list[Path]:
    needle = KEY.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_three_shards_fill_one_dataset_exactly_once_and_a_rerun_bills_nothing(
    cluster: str, gateway: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    spec = write_spec(SPEC_30.format(base=gateway, key_env=KEY_ENV, output=out))
    ids, billing = expected_plan(spec)
    assert len(ids) == 30
    before = mock_stats(gateway)
    billed_before = before["billed"]

    report = run_on_ray(str(spec), 3, num_cpus_per_unit=0.5,
                        runtime_env={"env_vars": {KEY_ENV: KEY}})

    assert report.exit_code == 0, report.to_dict()
    assert [s.shard for s in report.shards] == [0, 1, 2]
    assert all(s.exit_code == 0 and s.error is None for s in report.shards)
    planned = [s.summary.planned_jobs for s in report.shards if s.summary]
    assert sum(planned) == 30 and all(p > 0 for p in planned)  # a partition, every shard has work
    assert {tuple(s.summary.shard) for s in report.shards if s.summary} == {(0, 3), (1, 3), (2, 3)}
    t = report.totals
    images = (t["planned_images"], t["done_images"], t["failed_images"], t["submitted_images"])
    assert images == (30, 30, 0, 30)
    assert t["done_images"] == sum(s.summary.done_images for s in report.shards if s.summary)
    assert t["shards_failed"] == 0 and t["cost"] is None
    assert (t["billed_images"], t["in_doubt_images"], t["attempts"], t["killed_attempts"]) == (30, 0, 3, 0)
    assert (report.units, report.units_skipped) == (3, 0)
    assert report.output == str(out.resolve())

    rows = index_rows(out)
    assert len(rows) == 30 and {r["image_id"] for r in rows} == ids  # union = plan, no duplicates
    assert {r["status"] for r in rows} == {"ok"}
    assert all((out / r["path"]).is_file() for r in rows)
    assert report.compaction is not None and report.compaction["rows_after"] == 30
    assert len(list((out / "index").glob("*.parquet"))) == report.compaction["parts_after"] == 1
    runs = {s.summary.run_id for s in report.shards if s.summary}
    assert {p.stem for p in (out / "runs").glob("*.json")} == runs  # each shard recorded its run
    manifest = json.loads((out / "wanbatch.json").read_text())
    assert {r["run_id"] for r in manifest["runs"]} == runs  # concurrent manifest updates all kept

    stats = mock_stats(gateway)
    assert stats["billed"] - billed_before == 30
    by_key = {k: stats["billed_by_key"].get(k, 0) - before["billed_by_key"].get(k, 0) for k in billing}
    assert by_key == billing  # every job billed exactly once

    # The rerun, through the CLI in another process that joins the cluster (the old option names).
    # One triage finds every unit done: no unit runs, nothing is requested, no run is recorded.
    result = _cli_in_subprocess([str(spec), "--shards", "3", "--cpus-per-shard", "0.5", "--json",
                                 "--address", cluster], env={KEY_ENV: KEY}, timeout=90)
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["exit_code"] == 0 and again["shards"] == [] and again["units_skipped"] == 3
    assert again["totals"]["submitted_images"] == 0 and again["totals"]["skipped_images"] == 30
    assert again["totals"]["planned_images"] == 30 and again["totals"]["billed_images"] == 0
    assert {p.stem for p in (out / "runs").glob("*.json")} == runs
    assert mock_stats(gateway)["billed"] - billed_before == 30
    assert len(index_rows(out)) == 30

    # The key is nowhere: not in either report, not in any file of the dataset.
    assert KEY not in json.dumps(report.to_dict(), default=str) and KEY not in result.stdout + result.stderr
    assert key_in_files(out) == []


SPEC_48_SLOW = """
    name: ray-kill
    provider: {{base_url: '{base}/v1', api_key_env: {key_env}, dialect: flat}}
    prompt: "{{subject}}, {{style}}"
    vars:
      subject: [a flower shop, a bakery at dawn, a lighthouse, a harbour]
      style: [watercolor, photorealistic, ink]
    seeds: {{start: 0, count: 4}}
    sizes: [1K]
    limits: {{concurrency: 2, retries: 3, in_doubt: retry}}
    price_per_image: 0.25
    output: {output}
"""


def _unit_processes() -> list[psutil.Process]:
    """Ray workers running a unit right now (Ray titles a busy worker ``ray::<function>``)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if " ".join(proc.info["cmdline"] or []).startswith("ray::_run_unit"):
            found.append(proc)
    return found


@pytest.mark.timeout(300)  # ~25 s on a quiet machine; Ray starts workers for the runtime_env
def test_a_worker_killed_mid_unit_is_retried_and_the_json_report_equals_the_bill(
    cluster: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """`ray-run --json` joins the cluster (whose workers lack the key: it travels in runtime_env);
    one unit's worker is SIGKILLed while its requests are on the wire. Ray reruns the unit, which
    resumes it; the report counts the killed attempt's requests (its ledger, folded by recovery), so
    billed + in doubt is what the gateway billed, and stdout is one JSON document."""
    with run_in_thread(MockConfig(api_key=KEY, latency=0.3, image_kb=2)) as gateway:
        out = tmp_path / "killed"
        spec = write_spec(SPEC_48_SLOW.format(base=gateway, key_env=KEY_ENV, output=out))
        args = [str(spec), "--units", "4", "--cpus-per-unit", "0.5", "--address", cluster, "--json"]
        code = "from wanbatch.distribute.cli import ray_run\nray_run(prog_name='wanbatch ray-run')"
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=cli_env(RAY_DISABLE_USAGE_STATS="1", **{KEY_ENV: KEY}))
        killed = None
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            if mock_stats(gateway)["billed"] >= 4:
                busy = _unit_processes()
                if busy:
                    killed = busy[0]
                    killed.send_signal(signal.SIGKILL)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=240)
        assert killed is not None, stderr
        assert proc.returncode == 0, stdout[-4000:] + stderr  # the JSON report says which image failed
        report = json.loads(stdout)  # only JSON on stdout, whatever Ray printed when the worker died
        t = report["totals"]
        billed = _settled_billed(gateway)

    assert t["killed_attempts"] == 1 and t["attempts"] == 5, t
    # the gateway's bill, the killed attempt's too; beyond it only intents of that attempt whose request
    # had not reached the gateway when the kill landed (concurrency 2: two at most; a run caught one)
    assert billed <= t["billed_images"] + t["in_doubt_images"] <= billed + 2, (t, billed)
    # the cost counts what may have been billed: the billed images and those in doubt
    assert t["billed_images"] <= billed and t["cost"] == (t["billed_images"] + t["in_doubt_images"]) * 0.25
    assert billed >= 48 and t["planned_images"] == 48 and report["exit_code"] == 0
    rows = index_rows(out)
    assert len(rows) == len({r["image_id"] for r in rows}) == 48  # compacted once: no duplicates
    assert {r["status"] for r in rows} == {"ok"}
    assert t["done_images"] + t["adopted_images"] >= 48
    assert KEY not in stdout + stderr and key_in_files(out) == []


def _settled_billed(base: str) -> int:
    """Billed images once requests cut off by the kill have finished at the gateway (they bill)."""
    deadline = time.monotonic() + 10
    while mock_stats(base)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(mock_stats(base)["billed"])


def test_without_the_key_on_the_workers_every_shard_stops_cleanly(
    cluster: str, gateway: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "nokey"
    spec = write_spec(SPEC_30.format(base=gateway, key_env=KEY_ENV, output=out))
    billed = mock_stats(gateway)["billed"]
    report = run_on_ray(str(spec), 2, num_cpus_per_unit=0.5)
    assert report.exit_code == 3
    assert all(s.exit_code == 3 and s.error and KEY_ENV in s.error for s in report.shards), report.shards
    assert report.totals["done_images"] == 0 and mock_stats(gateway)["billed"] == billed


def test_a_shard_that_raises_is_reported_while_the_others_finish(cluster: str) -> None:
    from wanbatch.distribute.ray_runner import _gather, aggregate

    def shard(i: int) -> dict[str, Any]:
        if i == 1:
            raise RuntimeError("disk on fire")
        summary = {"planned_jobs": 2, "done_images": 2, "submitted_images": 2, "cost": 0.5,
                   "errors_by_kind": {"refused": i}}
        return {"exit_code": i // 2, "summary": summary, "error": None, "notes": []}

    task = ray.remote(shard).options(num_cpus=0.5, max_retries=0)
    outcomes = _gather(ray, {task.remote(i): i for i in range(3)})
    assert [(o.shard, o.exit_code) for o in outcomes] == [(0, 0), (1, 3), (2, 1)]
    assert outcomes[1].summary is None and outcomes[1].error == "RuntimeError: disk on fire"
    totals = aggregate(outcomes)
    assert (totals["done_images"], totals["cost"], totals["shards_failed"]) == (4, 1.0, 1)
    assert totals["errors_by_kind"] == {"refused": 2}


def test_shards_by_hand_through_the_cli_equal_one_full_run(
    gateway: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    env = cli_env(**{KEY_ENV: KEY})
    full, split = tmp_path / "full", tmp_path / "split"
    spec = write_spec(SPEC_30.format(base=gateway, key_env=KEY_ENV, output=split), name="split.yaml")

    def run(*extra: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "wanbatch", "run", str(spec), "--json", *extra],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    spec_full = write_spec(SPEC_30.format(base=gateway, key_env=KEY_ENV, output=full), name="full.yaml")
    whole = wanbatch.run(wanbatch.load_spec(spec_full),
                         wanbatch.RunOptions(env={KEY_ENV: KEY})).summary.to_dict()
    first, second = run("--shard", "0/2"), run("--shard", "1/2")
    assert first["planned_jobs"] + second["planned_jobs"] == whole["planned_jobs"] == 30
    assert first["planned_jobs"] > 0 and second["planned_jobs"] > 0
    assert second["skipped_images"] == 0  # the second shard found nothing of its own already done
    ids_full = sorted(r["image_id"] for r in index_rows(full))
    ids_split = sorted(r["image_id"] for r in index_rows(split))
    assert ids_split == ids_full and len(set(ids_split)) == 30


def _cli_in_subprocess(args: list[str], prelude: str = "", env: dict[str, str] | None = None,
                       timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`wanbatch ray-run ARGS` in a fresh process (the lead registers the command in wanbatch.cli)."""
    code = f"{prelude}\nfrom wanbatch.distribute.cli import ray_run\nray_run(prog_name='wanbatch ray-run')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=cli_env(RAY_DISABLE_USAGE_STATS="1", **(env or {})), timeout=timeout)


def test_unreachable_address_is_a_clean_bad_input(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(SPEC_30.format(base="http://127.0.0.1:9", key_env=KEY_ENV, output=tmp_path / "x"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = _cli_in_subprocess([str(spec), "--shards", "2", "--address", f"127.0.0.1:{port}"])
    assert done.returncode == 2, done.stderr
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    bad = _cli_in_subprocess([str(spec), "--shards", "2", "--address", "127.0.0.1:http"])
    assert bad.returncode == 2 and "port is not a number" in bad.stderr and "Traceback" not in bad.stderr


def test_missing_ray_says_how_to_install_it(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(SPEC_30.format(base="http://127.0.0.1:9", key_env=KEY_ENV, output=tmp_path / "x"))
    done = _cli_in_subprocess([str(spec), "--shards", "2"], prelude="import sys; sys.modules['ray'] = None")
    assert done.returncode == 2
    assert "pip install 'wanbatch[ray]'" in done.stderr and "Traceback" not in done.stderr


def test_bad_spec_and_bad_shards_fail_before_any_cluster(write_spec: Callable[..., Path]) -> None:
    spec = write_spec("prompt: 'a {thing}'\nsizes: [9K]\n")
    done = _cli_in_subprocess([str(spec), "--shards", "2"])
    assert done.returncode == 2 and "9K" in done.stderr and "Traceback" not in done.stderr
    zero = _cli_in_subprocess([str(spec), "--shards", "0"])
    assert zero.returncode == 2 and "--shards" in zero.stderr
