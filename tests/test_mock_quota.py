"""The mock's hidden quotas: in flight and per window, 429 beyond (not billed), changeable at run time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from click.testing import CliRunner

from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.mock.cli import mock_server

pytestmark = pytest.mark.timeout(30)

AUTH = {"Authorization": "Bearer test-key"}


def body(seed: int) -> dict[str, object]:
    return {"model": "wan2.7-image", "prompt": "a quota test", "size": "1K", "n": 1, "seed": seed}


def burst(base: str, count: int, first_seed: int = 0) -> list[httpx.Response]:
    """``count`` generations sent at the same moment, one connection each."""
    def one(seed: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=10) as client:
            return client.post("/v1/images/generations", json=body(seed), headers=AUTH)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(first_seed, first_seed + count)))


def stats(base: str) -> dict[str, object]:
    return dict(httpx.get(base + "/_mock/stats", timeout=5).json())


def test_beyond_max_inflight_answers_429_at_once_and_bills_nothing() -> None:
    with run_in_thread(MockConfig(latency=0.6, max_inflight=3, scale=0.05)) as base:
        started = time.monotonic()
        answers = burst(base, 6)
        codes = sorted(r.status_code for r in answers)
        assert codes == [200, 200, 200, 429, 429, 429]
        throttled = [r for r in answers if r.status_code == 429]
        for r in throttled:
            error = r.json()["error"]
            assert error["code"] == "Throttling.RateQuota" and "request id" in error["message"]
            assert "retry-after" not in r.headers  # like real gateways, by default
            assert r.elapsed.total_seconds() < 0.5  # refused at once, not after the generation time
        assert time.monotonic() - started < 3
        got = stats(base)
        assert got["billed"] == 3 and got["max_in_flight"] == 3
        quota = httpx.get(base + "/_mock/quota", timeout=5).json()
        assert quota["throttled"] == 3 and quota["accepted"] == 3
        assert [r.status_code for r in burst(base, 3, first_seed=10)] == [200, 200, 200]  # slots came back


def test_async_tasks_count_as_in_flight_until_they_finish() -> None:
    config = MockConfig(dialect="parameters", task_duration=0.8, max_inflight=2, scale=0.05)
    submit = {"model": "wan2.7-image", "prompt": "async quota", "size": "1024x1024", "n": 1,
              "response_format": "url", "async": True}
    with run_in_thread(config) as base, httpx.Client(base_url=base, timeout=10, headers=AUTH) as client:
        codes = [client.post("/v1/images/generations", json={**submit, "parameters": {"seed": s}}).status_code
                 for s in range(3)]
        assert codes == [200, 200, 429]  # two tasks are still generating
        time.sleep(1.0)
        later = client.post("/v1/images/generations", json={**submit, "parameters": {"seed": 9}})
        assert later.status_code == 200


def test_rpm_quota_is_a_sliding_window_with_optional_retry_after() -> None:
    config = MockConfig(quota_rpm=240, quota_window=1.0, quota_retry_after=1.5, scale=0.05)  # 4 per second
    with run_in_thread(config) as base, httpx.Client(base_url=base, timeout=10, headers=AUTH) as client:
        codes = [client.post("/v1/images/generations", json=body(s)) for s in range(6)]
        assert [r.status_code for r in codes] == [200] * 4 + [429] * 2
        assert codes[-1].headers["retry-after"] == "1.5"
        time.sleep(1.1)  # the first four slide out of the window
        assert client.post("/v1/images/generations", json=body(20)).status_code == 200
        assert stats(base)["billed"] == 5


def test_quota_changes_at_run_time_and_reset_restores_it() -> None:
    with run_in_thread(MockConfig(latency=0.5, max_inflight=1, scale=0.05)) as base:
        assert sorted(r.status_code for r in burst(base, 3)) == [200, 429, 429]
        changed = httpx.post(base + "/_mock/quota", json={"max_inflight": 3}, timeout=5)
        assert changed.status_code == 200 and changed.json()["max_inflight"] == 3
        assert sorted(r.status_code for r in burst(base, 3, first_seed=10)) == [200, 200, 200]
        httpx.post(base + "/_mock/quota", json={"max_inflight": None}, timeout=5)
        assert sorted(r.status_code for r in burst(base, 5, first_seed=20)) == [200] * 5
        bad = httpx.post(base + "/_mock/quota", json={"max_inflight": 0}, timeout=5)
        assert bad.status_code == 400 and "max_inflight" in bad.json()["error"]["message"]
        unknown = httpx.post(base + "/_mock/quota", json={"burst": 3}, timeout=5)
        assert unknown.status_code == 400 and "unknown" in unknown.json()["error"]["message"]
        httpx.post(base + "/_mock/reset", timeout=5)
        assert httpx.get(base + "/_mock/quota", timeout=5).json()["max_inflight"] == 1


def test_a_schedule_moves_the_quota_from_the_first_request_on() -> None:
    # Wide margins for a loaded machine: the first burst must reach the mock within 1.5 s of its
    # first request (one of them holds the only slot for 1 s meanwhile); the second comes 2.5 s later.
    with run_in_thread(MockConfig(latency=1.0, max_inflight=1, scale=0.05)) as base:
        step = [1.5, {"max_inflight": 3}]
        set_ = httpx.post(base + "/_mock/quota", json={"schedule": [step]}, timeout=5)
        assert set_.status_code == 200 and set_.json()["schedule"] == [step]
        time.sleep(1.6)  # the clock starts at the first request, not when the schedule was set
        first = time.monotonic()
        assert sorted(r.status_code for r in burst(base, 3)) == [200, 429, 429]
        time.sleep(max(0.0, first + 2.5 - time.monotonic()))
        assert sorted(r.status_code for r in burst(base, 3, first_seed=10)) == [200, 200, 200]
        quota = httpx.get(base + "/_mock/quota", timeout=5).json()
        assert quota["max_inflight"] == 3 and quota["schedule"] == []
        for bad in ([[1, {"burst": 2}]], [[-1, {"max_inflight": 2}]], [[1, {"schedule": []}]], {"a": 1}):
            refused = httpx.post(base + "/_mock/quota", json={"schedule": bad}, timeout=5)
            assert refused.status_code == 400, bad
        assert httpx.get(base + "/_mock/quota", timeout=5).json()["max_inflight"] == 3


@pytest.mark.anyio
async def test_in_process_mock_config_takes_the_quota() -> None:
    from wanbatch.mock import create_app

    app = create_app(MockConfig(quota_rpm=60, quota_window=2.0, scale=0.05))  # two per 2 s window
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mock", headers=AUTH) as client:
        codes = [(await client.post("/v1/images/generations", json=body(s))).status_code for s in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.parametrize("args", [["--max-inflight", "0"], ["--quota-rpm", "-5"], ["--quota-window", "0"],
                                  ["--quota-retry-after", "x"]])
def test_bad_quota_options_exit_2_without_a_traceback(args: list[str]) -> None:
    result = CliRunner().invoke(mock_server, ["--port", "0", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_bad_quota_in_config_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match="max_inflight must be an integer >= 1"):
        MockConfig(max_inflight=0)
    with pytest.raises(ValueError, match="quota rpm"):
        MockConfig(quota_rpm=float("nan"))


def test_submit_latency_slows_each_async_submission_not_the_task() -> None:
    config = MockConfig(dialect="parameters", submit_latency=0.4, task_duration=0.0, scale=0.05)
    submit = {"model": "wan2.7-image", "prompt": "slow submit", "size": "1024x1024", "n": 1,
              "response_format": "url", "async": True, "parameters": {"seed": 1}}
    with run_in_thread(config) as base, httpx.Client(base_url=base, timeout=10, headers=AUTH) as client:
        answer = client.post("/v1/images/generations", json=submit)
        assert answer.status_code == 200 and answer.elapsed.total_seconds() >= 0.4
        task = client.get(f"/v1/tasks/{answer.json()['id']}")
        assert task.status_code == 200 and task.json().get("data")  # done once submitted: task_duration 0
    with pytest.raises(ValueError, match="submit_latency"):
        MockConfig(submit_latency=-1.0)
