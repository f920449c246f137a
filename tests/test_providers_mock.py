"""Providers and downloads against the mock gateway app, in-process (ASGITransport) — the same code
path ``provider: mock`` uses — and every injected fault of the mock mapped to its error class."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.provider_settings import Settings
from wanbatch.errors import AmbiguousError, FatalError, GatewayError, RefusedError, TransientError
from wanbatch.fetch import fetch_image, verify_image
from wanbatch.mock import MockConfig, create_app
from wanbatch.providers import FlatProvider, make_provider, open_client
from wanbatch.providers.dashscope import DashScopeProvider
from wanbatch.providers.parameters import ParametersProvider
from wanbatch.types import Job

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

KEY = "sk-mock-SECRET-42424242"
HOST = "http://gw.test"


def mock_settings(**overrides: Any) -> Settings:
    """The built-in mock's settings (images shrunk to a quarter)."""
    return Settings(**{"kind": "mock", "name": "mock", "scale": 0.25, **overrides})


def job(prompt: str = "a bakery at dawn", size: str = "1K", n: int = 1, seed: int = 3, **params: Any) -> Job:
    return Job(job_id="feedfacecafebeef", model="wan2.7-image-pro", prompt=prompt, size=size, seed=seed, n=n,
               params=params)


def gateway_client(**config: Any) -> httpx.AsyncClient:
    app = create_app(MockConfig(**{"api_key": KEY, "scale": 0.25, **config}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HOST)


async def test_builtin_mock_provider_generates_and_downloads(tmp_path: Path) -> None:
    settings = mock_settings(faults={})
    async with open_client(settings, concurrency=2, timeout=10) as client:
        provider = make_provider(settings, client, request_timeout=10, env={})
        assert isinstance(provider, FlatProvider) and provider.name == "mock" and not provider.use_async
        generation = await provider.generate(job(n=2, watermark=False))
        assert len(generation.images) == 2 and all(i.url for i in generation.images)
        for image in generation.images:
            dest = tmp_path / f"{image.index}.part"
            nbytes, _ = await fetch_image(client, image, dest, timeout=10)
            assert verify_image(dest) == ("png", 256, 256) and nbytes == dest.stat().st_size
        stats = (await client.get("/_mock/stats")).json()
    assert stats["bodies"][0]["body"] == {"model": "wan2.7-image-pro", "prompt": "a bakery at dawn",
                                          "size": "1K",
                                          "n": 2, "seed": 3, "watermark": False}
    assert stats["download_auth_headers"] == 0 and stats["billed"] == 2


async def test_parameters_sync_b64_and_async_against_the_mock(tmp_path: Path) -> None:
    async with gateway_client(dialect="parameters") as client:
        provider = ParametersProvider(base_url=f"{HOST}/v1", api_key=KEY, client=client, name="gw",
                                      response_format="b64_json", use_async=True, poll_interval=0.01)
        generation = await provider.generate(job(size="1696*960", thinking_mode=False))
        image = generation.images[0]
        assert image.url is None and image.b64_json and base64.b64decode(image.b64_json)[:4] == b"\x89PNG"
        await fetch_image(client, image, tmp_path / "b.part", timeout=10)
        assert verify_image(tmp_path / "b.part") == ("png", 424, 240)

        task_id = await provider.submit(job(n=2))
        state = await provider.poll(task_id)
        while state.generation is None:
            state = await provider.poll(task_id)
        assert len(state.generation.images) == 2 and state.generation.task_id == task_id
        bodies = [b["body"] for b in (await client.get("/_mock/stats")).json()["bodies"]]
    assert bodies[0] == {"model": "wan2.7-image-pro", "prompt": "a bakery at dawn", "size": "1696x960",
                         "n": 1,
                         "response_format": "b64_json", "parameters": {"seed": 3, "thinking_mode": False}}
    assert bodies[1]["async"] is True and bodies[1]["size"] == "1024x1024"


async def test_dashscope_sync_and_async_against_the_mock(tmp_path: Path) -> None:
    async with gateway_client() as client:
        provider = DashScopeProvider(base_url=HOST, api_key=KEY, client=client, name="ds", use_async=True,
                                     poll_interval=0.01)
        generation = await provider.generate(job(size="1280*720"))
        await fetch_image(client, generation.images[0], tmp_path / "s.part", timeout=10)
        assert verify_image(tmp_path / "s.part") == ("png", 320, 180)
        task_id = await provider.submit(job(size="2K", n=3))
        state = await provider.poll(task_id)
        while state.generation is None:
            state = await provider.poll(task_id)
        assert [i.index for i in state.generation.images] == [0, 1, 2]
        with pytest.raises(RefusedError) as info:
            await provider.poll("no-such-task")
        assert info.value.kind == "task_unknown"
        stats = (await client.get("/_mock/stats")).json()
    assert stats["download_auth_headers"] == 0


MOCK_FAULTS: list[tuple[str, type[GatewayError], str]] = [
    ("429", TransientError, "rate_limited"),
    ("429_retry_after", TransientError, "rate_limited"),
    ("500", TransientError, "server_error"),
    ("502", TransientError, "server_error"),
    ("503", TransientError, "server_error"),
    ("html_500", TransientError, "server_error"),
    ("empty_502", TransientError, "server_error"),
    ("524", AmbiguousError, "proxy_timeout"),
    ("200_error", RefusedError, "upstream_error"),
    ("timeout", AmbiguousError, "timeout"),
]


@pytest.mark.parametrize("dialect", ["flat", "dashscope"])
@pytest.mark.parametrize(("fault", "cls", "kind"), MOCK_FAULTS, ids=[f[0] for f in MOCK_FAULTS])
async def test_every_mock_fault_maps_to_its_class(dialect: str, fault: str, cls: type[GatewayError],
                                                  kind: str) -> None:
    async with gateway_client(fail_first={fault: 1}, hang=5.0) as client:
        provider_cls = DashScopeProvider if dialect == "dashscope" else FlatProvider
        base = HOST if dialect == "dashscope" else f"{HOST}/v1"
        provider = provider_cls(base_url=base, api_key=KEY, client=client, name="gw", request_timeout=0.5)
        with pytest.raises(GatewayError) as info:
            await provider.generate(job())
        assert (type(info.value), info.value.kind) == (cls, kind)
        if fault == "429_retry_after":
            assert info.value.retry_after in (1.0, 0.2)
        assert KEY not in str(info.value)
        assert (await provider.generate(job())).images  # the next request for the job succeeds


async def test_short_data_from_the_mock_is_returned_short() -> None:
    async with gateway_client(fail_first={"short_data": 1}) as client:
        provider = FlatProvider(base_url=f"{HOST}/v1", api_key=KEY, client=client, name="gw")
        assert len((await provider.generate(job(n=3))).images) == 2


async def test_failed_async_task_from_the_mock() -> None:
    async with gateway_client(fail_first={"task_fail": 1}, dialect="parameters") as client:
        provider = ParametersProvider(base_url=f"{HOST}/v1", api_key=KEY, client=client, name="gw",
                                      use_async=True)
        task_id = await provider.submit(job())
        with pytest.raises(RefusedError) as info:
            while (await provider.poll(task_id)).generation is None:
                pass
        assert info.value.kind == "task_failed"


@pytest.mark.parametrize(("key", "path", "prompt", "cls", "kind"), [
    ("sk-wrong-key-0000", "/v1", "a cat", FatalError, "auth"),
    ("sk-broke-00000000", "/v1", "a cat", FatalError, "forbidden"),
    (KEY, "/v1", "a forbidden-word cat", RefusedError, "moderation"),
    (KEY, "/v2", "a cat", FatalError, "not_found"),
])
async def test_auth_forbidden_moderation_and_wrong_route_against_the_mock(
    key: str, path: str, prompt: str, cls: type[GatewayError], kind: str
) -> None:
    config: dict[str, Any] = {"forbidden_keys": [key]} if kind == "forbidden" else {}
    if kind == "forbidden":
        config["api_key"] = None  # the mock then takes any key but the forbidden ones
    async with gateway_client(**config) as client:
        provider = FlatProvider(base_url=HOST + path, api_key=key, client=client, name="gw",
                                key_env="WAN_API_KEY")
        with pytest.raises(GatewayError) as info:
            await provider.generate(job(prompt=prompt))
    assert (type(info.value), info.value.kind) == (cls, kind), info.value.message
    assert key not in str(info.value)
    if kind == "auth":
        assert "$WAN_API_KEY" in info.value.message


async def test_flat_response_format_mistake_is_what_the_gateway_refuses() -> None:
    """The reason flat never sends response_format: the gateway's answer classifies as a malformed request."""
    async with gateway_client() as client:
        answer = await client.post("/v1/images/generations", headers={"Authorization": f"Bearer {KEY}"},
                                   json={"model": "wan2.7-image-pro", "prompt": "x",
                                         "response_format": "url"})
    from wanbatch.providers.base import ErrorContext, check_answer

    with pytest.raises(RefusedError) as info:
        check_answer(answer, "generate", ErrorContext(base_url=HOST))
    assert info.value.kind == "invalid_request" and "response_format" in info.value.message


def test_factory_needs_the_key_variable_and_a_known_dialect() -> None:
    client = httpx.AsyncClient()
    gateway = Settings(kind="gateway", name="gw", base_url="https://gw.example/v1", dialect="parameters",
                       api_key_env="MY_WAN_KEY")
    with pytest.raises(FatalError) as info:
        make_provider(gateway, client, request_timeout=5, env={})
    assert info.value.kind == "auth" and "MY_WAN_KEY" in info.value.message
    provider = make_provider(gateway, client, request_timeout=5, env={"MY_WAN_KEY": KEY})
    assert isinstance(provider, ParametersProvider) and KEY not in repr(provider)
    with pytest.raises(FatalError) as bad:
        make_provider(Settings(kind="gateway", base_url="https://x/v1", dialect="soap"), client,
                      request_timeout=5,
                      env={"WAN_API_KEY": KEY})
    assert "soap" in bad.value.message
    with pytest.raises(FatalError):
        make_provider(Settings(kind="gateway", base_url="https://x/v1", dialect="flat", use_async=True),
                      client,
                      request_timeout=5, env={"WAN_API_KEY": KEY})


def test_factory_accepts_the_spec_provider_config() -> None:
    from wanbatch.spec.model import ProviderConfig

    config = ProviderConfig(kind="gateway", name="ds", base_url="https://dashscope-intl.aliyuncs.com",
                            api_key_env="DASHSCOPE_API_KEY", dialect="dashscope", use_async=True,
                            response_format="url", poll_interval=3.0, latency=0.0, scale=None, faults={})
    provider = make_provider(config, httpx.AsyncClient(), request_timeout=60, env={"DASHSCOPE_API_KEY": KEY})
    assert isinstance(provider, DashScopeProvider) and provider.use_async and provider.poll_interval == 3.0
