"""The mock gateway as a Starlette app: every dialect of PROTOCOL.md, async tasks, faults, billing.

Routes (``{dialect}`` is the server default, ``flat`` or ``parameters``):

- ``POST /v1/images/generations`` ({dialect}), ``POST /flat/v1/images/generations``,
  ``POST /parameters/v1/images/generations``; ``GET /parameters/v1/tasks/{id}`` and, when the default
  dialect is ``parameters``, ``GET /v1/tasks/{id}``.
- DashScope: ``POST /api/v1/services/aigc/multimodal-generation/generation`` (sync),
  ``POST /api/v1/services/aigc/image-generation/generation`` (needs ``X-DashScope-Async: enable``),
  ``GET /api/v1/tasks/{task_id}``.
- ``GET /files/{token}``: the temporary "object store" links that answers point to.
- Mock-only, for tests and operations (no real gateway has them): ``GET /_mock/stats`` and
  ``POST /_mock/reset``; ``GET``/``POST /_mock/quota`` (the hidden quota, :mod:`wanbatch.mock.quota`).

Order of checks for a generation: auth → body → moderation → quota → fault → generate. A generation is billed
when it is finished: sync answers, async tasks at completion, and the ``timeout``/``524`` faults
(billed, then hang or answer 524; for async submissions the task still runs and bills).
"""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from wanbatch.mock import answers, quota
from wanbatch.mock.answers import Family
from wanbatch.mock.config import MockConfig
from wanbatch.mock.dialects import (
    BadRequest,
    DialectName,
    GenRequest,
    load_json,
    parse_dashscope,
    parse_flat,
    parse_parameters,
)
from wanbatch.mock.faults import FaultPicker
from wanbatch.mock.images import ImageRef, PngRenderer, default_kb, image_digest, iter_parts
from wanbatch.mock.stats import Stats
from wanbatch.mock.tasks import Task, TaskStore

#: Faults answered at once, before anything is generated (nothing billed).
_EARLY = frozenset({"429", "429_retry_after", "500", "502", "503", "html_500", "empty_502", "200_error"})
_STREAM_ABOVE = 1 << 20
_PARSERS: dict[DialectName, Callable[[dict[str, Any]], GenRequest]] = {
    "flat": parse_flat,
    "parameters": parse_parameters,
    "dashscope": parse_dashscope,
}

Handler = Callable[[Request], Awaitable[Response]]


class MockGateway:
    """State and handlers of one mock gateway; :func:`create_app` wires it into routes."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.renderer = PngRenderer()
        self.reset()

    def reset(self) -> None:
        self.stats = Stats()
        self.faults = FaultPicker(self.config)
        self.latency_rng = random.Random(f"latency-{self.config.fault_seed}")
        self.tasks = TaskStore(self._task_finished)
        self.variants = itertools.count()
        cfg = self.config
        self.quota = quota.Quota(cfg.max_inflight, cfg.quota_rpm, window=cfg.quota_window,
                                 retry_after=cfg.quota_retry_after)

    # -- generation -------------------------------------------------------------------------------

    async def generate(self, request: Request, dialect: DialectName, route: str, submit: bool = False) -> Response:
        family: Family = "dashscope" if dialect == "dashscope" else "openai"
        rid = _request_id(family)
        raw = await request.body()
        body = self._record(route, raw)
        denied = self._auth(request, family, rid)
        if denied is not None:
            return denied
        if submit and request.headers.get("x-dashscope-async") != "enable":
            return answers.dashscope_error(403, "AccessDenied", "current user api does not support synchronous calls",
                                           request_id=rid)
        try:
            req = _PARSERS[dialect](body if body is not None else load_json(raw))
        except BadRequest as exc:
            return self._refuse(exc, dialect, rid)
        if any(word.lower() in req.prompt.lower() for word in self.config.moderation_words):
            return answers.error(family, 400, "DataInspectionFailed", "Input data may contain inappropriate content.",
                                 request_id=rid)
        if not self.quota.admit(time.time(), self.stats.in_flight + self.tasks.pending):
            return quota.throttled_response(self.quota, family, rid)
        use_async = submit or req.use_async
        fault = self.faults.pick(req.billing_key(), n=req.n, use_async=use_async)
        if fault in _EARLY:
            return answers.fault(fault, family, request_id=rid, model=req.model, variant=next(self.variants))
        self.stats.enter()
        try:
            if use_async:
                return await self._submit(request, req, fault, rid)
            return await self._sync(request, req, fault, rid)
        finally:
            self.stats.leave()

    async def _sync(self, request: Request, req: GenRequest, fault: str | None, rid: str) -> Response:
        await anyio.sleep(self.config.latency_dist.sample(self.latency_rng))
        delivered = req.n - 1 if fault == "short_data" else req.n
        self.stats.bill(req.billing_key(), delivered)
        if fault in ("timeout", "524"):
            return await self._ambiguous(request, fault, req, rid)
        expires = int(time.time() + self.config.url_ttl)
        if req.dialect == "dashscope":
            urls = [self._url(request, req, k, expires) for k in range(delivered)]
            body = {"output": answers.dashscope_output(urls), "usage": self._usage(req, delivered), "request_id": rid}
            return JSONResponse(body, headers={"x-request-id": rid})
        items = await self._items(request, req, delivered, expires)
        return JSONResponse(answers.openai_images(items, int(time.time())), headers={"x-request-id": rid})

    async def _submit(self, request: Request, req: GenRequest, fault: str | None, rid: str) -> Response:
        now = time.time()
        duration = self.config.task_duration
        if duration is None:
            duration = self.config.latency_dist.sample(self.latency_rng)
        task_id = f"task_{uuid.uuid4().hex}" if req.dialect == "parameters" else str(uuid.uuid4())
        delivered = req.n - 1 if fault == "short_data" else req.n
        self.tasks.add(Task(task_id, req, now, now + duration, fault == "task_fail", delivered), now)
        if fault in ("timeout", "524"):
            return await self._ambiguous(request, fault, req, rid)
        if req.dialect == "parameters":
            return JSONResponse({"id": task_id, "status": "queued", "progress": 0}, headers={"x-request-id": rid})
        body = {"request_id": rid, "output": {"task_id": task_id, "task_status": "PENDING"}}
        return JSONResponse(body, headers={"x-request-id": rid})

    async def _ambiguous(self, request: Request, fault: str, req: GenRequest, rid: str) -> Response:
        if fault == "timeout":
            await _hang(request, self.config.hang)
        family: Family = "dashscope" if req.dialect == "dashscope" else "openai"
        return answers.fault(fault, family, request_id=rid, model=req.model, variant=0)

    def _task_finished(self, task: Task) -> None:
        if not task.fail:
            self.stats.bill(task.request.billing_key(), task.delivered)

    # -- tasks ----------------------------------------------------------------------------------

    async def poll_parameters(self, request: Request) -> Response:
        rid = _request_id("openai")
        denied = self._auth(request, "openai", rid)
        if denied is not None:
            return denied
        now = time.time()
        task_id = request.path_params["task_id"]
        task = self.tasks.get(task_id)
        if task is None or task.request.dialect != "parameters":
            return answers.openai_error(404, f"task {task_id} not found", type_="invalid_request_error",
                                        code="task_not_found", request_id=rid)
        phase = task.phase(now)
        headers = {"x-request-id": rid}
        if phase in ("queued", "processing"):
            return JSONResponse({"id": task_id, "status": phase, "progress": task.progress(now)}, headers=headers)
        if phase == "failed":
            error = {"message": f"Inner error: image generation failed (request id: {rid})", "type": "ali_error",
                     "param": "", "code": "InternalError.Algo"}
            return JSONResponse({"id": task_id, "status": "failed", "error": error}, headers=headers)
        expires = int(task.done_at + self.config.url_ttl)
        items = await self._items(request, task.request, task.delivered, expires)
        return JSONResponse(answers.openai_images(items, int(task.done_at)), headers=headers)

    async def poll_dashscope(self, request: Request) -> Response:
        rid = _request_id("dashscope")
        denied = self._auth(request, "dashscope", rid)
        if denied is not None:
            return denied
        now = time.time()
        task_id = request.path_params["task_id"]
        task = self.tasks.get(task_id)
        if task is None or task.request.dialect != "dashscope":
            return JSONResponse({"request_id": rid, "output": {"task_id": task_id, "task_status": "UNKNOWN"}})
        phase = task.phase(now)
        status = {"queued": "PENDING", "processing": "RUNNING", "succeeded": "SUCCEEDED", "failed": "FAILED"}[phase]
        output: dict[str, Any] = {"task_id": task_id, "task_status": status,
                                  "submit_time": answers.iso(task.created)}
        body: dict[str, Any] = {"request_id": rid, "output": output}
        if phase == "failed":
            output.update(end_time=answers.iso(task.done_at), code="InternalError.Algo",
                          message="Inner error: image generation failed.")
        elif phase == "succeeded":
            expires = int(task.done_at + self.config.url_ttl)
            urls = [self._url(request, task.request, k, expires) for k in range(task.delivered)]
            output.update(end_time=answers.iso(task.done_at), **answers.dashscope_output(urls))
            body["usage"] = self._usage(task.request, task.delivered)
        return JSONResponse(body, headers={"x-request-id": rid})

    # -- files ----------------------------------------------------------------------------------

    async def download(self, request: Request) -> Response:
        rid = uuid.uuid4().hex[:24].upper()
        if "authorization" in request.headers:
            self.stats.download_auth += 1
            return answers.oss_error(400, "InvalidArgument", "Unsupported Authorization Type", request_id=rid)
        ref = ImageRef.from_token(request.path_params["token"])
        if ref is None:
            return answers.oss_error(404, "NoSuchKey", "The specified key does not exist.", request_id=rid)
        now = time.time()
        if now >= ref.expires:
            extra = {"Expires": answers.iso(ref.expires), "ServerTime": answers.iso(now)}
            return answers.oss_error(403, "AccessDenied", "Request has expired.", request_id=rid, extra=extra)
        if self.renderer.has_base(ref):
            parts, total = self.renderer.parts(ref)
        else:  # building a base can take a while (0.4 s at 4K): keep the event loop free
            parts, total = await anyio.to_thread.run_sync(self.renderer.parts, ref)
        headers = {"x-oss-request-id": rid, "cache-control": "no-cache"}
        if total <= _STREAM_ABOVE:
            return Response(b"".join(parts), media_type="image/png", headers=headers)
        headers["content-length"] = str(total)
        return StreamingResponse(iter_parts(parts), media_type="image/png", headers=headers)

    # -- mock-only ------------------------------------------------------------------------------

    async def stats_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot())

    async def reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    # -- helpers --------------------------------------------------------------------------------

    def _record(self, route: str, raw: bytes) -> dict[str, Any] | None:
        """Keep the body for ``/_mock/stats``; return it when it is a JSON object."""
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self.stats.bodies.append({"route": route, "body": raw.decode("utf-8", "replace")})
            return None
        self.stats.bodies.append({"route": route, "body": parsed})
        return parsed if isinstance(parsed, dict) else None

    def _auth(self, request: Request, family: Family, rid: str) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        expected = self.config.api_key
        if scheme.lower() != "bearer" or not key or (
            expected is not None and not hmac.compare_digest(key.encode(), expected.encode())
        ):
            return answers.error(family, 401, "InvalidApiKey", "Invalid API-key provided.", request_id=rid,
                                 type_="invalid_request_error")
        if key in self.config.forbidden_keys:
            return answers.error(family, 403, "Arrearage",
                                 "Access denied, please make sure your account is in good standing.", request_id=rid)
        return None

    def _refuse(self, exc: BadRequest, dialect: DialectName, rid: str) -> Response:
        if dialect == "dashscope":
            return answers.dashscope_error(400, "InvalidParameter", exc.message, request_id=rid)
        if exc.kind == "malformed":
            status = self.config.new_api_status if dialect == "flat" else 400
            return answers.openai_error(status, exc.message, type_="new_api_error", code="invalid_request",
                                        request_id=rid)
        type_ = "ali_error" if dialect == "flat" else "invalid_request_error"
        return answers.openai_error(400, exc.message, type_=type_, code="InvalidParameter", request_id=rid)

    def _ref(self, req: GenRequest, slot: int, expires: int) -> ImageRef:
        width = max(1, round(req.width * self.config.scale))
        height = max(1, round(req.height * self.config.scale))
        kb = round(self.config.image_kb) if self.config.image_kb is not None else default_kb(width, height)
        return ImageRef(width, height, max(1, kb), image_digest(req.prompt, req.seed, req.size, slot), expires)

    def _url(self, request: Request, req: GenRequest, slot: int, expires: int) -> str:
        return f"{request.base_url}files/{self._ref(req, slot, expires).token()}"

    async def _items(self, request: Request, req: GenRequest, count: int, expires: int) -> list[tuple[str, str]]:
        if req.response_format == "url":
            return [(self._url(request, req, k, expires), "") for k in range(count)]
        items = []
        for k in range(count):
            png = await anyio.to_thread.run_sync(self.renderer.render, self._ref(req, k, expires))
            items.append(("", base64.b64encode(png).decode("ascii")))
        return items

    def _usage(self, req: GenRequest, count: int) -> dict[str, Any]:
        return answers.dashscope_usage(count, req.width, req.height)


def create_app(config: MockConfig) -> Starlette:
    """The mock gateway; use it in-process with ``httpx.ASGITransport(app=...)`` or serve it."""
    gw = MockGateway(config)

    def route(path: str, handler: Handler, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            gw.stats.requests[path] += 1
            gw.tasks.settle(time.time())
            return await handler(request)

        return Route(path, endpoint, methods=[method])

    def gen(dialect: DialectName, path: str, submit: bool = False) -> Route:
        return route(path, lambda request: gw.generate(request, dialect, path, submit), "POST")

    async def quota_endpoint(request: Request) -> Response:
        return await quota.endpoint(gw.quota, request)

    routes = [
        gen(config.dialect, "/v1/images/generations"),
        gen("flat", "/flat/v1/images/generations"),
        gen("parameters", "/parameters/v1/images/generations"),
        route("/parameters/v1/tasks/{task_id}", gw.poll_parameters, "GET"),
        gen("dashscope", "/api/v1/services/aigc/multimodal-generation/generation"),
        gen("dashscope", "/api/v1/services/aigc/image-generation/generation", submit=True),
        route("/api/v1/tasks/{task_id}", gw.poll_dashscope, "GET"),
        route("/files/{token}", gw.download, "GET"),
        route("/_mock/stats", gw.stats_endpoint, "GET"),
        route("/_mock/reset", gw.reset_endpoint, "POST"),
        Route("/_mock/quota", quota_endpoint, methods=["GET", "POST"]),
    ]
    if config.dialect == "parameters":
        routes.append(route("/v1/tasks/{task_id}", gw.poll_parameters, "GET"))
    app = Starlette(routes=routes, exception_handlers={404: _not_found})
    app.state.gateway = gw
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    body = {"error": {"message": f"Invalid URL ({request.method} {request.url.path})",
                      "type": "invalid_request_error", "param": "", "code": ""}}
    return JSONResponse(body, status_code=404)


async def _hang(request: Request, seconds: float) -> None:
    """Sleep like a stuck upstream, but stop early when the client has gone away."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await anyio.sleep(min(left, 0.25))
        if await request.is_disconnected():
            return


def _request_id(family: Family) -> str:
    return str(uuid.uuid4()) if family == "dashscope" else uuid.uuid4().hex
