"""The Provider ABC and the one translation of gateway answers into wanbatch errors.

Each dialect module only builds requests (:class:`Call`) and parses successful answers. Everything
that can go wrong between sending a request and holding a JSON object — httpx exceptions, statuses,
HTML or empty bodies, a 200 that holds an error — is classified here, once, following the rules of
:mod:`wanbatch.providers.classify` (the error table of docs/protocol.md), so the runner's retry
policy keys off the exception class alone.

The API key lives in a private attribute, goes into the ``Authorization`` header of gateway requests
only (never client-wide: image downloads from object stores must not carry it), and is scrubbed from
every message built from a gateway's answer.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx

from wanbatch.errors import AmbiguousError, FatalError, GatewayError, RefusedError, TransientError
from wanbatch.hosts import network_errors
from wanbatch.images import fit_input
from wanbatch.models import INPUT_FORMATS
from wanbatch.providers.classify import BODY_RULES, STATUS_RULES, Phase, Said, classify
from wanbatch.redact import redact_short
from wanbatch.types import DeliveredImage, Generation, Job, TaskState

_REQUEST_ID_IN_MESSAGE = re.compile(r"\(request id: ([^)\s]+)\)")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
#: Raw body characters looked at for a message (masked, then cut to redact.MAX_MESSAGE).
_SNIPPET_WINDOW = 64 * 1024
#: Largest API answer read, on the wire and decoded (gzip bombs included). A url answer is a few KB;
#: b64_json answers carry the images themselves (up to 4 × a 2K/4K PNG, base64).
MAX_ANSWER_BYTES = 8 << 20
MAX_B64_ANSWER_BYTES = 256 << 20
#: Longest task id wanbatch journals and polls; printable ASCII without spaces only.
MAX_TASK_ID = 256
#: What parsing a hostile answer can raise besides GatewayError: each becomes ``bad_response``.
_PARSE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError)

#: aiohttp errors raised before a request left the machine. httpx_aiohttp maps every
#: ``aiohttp.ClientConnectionError`` — a server disconnect after the request was sent included — to
#: ``httpx.ConnectTimeout``, so the original cause decides whether a retry could pay twice.
_AIOHTTP_NOTHING_SENT = frozenset({
    "ClientConnectorError", "ClientConnectorCertificateError", "ClientConnectorSSLError",
    "ClientConnectorDNSError", "ClientProxyConnectionError", "ConnectionTimeoutError",
})


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request a dialect wants sent: method, absolute URL, JSON body, extra headers."""

    method: str
    url: str
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful (2xx, JSON object) answer and the request id the gateway gave it, if any."""

    body: dict[str, Any]
    request_id: str | None = None
    #: An error reported next to images in the same 2xx body: the images are kept, the error noted.
    error: GatewayError | None = None


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """What error messages may say about where a request went; never the key itself."""

    base_url: str
    key_env: str | None = None
    secret: str | None = field(default=None, repr=False)

    def redact(self, text: str) -> str:
        """Masked first, then cut (wanbatch.redact): a cut never leaves part of a key behind."""
        return redact_short(text, self.secret)

    def said(self, text: str, request_id: str | None) -> str:
        """A gateway's words for a message: masked and cut, the (masked) request id after them."""
        said = self.redact(text)
        if request_id and request_id not in said:
            said += f" (request id: {self.redact(request_id)})"
        return said


class Provider(ABC):
    """One gateway in one dialect. Subclasses build :class:`Call` s and parse answers; nothing else.

    The injected client is shared with image downloads, so it must carry no credentials.
    """

    dialect: str = ""
    supports_async: bool = False

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        client: httpx.AsyncClient,
        name: str,
        use_async: bool = False,
        response_format: str = "url",
        poll_interval: float = 5.0,
        request_timeout: float = 300.0,
        key_env: str | None = None,
    ) -> None:
        if use_async and not self.supports_async:
            raise FatalError(
                f"the {self.dialect} dialect is synchronous only; set async: false or use the "
                "parameters or dashscope dialect", kind="unsupported",
            )
        if response_format not in ("url", "b64_json"):
            raise FatalError(f"response_format must be 'url' or 'b64_json', not {response_format!r}",
                             kind="unsupported")
        if not (request_timeout > 0 and math.isfinite(request_timeout)):
            raise FatalError(f"request_timeout must be a positive number of seconds, not {request_timeout!r}",
                             kind="unsupported")
        self.name = name
        self.use_async = use_async
        self.response_format = response_format
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.base_url = base_url.rstrip("/")
        self._client = client
        self.__api_key = api_key or None
        self._context = ErrorContext(base_url=_public_url(self.base_url), key_env=key_env,
                                     secret=self.__api_key)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, base_url={self._context.base_url!r}, "
                f"dialect={self.dialect!r}, use_async={self.use_async!r})")

    __str__ = __repr__

    # ------------------------------------------------------------------ what the runner calls

    async def generate(self, job: Job) -> Generation:
        """One synchronous call: the answer comes when the images are done."""
        answer = await self._send(await _built(self.generate_call, job), "generate")
        with unreadable_is_ambiguous(), _unreadable("generate", answer):
            return noted(self.parse_generation(answer), answer)

    async def submit(self, job: Job) -> str:
        """Start an async task; the caller must journal the returned id before polling it."""
        if not self.supports_async:
            raise FatalError(f"the {self.dialect} dialect has no async submission; set async: false",
                             kind="unsupported")
        answer = await self._send(await _built(self.submit_call, job), "submit")
        with unreadable_is_ambiguous():
            with _unreadable("submit", answer):
                task_id = self.parse_submit(answer)
            if (problem := task_id_problem(task_id)) is not None:
                raise TransientError(f"the gateway answered the submission with {problem}",
                                     kind="bad_response", request_id=answer.request_id)
        return task_id

    async def poll(self, task_id: str) -> TaskState:
        """One look at a task. Errors here are transient (polling costs nothing) unless they are final."""
        if not self.supports_async:
            raise FatalError(f"the {self.dialect} dialect has no tasks to poll", kind="unsupported")
        if (problem := task_id_problem(task_id)) is not None:  # journaled by an older release, or edited
            raise RefusedError(f"cannot poll {problem}; the task is given up", kind="bad_response")
        answer = await self._send(self.poll_call(task_id), "poll", inspect_error=False)
        with _unreadable("poll", answer):
            return self.parse_poll(task_id, answer)

    # ------------------------------------------------------------------ what a dialect provides

    @abstractmethod
    def generate_call(self, job: Job) -> Call: ...

    @abstractmethod
    def parse_generation(self, answer: Answer) -> Generation: ...

    def submit_call(self, job: Job) -> Call:  # pragma: no cover - only async dialects override
        raise NotImplementedError

    def parse_submit(self, answer: Answer) -> str:  # pragma: no cover
        raise NotImplementedError

    def poll_call(self, task_id: str) -> Call:  # pragma: no cover
        raise NotImplementedError

    def parse_poll(self, task_id: str, answer: Answer) -> TaskState:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ the wire

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    @staticmethod
    def quote_id(task_id: str) -> str:
        return quote(task_id, safe="")

    async def _send(self, call: Call, phase: Phase, *, inspect_error: bool = True) -> Answer:
        headers = {"Accept": "application/json", **call.headers}
        if self.__api_key:
            headers["Authorization"] = f"Bearer {self.__api_key}"
        timeout = httpx.Timeout(self.request_timeout, connect=min(self.request_timeout, 30.0))
        cap = MAX_B64_ANSWER_BYTES if self.response_format == "b64_json" and phase != "submit" \
            else MAX_ANSWER_BYTES
        try:
            with anyio.fail_after(self.request_timeout):
                async with self._client.stream(
                    call.method, call.url, json=call.json, headers=headers, timeout=timeout
                ) as response:
                    content = await read_capped(response, cap, self._context, phase)
        except TimeoutError:
            detail = f"no complete answer within {self.request_timeout:g} s"
            raise _lost(phase, detail, self._context) from None
        except network_errors() as exc:  # aiohttp's too: they must not escape as tracebacks
            raise translate_exception(exc, phase, self._context) from None
        return check_answer(response, phase, self._context, inspect_error=inspect_error, content=content)

    def error_in_body(self, answer: Answer) -> GatewayError | None:
        """The error a 2xx poll body holds besides a task status, or None.

        The task may still be running behind a gateway hiccup and polling costs nothing, so only
        moderation is final here; the rest is retried.
        """
        error = body_error(answer.body, answer.request_id, self._context)
        if isinstance(error, RefusedError) and error.kind != "moderation":
            return TransientError(error.message, kind=error.kind, status=error.status,
                                  request_id=error.request_id)
        return error


# ---------------------------------------------------------------------- input images


async def _built(build: Callable[[Job], Call], job: Job) -> Call:
    """``build(job)``; in a worker thread when the job's local input images must be read and encoded."""
    if any(not i.is_url for i in job.inputs):
        return await anyio.to_thread.run_sync(build, job)
    return build(job)


def input_uris(job: Job) -> list[str]:
    """What a request carries for each input image, in order: a URL as is, a local file as a
    ``data:image/<fmt>;base64,`` URI of exactly the bytes the job id was computed from.

    A file changed since the plan would send something else than the job id names: that job is
    refused (``input_changed``), never sent. These strings go into the request body only; nothing
    writes a body anywhere (and :mod:`wanbatch.redact` shortens any data URI an error might echo).
    """
    out: list[str] = []
    for image in job.inputs:
        if image.is_url:
            out.append(image.source)
            continue
        assert image.path is not None
        try:
            data = fit_input(Path(image.path))[0] if image.fitted else Path(image.path).read_bytes()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise RefusedError(f"input {image.source} cannot be read: {why}",
                               kind="input_changed") from None
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise RefusedError(f"input {image.source} changed since the plan; rerun to plan it anew",
                               kind="input_changed")
        mime = INPUT_FORMATS.get(image.format or "", "png")
        out.append(f"data:image/{mime};base64,{base64.b64encode(data).decode('ascii')}")
    return out


# ---------------------------------------------------------------------- hostile answers


async def read_capped(response: httpx.Response, cap: int, context: ErrorContext, phase: Phase) -> bytes:
    """The body, at most ``cap`` bytes on the wire and decoded.

    A successful answer over the cap is not read: to a generation or a submission it is ambiguous
    (``unreadable_answer``: made and billed all the same, so in doubt, never requested again), to a
    poll ``bad_response`` (the task is journaled; nothing is paid twice). An error answer is cut at the
    cap and classified by its status.
    """
    ok = 200 <= response.status_code < 300
    declared = response.headers.get("content-length", "")
    if ok and declared.isdigit() and int(declared) > cap:
        raise _too_big(response, cap, context, phase)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap or response.num_bytes_downloaded > cap:
            if ok:
                raise _too_big(response, cap, context, phase)
            chunks.append(chunk[: max(0, cap - (size - len(chunk)))])
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(response: httpx.Response, cap: int, context: ErrorContext, phase: Phase) -> GatewayError:
    said = (f"{response.status_code} from {context.base_url} with an answer over {_mib(cap)} "
            "(on the wire or decoded); not read")
    if phase != "poll":
        return AmbiguousError(said + "; the images may have been made and billed", kind="unreadable_answer",
                              status=response.status_code)
    return RefusedError(said, kind="bad_response", status=response.status_code)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB" if size % (1 << 20) == 0 else f"{size} bytes"


def task_id_problem(task_id: object) -> str | None:
    """Why ``task_id`` cannot be journaled or put in a poll URL (None: it can)."""
    if not isinstance(task_id, str) or not task_id:
        return "an empty or non-text task id"
    if len(task_id) > MAX_TASK_ID:
        return f"a task id of {len(task_id)} characters (at most {MAX_TASK_ID})"
    if not task_id.isascii() or not task_id.isprintable() or any(c.isspace() for c in task_id):
        shown = redact_short(task_id, limit=60)
        return f"a malformed task id {shown!r} (printable ASCII without spaces only)"
    return None


@contextmanager
def _unreadable(phase: Phase, answer: Answer) -> Iterator[None]:
    """A dialect's parser met an answer of an unexpected shape: ``bad_response``, never a traceback.

    In a poll the task is given up (refused: the same answer would not read better next time, and
    the task is settled as a failed slot); in a generation or submission it is transient here and
    :func:`unreadable_is_ambiguous` makes it ambiguous (made and billed all the same, not retried).
    """
    try:
        yield
    except _PARSE_ERRORS as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        message = f"the gateway's {phase} answer has an unexpected shape ({redact_short(detail)})"
        error = RefusedError if phase == "poll" else TransientError
        raise error(message, kind="bad_response", request_id=answer.request_id) from None


# ---------------------------------------------------------------------- classification


@contextmanager
def unreadable_is_ambiguous() -> Iterator[None]:
    """A successful generation or submission whose answer cannot be read (``data`` not a list, no
    usable task id) was made and billed all the same: ambiguous, never retried as transient."""
    try:
        yield
    except TransientError as exc:
        if exc.kind != "bad_response":
            raise
        raise AmbiguousError(f"{exc.message}; the images may have been made and billed",
                             kind="unreadable_answer", status=exc.status, request_id=exc.request_id) from None


def translate_exception(exc: BaseException, phase: Phase, context: ErrorContext) -> GatewayError:
    """An httpx (or raw transport) exception as the one GatewayError it stands for."""
    detail = context.redact(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.InvalidURL) and phase == "poll":  # a task id the gateway made up
        return RefusedError(f"cannot poll this task: its id makes an invalid URL ({detail})",
                            kind="bad_response")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return FatalError(f"cannot send to {context.base_url}: {detail}; base_url must be an http(s) URL",
                          kind="not_found")
    if _nothing_sent(exc):
        return TransientError(f"could not reach {context.base_url}: {detail}", kind="network")
    return _lost(phase, detail, context)


def _lost(phase: Phase, detail: str, context: ErrorContext) -> GatewayError:
    """The request went out but its answer did not come back."""
    if phase == "poll":
        return TransientError(f"polling {context.base_url} failed: {detail}", kind="network")
    return AmbiguousError(
        f"the request was sent but no answer came back ({detail}); the image may have been made and billed",
        kind="timeout",
    )


def _nothing_sent(exc: BaseException) -> bool:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)):
        cause = exc.__cause__
        if cause is not None and type(cause).__module__.startswith("aiohttp"):
            return type(cause).__name__ in _AIOHTTP_NOTHING_SENT
        return True
    if type(exc).__module__.startswith("aiohttp"):
        return type(exc).__name__ in _AIOHTTP_NOTHING_SENT
    return isinstance(exc, ConnectionRefusedError)


def check_answer(
    response: httpx.Response, phase: Phase, context: ErrorContext, *, inspect_error: bool = True,
    content: bytes | None = None,
) -> Answer:
    """The JSON object of a successful answer, or raise the one GatewayError the answer stands for.

    ``content``: the body as read (capped) by :func:`read_capped`; default ``response.content``.
    """
    if content is None:
        content = response.content
    body = parse_json(content)
    request_id = _request_id(response.headers, body)
    if request_id is not None:  # a header the gateway chose: as untrusted as its body
        request_id = context.redact(request_id)
    status = response.status_code
    if 200 <= status < 300:
        if not isinstance(body, dict):
            what = _not_json(content, context)
            if phase != "poll":  # made and billed, but unreadable (HTML, truncated JSON): ambiguous
                raise AmbiguousError(
                    f"{status} from {context.base_url} but the body is not a JSON object: {what}; "
                    "the images may have been made and billed",
                    kind="unreadable_answer", status=status, request_id=request_id,
                )
            raise TransientError(
                f"{status} from {context.base_url} but the body is not a JSON object: {what}",
                kind="bad_response", status=status, request_id=request_id,
            )
        if inspect_error and (error := body_error(body, request_id, context, status=status)) is not None:
            if not has_images(body):
                raise error
            return Answer(body, request_id, error)
        return Answer(body, request_id)
    raise status_error(status, response.headers, content, body, phase, context, request_id)


def status_error(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    body: Any,
    phase: Phase,
    context: ErrorContext,
    request_id: str | None = None,
) -> GatewayError:
    """The error a non-2xx answer stands for: the first rule of :data:`classify.STATUS_RULES` that matches."""
    code, etype, gateway_message = _error_fields(body)
    said = context.said(gateway_message or _snippet(content) or "(empty body)", request_id)
    env = f"${context.key_env}" if context.key_env else "the API key's environment variable"
    cls, kind, message = classify(Said(status, code.lower(), etype.lower(), said, phase), STATUS_RULES,
                                  where=f"{status} from {context.base_url}", env=env,
                                  target=context.redact(headers.get("location", "?")))
    return cls(message, kind=kind, status=status, retry_after=parse_retry_after(headers),
               request_id=request_id)


def body_error(
    body: dict[str, Any], request_id: str | None, context: ErrorContext, *, status: int = 200
) -> GatewayError | None:
    """The error a 2xx body holds (:data:`classify.BODY_RULES`), or None when it holds none."""
    if not _has_error(body):
        return None
    code, etype, message = _error_fields(body)
    said = context.said(message or code or "unspecified error", request_id)
    cls, kind, text = classify(Said(status, code.lower(), etype.lower(), said, "generate"), BODY_RULES,
                               where=f"{status} from {context.base_url}")
    return cls(text, kind=kind, status=status, request_id=request_id)


def has_images(body: dict[str, Any]) -> bool:
    """Whether a body carries at least one image (OpenAI ``data`` or DashScope ``output``)."""
    data = body.get("data")
    if isinstance(data, list) and any(isinstance(d, dict) and (d.get("url") or d.get("b64_json"))
                                      for d in data):
        return True
    output = body.get("output")
    return isinstance(output, dict) and bool(output.get("choices") or output.get("results"))


def noted(generation: Generation, answer: Answer) -> Generation:
    """``generation`` with the error its answer reported next to the images, if any."""
    if answer.error is None or not generation.images:
        return generation
    return replace(generation, note=f"the gateway also reported: {answer.error.message}")


def _has_error(body: dict[str, Any]) -> bool:
    if body.get("error"):
        return True
    # DashScope puts {code, message} at the top level of a failed call.
    # With images beside it (output.choices), it is noted next to them (see ``has_images``).
    return bool(body.get("code")) and "data" not in body and ("output" not in body or has_images(body))


def _error_fields(body: Any) -> tuple[str, str, str]:
    """(code, type, message) of an OpenAI-style ``{"error": {...}}`` or DashScope ``{code, message}``."""
    if not isinstance(body, dict):
        return "", "", ""
    error = body.get("error")
    if isinstance(error, dict):
        return (_text(error.get("code")), _text(error.get("type")), _text(error.get("message")))
    if isinstance(error, str) and error:
        return "", "", error
    output = body.get("output")
    source = body if body.get("code") or not isinstance(output, dict) else output
    return _text(source.get("code")), "", _text(source.get("message"))


def parse_json(content: bytes) -> Any:
    """The decoded JSON of a body, or None when it is empty, HTML or otherwise not JSON."""
    if not content.strip():
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a 10⁵-digit number, nested too deeply
        return None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _request_id(headers: Mapping[str, str], body: Any) -> str | None:
    for name in ("x-request-id", "x-dashscope-request-id", "x-oneapi-request-id"):
        if value := headers.get(name):
            return value
    if isinstance(body, dict):
        if isinstance(body.get("request_id"), str) and body["request_id"]:
            return str(body["request_id"])
        _, _, message = _error_fields(body)
        if match := _REQUEST_ID_IN_MESSAGE.search(message):
            return match.group(1)
    return None


_NOT_JSON_CHARS = 160


def _not_json(content: bytes, context: ErrorContext) -> str:
    """A short account of a body that should have been a JSON object: short enough that what follows
    it in a message (the billing note) survives the 300-character cut."""
    said = context.redact(_snippet(content))
    html = said.startswith("HTML page")
    most = 80 if html else _NOT_JSON_CHARS
    if len(said) > most:
        said = said[:most - 1] + "…"
    if html:
        said += " (a web page: is base_url the API's address?)"
    return said or "(empty body)"


_DEEP = re.compile(r"(?:[\[{]\s*){64}")


def _snippet(content: bytes) -> str:
    """A body as text for a message, NOT yet masked or cut: callers pass it through ErrorContext.redact."""
    text = content[:_SNIPPET_WINDOW].decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    if _DEEP.search(text):  # `[[[[…` 10 000 deep says nothing in a message
        return "JSON nested more than 64 levels deep, " + f"{len(content)} bytes"
    if text.startswith("<"):
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", text)
        return "HTML page: " + " ".join(text.split())
    return " ".join(text.split())


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value[:_SNIPPET_WINDOW] if isinstance(value, str) else str(value)[:_SNIPPET_WINDOW]


def _public_url(url: str) -> str:
    """The base URL without credentials or query, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url.split("?")[0]


# ---------------------------------------------------------------------- successful answers


def openai_images(body: dict[str, Any]) -> list[DeliveredImage]:
    """``data`` items of the OpenAI Images shape; items with neither url nor b64 are left out.

    ``index`` is the item's position, so a skipped item leaves its slot missing rather than shifting
    the next image into it.
    """
    data = body.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise TransientError("the answer's 'data' is not a list", kind="bad_response")
    images: list[DeliveredImage] = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            continue
        url = item.get("url") or None
        b64 = item.get("b64_json") or None
        if not isinstance(url, str):
            url = None
        if not isinstance(b64, str):
            b64 = None
        if url is None and b64 is None:
            continue
        revised = item.get("revised_prompt")
        images.append(DeliveredImage(index=index, url=url, b64_json=b64,
                                     revised_prompt=revised if isinstance(revised, str) else ""))
    return images
