"""The mock's "parameters" handler: nested ``parameters``, the fixed ``WxH`` list, async tasks."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wanbatch.mock import answers
from wanbatch.mock.app import MockGateway
from wanbatch.mock.dialects import (
    BadRequest,
    GenRequest,
    check_bool,
    check_model,
    check_palette,
    check_prompt,
    check_seed,
    check_size,
    int_in,
    no_unknown,
)
from wanbatch.mock.flat import OpenAIImages
from wanbatch.mock.registry import MockRoute, register_mock_dialect
from wanbatch.mock.tasks import Task
from wanbatch.models import PARAM_KEYS, PARAMETERS_SIZES as SIZES_BY_MODEL, PRO, max_n

#: The fixed size list of the "parameters" dialect (the pro model's; the first five are pro only).
PARAMETERS_SIZES: tuple[str, ...] = SIZES_BY_MODEL[PRO]
PARAMETERS_KEYS = frozenset({"model", "prompt", "size", "n", "response_format", "async", "parameters"})
#: Seed doc 001 gives defaults for size (1024x1024), n (1) and response_format (url): only these are required.
PARAMETERS_REQUIRED = ("model", "prompt")
PARAMETERS_INNER_KEYS = frozenset({"seed", *PARAM_KEYS})


class Parameters(OpenAIImages):
    name = "parameters"
    routes = (MockRoute("POST", "/v1/images/generations", "generate"),
              MockRoute("GET", "/v1/tasks/{task_id}", "poll"))

    def parse(self, body: dict[str, Any]) -> GenRequest:
        no_unknown(body, PARAMETERS_KEYS, "")
        for key in PARAMETERS_REQUIRED:
            if key not in body:
                raise BadRequest("malformed", f"invalid request body: field {key!r} is required")
        inner = body.get("parameters", {})
        if not isinstance(inner, dict):
            raise BadRequest("malformed", "invalid request body: 'parameters' must be an object")
        no_unknown(inner, PARAMETERS_INNER_KEYS, "parameters.")
        for key in ("enable_sequential", "thinking_mode", "watermark"):
            check_bool(inner, key, "parameters.")
        check_palette(inner.get("color_palette"))
        use_async = body.get("async", False)
        if not isinstance(use_async, bool):
            raise BadRequest("malformed", "invalid request body: 'async' must be a boolean")
        response_format = body.get("response_format", "url")
        if response_format not in ("url", "b64_json"):
            raise BadRequest("invalid",
                             f"response_format must be 'url' or 'b64_json', not {response_format!r}")
        model = check_model(body.get("model"))
        prompt = check_prompt(body.get("prompt"))
        size = body.get("size", "1024x1024")
        allowed = SIZES_BY_MODEL[model]
        if not isinstance(size, str) or size not in allowed:
            raise BadRequest("invalid",
                             f"size {size!r} is not supported by {model}; use one of: {', '.join(allowed)}")
        norm, width, height = check_size(model, size, allow_x=True, allow_star=False, allow_tiers=False)
        n = int_in(body.get("n", 1), "n", 1, max_n(inner.get("enable_sequential") is True))
        seed = check_seed(inner.get("seed"))
        params = {k: v for k, v in inner.items() if k != "seed" and v is not None}
        return GenRequest(
            "parameters", model, prompt, norm, width, height, n, seed, response_format, use_async, params
        )

    def new_task_id(self) -> str:
        return f"task_{uuid.uuid4().hex}"

    def submitted(self, task_id: str, rid: str) -> Response:
        return JSONResponse({"id": task_id, "status": "queued", "progress": 0}, headers={"x-request-id": rid})

    async def poll(self, gw: MockGateway, request: Request, task_id: str, task: Task | None, now: float,
                   rid: str) -> Response:
        if task is None:
            return answers.openai_error(404, f"task {task_id} not found", type_="invalid_request_error",
                                        code="task_not_found", request_id=rid)
        phase = task.phase(now)
        headers = {"x-request-id": rid}
        if phase in ("queued", "processing"):
            body = {"id": task_id, "status": phase, "progress": task.progress(now)}
            return JSONResponse(body, headers=headers)
        if phase == "failed":
            error = {"message": f"Inner error: image generation failed (request id: {rid})",
                     "type": "ali_error", "param": "", "code": "InternalError.Algo"}
            return JSONResponse({"id": task_id, "status": "failed", "error": error}, headers=headers)
        expires = int(task.done_at + gw.config.url_ttl)
        items = await gw.items(request, task.request, task.delivered, expires)
        return JSONResponse(answers.openai_images(items, int(task.done_at)), headers=headers)


HANDLER = Parameters()


def register() -> None:
    register_mock_dialect(HANDLER)
