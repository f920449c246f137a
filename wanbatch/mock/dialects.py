"""What every dialect handler of the mock shares: the ``GenRequest`` a body becomes, and strict checks.

Each dialect's own parsing lives in its handler module (:mod:`wanbatch.mock.flat`, ...). The mock
refuses whatever docs/protocol.md does not allow, so a client that passes against the mock does not
lean on leniency a real gateway may lack. Two kinds of refusal: ``malformed`` (the body
does not fit the dialect at all — new-api's ``invalid_request``) and ``invalid`` (a well-formed body
with a value the model refuses — ``InvalidParameter``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from wanbatch.models import BASE_MODEL_MAX_PIXELS, MAX_PIXELS, MAX_SEED, MIN_PIXELS, MODELS, PRO, TIER_PIXELS

SEED_MAX = MAX_SEED


class BadRequest(Exception):
    """A refused body: ``kind`` is ``malformed`` or ``invalid``."""

    def __init__(self, kind: Literal["malformed", "invalid"], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class GenRequest:
    """One validated generation request, whatever the dialect."""

    dialect: str
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
    #: Without a seed the upstream picks one of its own: ``noise`` stands for it (set per request).
    noise: int = 0
    #: Input images in order: the sha256 of a data URI's bytes, or a URL as sent.
    inputs: tuple[str, ...] = ()

    def image_seed(self) -> int:
        """The seed the images are drawn with: the one sent, else one the gateway picked (outside the
        valid range, so it never equals a seed a client could send)."""
        return self.seed if self.seed is not None else SEED_MAX + 1 + self.noise

    def billing_key(self) -> str:
        return billing_key(self.model, self.prompt, self.size, self.seed, self.n, self.inputs)


def billing_key(model: str, prompt: str, size: str, seed: int | None, n: int,
                inputs: tuple[str, ...] = ()) -> str:
    """The key of ``/_mock/stats`` ``billed_by_key``: compact JSON of [model, prompt, size, seed, n]
    (and the input images' sha256s or URLs, as a sixth item, when the request has inputs).

    ``size`` is normalised: a tier (``"2K"``) or ``"W*H"`` (``"2048x2048"`` becomes ``"2048*2048"``).
    """
    key: list[Any] = [model, prompt, size, seed, n]
    if inputs:
        key.append(list(inputs))
    return json.dumps(key, ensure_ascii=False, separators=(",", ":"))


#: What the mock checks of an input image (Model Studio's editing reference, docs/protocol.md).
MAX_INPUTS = 9
MAX_INPUT_BYTES = 20 * 1024 * 1024
_DATA_URI = re.compile(r"^data:image/(jpeg|jpg|png|webp|bmp);base64,(.*)$", re.S)
_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png", b"RIFF": "webp", b"BM": "bmp"}


def input_identity(value: Any) -> str:
    """The sha256 of a ``data:image/…;base64,`` input's bytes, or an http(s) URL as is."""
    if not isinstance(value, str):
        raise BadRequest("invalid", "an image item must be a URL or a data URI string")
    if value.startswith(("http://", "https://")):
        return value
    match = _DATA_URI.match(value)
    if match is None:
        raise BadRequest("invalid", "image must be an http(s) URL or data:image/{jpeg,png,webp,bmp};base64,…")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (ValueError, binascii.Error):
        raise BadRequest("invalid", "image data URI is not valid base64") from None
    if len(data) > MAX_INPUT_BYTES:
        raise BadRequest("invalid", "input image is larger than 20 MB")
    if not any(data.startswith(magic) for magic in _MAGIC):
        raise BadRequest("invalid", "input image is not JPEG, PNG, WEBP or BMP")
    return hashlib.sha256(data).hexdigest()


def parse_content(content: Any) -> tuple[str, tuple[str, ...]]:
    """DashScope's ``content``: 0–9 ``{image}`` items and one ``{text}`` item → (prompt, input ids)."""
    if not isinstance(content, list) or not content:
        raise BadRequest("invalid", "input.messages[0].content must be a non-empty list")
    texts: list[Any] = []
    inputs: list[str] = []
    for item in content:
        if isinstance(item, dict) and set(item) == {"text"}:
            texts.append(item["text"])
        elif isinstance(item, dict) and set(item) == {"image"}:
            inputs.append(input_identity(item["image"]))
        else:
            raise BadRequest("invalid", "content items must be {\"text\": …} or {\"image\": …}")
    if len(texts) != 1:
        raise BadRequest("invalid", "input.messages[0].content must hold exactly one text item")
    if len(inputs) > MAX_INPUTS:
        raise BadRequest("invalid", f"at most {MAX_INPUTS} input images, got {len(inputs)}")
    return check_prompt(texts[0]), tuple(inputs)


def check_edit(inputs: tuple[str, ...], size: str, params: dict[str, Any]) -> None:
    """What an editing request (or an image set) may not ask: 4K; thinking_mode with inputs; a
    bbox_list that is not one list per input."""
    if (inputs or params.get("enable_sequential")) and size == "4K":
        raise BadRequest("invalid", "size 4K is only supported for text-to-image")
    if inputs and params.get("thinking_mode") is True:
        raise BadRequest("invalid", "thinking_mode is only supported for text-to-image")
    bbox = params.get("bbox_list")
    if bbox is not None and (not isinstance(bbox, list) or len(bbox) != len(inputs)):
        raise BadRequest("invalid", "bbox_list must hold one list of boxes per input image")


def scrub(value: Any) -> Any:
    """A body as the mock keeps it for ``/_mock/requests``: data URIs replaced by their sha256."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str) and value.startswith("data:image/"):
        try:
            return f"data:sha256:{input_identity(value)}"
        except BadRequest:
            return "data:(invalid)"
    return value


def load_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("malformed", f"invalid request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("malformed",
                         "invalid request body: json: cannot unmarshal into Go value of type object")
    return body


def no_unknown(body: dict[str, Any], allowed: frozenset[str], prefix: str, invalid: bool = False) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        if invalid:
            raise BadRequest("invalid", f"parameter {prefix}{unknown[0]} is not supported")
        raise BadRequest("malformed", f"invalid request body: json: unknown field \"{prefix}{unknown[0]}\"")


def check_model(value: Any) -> str:
    if value not in MODELS:
        raise BadRequest("invalid", f"model {value!r} is not supported; use one of: {', '.join(MODELS)}")
    return str(value)


def check_prompt(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("invalid", "prompt must be a non-empty string")
    return value


def int_in(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest("invalid", f"{name} must be an integer in [{low}, {high}], not {value!r}")
    return value


def check_seed(value: Any) -> int | None:
    return None if value is None else int_in(value, "seed", 0, SEED_MAX)


def check_bool(body: dict[str, Any], key: str, prefix: str = "", invalid: bool = False) -> None:
    if key in body and not isinstance(body[key], bool):
        message = f"{prefix}{key} must be a boolean, not {body[key]!r}"
        raise BadRequest("invalid" if invalid else "malformed", message)


def check_palette(value: Any, *, allow_theme: bool = True) -> None:
    """Model Studio documents a list of 3–10 ``{hex, ratio}`` colours; "parameters" gateways (seed doc
    001) a theme string (``allow_theme``). Anything else is refused."""
    if value is None or (allow_theme and isinstance(value, str) and value.strip()):
        return
    colours_ok = isinstance(value, list) and 3 <= len(value) <= 10 and all(
        isinstance(c, dict) and set(c) == {"hex", "ratio"} and isinstance(c["hex"], str)
        and _HEX.match(c["hex"]) is not None and isinstance(c["ratio"], (str, int, float))
        and not isinstance(c["ratio"], bool) for c in value)
    if not colours_ok:
        theme = "a theme string or " if allow_theme else ""
        raise BadRequest("invalid", f"parameters.color_palette must be null, {theme}a list of 3-10 "
                         "{hex, ratio} colours")


_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")
_PIXELS = re.compile(r"^([1-9][0-9]{0,5})([*x])([1-9][0-9]{0,5})$")


def check_size(model: str, value: Any, *, allow_x: bool, allow_star: bool,
               allow_tiers: bool) -> tuple[str, int, int]:
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
    limit = MAX_PIXELS if model == PRO else BASE_MODEL_MAX_PIXELS
    if not MIN_PIXELS <= width * height <= limit:
        raise BadRequest("invalid",
                         f"size {value}: total pixels must be within [768*768, {_root(limit)}] for {model}")
    if not 1 / 8 <= width / height <= 8:
        raise BadRequest("invalid", f"size {value}: aspect ratio must be within [1:8, 8:1]")
    return f"{width}*{height}", width, height


def _root(pixels: int) -> str:
    side = int(pixels**0.5)
    return f"{side}*{side}"
