"""What real gateways answer, classified through the real provider code (issue 9's table).

Each answer below has the shape a real source shows (docs/protocol.md names it): Model Studio's error
table, stock new-api's ``types/error.go``/``service/error.go`` and ``relay/channel/ali/image.go``, the
official dashscope SDK. They go through ``httpx.MockTransport`` into the providers unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers.scripted import Gateway, Handler, scripted_provider
from wanbatch.errors import EXIT_ABORTED, FatalError, GatewayError, RefusedError, TransientError
from wanbatch.providers.base import Provider
from wanbatch.providers.dashscope import DashScopeProvider
from wanbatch.providers.flat import FlatProvider
from wanbatch.providers.parameters import ParametersProvider
from wanbatch.types import Job

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

KEY = "sk-test-SECRET-7777777777"


def make(cls: type[Provider], respond: Handler, **kwargs: Any) -> tuple[Provider, Gateway]:
    return scripted_provider(cls, respond, api_key=KEY, **kwargs)


def job(n: int = 1, **params: Any) -> Job:
    return Job("0123456789abcdef", "wan2.7-image-pro", "a red door", "2K", 7, n, params)


def openai_error(status: int, message: str, type_: str = "", code: str = "") -> Handler:
    body = {"error": {"message": message, "type": type_, "param": "", "code": code}}
    return lambda request: httpx.Response(status, json=body)


def images_answer(*items: dict[str, str]) -> httpx.Response:
    body = {"created": 1717000000, "data": list(items), "usage": {"generated_images": len(items)}}
    return httpx.Response(200, json=body)


def dashscope_result(*urls: str) -> dict[str, Any]:
    content = [{"type": "image", "image": u} for u in urls]
    return {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}

ARREARAGE = "Access denied, please make sure your account is in good standing."


def dashscope_error(status: int, code: str, message: str) -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"request_id": "rid-ds", "code": code, "message": message})

    return respond


async def raised(provider: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await provider.generate(job())
    return info.value


# ------------------------------------------------------------------------------------- Arrearage


@pytest.mark.parametrize("cls, respond", [
    (DashScopeProvider, dashscope_error(400, "Arrearage", ARREARAGE)),
    (FlatProvider, openai_error(400, f"{ARREARAGE} (request id: X1)", "ali_error", "Arrearage")),
    # new-api passes the upstream message on even where it rewrites the code
    (FlatProvider, openai_error(400, f"{ARREARAGE} (request id: X2)", "upstream_error",
                                "bad_response_status_code")),
    # new-api's ali image handler turns an upstream message into its own bad_response (500)
    (FlatProvider, openai_error(500, f"{ARREARAGE} (request id: X3)", "new_api_error", "bad_response")),
], ids=["dashscope", "new-api", "new-api-code-rewritten", "new-api-bad-response"])
async def test_arrearage_400_stops_the_run_as_out_of_money(cls: Any, respond: Handler) -> None:
    provider, _ = make(cls, respond)
    error = await raised(provider)
    assert type(error) is FatalError and error.exit_code == EXIT_ABORTED == 3
    assert "the account is out of money" in error.message and error.status in (400, 500)


# ------------------------------------------------------------------------------------- new_api_error 500


@pytest.mark.parametrize("code, message", [
    ("bad_response", "bad response: unexpected end of JSON input"),
    ("do_request_failed", "do request failed: Post \"https://dashscope.aliyuncs.com/...\": EOF"),
    ("", "aliAsyncTaskWait timeout"),
    ("ali_async_task_failed", "aliAsyncTaskWait timeout"),
])
async def test_new_api_500_upstream_trouble_is_transient(code: str, message: str) -> None:
    provider, _ = make(FlatProvider, openai_error(500, f"{message} (request id: N1)", "new_api_error", code))
    error = await raised(provider)
    assert type(error) is TransientError and error.kind == "server_error"


@pytest.mark.parametrize("code, message", [
    ("invalid_request", "invalid request body: json: cannot unmarshal string into Go struct field"),
    ("", "invalid request body: unexpected EOF"),
])
async def test_only_invalid_request_is_a_malformed_request(code: str, message: str) -> None:
    provider, _ = make(FlatProvider, openai_error(500, message, "new_api_error", code))
    error = await raised(provider)
    assert type(error) is RefusedError and error.kind == "invalid_request"


# ------------------------------------------------------------------------------------- moderation


@pytest.mark.parametrize("status, type_, code", [
    (400, "upstream_error", "bad_response_status_code"),  # older new-api rewrites the code
    (400, "ali_error", ""),
    (500, "new_api_error", "bad_response_status_code"),
])
async def test_moderation_by_message_only(status: int, type_: str, code: str) -> None:
    message = "Input data may contain inappropriate content. (request id: M1)"
    provider, _ = make(FlatProvider, openai_error(status, message, type_, code))
    error = await raised(provider)
    assert type(error) is RefusedError and error.kind == "moderation"


async def test_dashscope_failed_task_with_data_inspection_failed_is_moderation() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        output = {"task_id": "t1", "task_status": "FAILED", "code": "DataInspectionFailed",
                  "message": "Output data may contain inappropriate content."}
        return httpx.Response(200, json={"request_id": "r", "output": output})

    provider, _ = make(DashScopeProvider, respond, use_async=True)
    with pytest.raises(RefusedError) as info:
        await provider.poll("t1")
    assert info.value.kind == "moderation"


async def test_parameters_failed_task_with_data_inspection_failed_is_moderation() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        error = {"message": "Output data may contain inappropriate content.", "type": "ali_error",
                 "code": "DataInspectionFailed"}
        return httpx.Response(200, json={"id": "task_1", "status": "failed", "error": error})

    provider, _ = make(ParametersProvider, respond, use_async=True)
    with pytest.raises(RefusedError) as info:
        await provider.poll("task_1")
    assert info.value.kind == "moderation"


# ------------------------------------------------------------------------------------- task states


async def test_suspended_task_is_still_alive() -> None:
    states = iter(["SUSPENDED", "SUSPENDED", "RUNNING", "SUCCEEDED"])

    def respond(request: httpx.Request) -> httpx.Response:
        output: dict[str, Any] = {"task_id": "t1", "task_status": next(states)}
        if output["task_status"] == "SUCCEEDED":
            output.update(dashscope_result("https://oss.example/s.png"))
        return httpx.Response(200, json={"request_id": "r", "output": output})

    provider, _ = make(DashScopeProvider, respond, use_async=True)
    seen = [await provider.poll("t1") for _ in range(4)]
    assert [s.generation is None for s in seen] == [True, True, True, False]
    assert seen[0].status == "suspended"


# ------------------------------------------------------------------------------------- partial answers


async def test_a_200_with_images_and_an_error_keeps_the_images() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(images_answer({"url": "https://oss.example/a.png"}).content)
        body["error"] = {"message": "1 of 2 images failed to download upstream", "type": "ali_error",
                         "code": "InternalError.Algo"}
        return httpx.Response(200, json=body)

    provider, _ = make(FlatProvider, respond)
    generation = await provider.generate(job(n=2))
    assert [i.url for i in generation.images] == ["https://oss.example/a.png"]
    assert "1 of 2 images failed" in generation.note


async def test_a_dashscope_200_with_images_and_a_code_keeps_the_images() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"request_id": "r", "code": "InternalError.Algo",
                                         "message": "partial",
                                         "output": dashscope_result("https://oss.example/b.png")})

    provider, _ = make(DashScopeProvider, respond)
    generation = await provider.generate(job())
    assert [i.url for i in generation.images] == ["https://oss.example/b.png"]
    assert "partial" in generation.note


async def test_a_200_with_an_error_and_no_images_is_still_a_failure() -> None:
    provider, _ = make(FlatProvider, openai_error(200, "Inner error", "ali_error", "InternalError.Algo"))
    assert type(await raised(provider)) is RefusedError


# ------------------------------------------------------------------------------------- usage.size, text items


async def test_dashscope_usage_size_and_text_item_reach_the_delivered_images() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        content = [{"type": "text", "text": "a red door, seen from the street at dusk"},
                   {"type": "image", "image": "https://oss.example/c.png"}]
        message = {"role": "assistant", "content": content}
        output = {"choices": [{"finish_reason": "stop", "message": message}]}
        return httpx.Response(200, json={"request_id": "r", "output": output,
                                         "usage": {"image_count": 1, "size": "2985*1405"}})

    provider, _ = make(DashScopeProvider, respond)
    (image,) = (await provider.generate(job())).images
    assert image.url == "https://oss.example/c.png"
    assert image.revised_prompt == "a red door, seen from the street at dusk"
    assert image.claimed_size == "2985*1405"


# ------------------------------------------------------------------------------------- color_palette


PALETTE = [{"hex": "#C2D1E6", "ratio": "40%"}, {"hex": "#636574", "ratio": "35%"},
           {"hex": "#F3E9D2", "ratio": "25%"}]


async def test_dashscope_sends_the_documented_palette_list() -> None:
    provider, gw = make(DashScopeProvider, lambda r: httpx.Response(200, json={
        "request_id": "r", "output": dashscope_result("https://oss.example/d.png")}))
    await provider.generate(job(color_palette=PALETTE))
    assert gw.bodies()[0]["parameters"]["color_palette"] == PALETTE
