"""The mock's DashScope handler: messages-shaped body, sync and async endpoints at the server root."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wanbatch.mock import answers
from wanbatch.mock.app import MockGateway
from wanbatch.mock.config import MockConfig
from wanbatch.mock.dialects import (
    BadRequest,
    GenRequest,
    check_bool,
    check_edit,
    check_model,
    check_palette,
    check_seed,
    check_size,
    int_in,
    no_unknown,
    parse_content,
)
from wanbatch.mock.registry import MockDialect, MockRoute, register_mock_dialect
from wanbatch.mock.tasks import Task
from wanbatch.models import PARAM_KEYS, max_n

DASHSCOPE_KEYS = frozenset({"model", "input", "parameters"})
#: ``is_async``: the official SDK's ``ImageGeneration.async_call`` sends it (besides the header).
DASHSCOPE_PARAM_KEYS = frozenset({"size", "n", "seed", "is_async", "bbox_list", *PARAM_KEYS})
_STATUS = {"queued": "PENDING", "processing": "RUNNING", "succeeded": "SUCCEEDED", "failed": "FAILED"}


class DashScope(MockDialect):
    name = "dashscope"
    family = "dashscope"
    base_path = ""
    always_at_root = True
    routes = (MockRoute("POST", "/api/v1/services/aigc/multimodal-generation/generation", "generate"),
              MockRoute("POST", "/api/v1/services/aigc/image-generation/generation", "submit"),
              MockRoute("GET", "/api/v1/tasks/{task_id}", "poll"))

    def parse(self, body: dict[str, Any]) -> GenRequest:
        no_unknown(body, DASHSCOPE_KEYS, "", invalid=True)
        model = check_model(body.get("model"))
        prompt, inputs = _prompt(body.get("input"))
        inner = body.get("parameters", {})
        if not isinstance(inner, dict):
            raise BadRequest("invalid", "parameters must be an object")
        no_unknown(inner, DASHSCOPE_PARAM_KEYS, "parameters.", invalid=True)
        for key in ("enable_sequential", "thinking_mode", "watermark", "is_async"):
            check_bool(inner, key, "parameters.", invalid=True)
        check_palette(inner.get("color_palette"), allow_theme=False)
        norm, width, height = check_size(model, inner.get("size", "2K"), allow_x=False, allow_star=True,
                                         allow_tiers=True)
        n = int_in(inner.get("n", 1), "n", 1, max_n(inner.get("enable_sequential") is True))
        seed = check_seed(inner.get("seed"))
        params = {k: v for k, v in inner.items()
                  if k not in ("seed", "size", "n", "is_async") and v is not None}
        check_edit(inputs, norm, params)
        return GenRequest("dashscope", model, prompt, norm, width, height, n, seed, params=params,
                          inputs=inputs)

    def before_submit(self, request: Request, rid: str) -> Response | None:
        if request.headers.get("x-dashscope-async") != "enable":
            return answers.dashscope_error(403, "AccessDenied",
                                           "current user api does not support synchronous calls",
                                           request_id=rid)
        return None

    def refuse(self, exc: BadRequest, config: MockConfig, rid: str) -> Response:
        return answers.dashscope_error(400, "InvalidParameter", exc.message, request_id=rid)

    async def answer(self, gw: MockGateway, request: Request, req: GenRequest, count: int, expires: int,
                     rid: str) -> Response:
        urls = [gw.url(request, req, k, expires) for k in range(count)]
        body = {"output": answers.dashscope_output(urls), "usage": _usage(req, count), "request_id": rid}
        return JSONResponse(body, headers={"x-request-id": rid})

    def new_task_id(self) -> str:
        return str(uuid.uuid4())

    def submitted(self, task_id: str, rid: str) -> Response:
        body = {"request_id": rid, "output": {"task_id": task_id, "task_status": "PENDING"}}
        return JSONResponse(body, headers={"x-request-id": rid})

    async def poll(self, gw: MockGateway, request: Request, task_id: str, task: Task | None, now: float,
                   rid: str) -> Response:
        if task is None:
            return JSONResponse({"request_id": rid, "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
        phase = task.phase(now)
        output: dict[str, Any] = {"task_id": task_id, "task_status": _STATUS[phase],
                                  "submit_time": answers.iso(task.created)}
        body: dict[str, Any] = {"request_id": rid, "output": output}
        if phase == "failed":
            output.update(end_time=answers.iso(task.done_at), code="InternalError.Algo",
                          message="Inner error: image generation failed.")
        elif phase == "succeeded":
            expires = int(task.done_at + gw.config.url_ttl)
            urls = [gw.url(request, task.request, k, expires) for k in range(task.delivered)]
            output.update(end_time=answers.iso(task.done_at), **answers.dashscope_output(urls))
            body["usage"] = _usage(task.request, task.delivered)
        return JSONResponse(body, headers={"x-request-id": rid})


def _usage(req: GenRequest, count: int) -> dict[str, Any]:
    return answers.dashscope_usage(count, req.width, req.height)


def _prompt(value: Any) -> tuple[str, tuple[str, ...]]:
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(value, dict) or set(value) != {"messages"} or not isinstance(messages, list):
        raise BadRequest("invalid", "input must be {\"messages\": [...]}")
    if len(messages) != 1 or not isinstance(messages[0], dict) or messages[0].get("role") != "user":
        raise BadRequest("invalid", "input.messages must hold exactly one message with role 'user'")
    content = messages[0].get("content")
    if set(messages[0]) != {"role", "content"} or not isinstance(content, list) or not content:
        raise BadRequest("invalid", "input.messages[0] must be {\"role\": \"user\", \"content\": [...]}")
    return parse_content(content)


HANDLER = DashScope()


def register() -> None:
    register_mock_dialect(HANDLER)
