"""Real clients against ``wanbatch mock-server`` (loopback): the official dashscope SDK (sync,
``async_call``, ``fetch``, ``wait``) and the openai SDK (``images.generate`` with ``extra_body``).
The mock must accept what they send, and they must parse what the mock answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.helpers.servers import profile_servers

pytestmark = pytest.mark.timeout(60)

MODEL = "wan2.7-image-pro"
KEY = "sk-test-0f1e2d3c4b5a69788"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    with profile_servers(image_kb=8) as start:
        yield start


def arrived(base: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{base}/_mock/requests").json()["requests"])


def test_dashscope_sdk_sync_async_fetch_and_wait(serve: Callable[..., str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dashscope = pytest.importorskip("dashscope")
    from dashscope.aigc.image_generation import ImageGeneration

    base = serve("dashscope", task_duration=0.3)
    # the SDK's documented setting (fetch and wait ignore base_address); not wanbatch's internals
    monkeypatch.setattr(dashscope, "base_http_api_url", f"{base}/api/v1")
    at = {"api_key": KEY}
    messages = [{"role": "user", "content": [{"text": "a red door"}]}]

    done = ImageGeneration.call(model=MODEL, messages=messages, size="1024*1024", n=1, seed=5,
                                watermark=False, **at)
    assert done.status_code == 200, done.message
    assert done.output.choices[0].message.content[0]["image"].startswith(f"{base}/files/")
    assert done.usage.size == "1024*1024" and done.usage.image_count == 1

    task = ImageGeneration.async_call(model=MODEL, messages=messages, size="1024*1024", seed=5, **at)
    assert task.status_code == 200 and task.output.task_status == "PENDING"
    assert ImageGeneration.fetch(task, **at).output.task_status in ("PENDING", "RUNNING", "SUCCEEDED")
    final = ImageGeneration.wait(task, **at)
    assert final.status_code == 200 and final.output.task_status == "SUCCEEDED"
    assert final.output.choices[0].message.content[0]["image"].startswith(f"{base}/files/")

    posts = [r for r in arrived(base) if r["method"] == "POST"]
    assert posts[1]["body"]["parameters"]["is_async"] is True
    assert posts[1]["headers"]["x-dashscope-async"] == "enable"


def test_dashscope_sdk_sees_arrearage_as_400(serve: Callable[..., str]) -> None:
    pytest.importorskip("dashscope")
    from dashscope.aigc.image_generation import ImageGeneration

    base = serve("dashscope", forbidden_keys=[KEY])
    answer = ImageGeneration.call(model=MODEL, api_key=KEY, base_address=f"{base}/api/v1",
                                  messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert (answer.status_code, answer.code) == (400, "Arrearage")


@pytest.mark.parametrize("profile, size, extra_body, upstream_seed", [
    ("seed000", "1024*1024", {"seed": 5, "watermark": False}, 5),
    ("seed001", "1024x1024", {"parameters": {"seed": 5, "thinking_mode": False}}, 5),
    ("newapi", "1024x1024", {"seed": 5}, None),  # stock new-api drops the top-level seed
    ("newapi", "1024x1024", {"parameters": {"size": "1024*1024", "seed": 5}}, 5),
])
def test_openai_sdk_images_generate_with_extra_body(
    serve: Callable[..., str], profile: str, size: str, extra_body: dict[str, Any], upstream_seed: int | None
) -> None:
    openai = pytest.importorskip("openai")
    base = serve(profile)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    answer = client.images.generate(model=MODEL, prompt="a red door", size=size, n=1,  # type: ignore[arg-type]
                                    extra_body=extra_body)
    assert answer.data is not None and len(answer.data) == 1
    assert answer.data[0].url is not None and answer.data[0].url.startswith(f"{base}/files/")
    assert httpx.get(answer.data[0].url).status_code == 200
    (sent,) = [r for r in arrived(base) if r["method"] == "POST"]
    assert sent["body"]["prompt"] == "a red door" and "response_format" not in sent["body"]
    if profile == "newapi":
        assert sent["upstream"]["seed"] == upstream_seed
