"""``wanbatch probe`` against every mock profile (loopback servers), and the seed warnings of plan/run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import cli_env
from tests.helpers.servers import profile_servers
from wanbatch.probe import probe, probe_path, seed_warning, write_probe
from wanbatch.spec import load_spec

pytestmark = pytest.mark.timeout(60)

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-test-9a8b7c6d5e4f3a2b1"
ENV = {KEY_ENV: KEY}


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    with profile_servers(image_kb=8) as start:
        yield start


def write(tmp_path: Path, base: str, dialect: str, *, size: str = "1024*1024", n: int = 1,
          extra: str = "") -> Path:
    suffix = "" if dialect == "dashscope" else "/v1"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: p\nprompt: a red door\nseeds: {{start: 0, count: 20}}\nsizes: ['{size}']\n"
                    f"n: {n}\nprice_per_image: 0.25\noutput: {tmp_path / 'ds'}\n"
                    f"provider: {{base_url: '{base}{suffix}', api_key_env: {KEY_ENV}, "
                    f"dialect: {dialect}{extra}}}\n")
    return spec


def posts(base: str) -> int:
    return sum(1 for r in httpx.get(f"{base}/_mock/requests").json()["requests"] if r["method"] == "POST")


@pytest.mark.parametrize("profile, dialect, extra, seed", [
    ("seed000", "flat", "", "honoured"),
    ("seed001", "parameters", ", async: true, poll_interval: 0.05", "honoured"),
    ("dashscope", "dashscope", "", "honoured"),
    ("newapi", "flat", "", "dropped"),
    ("newapi", "newapi", "", "honoured"),
])
def test_probe_verdicts_on_every_profile(serve: Callable[..., str], tmp_path: Path, profile: str,
                                         dialect: str, extra: str, seed: str) -> None:
    base = serve(profile)
    size = "1024x1024" if dialect == "parameters" else "1024*1024"
    verdict = probe(load_spec(write(tmp_path, base, dialect, size=size, n=2, extra=extra)), env=ENV)
    assert verdict.seed == seed
    checks = verdict.checks
    for name in ("key accepted", "model available", "body accepted", "delivered size", "n honoured"):
        assert checks[name][0] == "ok", (name, checks[name])
    assert checks["seed honoured"][0] == ("ok" if seed == "honoured" else "failed")
    assert checks["async"][0] == ("ok" if "async" in extra else "unknown")
    assert posts(base) == 3  # the fewest requests: S, S again, S+1


def test_probe_reports_a_refused_key_and_a_size_not_delivered(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    base = serve("newapi", api_key="another-key")
    verdict = probe(load_spec(write(tmp_path, base, "newapi")), env=ENV)
    assert verdict.checks["key accepted"][0] == "failed" and verdict.seed == "unverified"
    small = serve("seed000", scale=0.5)
    verdict = probe(load_spec(write(tmp_path, small, "flat")), env=ENV)
    assert verdict.checks["delivered size"] == ("failed", "512*512 for 1024*1024 requested")


def test_probe_cli_prints_the_cost_first_asks_and_writes_the_verdict(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    base = serve("newapi")
    spec = write(tmp_path, base, "flat", n=2)
    env = cli_env(**ENV)
    declined = subprocess.run([sys.executable, "-m", "wanbatch", "probe", str(spec)], input="n\n",
                              capture_output=True, text=True, timeout=60, env=env)
    assert declined.returncode == 2 and "3 requests" in declined.stderr and "6 images" in declined.stderr
    assert "1.50" in declined.stderr and posts(base) == 0 and not probe_path(spec).exists()
    done = subprocess.run([sys.executable, "-m", "wanbatch", "probe", str(spec), "--yes"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stderr  # a check failed: the seed is dropped
    assert "seed dropped" in done.stdout and KEY not in done.stdout + done.stderr
    saved = json.loads(probe_path(spec).read_text())
    assert saved["seed"] == "dropped" and saved["dialect"] == "flat"


def test_plan_and_run_warn_when_a_seed_sweep_is_unverified_or_dropped(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    base = serve("newapi")
    spec_path = write(tmp_path, base, "flat")
    spec = load_spec(spec_path)
    assert "unverified" in (seed_warning(spec, spec_path) or "")
    plan = subprocess.run([sys.executable, "-m", "wanbatch", "plan", str(spec_path)], capture_output=True,
                          text=True, timeout=60, env=cli_env(**ENV))
    assert plan.returncode == 0 and "wanbatch probe" in plan.stderr
    write_probe(spec_path, probe(spec, env=ENV))
    warning = seed_warning(spec, spec_path) or ""
    assert "seed dropped" in warning and "dialect: newapi" in warning
    newapi = write(tmp_path, base, "newapi")
    write_probe(newapi, probe(load_spec(newapi), env=ENV))
    assert seed_warning(load_spec(newapi), newapi) is None
