"""Injected faults are observable as docs/protocol.md describes them, deterministic, and billed honestly."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

from tests.helpers.mock_client import AUTH, DS_ASYNC, DS_SYNC, FLAT, PARAMS, gateway
from wanbatch.mock import billing_key

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]



def flat_body(prompt: str = "a flower shop", n: int = 1) -> dict[str, Any]:
    return {"model": "wan2.7-image-pro", "prompt": prompt, "size": "2K", "n": n, "seed": 7}


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/_mock/stats")
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [
        ("429", 429, "json"),
        ("500", 500, "json"),
        ("502", 502, "json"),
        ("503", 503, "json"),
        ("html_500", 500, "html"),
        ("empty_502", 502, "empty"),
        ("200_error", 200, "json"),
    ],
)
async def test_early_faults_answer_as_documented_and_bill_nothing(fault: str, status: int, kind: str) -> None:
    async with gateway(faults={fault: 1.0}) as client:
        response = await client.post(FLAT, json=flat_body(), headers=AUTH)
        assert response.status_code == status
        if kind == "json":
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and "(request id: " in error["message"]
            if fault == "200_error":
                assert error["type"] == "ali_error"
        elif kind == "html":
            assert response.headers["content-type"].startswith("text/html") and "<html>" in response.text
        else:
            assert response.content == b""
        assert "Retry-After" not in response.headers and "retry-after-ms" not in response.headers
        assert (await stats(client))["billed"] == 0


async def test_429_alternates_between_ali_and_gateway_limiter_bodies() -> None:
    async with gateway(faults={"429": 1.0}) as client:
        codes = {(await client.post(FLAT, json=flat_body(), headers=AUTH)).json()["error"]["code"]
                 for _ in range(2)}
        assert codes == {"Throttling.RateQuota", ""}


async def test_429_retry_after_carries_a_retry_header() -> None:
    async with gateway(faults={"429_retry_after": 1.0}) as client:
        first = await client.post(FLAT, json=flat_body(), headers=AUTH)
        second = await client.post(FLAT, json=flat_body(), headers=AUTH)
        assert first.status_code == second.status_code == 429
        assert first.headers["retry-after"] == "1"
        assert second.headers["retry-after-ms"] == "200"


async def test_dashscope_faults_use_dashscope_error_bodies() -> None:
    async with gateway(faults={"429": 1.0}) as client:
        body = {"model": "wan2.7-image",
                "input": {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
                "parameters": {"size": "1024*1024", "n": 1}}
        response = await client.post(DS_SYNC, json=body, headers=AUTH)
        assert response.status_code == 429
        assert set(response.json()) == {"request_id", "code", "message"}


async def test_524_bills_then_answers_an_html_page() -> None:
    async with gateway(faults={"524": 1.0}) as client:
        response = await client.post(FLAT, json=flat_body(n=2), headers=AUTH)
        assert response.status_code == 524 and "Error code 524" in response.text
        snapshot = await stats(client)
        assert snapshot["billed"] == 2
        assert snapshot["billed_by_key"] == {billing_key("wan2.7-image-pro", "a flower shop", "2K", 7, 2): 2}


async def test_timeout_bills_then_hangs() -> None:
    async with gateway(faults={"timeout": 1.0}, hang=0.3) as client:
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            responses: list[httpx.Response] = []

            async def call() -> None:
                responses.append(await client.post(FLAT, json=flat_body(), headers=AUTH))

            tg.start_soon(call)
            await anyio.sleep(0.1)
            during = await stats(client)
        assert during["billed"] == 1 and during["in_flight"] == 1
        assert time.monotonic() - started >= 0.3
        assert responses[0].status_code == 504
        assert (await stats(client))["in_flight"] == 0


async def test_short_data_delivers_fewer_images_and_bills_only_those() -> None:
    async with gateway(faults={"short_data": 1.0}) as client:
        response = await client.post(FLAT, json=flat_body(n=3), headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert len(body["data"]) == 2 and body["usage"]["generated_images"] == 2
        single = await client.post(FLAT, json=flat_body(prompt="single"), headers=AUTH)
        assert len(single.json()["data"]) == 1  # short_data needs n > 1
        assert (await stats(client))["billed"] == 3


async def test_task_fail_ends_tasks_failed_without_billing() -> None:
    async with gateway(faults={"task_fail": 1.0}, task_duration=0.0) as client:
        sync = await client.post(FLAT, json=flat_body(), headers=AUTH)
        assert sync.status_code == 200  # task_fail only concerns async tasks
        body = {"model": "wan2.7-image-pro", "prompt": "p", "size": "1024x1024", "n": 1,
                "response_format": "url", "async": True}
        task = (await client.post(PARAMS, json=body, headers=AUTH)).json()
        poll = (await client.get(f"/parameters/v1/tasks/{task['id']}", headers=AUTH)).json()
        assert poll["status"] == "failed" and poll["error"]["code"] and "data" not in poll
        ds_body = {"model": "wan2.7-image",
                   "input": {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
                   "parameters": {"size": "2K", "n": 1}}
        submitted = await client.post(DS_ASYNC, json=ds_body,
                                      headers={**AUTH, "X-DashScope-Async": "enable"})
        task_id = submitted.json()["output"]["task_id"]
        output = (await client.get(f"/api/v1/tasks/{task_id}", headers=AUTH)).json()
        assert output["output"]["task_status"] == "FAILED" and output["output"]["code"]
        assert (await stats(client))["billed"] == 1


async def test_async_tasks_bill_when_they_finish_not_when_submitted() -> None:
    async with gateway(task_duration=0.2) as client:
        body = {"model": "wan2.7-image-pro", "prompt": "p", "size": "1024x1024", "n": 2,
                "response_format": "url", "async": True}
        assert (await client.post(PARAMS, json=body, headers=AUTH)).status_code == 200
        assert (await stats(client))["billed"] == 0
        await anyio.sleep(0.25)
        assert (await stats(client))["billed"] == 2


async def test_fail_first_is_per_job_key_and_stacks() -> None:
    async with gateway(fail_first={"429": 1, "500": 1}) as client:
        for prompt in ("one", "two"):
            statuses = [(await client.post(FLAT, json=flat_body(prompt), headers=AUTH)).status_code
                        for _ in range(4)]
            assert statuses == [429, 500, 200, 200]
        assert (await stats(client))["billed"] == 4


async def test_fault_rates_are_deterministic_for_a_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        async with gateway(faults={"500": 0.5}, fault_seed=seed) as client:
            return [(await client.post(FLAT, json=flat_body(), headers=AUTH)).status_code for _ in range(30)]

    first, again, other = await statuses(1), await statuses(1), await statuses(2)
    assert first == again
    assert first != other
    assert 5 <= first.count(500) <= 25 and set(first) == {200, 500}


async def test_stats_count_routes_bodies_and_concurrency_and_reset_clears_them() -> None:
    async with gateway(latency=0.2) as client:
        async with anyio.create_task_group() as tg:
            for prompt in ("a", "b", "c"):
                tg.start_soon(_post, client, flat_body(prompt))
        snapshot = await stats(client)
        assert snapshot["max_in_flight"] == 3 and snapshot["in_flight"] == 0
        assert snapshot["requests"][FLAT] == 3
        assert sorted(b["body"]["prompt"] for b in snapshot["bodies"]) == ["a", "b", "c"]
        assert {b["route"] for b in snapshot["bodies"]} == {FLAT}
        assert (await client.post("/_mock/reset")).json() == {"ok": True}
        cleared = await stats(client)
        assert cleared["billed"] == 0 and cleared["bodies"] == []
        assert cleared["requests"] == {"/_mock/stats": 1}


async def _post(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post(FLAT, json=body, headers=AUTH)
    assert response.status_code == 200
