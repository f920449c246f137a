"""The bodies the mock answers with, in the shapes real gateways use (docs/protocol.md).

Two error families: ``openai`` (flat and parameters dialects: ``{"error": {message, type, param,
code}}`` with the request id inside the message, as new-api does) and ``dashscope`` (``{request_id,
code, message}``). Object-store failures are OSS-like XML. Fault pages (524, nginx 500, empty 502)
are HTML or empty on purpose: a client must never assume JSON.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from starlette.responses import JSONResponse, Response

Family = Literal["openai", "dashscope"]

HTML_500 = (
    "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    "<center><h1>500 Internal Server Error</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
HTML_504 = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
HTML_524 = (
    "<!DOCTYPE html>\n<html lang=\"en-US\"><head><title>gateway.example | 524: A timeout occurred</title>"
    "</head><body><div id=\"cf-error-details\"><h1><span class=\"inline-block\">A timeout occurred</span>"
    "<span class=\"code-label\">Error code 524</span></h1><p>The origin web server timed out responding "
    "to this request.</p></div></body></html>\n"
)


def openai_error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str,
    request_id: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": f"{message} (request id: {request_id})", "type": type_, "param": "",
                      "code": code}}
    return JSONResponse(body, status_code=status, headers={"x-request-id": request_id, **(headers or {})})


def dashscope_error(
    status: int, code: str, message: str, *, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"request_id": request_id, "code": code, "message": message}
    return JSONResponse(body, status_code=status, headers={"x-request-id": request_id, **(headers or {})})


def error(
    family: Family, status: int, code: str, message: str, *, request_id: str, type_: str = "ali_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An upstream-style error in the family's shape (``type_`` applies to the openai family only)."""
    if family == "dashscope":
        return dashscope_error(status, code, message, request_id=request_id, headers=headers)
    return openai_error(status, message, type_=type_, code=code, request_id=request_id, headers=headers)


def fault(name: str, family: Family, *, request_id: str, model: str, variant: int) -> Response:
    """The answer for an injected fault other than timeout/short_data/task_fail.

    ``variant`` alternates between equivalent real-world shapes (two 429 bodies, two retry headers).
    """
    if name in ("429", "429_retry_after"):
        headers = {}
        if name == "429_retry_after":
            headers = {"Retry-After": "1"} if variant % 2 == 0 else {"retry-after-ms": "200"}
        if family == "openai" and variant % 2 == 1:
            message = "The current group's load is saturated, please try again later"
            return openai_error(429, message, type_="new_api_error", code="", request_id=request_id,
                                headers=headers)
        message = "Requests rate limit exceeded, please try again later."
        return error(family, 429, "Throttling.RateQuota", message, request_id=request_id, headers=headers)
    if name == "500":
        return error(family, 500, "InternalError", "An internal error has occured, please try again later.",
                     request_id=request_id)
    if name == "502":
        return error(family, 502, "bad_response_status_code", "bad response status code 502",
                     request_id=request_id, type_="upstream_error")
    if name == "503":
        message = f"No available channel for model {model} under group default (distributor)"
        return error(family, 503, "model_not_found", message, request_id=request_id, type_="new_api_error")
    if name == "200_error":
        return error(family, 200, "InternalError.Algo", "Inner error: image generation failed, please retry.",
                     request_id=request_id)
    if name == "403":
        return error(family, 403, "AccessDenied", "Access denied, please make sure your account is in good "
                     "standing.", request_id=request_id)
    if name == "html_500":
        return Response(HTML_500, status_code=500, media_type="text/html")
    if name == "empty_502":
        return Response(b"", status_code=502)
    if name == "524":
        return Response(HTML_524, status_code=524, media_type="text/html")
    if name == "timeout":
        return Response(HTML_504, status_code=504, media_type="text/html")
    raise ValueError(f"no direct answer for fault {name!r}")


def unreadable_200(name: str, body: dict[str, Any]) -> Response:
    """A 200 whose body a client cannot read, after the images were made and billed: an HTML page
    (a proxy's), the JSON cut short, or ``data`` that is not a list."""
    if name == "200_html":
        return Response(b"<html><head><title>OK</title></head><body>done</body></html>", status_code=200,
                        media_type="text/html")
    raw = json.dumps(body).encode()
    if name == "200_truncated":
        return Response(raw[: len(raw) // 2], status_code=200, media_type="application/json")
    return Response(json.dumps({**body, "data": {"items": body.get("data")}}).encode(), status_code=200,
                    media_type="application/json")


def openai_images(items: list[tuple[str, str]], created: int) -> dict[str, Any]:
    """Success body: ``items`` are (url, b64_json) pairs, one of them empty."""
    data = [{"url": url, "b64_json": b64, "revised_prompt": ""} for url, b64 in items]
    return {"created": created, "data": data, "usage": {"generated_images": len(data)}, "metadata": {}}


def dashscope_output(urls: list[str]) -> dict[str, Any]:
    content = [{"type": "image", "image": url} for url in urls]
    return {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "finished": True}


def dashscope_usage(count: int, width: int, height: int) -> dict[str, Any]:
    return {"image_count": count, "size": f"{width}*{height}", "input_tokens": 0, "output_tokens": 0}


def oss_error(status: int, code: str, message: str, *, request_id: str,
              extra: dict[str, str] | None = None) -> Response:
    fields = "".join(f"  <{k}>{v}</{k}>\n" for k, v in (extra or {}).items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{code}</Code>\n  <Message>{message}</Message>\n  <RequestId>{request_id}</RequestId>\n"
        f"  <HostId>mock-oss.wanbatch.local</HostId>\n{fields}</Error>\n"
    )
    return Response(body, status_code=status, media_type="application/xml",
                    headers={"x-oss-request-id": request_id})


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))
