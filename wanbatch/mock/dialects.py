"""Strict parsing of request bodies for the three dialects of PROTOCOL.md into one ``GenRequest``.

The mock refuses whatever PROTOCOL.md does not allow, so a client that passes against the mock
does not lean on leniency a real gateway may lack. Two kinds of refusal: ``malformed`` (the body
does not fit the dialect at all — new-api's ``invalid_request``) and ``invalid`` (a well-formed body
with a value the model refuses — ``InvalidParameter``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from wanbatch.types import TIER_PIXELS

MODELS: tuple[str, ...] = ("wan2.7-image-pro", "wan2.7-image")
PRO = "wan2.7-image-pro"
SEED_MAX = 2147483647
MIN_PIXELS, MAX_PIXELS = 768 * 768, 4096 * 4096
#: The fixed size list of the "parameters" dialect; the first five are for the pro model only.
PRO_ONLY_SIZES: tuple[str, ...] = ("4096x4096", "4096x2304", "2304x4096", "4096x3072", "3072x4096")
PARAMETERS_SIZES: tuple[str, ...] = PRO_ONLY_SIZES + (
    "2048x2048", "2688x1536", "1536x2688", "2368x1728", "1728x2368", "1024x1024", "1696x960",
    "960x1696", "1472x1104", "1104x1472", "1248x832", "832x1248",
)
FLAT_KEYS = frozenset({"model", "prompt", "size", "n", "watermark", "seed"})
PARAMETERS_KEYS = frozenset({"model", "prompt", "size", "n", "response_format", "async", "parameters"})
PARAMETERS_REQUIRED = ("model", "prompt", "size", "n", "response_format")
PARAMETERS_INNER_KEYS = frozenset({"enable_sequential", "thinking_mode", "color_palette", "watermark", "seed"})
DASHSCOPE_KEYS = frozenset({"model", "input", "parameters"})
DASHSCOPE_PARAM_KEYS = frozenset(
    {"size", "n", "watermark", "thinking_mode", "seed", "color_palette", "enable_sequential"}
)
RESPONSE_FORMAT_MESSAGE = (
    "invalid request body: json: cannot unmarshal string into Go struct field "
    "GeneralOpenAIRequest.response_format of type dto.ResponseFormat"
)

DialectName = Literal["flat", "parameters", "dashscope"]


class BadRequest(Exception):
    """A refused body: ``kind`` is ``malformed`` or ``invalid``."""

    def __init__(self, kind: Literal["malformed", "invalid"], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class GenRequest:
    """One validated generation request, whatever the dialect."""

    dialect: DialectName
    model: str
    prompt: str
    size: str  # normalised: a tier or "W*H"
    width: int
    height: int
    n: int
    seed: int | None
    response_format: Literal["url", "b64_json"] = "url"
    use_async: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def billing_key(self) -> str:
        return billing_key(self.model, self.prompt, self.size, self.seed, self.n)


def billing_key(model: str, prompt: str, size: str, seed: int | None, n: int) -> str:
    """The key of ``/_mock/stats`` ``billed_by_key``: compact JSON of [model, prompt, size, seed, n].

    ``size`` is normalised: a tier (``"2K"``) or ``"W*H"`` (``"2048x2048"`` becomes ``"2048*2048"``).
    """
    return json.dumps([model, prompt, size, seed, n], ensure_ascii=False, separators=(",", ":"))


def load_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("malformed", f"invalid request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("malformed", "invalid request body: json: cannot unmarshal into Go value of type object")
    return body


def parse_flat(body: dict[str, Any]) -> GenRequest:
    if "response_format" in body and isinstance(body["response_format"], str):
        raise BadRequest("malformed", RESPONSE_FORMAT_MESSAGE)
    _no_unknown(body, FLAT_KEYS, "")
    model = _model(body.get("model"))
    prompt = _prompt(body.get("prompt"))
    size = body.get("size", "2K")
    norm, width, height = _size(model, size, allow_x=True, allow_star=True, allow_tiers=True)
    n = _int_in(body.get("n", 1), "n", 1, 4)
    _bool(body, "watermark")
    seed = _seed(body.get("seed"))
    params = {"watermark": body["watermark"]} if "watermark" in body else {}
    return GenRequest("flat", model, prompt, norm, width, height, n, seed, params=params)


def parse_parameters(body: dict[str, Any]) -> GenRequest:
    _no_unknown(body, PARAMETERS_KEYS, "")
    for key in PARAMETERS_REQUIRED:
        if key not in body:
            raise BadRequest("malformed", f"invalid request body: field {key!r} is required")
    inner = body.get("parameters", {})
    if not isinstance(inner, dict):
        raise BadRequest("malformed", "invalid request body: 'parameters' must be an object")
    _no_unknown(inner, PARAMETERS_INNER_KEYS, "parameters.")
    for key in ("enable_sequential", "thinking_mode", "watermark"):
        _bool(inner, key, "parameters.")
    _palette(inner.get("color_palette"))
    use_async = body.get("async", False)
    if not isinstance(use_async, bool):
        raise BadRequest("malformed", "invalid request body: 'async' must be a boolean")
    response_format = body["response_format"]
    if response_format not in ("url", "b64_json"):
        raise BadRequest("invalid", f"response_format must be 'url' or 'b64_json', not {response_format!r}")
    model = _model(body.get("model"))
    prompt = _prompt(body.get("prompt"))
    size = body["size"]
    allowed = PARAMETERS_SIZES if model == PRO else PARAMETERS_SIZES[len(PRO_ONLY_SIZES):]
    if not isinstance(size, str) or size not in allowed:
        raise BadRequest("invalid", f"size {size!r} is not supported by {model}; use one of: {', '.join(allowed)}")
    norm, width, height = _size(model, size, allow_x=True, allow_star=False, allow_tiers=False)
    sequential = inner.get("enable_sequential") is True
    n = _int_in(body["n"], "n", 1, 12 if sequential else 4)
    seed = _seed(inner.get("seed"))
    params = {k: v for k, v in inner.items() if k != "seed" and v is not None}
    return GenRequest(
        "parameters", model, prompt, norm, width, height, n, seed, response_format, use_async, params
    )


def parse_dashscope(body: dict[str, Any]) -> GenRequest:
    _no_unknown(body, DASHSCOPE_KEYS, "", invalid=True)
    model = _model(body.get("model"))
    prompt = _dashscope_prompt(body.get("input"))
    inner = body.get("parameters", {})
    if not isinstance(inner, dict):
        raise BadRequest("invalid", "parameters must be an object")
    _no_unknown(inner, DASHSCOPE_PARAM_KEYS, "parameters.", invalid=True)
    for key in ("enable_sequential", "thinking_mode", "watermark"):
        _bool(inner, key, "parameters.", invalid=True)
    _palette(inner.get("color_palette"))
    norm, width, height = _size(model, inner.get("size", "2K"), allow_x=False, allow_star=True, allow_tiers=True)
    sequential = inner.get("enable_sequential") is True
    n = _int_in(inner.get("n", 1), "n", 1, 12 if sequential else 4)
    seed = _seed(inner.get("seed"))
    params = {k: v for k, v in inner.items() if k not in ("seed", "size", "n") and v is not None}
    return GenRequest("dashscope", model, prompt, norm, width, height, n, seed, params=params)


def _dashscope_prompt(value: Any) -> str:
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(value, dict) or set(value) != {"messages"} or not isinstance(messages, list):
        raise BadRequest("invalid", "input must be {\"messages\": [...]}")
    if len(messages) != 1 or not isinstance(messages[0], dict) or messages[0].get("role") != "user":
        raise BadRequest("invalid", "input.messages must hold exactly one message with role 'user'")
    content = messages[0].get("content")
    if set(messages[0]) != {"role", "content"} or not isinstance(content, list) or not content:
        raise BadRequest("invalid", "input.messages[0] must be {\"role\": \"user\", \"content\": [...]}")
    texts = []
    for item in content:
        if not isinstance(item, dict) or set(item) != {"text"}:
            raise BadRequest("invalid", "the mock serves text-to-image only: content items must be {\"text\": ...}")
        texts.append(item["text"])
    if len(texts) != 1:
        raise BadRequest("invalid", "input.messages[0].content must hold exactly one text item")
    return _prompt(texts[0])


def _no_unknown(body: dict[str, Any], allowed: frozenset[str], prefix: str, invalid: bool = False) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        if invalid:
            raise BadRequest("invalid", f"parameter {prefix}{unknown[0]} is not supported")
        raise BadRequest("malformed", f"invalid request body: json: unknown field \"{prefix}{unknown[0]}\"")


def _model(value: Any) -> str:
    if value not in MODELS:
        raise BadRequest("invalid", f"model {value!r} is not supported; use one of: {', '.join(MODELS)}")
    return str(value)


def _prompt(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("invalid", "prompt must be a non-empty string")
    return value


def _int_in(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest("invalid", f"{name} must be an integer in [{low}, {high}], not {value!r}")
    return value


def _seed(value: Any) -> int | None:
    return None if value is None else _int_in(value, "seed", 0, SEED_MAX)


def _bool(body: dict[str, Any], key: str, prefix: str = "", invalid: bool = False) -> None:
    if key in body and not isinstance(body[key], bool):
        message = f"{prefix}{key} must be a boolean, not {body[key]!r}"
        raise BadRequest("invalid" if invalid else "malformed", message)


def _palette(value: Any) -> None:
    """Gateway docs describe a colour theme as a string ("warm tones"); Model Studio as a list of
    colours. The sources disagree, so both are accepted; anything else is refused."""
    if value is None or (isinstance(value, str) and value.strip()):
        return
    if not (isinstance(value, list) and 1 <= len(value) <= 10):
        raise BadRequest("invalid", "parameters.color_palette must be null, a theme string or a list of "
                         "1-10 colours")


_PIXELS = re.compile(r"^([1-9][0-9]{0,5})([*x])([1-9][0-9]{0,5})$")


def _size(model: str, value: Any, *, allow_x: bool, allow_star: bool, allow_tiers: bool) -> tuple[str, int, int]:
    """Check a size against the model's rules; return (normalised, width, height)."""
    if not isinstance(value, str):
        raise BadRequest("invalid", f"size must be a string, not {value!r}")
    if allow_tiers and value in TIER_PIXELS:
        if value == "4K" and model != PRO:
            raise BadRequest("invalid", f"size 4K is only supported by {PRO}")
        width, height = TIER_PIXELS[value]
        return value, width, height
    match = _PIXELS.match(value)
    if match is None or (match[2] == "x" and not allow_x) or (match[2] == "*" and not allow_star):
        forms = [f for f, ok in (("1K/2K/4K", allow_tiers), ("W*H", allow_star), ("WxH", allow_x)) if ok]
        raise BadRequest("invalid", f"size {value!r} not understood; use {' or '.join(forms)}")
    width, height = int(match[1]), int(match[3])
    limit = MAX_PIXELS if model == PRO else TIER_PIXELS["2K"][0] * TIER_PIXELS["2K"][1]
    if not MIN_PIXELS <= width * height <= limit:
        raise BadRequest("invalid", f"size {value}: total pixels must be within [768*768, {_root(limit)}] for {model}")
    if not 1 / 8 <= width / height <= 8:
        raise BadRequest("invalid", f"size {value}: aspect ratio must be within [1:8, 8:1]")
    return f"{width}*{height}", width, height


def _root(pixels: int) -> str:
    side = int(pixels**0.5)
    return f"{side}*{side}"
