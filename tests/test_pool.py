"""A pool of keys and gateways: spec forms and their errors, weights, failover, async tasks per member.

Runner tests start two (or three) real mock gateways on loopback, each with its own key, and run a
spec whose provider pools them; what each gateway billed comes from its ``/_mock/stats``.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import anyio
import pyarrow.parquet as pq
import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import mock_stats, settled_stats
from wanbatch.dataset import status
from wanbatch.errors import DatasetError, FatalError, RefusedError, SpecErrors, TransientError
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.runner import RunOptions, RunResult

pytestmark = pytest.mark.timeout(60)

KEYS = {"POOL_KEY_A": "sk-pool-a-7c1e9d30b2f4", "POOL_KEY_B": "sk-pool-b-41aa0e8f93d6",
        "POOL_KEY_C": "sk-pool-c-d90b73c2e514"}
FAST = {"scale": 0.25, "image_kb": 2.0}


@pytest.fixture
def gateway() -> Iterator[Callable[..., str]]:
    """Start a loopback mock gateway expecting ``key`` (a KEYS name); yields its base URL."""
    with ExitStack() as stack:

        def start(key: str, **config: Any) -> str:
            return stack.enter_context(run_in_thread(MockConfig(**{**FAST, "api_key": KEYS[key], **config})))

        yield start


def spec_text(provider: str, out: Path, *, subjects: int = 2, seeds: int = 2, concurrency: int = 4,
              size: str = "1K", n: int = 1) -> str:
    subject_list = ", ".join(f"subject {i}" for i in range(subjects))
    return f"""
        name: pool
        provider: {provider}
        prompt: "a {{subject}}"
        vars: {{subject: [{subject_list}]}}
        seeds: {{start: 0, count: {seeds}}}
        sizes: [{size}]
        n: {n}
        limits: {{concurrency: {concurrency}, retries: 3}}
        output: {out}
    """


def run(spec: Path, env: dict[str, str] | None = None) -> RunResult:
    opts = RunOptions(env=dict(KEYS) if env is None else env, backoff_initial=0.02, backoff_max=0.1)
    return wanbatch.run(wanbatch.load_spec(spec), opts)


def rows(root: Path) -> list[dict[str, Any]]:
    return pq.read_table(root / "index").to_pylist()


def two_members(a: str, a_name: str, b: str, b_name: str, *, path: str = "/v1", above: str = "") -> str:
    """The provider pooling the gateway at ``a`` (key $POOL_KEY_A) and the one at ``b`` ($POOL_KEY_B) as
    members ``a_name`` and ``b_name`` (``path`` after each base URL); ``above``: provider lines before
    the pool."""
    return f"""{above}
          pool:
            - {{base_url: '{a}{path}', api_key_env: POOL_KEY_A, name: {a_name}}}
            - {{base_url: '{b}{path}', api_key_env: POOL_KEY_B, name: {b_name}}}"""


def async_pair(gateway: Callable[..., str], write_spec: Callable[..., Path], out: Path, *,
               task_duration: float, poll_interval: float, subjects: int) -> tuple[str, str, Path]:
    """Two gateways of the parameters dialect, each knowing only its own tasks, pooled as members ``a`` and
    ``b`` of an async provider; returns their base URLs and the spec (``subjects`` × 2 seeds)."""
    a = gateway("POOL_KEY_A", dialect="parameters", task_duration=task_duration)
    b = gateway("POOL_KEY_B", dialect="parameters", task_duration=task_duration)
    spec = write_spec(spec_text(two_members(a, "a", b, "b", path="/parameters/v1", above=f"""
          dialect: parameters
          async: true
          poll_interval: {poll_interval}"""), out, subjects=subjects, seeds=2, size="1024x1024"))
    return a, b, spec


# ----------------------------------------------------------------------------------------- the spec


def test_short_form_and_pool_form_plan_the_same_jobs_as_one_provider(write_spec: Callable[..., Path],
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    one = wanbatch.load_spec(write_spec(spec_text(
        "{base_url: 'http://127.0.0.1:9/v1', api_key_env: POOL_KEY_A}", out), "one.yaml"))
    short = wanbatch.load_spec(write_spec(spec_text(
        "{base_url: 'http://127.0.0.1:9/v1', api_key_env: [POOL_KEY_A, POOL_KEY_B]}", out), "short.yaml"))
    pooled = wanbatch.load_spec(write_spec(spec_text("""
          name: mine
          pool:
            - {base_url: 'http://127.0.0.1:9/v1', api_key_env: POOL_KEY_A, weight: 3, name: a}
            - {base_url: 'http://localhost:8/v1', api_key_env: POOL_KEY_B}""", out), "pool.yaml"))
    assert [m.name for m in short.provider.members] == ["POOL_KEY_A", "POOL_KEY_B"]
    assert [(m.name, m.weight, m.base_url) for m in pooled.provider.members] == [
        ("a", 3, "http://127.0.0.1:9/v1"), ("POOL_KEY_B", 1, "http://localhost:8/v1")]
    assert pooled.provider.name == "mine" and one.provider.members == []
    ids = [job.job_id for job in wanbatch.plan(one).jobs()]
    assert len(ids) == 4
    assert [job.job_id for job in wanbatch.plan(short).jobs()] == ids
    assert [job.job_id for job in wanbatch.plan(pooled).jobs()] == ids
    # the manifest's spec names the members' variables, never a key
    assert "sk-pool" not in str(pooled.resolved())


@pytest.mark.parametrize(("provider", "where", "says"), [
    ("""
          base_url: 'http://127.0.0.1:9/v1'
          pool:
            - {api_key_env: POOL_KEY_A, name: same}
            - {api_key_env: POOL_KEY_B, name: same}""", "provider.pool[1].name", "used by two members"),
    ("""
          base_url: 'http://127.0.0.1:9/v1'
          pool:
            - {api_key_env: POOL_KEY_A}
            - {api_key_env: POOL_KEY_B, dialect: parameters}""", "provider.pool[1].dialect",
     "share the pool's dialect (flat)"),
    ("""
          base_url: 'http://127.0.0.1:9/v1'
          pool:
            - {api_key_env: POOL_KEY_A}
            - {api_key_env: POOL_KEY_A, weight: 2}""", "provider.pool[1]", "same key ($POOL_KEY_A)"),
    ("""
          base_url: 'http://127.0.0.1:9/v1'
          pool:
            - {api_key_env: POOL_KEY_A, wieght: 2}""", "provider.pool[0].wieght", "did you mean 'weight'"),
    ("""
          base_url: 'http://127.0.0.1:9/v1'
          pool:
            - {api_key_env: POOL_KEY_A, weight: 0}""", "provider.pool[0].weight", "must be ≥ 1"),
    ("""
          pool:
            - {api_key_env: POOL_KEY_A}""", "provider.pool[0]", "no base_url"),
    ("""
          base_url: 'http://127.0.0.1:9/v1'
          api_key_env: [POOL_KEY_A, POOL_KEY_A]""", "provider.api_key_env[1]", "listed twice"),
    ("""
          base_url: 'http://127.0.0.1:9/v1'
          api_key_env: [POOL_KEY_A]
          pool: [{name: x}]""", "provider.api_key_env", "give one or the other"),
    ("""
          type: mock
          api_key_env: [POOL_KEY_A, POOL_KEY_B]""", "provider.api_key_env", "is for gateways"),
])
def test_pool_mistakes_are_located(write_spec: Callable[..., Path], tmp_path: Path, provider: str,
                                   where: str, says: str) -> None:
    indented = "\n".join("  " + line for line in provider.strip("\n").splitlines())
    path = write_spec(spec_text("\n" + indented, tmp_path / "out"))
    with pytest.raises(SpecErrors) as caught:
        wanbatch.load_spec(path)
    errors = caught.value.errors
    hit = [e for e in errors if e.field == where and says in e.message + (e.hint or "")]
    assert hit, [(e.field, e.message, e.hint) for e in errors]
    assert hit[0].file == str(path) and hit[0].line is not None and hit[0].line >= 3


def test_a_missing_key_variable_is_named_before_any_request(
        write_spec: Callable[..., Path], tmp_path: Path, gateway: Callable[..., str]) -> None:
    a = gateway("POOL_KEY_A")
    spec = write_spec(spec_text(f"{{base_url: '{a}/v1', api_key_env: [POOL_KEY_A, POOL_KEY_B]}}",
                                tmp_path / "out"))
    result = run(spec, env={"POOL_KEY_A": KEYS["POOL_KEY_A"]})
    assert result.exit_code == 3
    assert "POOL_KEY_B" in str(result.error) and KEYS["POOL_KEY_A"] not in str(result.error)
    assert mock_stats(a)["billed"] == 0


# ----------------------------------------------------------------------------------------- the run


def test_weights_are_honoured_and_the_index_names_the_member(write_spec: Callable[..., Path], tmp_path: Path,
                                                             gateway: Callable[..., str]) -> None:
    a, b = gateway("POOL_KEY_A"), gateway("POOL_KEY_B")
    out = tmp_path / "out"
    spec = write_spec(spec_text(f"""
          pool:
            - {{base_url: '{a}/v1', api_key_env: POOL_KEY_A, weight: 3, name: big}}
            - {{base_url: '{b}/v1', api_key_env: POOL_KEY_B, weight: 1, name: small}}""",
                                out, subjects=10, seeds=5, concurrency=8, n=4))
    result = run(spec)
    assert result.exit_code == 0, result.error
    served = Counter(r["provider"] for r in rows(out) if r["status"] == "ok")
    assert sum(served.values()) == 200  # 50 requests of 4 images
    assert abs(served["big"] - 150) <= 0.15 * 150 and abs(served["small"] - 50) <= 0.15 * 50, served
    assert served["big"] == mock_stats(a)["billed"] and served["small"] == mock_stats(b)["billed"]
    members = {m["name"]: m for m in result.summary.members}
    assert members["big"]["images"] == served["big"] and members["small"]["state"] == "active"
    saved = (out / "runs" / f"{result.run_id}.json").read_text()
    assert '"members"' in saved and "sk-pool" not in saved


def test_the_short_form_spreads_one_gateway_over_its_keys(write_spec: Callable[..., Path], tmp_path: Path,
                                                          gateway: Callable[..., str]) -> None:
    gw = gateway("POOL_KEY_A", api_key=None)  # this mock takes any key
    out = tmp_path / "out"
    spec = write_spec(spec_text(f"{{base_url: '{gw}/v1', api_key_env: [POOL_KEY_A, POOL_KEY_B], name: gw}}",
                                out, subjects=4, seeds=3))
    result = run(spec)
    assert result.exit_code == 0, result.error
    assert Counter(r["provider"] for r in rows(out)) == {"POOL_KEY_A": 6, "POOL_KEY_B": 6}
    assert mock_stats(gw)["billed"] == 12 and result.summary.provider == "gw"


def test_a_key_that_runs_dry_mid_run_is_dropped_and_the_rest_finish(write_spec: Callable[..., Path],
                                                                    tmp_path: Path,
                                                                    gateway: Callable[..., str]) -> None:
    a = gateway("POOL_KEY_A")
    b = gateway("POOL_KEY_B", dry_after=6, dry_answer="arrearage", arrearage_status=400)
    out = tmp_path / "out"
    spec = write_spec(spec_text(two_members(a, "a", b, "b"), out, subjects=8, seeds=5))
    result = run(spec)
    assert result.exit_code == 0, result.error
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok) == 40 and len({r["image_id"] for r in ok}) == 40
    served = Counter(r["provider"] for r in ok)
    billed_a, billed_b = mock_stats(a)["billed"], mock_stats(b)["billed"]
    assert billed_b == 6 and served["b"] == 6  # the refused requests after it ran dry billed nothing
    assert billed_a == served["a"] == 34  # each image billed once
    assert result.summary.billed_images == 40
    members = {m["name"]: m for m in result.summary.members}
    assert members["b"]["state"] == "out" and "forbidden" in members["b"]["why"]
    assert any("provider b is out of the pool" in n and "goes on with a" in n for n in result.notes)


def test_all_members_dead_exits_3_listing_each(write_spec: Callable[..., Path], tmp_path: Path,
                                               gateway: Callable[..., str]) -> None:
    a = gateway("POOL_KEY_A", dry_after=2, dry_answer="403")
    b = gateway("POOL_KEY_B", dry_after=0, dry_answer="401")
    spec = write_spec(spec_text(two_members(a, "first", b, "second"), tmp_path / "out", subjects=6, seeds=4))
    result = run(spec)
    assert result.exit_code == 3
    message = str(result.error)
    assert "no member of the provider pool" in message
    assert "first: forbidden" in message and "second: auth" in message
    assert not any(key in message for key in KEYS.values())
    assert mock_stats(a)["billed"] == 2 and mock_stats(b)["billed"] == 0
    assert {m["name"]: m["state"] for m in result.summary.members} == {"first": "out", "second": "out"}


def test_a_failing_gateway_is_benched_and_the_others_carry_on(write_spec: Callable[..., Path],
                                                              tmp_path: Path,
                                                              gateway: Callable[..., str]) -> None:
    a = gateway("POOL_KEY_A")
    b = gateway("POOL_KEY_B", faults={"503": 1.0})
    out = tmp_path / "out"
    spec = write_spec(spec_text(two_members(a, "good", b, "bad"), out, subjects=10, seeds=3))
    result = run(spec)
    assert result.exit_code == 0, result.error
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok) == 30 and {r["provider"] for r in ok} == {"good"}
    members = {m["name"]: m for m in result.summary.members}
    assert members["bad"]["breaker_trips"] >= 1 and members["bad"]["state"] == "cooling"
    assert members["bad"]["requests"] <= 8  # benched after 5 failures in a row, not hammered
    assert any("provider bad failed 5 times in a row" in n for n in result.notes)


def test_async_tasks_are_polled_through_the_member_that_took_them(write_spec: Callable[..., Path],
                                                                  tmp_path: Path,
                                                                  gateway: Callable[..., str]) -> None:
    # each gateway knows only its own tasks: a poll sent to the other one would fail the job
    out = tmp_path / "out"
    a, b, spec = async_pair(gateway, write_spec, out, task_duration=0.05, poll_interval=0.02, subjects=6)
    result = run(spec)
    assert result.exit_code == 0, result.error
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok) == 12 and all(r["task_id"] for r in ok)
    served = Counter(r["provider"] for r in ok)
    assert served == {"a": 6, "b": 6}
    assert settled_stats(a)["billed"] == 6 and settled_stats(b)["billed"] == 6


def test_an_async_submission_refused_by_a_dry_key_goes_to_the_other_member(
        write_spec: Callable[..., Path], tmp_path: Path, gateway: Callable[..., str]) -> None:
    a = gateway("POOL_KEY_A", dialect="parameters", task_duration=0.05)
    b = gateway("POOL_KEY_B", dialect="parameters", task_duration=0.05, dry_after=2, dry_answer="403")
    out = tmp_path / "out"
    spec = write_spec(spec_text(f"""
          dialect: parameters
          async: true
          poll_interval: 0.02
          api_key_env: POOL_KEY_A
          pool:
            - {{base_url: '{a}/parameters/v1', name: a}}
            - {{base_url: '{b}/parameters/v1', api_key_env: POOL_KEY_B, name: b}}""", out, subjects=5,
                                seeds=2, size="1024x1024"))
    result = run(spec)
    assert result.exit_code == 0, result.error
    served = Counter(r["provider"] for r in rows(out) if r["status"] == "ok")
    assert served == {"a": 8, "b": 2}
    assert settled_stats(a)["billed"] == 8 and settled_stats(b)["billed"] == 2
    assert result.summary.billed_images == 10 and result.summary.in_doubt_images == 0


@pytest.mark.slow  # a subprocess killed mid-run: its start-up alone takes seconds on a loaded machine
def test_a_rerun_polls_each_journaled_task_through_the_member_that_took_it(
        write_spec: Callable[..., Path], tmp_path: Path, gateway: Callable[..., str]) -> None:
    # killed while 6 tasks run (3 at each gateway, which alone knows its tasks); the rerun polls them
    out = tmp_path / "out"
    a, b, spec = async_pair(gateway, write_spec, out, task_duration=1.5, poll_interval=0.05, subjects=3)
    proc = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env(**KEYS))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(DatasetError):  # not created yet
            if status(out).pending_tasks >= 6:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)

    def posts(base: str) -> int:
        return sum(v for k, v in mock_stats(base)["requests"].items() if k.endswith("/images/generations"))

    assert (posts(a), posts(b)) == (3, 3)
    resumed = run(spec)
    assert resumed.exit_code == 0, resumed.error
    assert resumed.stats.resumed_tasks == 6 and resumed.stats.done_images == 6
    assert (posts(a), posts(b)) == (3, 3)  # polled where they were submitted, never paid again
    assert settled_stats(a)["billed"] == 3 and settled_stats(b)["billed"] == 3
    assert Counter(r["provider"] for r in rows(out) if r["status"] == "ok") == {"a": 3, "b": 3}


# ----------------------------------------------------------------------------------------- the pool alone


def make_pool(weights: dict[str, int], clock: Callable[[], float]) -> Any:
    from wanbatch.concurrency import ConcurrencyController
    from wanbatch.limits import RatePacer
    from wanbatch.runner.pool import Member, Pool

    members = [Member(name=name, weight=w, provider=cast(Any, None), client=cast(Any, None),
                      controller=ConcurrencyController(8), pacer=RatePacer(None))
               for name, w in weights.items()]
    return Pool(members, name="p", trip_after=3, cooldown=10.0, max_cooldown=25.0, clock=clock)


def test_smooth_weighted_round_robin_interleaves_by_weight() -> None:
    pool = make_pool({"a": 2, "b": 1}, clock=lambda: 0.0)

    async def picks(k: int) -> list[str]:
        return [(await pool.choose()).name for _ in range(k)]

    assert anyio.run(picks, 9) == ["a", "b", "a"] * 3


def test_the_breaker_benches_probes_and_doubles_its_cool_down() -> None:
    now = [0.0]
    pool = make_pool({"a": 1, "b": 1}, clock=lambda: now[0])
    b = pool.members[1]
    flaky = TransientError("503", kind="server_error")
    for _ in range(3):
        pool.failed(b, flaky)
    assert b.state == "cooling" and b.cooldown == 10.0
    assert any("provider b failed 3 times" in n for n in pool.notes)

    async def picks(k: int) -> list[str]:
        return [(await pool.choose()).name for _ in range(k)]

    assert anyio.run(picks, 4) == ["a"] * 4  # benched: a carries the work
    now[0] = 10.0
    assert "b" in anyio.run(picks, 2) and b.state == "probing"
    pool.failed(b, flaky)  # the probe failed: benched again, twice as long
    assert b.state == "cooling" and b.cooldown == 20.0
    now[0] = 30.0
    anyio.run(picks, 2)
    pool.answered(b, 1)
    assert b.state == "active" and b.cooldown == 0.0
    pool.failed(b, TransientError("429", kind="rate_limited"))  # a 429 is the controller's business
    pool.failed(b, RefusedError("moderation", kind="moderation"))  # an answer, not a failure
    assert b.state == "active" and b.consecutive == 0 and b.throttled == 1


def test_the_last_member_standing_is_never_benched() -> None:
    pool = make_pool({"a": 1, "b": 1}, clock=lambda: 0.0)
    a, b = pool.members
    pool.take_out(a, FatalError("Access denied", kind="forbidden"))
    for _ in range(10):
        pool.failed(b, TransientError("503", kind="server_error"))
    assert b.state == "active" and not pool.exhausted()
    pool.take_out(b, FatalError("bad key", kind="auth"))
    assert pool.exhausted()
    error = pool.exhausted_error()
    assert "a: forbidden: Access denied" in str(error) and "b: auth: bad key" in str(error)
