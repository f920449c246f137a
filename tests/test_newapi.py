"""Stock new-api: what it does to each dialect's body, the "newapi" dialect that survives it, the mock's
profiles of real gateways, the dry-key fault and ``/_mock/requests`` — against loopback servers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.servers import profile_servers
from wanbatch.plan import plan
from wanbatch.providers.flat import FlatProvider
from wanbatch.providers.newapi import NewApiProvider
from wanbatch.runner import RunOptions
from wanbatch.types import Job

pytestmark = pytest.mark.timeout(60)

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-test-5c1d2e3f4a5b6c7d8"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    with profile_servers() as start:
        yield start


def job(seed: int = 7, size: str = "1024*1024", **params: Any) -> Job:
    return Job("0123456789abcdef", "wan2.7-image-pro", "a red door", size, seed, 1, params)


async def generate_bytes(cls: type, base: str, job_: Job) -> bytes:
    async with httpx.AsyncClient() as client:
        provider = cls(base_url=f"{base}/v1", api_key=KEY, client=client, name="gw")
        generation = await provider.generate(job_)
        url = generation.images[0].url
        assert url is not None
        return (await client.get(url)).content


def requests_log(base: str) -> list[dict[str, Any]]:
    return [r for r in httpx.get(f"{base}/_mock/requests").json()["requests"] if r["method"] == "POST"]


@pytest.mark.anyio
async def test_stock_newapi_drops_the_flat_seed_and_the_newapi_dialect_keeps_it(
    serve: Callable[..., str],
) -> None:
    base = serve("newapi")
    flat = [await generate_bytes(FlatProvider, base, job(seed=42)) for _ in range(2)]
    assert flat[0] != flat[1]  # the seed never reached the model: every call draws its own
    first = requests_log(base)[0]
    assert first["body"]["seed"] == 42 and "seed" in first["kept_aside"] and first["upstream"]["seed"] is None
    assert "authorization" not in json.dumps(first).lower()

    kept = [await generate_bytes(NewApiProvider, base, job(seed=42)) for _ in range(2)]
    assert kept[0] == kept[1]
    assert await generate_bytes(NewApiProvider, base, job(seed=43)) != kept[0]
    sent = requests_log(base)[2]
    assert sent["body"] == {"model": "wan2.7-image-pro", "prompt": "a red door",
                            "parameters": {"size": "1024*1024", "n": 1, "seed": 42}}
    assert sent["upstream"]["seed"] == 42 and sent["kept_aside"] == []


def test_with_parameters_the_top_level_size_and_n_are_ignored(serve: Callable[..., str]) -> None:
    base = serve("newapi")
    body = {"model": "wan2.7-image-pro", "prompt": "x", "size": "2048x2048", "n": 3,
            "extra_field": 1, "parameters": {"size": "1280*720", "seed": 5, "unknown_inner": True}}
    auth = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(f"{base}/v1/images/generations", json=body, headers=auth)
    assert answer.status_code == 200 and len(answer.json()["data"]) == 1
    logged = requests_log(base)[-1]
    assert logged["upstream"] == {"size": "1280*720", "n": 1, "seed": 5, "params": {}}
    assert logged["kept_aside"] == ["extra_field"]


@pytest.mark.parametrize("profile, path, body", [
    ("seed000", "/v1/images/generations", {"model": "wan2.7-image-pro", "prompt": "x", "size": "1K"}),
    ("seed001", "/v1/images/generations", {"model": "wan2.7-image-pro", "prompt": "x"}),  # n etc. optional
    ("newapi", "/v1/images/generations", {"model": "wan2.7-image-pro", "prompt": "x"}),
    ("dashscope", "/api/v1/services/aigc/image-generation/generation",
     {"model": "wan2.7-image-pro", "input": {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
      "parameters": {"size": "1024*1024", "is_async": True}}),  # the official SDK's async_call
])
def test_each_profile_answers_arrearage_as_400_and_accepts_what_real_clients_send(
    serve: Callable[..., str], profile: str, path: str, body: dict[str, Any]
) -> None:
    broke = "sk-broke-0000000000"
    base = serve(profile, forbidden_keys=[broke])
    headers = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
    assert httpx.post(base + path, json=body, headers=headers).status_code == 200
    refused = httpx.post(base + path, json=body, headers={**headers, "Authorization": f"Bearer {broke}"})
    assert refused.status_code == 400 and "Arrearage" in refused.text


@pytest.mark.parametrize("answer, status", [("401", 401), ("403", 403), ("arrearage", 400)])
def test_a_key_running_dry_after_k_requests(serve: Callable[..., str], answer: str, status: int) -> None:
    base = serve("seed000", dry_after=2, dry_answer=answer)
    body = {"model": "wan2.7-image-pro", "prompt": "x", "size": "1K"}
    codes = [httpx.post(f"{base}/v1/images/generations", json=body,
                        headers={"Authorization": f"Bearer {KEY}"}).status_code for _ in range(4)]
    assert codes == [200, 200, status, status]


def test_arrearage_mid_run_stops_the_run_with_exit_3(serve: Callable[..., str], tmp_path: Path) -> None:
    base = serve("newapi", dry_after=2)
    spec = tmp_path / "spec.yaml"
    out = tmp_path / "ds"
    spec.write_text(f"name: dry\nprompt: a cat\nseeds: {{start: 0, count: 8}}\nsizes: [1024*1024]\n"
                    f"provider: {{base_url: '{base}/v1', api_key_env: {KEY_ENV}, dialect: newapi}}\n"
                    f"limits: {{concurrency: 1}}\noutput: {out}\n")
    done = subprocess.run([sys.executable, "-m", "wanbatch", "run", str(spec)], capture_output=True,
                          text=True, timeout=60, env=cli_env(**{KEY_ENV: KEY}))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "out of money" in done.stdout + done.stderr and KEY not in done.stdout + done.stderr
    assert len(requests_log(base)) == 3  # stopped at the first refusal


def test_params_written_are_sent_and_recorded_but_job_ids_do_not_change(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    base = serve("seed001")
    out = tmp_path / "ds"
    spec = wanbatch.load_spec("s.yaml", text=(
        "name: wm\nmodel: wan2.7-image-pro\nprompts: [a red door]\nsizes: [1K]\nseeds: [1, 2]\n"
        f"provider: {{base_url: '{base}/v1', api_key_env: {KEY_ENV}, dialect: parameters}}\n"
        f"params: {{watermark: false, thinking_mode: true}}\noutput: {out}\n"))
    # ids written by the previous release for this spec (defaults dropped from the identity)
    assert [j.job_id for j in plan(spec).jobs()] == ["a61cc808166b2d3f", "439c4282f7768759"]
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert result.exit_code == 0
    inner = requests_log(base)[0]["body"]["parameters"]
    assert inner["watermark"] is False and inner["thinking_mode"] is True
    rows = pq.read_table(out / "index").to_pylist()
    assert {r["job_id"] for r in rows} == {"a61cc808166b2d3f", "439c4282f7768759"}
    assert {r["params"] for r in rows} == {'{"thinking_mode":true,"watermark":false}'}


def test_a_size_the_gateway_claims_but_did_not_deliver_is_noted_on_the_row(tmp_path: Path) -> None:
    # the mock's usage.size states the requested size; scale: 0.5 delivers half of it
    out = tmp_path / "ds"
    spec = wanbatch.load_spec("s.yaml", text=(
        "name: claimed\nprompts: [a red door]\nsizes: [1024*1024]\nseeds: [1]\n"
        f"provider: {{type: mock, dialect: dashscope, scale: 0.5}}\noutput: {out}\n"))
    assert wanbatch.run(spec).exit_code == 0
    (row,) = pq.read_table(out / "index").to_pylist()
    assert row["status"] == "ok" and (row["width"], row["height"]) == (512, 512)
    assert row["error_kind"] is None
    assert row["error_message"] == "the gateway reported size 1024*1024 but delivered 512*512"
