"""`wanbatch validate` checks every file; an unset ${VAR} warns until a run needs it; no follow-on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import cli_env
from wanbatch.errors import SpecErrors
from wanbatch.spec import load_spec

GOOD = """
    name: good
    prompt: "a {thing}"
    vars: {thing: [fox, lamp]}
"""
BAD = """
    name: bad
    prompt: "a {thing}"
    vars: {thing: [fox]}
    sizes: [9K]
"""
ENV = """
    name: env
    provider: {base_url: "${WANBATCH_UNSET_GATEWAY}/v1", dialect: parameters}
    prompt: "a {thing}"
    vars: {thing: [fox]}
    output: OUT
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env.pop("WANBATCH_UNSET_GATEWAY", None)
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd, check=False)


def test_validate_reports_every_file_and_exits_2_if_any_is_bad(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    files = [write_spec(GOOD, "a.yaml"), write_spec(BAD, "b.yaml"),
             write_spec(ENV.replace("OUT", str(tmp_path / "o")), "c.yaml")]
    proc = cli("validate", *map(str, files), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "✓" in proc.stdout and "a.yaml: 2 jobs" in proc.stdout
    assert "c.yaml: 1 jobs" in proc.stdout  # an unset ${VAR} does not fail validate
    assert "b.yaml" in proc.stderr and "9K" in proc.stderr
    assert "warning:" in proc.stderr and "WANBATCH_UNSET_GATEWAY is not set" in proc.stderr
    proc = cli("validate", "--json", *map(str, files), cwd=tmp_path)
    results = json.loads(proc.stdout)
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["errors"][0]["line"] == 4
    assert "WANBATCH_UNSET_GATEWAY" in results[2]["warnings"][0]


def test_unset_env_warns_for_plan_and_fails_run(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(ENV.replace("OUT", str(tmp_path / "o")))
    proc = cli("plan", str(spec), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "WANBATCH_UNSET_GATEWAY is not set" in proc.stderr
    proc = cli("run", str(spec), cwd=tmp_path)
    assert proc.returncode == 2
    assert "WANBATCH_UNSET_GATEWAY is not set" in proc.stderr and "a run needs it" not in proc.stderr


def test_a_dialect_mistake_has_no_follow_on_error(write_spec: Callable[..., Path]) -> None:
    path = write_spec("""
        provider: {base_url: "https://gw.example/v1", dialect: dashscope, latency: 1s}
        prompt: a fox
        params: {thinking_mode: false}
    """)
    with pytest.raises(SpecErrors) as info:  # the provider is unusable, yet its dialect is known
        load_spec(path)
    text = info.value.render()
    assert "latency applies only to the mock provider" in text
    assert "flat dialect" not in text and len(info.value.errors) == 1


def test_the_environment_is_read_at_load_time(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(ENV.replace("OUT", str(tmp_path / "o")))
    assert "WANBATCH_UNSET_GATEWAY" not in os.environ
    assert load_spec(spec, require_env=False).provider.base_url == "${WANBATCH_UNSET_GATEWAY}/v1"
    with pytest.raises(SpecErrors):
        load_spec(spec)
