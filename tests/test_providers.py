"""Providers against httpx.MockTransport handlers that answer as docs/protocol.md says.

Each handler records the requests it saw, so the tests assert the exact bodies and headers a gateway
receives, and each error row of docs/protocol.md maps to one class and kind.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx
import pytest

from tests.helpers.scripted import BASE, DS_BASE, Gateway, Handler, scripted_provider
from wanbatch.errors import AmbiguousError, FatalError, GatewayError, RefusedError, TransientError
from wanbatch.providers.base import Provider, parse_retry_after
from wanbatch.providers.dashscope import DashScopeProvider
from wanbatch.providers.flat import FlatProvider
from wanbatch.providers.parameters import ParametersProvider
from wanbatch.types import Job

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

KEY = "sk-test-SECRET-0123456789"


def job(size: str = "2K", n: int = 1, seed: int = 7, prompt: str = "a red door", **params: Any) -> Job:
    return Job(job_id="0123456789abcdef", model="wan2.7-image-pro", prompt=prompt, size=size,
               seed=seed, n=n, params=params)


def images_answer(*items: dict[str, str], request_id: str = "req-1") -> httpx.Response:
    body = {"created": 1717000000, "data": list(items), "usage": {"generated_images": len(items)}}
    return httpx.Response(200, json=body, headers={"x-request-id": request_id})


def ok_url(request: httpx.Request) -> httpx.Response:
    return images_answer({"url": "https://oss.example/img/0.png?sig=abc", "b64_json": "",
                          "revised_prompt": ""})


def make(cls: type[Provider], respond: Handler, **kwargs: Any) -> tuple[Provider, Gateway]:
    return scripted_provider(cls, respond, api_key=KEY, **kwargs)


def openai_error(status: int, message: str, type_: str = "", code: str = "", **headers: str) -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": message, "type": type_, "param": "", "code": code}}
        return httpx.Response(status, json=body, headers=headers)

    return respond


def raw(status: int, content: bytes, content_type: str = "text/html", **headers: str) -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"content-type": content_type, **headers})

    return respond


# ---------------------------------------------------------------------------------------- bodies


async def test_flat_body_is_exactly_the_allowed_keys_and_never_response_format() -> None:
    provider, gw = make(FlatProvider, ok_url, response_format="b64_json")
    await provider.generate(job())
    await provider.generate(job(size="1696*960", n=2, seed=0, watermark=False))
    assert gw.bodies() == [
        {"model": "wan2.7-image-pro", "prompt": "a red door", "size": "2K", "n": 1, "seed": 7},
        {"model": "wan2.7-image-pro", "prompt": "a red door", "size": "1696*960", "n": 2, "seed": 0,
         "watermark": False},
    ]
    request = gw.requests[0]
    assert request.method == "POST" and str(request.url) == f"{BASE}/images/generations"
    assert request.headers["authorization"] == f"Bearer {KEY}"


async def test_flat_refuses_parameters_it_cannot_send_before_any_request() -> None:
    provider, gw = make(FlatProvider, ok_url)
    await provider.generate(job(thinking_mode=True, enable_sequential=False))  # defaults: nothing to send
    assert gw.bodies()[0] == {"model": "wan2.7-image-pro", "prompt": "a red door", "size": "2K", "n": 1,
                              "seed": 7}
    with pytest.raises(FatalError) as info:
        await provider.generate(job(thinking_mode=False))
    assert info.value.kind == "unsupported" and "thinking_mode" in info.value.message
    assert len(gw.requests) == 1


async def test_flat_is_synchronous_only() -> None:
    provider, gw = make(FlatProvider, ok_url)
    with pytest.raises(FatalError):
        await provider.submit(job())
    with pytest.raises(FatalError) as info:
        make(FlatProvider, ok_url, use_async=True)
    assert "synchronous" in info.value.message
    assert gw.requests == []


@pytest.mark.parametrize(("size", "wxh"), [("2K", "2048x2048"), ("1K", "1024x1024"), ("4K", "4096x4096"),
                                           ("1696*960", "1696x960")])
async def test_parameters_body_nests_params_and_uses_wxh_from_the_list(size: str, wxh: str) -> None:
    provider, gw = make(ParametersProvider, ok_url)
    await provider.generate(job(size=size, n=3, seed=11, watermark=False, thinking_mode=False,
                                color_palette=["#ff0000"], enable_sequential=True))
    assert gw.bodies() == [{
        "model": "wan2.7-image-pro", "prompt": "a red door", "size": wxh, "n": 3, "response_format": "url",
        "parameters": {"seed": 11, "watermark": False, "thinking_mode": False, "color_palette": ["#ff0000"],
                       "enable_sequential": True},
    }]


async def test_parameters_refuses_a_size_off_the_list_without_sending() -> None:
    provider, gw = make(ParametersProvider, ok_url)
    with pytest.raises(RefusedError) as info:
        await provider.generate(job(size="1920*1080"))
    assert info.value.kind == "invalid_parameter" and "2048x2048" in info.value.message
    assert gw.requests == []


async def test_parameters_async_submit_and_poll_to_a_generation() -> None:
    polls = iter([
        {"id": "task_1", "status": "queued", "progress": 0},
        {"id": "task_1", "status": "processing", "progress": 40},
        {"created": 1, "data": [{"url": "https://oss.example/a.png", "b64_json": "", "revised_prompt": "r"}]},
    ])

    def respond(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"id": "task_1", "status": "queued", "progress": 0})
        return httpx.Response(200, json=next(polls), headers={"x-request-id": "req-poll"})

    provider, gw = make(ParametersProvider, respond, use_async=True, response_format="b64_json")
    task_id = await provider.submit(job())
    assert task_id == "task_1"
    assert gw.bodies()[0] == {"model": "wan2.7-image-pro", "prompt": "a red door", "size": "2048x2048",
                              "n": 1,
                              "response_format": "b64_json", "async": True, "parameters": {"seed": 7}}
    first = await provider.poll(task_id)
    second = await provider.poll(task_id)
    done = await provider.poll(task_id)
    assert (first.generation, first.status, second.progress) == (None, "queued", 40)
    assert done.generation is not None and done.generation.task_id == "task_1"
    assert [(i.index, i.url, i.revised_prompt) for i in done.generation.images] == [
        (0, "https://oss.example/a.png", "r")]
    assert [str(r.url) for r in gw.requests[1:]] == [f"{BASE}/tasks/task_1"] * 3
    assert all(r.method == "GET" for r in gw.requests[1:])


async def test_parameters_failed_task_and_unknown_task() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gone"):
            gone = {"message": "task gone not found", "type": "invalid_request_error",
                    "code": "task_not_found"}
            return httpx.Response(404, json={"error": gone})
        error = {"message": "Inner error (request id: R9)", "type": "ali_error", "code": "InternalError.Algo"}
        return httpx.Response(200, json={"id": "bad", "status": "failed", "error": error})

    provider, _ = make(ParametersProvider, respond, use_async=True)
    with pytest.raises(RefusedError) as failed:
        await provider.poll("bad")
    assert failed.value.kind == "task_failed" and "Inner error" in failed.value.message
    assert failed.value.request_id == "R9"
    with pytest.raises(RefusedError) as unknown:
        await provider.poll("gone")
    assert unknown.value.kind == "task_unknown"


async def test_parameters_gateway_that_answers_an_async_submit_in_full_loses_nothing() -> None:
    provider, _ = make(ParametersProvider, ok_url, use_async=True)
    task_id = await provider.submit(job())
    state = await provider.poll(task_id)
    assert state.generation is not None and state.generation.images[0].url is not None
    with pytest.raises(RefusedError) as info:  # a second process cannot know it: resubmit
        await provider.poll(task_id)
    assert info.value.kind == "task_unknown"


def dashscope_result(*urls: str) -> dict[str, Any]:
    content = [{"type": "image", "image": u} for u in urls]
    return {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}


async def test_dashscope_sync_body_path_and_result() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        body = {"output": dashscope_result("https://oss.example/1.png", "https://oss.example/2.png"),
                "usage": {"image_count": 2}, "request_id": "ds-1"}
        return httpx.Response(200, json=body)

    provider, gw = make(DashScopeProvider, respond)
    generation = await provider.generate(job(size="1920*1080", n=2, watermark=False, thinking_mode=True))
    request = gw.requests[0]
    assert str(request.url) == f"{DS_BASE}/api/v1/services/aigc/multimodal-generation/generation"
    assert "x-dashscope-async" not in request.headers
    assert gw.bodies()[0] == {
        "model": "wan2.7-image-pro",
        "input": {"messages": [{"role": "user", "content": [{"text": "a red door"}]}]},
        "parameters": {"size": "1920*1080", "n": 2, "watermark": False, "thinking_mode": True, "seed": 7},
    }
    assert [(i.index, i.url) for i in generation.images] == [(0, "https://oss.example/1.png"),
                                                            (1, "https://oss.example/2.png")]
    assert generation.request_id == "ds-1"


async def test_dashscope_async_submit_and_every_task_status() -> None:
    statuses = {"t-pend": "PENDING", "t-run": "RUNNING", "t-ok": "SUCCEEDED", "t-fail": "FAILED",
                "t-cancel": "CANCELED", "t-unknown": "UNKNOWN"}

    def respond(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            output = {"task_id": "t-ok", "task_status": "PENDING"}
            return httpx.Response(200, json={"request_id": "r", "output": output})
        task_id = request.url.path.rsplit("/", 1)[1]
        output: dict[str, Any] = {"task_id": task_id, "task_status": statuses[task_id]}
        if task_id == "t-ok":
            output.update(dashscope_result("https://oss.example/x.png"))
        if task_id == "t-fail":
            output.update(code="InternalError.Algo", message="Inner error: image generation failed.")
        return httpx.Response(200, json={"request_id": "r2", "output": output})

    provider, gw = make(DashScopeProvider, respond, use_async=True, base_url=DS_BASE + "/api/v1/")
    assert await provider.submit(job()) == "t-ok"
    submit = gw.requests[0]
    assert str(submit.url) == f"{DS_BASE}/api/v1/services/aigc/image-generation/generation"
    assert submit.headers["x-dashscope-async"] == "enable"
    assert (await provider.poll("t-pend")).generation is None
    assert (await provider.poll("t-run")).status == "running"
    done = await provider.poll("t-ok")
    assert done.generation is not None and done.generation.images[0].url == "https://oss.example/x.png"
    assert str(gw.requests[-1].url) == f"{DS_BASE}/api/v1/tasks/t-ok"
    finals = (("t-fail", "task_failed"), ("t-cancel", "task_canceled"), ("t-unknown", "task_unknown"))
    for task_id, kind in finals:
        with pytest.raises(RefusedError) as info:
            await provider.poll(task_id)
        assert info.value.kind == kind
    with pytest.raises(RefusedError) as failed:
        await provider.poll("t-fail")
    assert "InternalError.Algo" in failed.value.message


# ---------------------------------------------------------------------------------------- errors

NEW_API_MESSAGE = ("invalid request body: json: cannot unmarshal string into Go struct field "
                   "GeneralOpenAIRequest.response_format of type dto.ResponseFormat (request id: NA1)")
ERROR_TABLE: list[tuple[str, Handler, type[GatewayError], str]] = [
    ("400 moderation", openai_error(400, "Input data may contain inappropriate content.", "ali_error",
                                    "DataInspectionFailed"), RefusedError, "moderation"),
    ("400 invalid parameter", openai_error(400, "size not supported", "ali_error", "InvalidParameter"),
     RefusedError, "invalid_parameter"),
    ("400 new_api", openai_error(400, NEW_API_MESSAGE, "new_api_error", "invalid_request"),
     RefusedError, "invalid_request"),
    ("500 new_api", openai_error(500, NEW_API_MESSAGE, "new_api_error", "invalid_request"),
     RefusedError, "invalid_request"),
    ("401", openai_error(401, "Invalid API-key provided.", "invalid_request_error", "InvalidApiKey"),
     FatalError, "auth"),
    ("403 arrearage", openai_error(403, "Access denied, account in arrears", "", "Arrearage"),
     FatalError, "forbidden"),
    ("404 route", raw(404, b"404 page not found", "text/plain"), FatalError, "not_found"),
    ("408", openai_error(408, "request timeout"), TransientError, "server_error"),
    ("500", openai_error(500, "internal error", "ali_error", "InternalError"), TransientError,
     "server_error"),
    ("502", openai_error(502, "bad gateway"), TransientError, "server_error"),
    ("503 no channel", openai_error(503, "no available channel for model", "new_api_error",
                                    "model_not_found"), TransientError, "server_error"),
    ("504", raw(504, b""), TransientError, "server_error"),
    ("429 throttling", openai_error(429, "Requests rate limit exceeded", "", "Throttling.RateQuota"),
     TransientError, "rate_limited"),
    ("429 limiter", openai_error(429, "too many requests", "", ""), TransientError, "rate_limited"),
    ("524 html", raw(524, b"<html><head><title>A timeout occurred</title></head><body>524</body></html>"),
     AmbiguousError, "proxy_timeout"),
    ("200 error", openai_error(200, "Inner error", "ali_error", "InternalError.Algo"), RefusedError,
     "upstream_error"),
    ("200 throttled", openai_error(200, "rate limited upstream", "ali_error", "Throttling.RateQuota"),
     TransientError, "rate_limited"),
    # A 200 that cannot be read was made and billed all the same: ambiguous, not transient.
    ("200 html", raw(200, b"<html><body>maintenance</body></html>"), AmbiguousError, "unreadable_answer"),
    ("200 empty", raw(200, b"", "application/json"), AmbiguousError, "unreadable_answer"),
    ("200 truncated", raw(200, b'{"created": 1, "data": [{"url": "http://x/a.png"', "application/json"),
     AmbiguousError, "unreadable_answer"),
    ("200 data not a list",
     raw(200, b'{"created": 1, "data": {"url": "http://x/a.png"}}', "application/json"),
     AmbiguousError, "unreadable_answer"),
    ("html 500", raw(500, b"<html><title>500 Internal Server Error</title></html>"), TransientError,
     "server_error"),
    ("empty 502", raw(502, b""), TransientError, "server_error"),
]


@pytest.mark.parametrize(("respond", "cls", "kind"), [row[1:] for row in ERROR_TABLE],
                         ids=[row[0] for row in ERROR_TABLE])
async def test_error_table(respond: Handler, cls: type[GatewayError], kind: str) -> None:
    provider, _ = make(FlatProvider, respond)
    with pytest.raises(GatewayError) as info:
        await provider.generate(job())
    assert type(info.value) is cls and info.value.kind == kind
    assert info.value.message and "Traceback" not in info.value.message


async def test_dashscope_error_bodies_classify_the_same_way() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        code = json.loads(request.content)["input"]["messages"][0]["content"][0]["text"]
        status = {"DataInspectionFailed": 400, "InvalidParameter": 400, "InvalidApiKey": 401,
                  "Throttling.RateQuota": 429, "InternalError": 500}[code]
        return httpx.Response(status, json={"request_id": f"rid-{code}", "code": code, "message": "m"})

    provider, _ = make(DashScopeProvider, respond)
    expected = {"DataInspectionFailed": (RefusedError, "moderation"), "InvalidParameter": (RefusedError,
                "invalid_parameter"), "InvalidApiKey": (FatalError, "auth"),
                "Throttling.RateQuota": (TransientError, "rate_limited"), "InternalError": (TransientError,
                "server_error")}
    for code, (cls, kind) in expected.items():
        with pytest.raises(GatewayError) as info:
            await provider.generate(job(prompt=code))
        assert (type(info.value), info.value.kind, info.value.request_id) == (cls, kind, f"rid-{code}")


async def test_a_submission_answered_with_an_unreadable_task_id_is_ambiguous() -> None:
    """The task exists and will bill; without a readable id it cannot be polled: never resubmit it
    as if the submission had failed."""
    for body in (b'{"id": 12345, "status": "queued"}', b"<html>ok</html>"):
        provider, _ = make(ParametersProvider, raw(200, body, "application/json"), use_async=True)
        with pytest.raises(AmbiguousError):
            await provider.submit(job())


async def test_524_and_html_while_polling_are_transient() -> None:
    provider, _ = make(ParametersProvider, raw(524, b"<html>timeout</html>"), use_async=True)
    with pytest.raises(TransientError):
        await provider.poll("task_1")


async def test_errors_name_the_key_variable_and_the_request_id_but_never_the_key() -> None:
    echo = openai_error(401, f"Invalid API-key provided: {KEY} (request id: 2024ABC)",
                        "invalid_request_error",
                        "InvalidApiKey")
    provider, _ = make(FlatProvider, echo)
    with pytest.raises(FatalError) as info:
        await provider.generate(job())
    error = info.value
    assert "$WAN_API_KEY" in error.message and error.request_id == "2024ABC" and "2024ABC" in error.message
    assert KEY not in str(error) and KEY not in repr(error) and KEY not in repr(error.args)
    assert KEY not in repr(provider) and KEY not in str(provider)


async def test_the_key_is_in_no_error_message_of_the_table() -> None:
    """Gateways echo keys in messages; every row of the table must scrub it."""
    scrubbed = 0
    for name, respond, _, _ in ERROR_TABLE:
        def leaky(request: httpx.Request, respond: Handler = respond) -> httpx.Response:
            answer = respond(request)
            try:
                body = json.loads(answer.content)
                body["error"]["message"] += f" key={KEY}"
                content = json.dumps(body).encode()
            except (ValueError, KeyError, TypeError):  # not JSON, or JSON without an error object
                content = f"bad key {KEY}".encode() + answer.content
            return httpx.Response(answer.status_code, content=content, headers={"x-request-id": "rid"})

        provider, _ = make(FlatProvider, leaky)
        with pytest.raises(GatewayError) as info:
            await provider.generate(job())
        assert KEY not in str(info.value) and KEY not in repr(info.value), name
        scrubbed += "key=***" in info.value.message or "bad key ***" in info.value.message
    assert scrubbed >= len(ERROR_TABLE) - 3  # the rest show only a page title or a status


async def test_request_id_comes_from_the_header() -> None:
    provider, _ = make(FlatProvider, openai_error(500, "boom", **{"x-request-id": "hdr-7"}))
    with pytest.raises(TransientError) as info:
        await provider.generate(job())
    assert info.value.request_id == "hdr-7" and "hdr-7" in info.value.message and info.value.status == 500


# ---------------------------------------------------------------------------------------- Retry-After


def test_retry_after_seconds_date_and_ms() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    assert 28 <= (parse_retry_after(httpx.Headers({"Retry-After": date}), now=now) or 0) <= 30
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": past}), now=now) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "-3"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


async def test_retry_after_reaches_the_error() -> None:
    provider, _ = make(FlatProvider, openai_error(429, "slow down", **{"Retry-After": "12"}))
    with pytest.raises(TransientError) as info:
        await provider.generate(job())
    assert info.value.retry_after == 12.0
    provider, _ = make(FlatProvider, openai_error(503, "busy", **{"retry-after-ms": "1500"}))
    with pytest.raises(TransientError) as info:
        await provider.generate(job())
    assert info.value.retry_after == 1.5


# ---------------------------------------------------------------------------------------- answers


async def test_short_data_and_empty_items_leave_their_slots_missing() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return images_answer({"url": "https://oss.example/0.png", "b64_json": "", "revised_prompt": "better"},
                             {"url": "", "b64_json": "", "revised_prompt": ""},
                             {"url": "", "b64_json": "aGVsbG8=", "revised_prompt": ""})

    provider, _ = make(FlatProvider, respond)
    generation = await provider.generate(job(n=4))
    assert [(i.index, i.url, i.b64_json) for i in generation.images] == [
        (0, "https://oss.example/0.png", None), (2, None, "aGVsbG8=")]
    assert generation.images[0].revised_prompt == "better" and generation.request_id == "req-1"


async def test_null_data_is_an_answer_with_no_images() -> None:
    provider, _ = make(FlatProvider, lambda r: httpx.Response(200, json={"created": 1, "data": None}))
    assert (await provider.generate(job())).images == []


# ---------------------------------------------------------------------------------------- network


def failing(exc: type[httpx.HTTPError]) -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return respond


@pytest.mark.parametrize(("exc", "cls", "kind"), [
    (httpx.ConnectError, TransientError, "network"),
    (httpx.ConnectTimeout, TransientError, "network"),
    (httpx.ReadTimeout, AmbiguousError, "timeout"),
    (httpx.RemoteProtocolError, AmbiguousError, "timeout"),
    (httpx.ReadError, AmbiguousError, "timeout"),
])
async def test_network_errors_on_generate_and_submit(exc: type[httpx.HTTPError], cls: type[GatewayError],
                                                     kind: str) -> None:
    provider, _ = make(ParametersProvider, failing(exc), use_async=True)
    for call in (provider.generate, provider.submit):
        with pytest.raises(GatewayError) as info:
            await call(job())
        assert (type(info.value), info.value.kind) == (cls, kind)


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_any_network_error_while_polling_is_transient(exc: type[httpx.HTTPError]) -> None:
    provider, _ = make(DashScopeProvider, failing(exc), use_async=True)
    with pytest.raises(TransientError):
        await provider.poll("t-1")


async def test_a_base_url_without_scheme_is_a_clear_fatal_error() -> None:
    async with httpx.AsyncClient() as client:  # the real transport refuses the URL before any I/O
        provider = FlatProvider(base_url="gateway.example/v1", api_key=KEY, client=client, name="gw")
        with pytest.raises(FatalError) as info:
            await provider.generate(job())
    assert info.value.kind == "not_found" and "http" in info.value.message


async def test_an_error_body_while_polling_is_retried_unless_the_task_failed() -> None:
    error = {"message": "upstream hiccup", "type": "ali_error", "code": "InternalError"}
    provider, _ = make(ParametersProvider, lambda r: httpx.Response(200, json={"error": error}),
                       use_async=True)
    with pytest.raises(TransientError) as info:
        await provider.poll("task_1")
    assert info.value.kind == "upstream_error"
