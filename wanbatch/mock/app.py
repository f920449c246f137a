"""The mock gateway as a Starlette app: every dialect of docs/protocol.md, async tasks, faults, billing.

Routes come from the dialect handlers of :mod:`wanbatch.mock.registry`: each handler's routes are
served under ``/{name}`` (``/flat/v1/images/generations``, ``/parameters/v1/tasks/{id}``, ...), and the
server's default dialect (``config.dialect``) and handlers marked ``always_at_root`` (DashScope's
``/api/v1/...``) also at the root (``/v1/images/generations``).
- ``GET /files/{token}``: the temporary "object store" links that answers point to.
- Mock-only, for tests and operations (no real gateway has them): ``GET /_mock/stats``,
  ``GET /_mock/requests`` (what arrived: path, body, headers but Authorization, what the upstream was
  asked for, fields a new-api kept aside) and ``POST /_mock/reset``; ``GET``/``POST /_mock/quota``
  (the hidden quota, :mod:`wanbatch.mock.quota`).

Order of checks for a generation: auth → ``dry_after`` → body → moderation → quota → fault → generate. A
generation is billed when it is finished: sync answers, async tasks at completion, and the
``timeout``/``524`` faults (billed, then hang or answer 524; for async submissions the task still runs
and bills).
"""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from wanbatch.mock import answers, quota
from wanbatch.mock.answers import Family
from wanbatch.mock.config import MockConfig
from wanbatch.mock.dialects import BadRequest, GenRequest, load_json, scrub
from wanbatch.mock.faults import FaultPicker, FileFaultPicker
from wanbatch.mock.images import ImageRef, PngRenderer, default_kb, image_digest, iter_parts
from wanbatch.mock.registry import MockDialect, MockRoute, get_mock_dialect, mock_dialect_names
from wanbatch.mock.stats import Stats
from wanbatch.mock.tasks import Task, TaskStore

#: Faults answered at once, before anything is generated (nothing billed).
_EARLY = frozenset({"429", "429_retry_after", "500", "502", "503", "html_500", "empty_502", "200_error",
                    "403"})
#: Faults answered after the images were made and billed, with a 200 the client cannot read.
_UNREADABLE = frozenset({"200_html", "200_truncated", "200_not_a_list"})
_STREAM_ABOVE = 1 << 20
MAX_LOG = 500
#: Request headers ``/_mock/requests`` shows (never Authorization).
_LOGGED_HEADERS = frozenset({"content-type", "x-dashscope-async", "user-agent", "accept"})
ARREARAGE_MESSAGE = "Access denied, please make sure your account is in good standing."
Handler = Callable[[Request], Awaitable[Response]]


class MockGateway:
    """State and handlers of one mock gateway; :func:`create_app` wires it into routes."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.renderer = PngRenderer()
        self.route_dialects: dict[str, MockDialect] = {}
        self.reset()

    def reset(self) -> None:
        self.stats = Stats()
        self.faults = FaultPicker(self.config)
        self.file_faults = FileFaultPicker(self.config)
        self.latency_rng = random.Random(f"latency-{self.config.fault_seed}")
        self.tasks = TaskStore(self._task_finished)
        self.variants = itertools.count()
        cfg = self.config
        self.quota = quota.Quota(cfg.max_inflight, cfg.quota_rpm, window=cfg.quota_window,
                                 retry_after=cfg.quota_retry_after)
        self.seedless_rng = random.Random(f"seedless-{self.config.fault_seed}")  # reproducible, like faults
        self.generations = 0  # generation requests seen, for ``dry_after``
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG)

    # -- generation -------------------------------------------------------------------------------

    async def generate(self, request: Request, dialect: MockDialect, route: str,
                       submit: bool = False) -> Response:
        family = dialect.family
        rid = _request_id(family)
        raw = await request.body()
        body = self._record(route, raw, request)
        denied = self._auth(request, family, rid) or self._dry(family, rid)
        if denied is not None:
            return denied
        if submit and (refused := dialect.before_submit(request, rid)) is not None:
            return refused
        try:
            req = dialect.parse(body if body is not None else load_json(raw))
        except BadRequest as exc:
            return dialect.refuse(exc, self.config, rid)
        if req.seed is None:  # the upstream draws a seed of its own: same request, other images
            req = replace(req, noise=self.seedless_rng.randrange(1 << 30))
        self._log_upstream(req)
        if any(word.lower() in req.prompt.lower() for word in self.config.moderation_words):
            return answers.error(family, 400, "DataInspectionFailed",
                                 "Input data may contain inappropriate content.", request_id=rid)
        if not self.quota.admit(time.time(), self.stats.in_flight + self.tasks.pending):
            return quota.throttled_response(self.quota, family, rid)
        use_async = submit or req.use_async
        fault = self.faults.pick(req.billing_key(), n=req.n, use_async=use_async)
        if fault in _EARLY:
            return answers.fault(fault, family, request_id=rid, model=req.model, variant=next(self.variants))
        self.stats.enter()
        try:
            if use_async:
                return await self._submit(request, dialect, req, fault, rid)
            return await self._sync(request, dialect, req, fault, rid)
        finally:
            self.stats.leave()

    async def _sync(self, request: Request, dialect: MockDialect, req: GenRequest, fault: str | None,
                    rid: str) -> Response:
        await anyio.sleep(self.config.latency_dist.sample(self.latency_rng))
        delivered = req.n - 1 if fault == "short_data" else req.n
        self.stats.bill(req.billing_key(), delivered)
        if fault in ("timeout", "524"):
            return await self._ambiguous(request, fault, dialect.family, req, rid)
        expires = int(time.time() + self.config.url_ttl)
        answer = await dialect.answer(self, request, req, delivered, expires, rid)
        if fault in _UNREADABLE and isinstance(answer, JSONResponse):  # made and billed, then mangled
            return answers.unreadable_200(fault, json.loads(bytes(answer.body)))
        return answer

    async def _submit(self, request: Request, dialect: MockDialect, req: GenRequest, fault: str | None,
                      rid: str) -> Response:
        if self.config.submit_latency:  # a slow submission: the task starts when its id is answered
            await anyio.sleep(self.config.submit_latency)
        now = time.time()
        duration = self.config.task_duration
        if duration is None:
            duration = self.config.latency_dist.sample(self.latency_rng)
        task_id = dialect.new_task_id()
        delivered = req.n - 1 if fault == "short_data" else req.n
        self.tasks.add(Task(task_id, req, now, now + duration, fault == "task_fail", delivered), now)
        if fault in ("timeout", "524"):
            return await self._ambiguous(request, fault, dialect.family, req, rid)
        return dialect.submitted(task_id, rid)

    async def _ambiguous(self, request: Request, fault: str, family: Family, req: GenRequest,
                         rid: str) -> Response:
        if fault == "timeout":
            await _hang(request, self.config.hang)
        return answers.fault(fault, family, request_id=rid, model=req.model, variant=0)

    def _task_finished(self, task: Task) -> None:
        if not task.fail:
            self.stats.bill(task.request.billing_key(), task.delivered)

    # -- tasks ----------------------------------------------------------------------------------

    async def poll(self, request: Request, dialect: MockDialect) -> Response:
        rid = _request_id(dialect.family)
        self.log.append({"method": "GET", "path": request.url.path})
        denied = self._auth(request, dialect.family, rid)
        if denied is not None:
            return denied
        task_id = request.path_params["task_id"]
        task = self.tasks.get(task_id)
        if task is not None and task.request.dialect != dialect.name:
            task = None
        return await dialect.poll(self, request, task_id, task, time.time(), rid)

    # -- files ----------------------------------------------------------------------------------

    async def download(self, request: Request) -> Response:
        rid = uuid.uuid4().hex[:24].upper()
        if "authorization" in request.headers:
            self.stats.download_auth += 1
            return answers.oss_error(400, "InvalidArgument", "Unsupported Authorization Type", request_id=rid)
        ref = ImageRef.from_token(request.path_params["token"])
        # counted per image (not per link): a link issued again for the same image continues the count
        fault = self.file_faults.pick(ref.digest.hex() if ref is not None else request.path_params["token"])
        if fault == "403":
            return answers.oss_error(403, "AccessDenied", "Request has expired.", request_id=rid)
        if fault is not None:
            return answers.oss_error(int(fault), "InternalError", "We encountered an internal error. Please "
                                     "try again.", request_id=rid)
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
        """The counters; ``?bodies=0`` leaves out the recent request bodies (cheap enough to poll)."""
        return JSONResponse(self.stats.snapshot(bodies=request.query_params.get("bodies") != "0"))

    async def reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    # -- helpers --------------------------------------------------------------------------------

    def _record(self, route: str, raw: bytes, request: Request | None = None) -> dict[str, Any] | None:
        """Keep the body for ``/_mock/stats`` and ``/_mock/requests``; return it when it is a JSON object."""
        try:
            parsed: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            parsed = raw.decode("utf-8", "replace")
        kept_body = scrub(parsed)  # input images are kept as their sha256, not their bytes
        self.stats.bodies.append({"route": route, "body": kept_body})
        entry: dict[str, Any] = {"method": "POST", "path": route, "body": kept_body}
        if request is not None:
            entry["headers"] = {k: v for k, v in request.headers.items() if k.lower() in _LOGGED_HEADERS}
        kept = getattr(self._dialect_of(route), "kept_aside", None)
        if kept is not None and isinstance(parsed, dict):
            entry["kept_aside"] = kept(parsed)
        self.log.append(entry)
        return parsed if isinstance(parsed, dict) else None

    def _dialect_of(self, route: str) -> MockDialect | None:
        return self.route_dialects.get(route)

    def _log_upstream(self, req: GenRequest) -> None:
        """What the upstream model was asked for, beside the body that arrived (``/_mock/requests``)."""
        if self.log:
            upstream: dict[str, Any] = {"size": req.size, "n": req.n, "seed": req.seed, "params": req.params}
            if req.inputs:  # input images as their sha256 (a URL input as is), in order
                upstream["inputs"] = list(req.inputs)
            self.log[-1]["upstream"] = upstream

    def _dry(self, family: Family, rid: str) -> Response | None:
        """``dry_after``: the key runs dry after K generation requests (every later one is refused)."""
        self.generations += 1
        limit = self.config.dry_after
        if limit is None or self.generations <= limit:
            return None
        answer = self.config.dry_answer
        if answer == "401":
            return answers.error(family, 401, "InvalidApiKey", "Invalid API-key provided.", request_id=rid,
                                 type_="invalid_request_error")
        if answer == "403":
            return answers.error(family, 403, "AllocationQuota.FreeTierOnly",
                                 "The free tier of the model has been exhausted.", request_id=rid)
        return answers.error(family, 400, "Arrearage", ARREARAGE_MESSAGE, request_id=rid)

    async def requests_endpoint(self, request: Request) -> Response:
        return JSONResponse({"requests": list(self.log)})

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
            return answers.error(family, self.config.arrearage_status, "Arrearage", ARREARAGE_MESSAGE,
                                 request_id=rid)
        return None

    def _ref(self, req: GenRequest, slot: int, expires: int) -> ImageRef:
        width = max(1, round(req.width * self.config.scale))
        height = max(1, round(req.height * self.config.scale))
        kb = round(self.config.image_kb) if self.config.image_kb is not None else default_kb(width, height)
        digest = image_digest(req.prompt, req.image_seed(), req.size, slot, req.inputs)
        return ImageRef(width, height, max(1, kb), digest, expires)

    def now(self) -> int:
        return int(time.time())

    def url(self, request: Request, req: GenRequest, slot: int, expires: int) -> str:
        """A temporary link to image ``slot`` of ``req``, served by ``GET /files/{token}``."""
        return f"{request.base_url}files/{self._ref(req, slot, expires).token()}"

    async def items(self, request: Request, req: GenRequest, count: int,
                    expires: int) -> list[tuple[str, str]]:
        """(url, b64_json) pairs of ``count`` images, as ``req.response_format`` asks."""
        if req.response_format == "url":
            return [(self.url(request, req, k, expires), "") for k in range(count)]
        items = []
        for k in range(count):
            png = await anyio.to_thread.run_sync(self.renderer.render, self._ref(req, k, expires))
            items.append(("", base64.b64encode(png).decode("ascii")))
        return items


def create_app(config: MockConfig) -> Starlette:
    """The mock gateway; use it in-process with ``httpx.ASGITransport(app=...)`` or serve it."""
    gw = MockGateway(config)

    def route(path: str, handler: Handler, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            gw.stats.requests[path] += 1
            gw.tasks.settle(time.time())
            return await handler(request)

        return Route(path, endpoint, methods=[method])

    def serve(dialect: MockDialect, prefix: str, only: Iterable[MockRoute] | None = None) -> list[Route]:
        served = []
        for r in dialect.routes if only is None else only:
            path = prefix + r.path
            gw.route_dialects[path] = dialect
            served.append(route(path, _action(gw, dialect, r, path), r.method))
        return served

    async def quota_endpoint(request: Request) -> Response:
        return await quota.endpoint(gw.quota, request)

    default = get_mock_dialect(config.dialect)
    routes = serve(default, "")
    taken = {(r.method, r.path) for r in default.routes}
    for name in mock_dialect_names():
        dialect = get_mock_dialect(name)
        routes += serve(dialect, f"/{name}")
        if dialect.always_at_root and dialect is not default:
            free = [r for r in dialect.routes if (r.method, r.path) not in taken]
            taken |= {(r.method, r.path) for r in free}
            routes += serve(dialect, "", free)
    routes += [
        route("/files/{token}", gw.download, "GET"),
        route("/_mock/stats", gw.stats_endpoint, "GET"),
        route("/_mock/reset", gw.reset_endpoint, "POST"),
        Route("/_mock/requests", gw.requests_endpoint, methods=["GET"]),
        Route("/_mock/quota", quota_endpoint, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found}, lifespan=_warm_up)
    app.state.gateway = gw
    return app


@asynccontextmanager
async def _warm_up(app: Starlette) -> AsyncIterator[None]:
    """Before the first request: anyio loads its event-loop backend on first use (~0.2 s here), which
    would otherwise stall the first round of generations and add to its latency."""
    await anyio.sleep(0)
    yield


def _action(gw: MockGateway, dialect: MockDialect, r: MockRoute, path: str) -> Handler:
    if r.action == "poll":
        return lambda request: gw.poll(request, dialect)
    return lambda request: gw.generate(request, dialect, path, r.action == "submit")


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
