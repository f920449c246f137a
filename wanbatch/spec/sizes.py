"""Image sizes: normalisation (``2k`` → ``2K``, ``1920x1080`` → ``1920*1080``) and what each
model and dialect can serve (PROTOCOL.md, "Models")."""

from __future__ import annotations

import re
from typing import Any

from wanbatch.spec.issues import describe, fail
from wanbatch.types import TIER_PIXELS

TIERS: tuple[str, ...] = tuple(TIER_PIXELS)
MIN_PIXELS = 768 * 768
MAX_PIXELS = 4096 * 4096
MAX_ASPECT = 8
#: wan2.7-image serves pixel sizes up to 2K in total.
BASE_MODEL_MAX_PIXELS = 2048 * 2048

_BOTH = ("2048x2048", "2688x1536", "1536x2688", "2368x1728", "1728x2368", "1024x1024", "1696x960",
         "960x1696", "1472x1104", "1104x1472", "1248x832", "832x1248")
_PRO_ONLY = ("4096x4096", "4096x2304", "2304x4096", "4096x3072", "3072x4096")
#: The only sizes gateways of the "parameters" dialect accept, per model.
PARAMETERS_SIZES: dict[str, tuple[str, ...]] = {
    "wan2.7-image-pro": _PRO_ONLY + _BOTH,
    "wan2.7-image": _BOTH,
}

_PIXELS = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$")
_HINT = "use a tier 1K, 2K, 4K or pixels as W*H, e.g. 1920*1080"


def normalize_size(value: Any) -> str:
    """Pydantic before-validator: a tier (any case) or ``W*H``/``WxH``/``W×H`` → canonical form."""
    if isinstance(value, str):
        tier = value.strip().upper()
        if tier in TIER_PIXELS:
            return tier
        if m := _PIXELS.match(value):
            return f"{int(m.group(1))}*{int(m.group(2))}"
    fail(f"must be one of the tiers {', '.join(TIERS)} or pixels W*H; got {describe(value)}", _HINT)


def pixels(size: str) -> tuple[int, int]:
    """Width and height a normalised size stands for (a tier's nominal square)."""
    if size in TIER_PIXELS:
        return TIER_PIXELS[size]
    w, h = size.split("*")
    return int(w), int(h)


def to_wxh(size: str) -> str:
    """The ``WxH`` form the "parameters" dialect expects (``2K`` → ``2048x2048``)."""
    w, h = pixels(normalize_size(size))
    return f"{w}x{h}"


def size_problem(size: str, model: str, dialect: str) -> tuple[str, str] | None:
    """Why ``model`` over ``dialect`` cannot serve ``size`` (message, hint), or None when it can."""
    if size == "4K" and model != "wan2.7-image-pro":
        return (f"4K is only served by wan2.7-image-pro; {model} allows 1K, 2K or pixels up to 2048*2048",
                "use 2K, or set model: wan2.7-image-pro")
    if size not in TIER_PIXELS:
        w, h = pixels(size)
        total = w * h
        if not MIN_PIXELS <= total <= MAX_PIXELS:
            return (f"{size} has {total} pixels; allowed total is within [768*768, 4096*4096] "
                    f"= [{MIN_PIXELS}, {MAX_PIXELS}]", "pick a size between 768*768 and 4096*4096")
        if w == 0 or h == 0 or max(w, h) > MAX_ASPECT * min(w, h):
            return (f"{size} has aspect ratio {w}:{h}; allowed is within [1:8, 8:1]",
                    "make the longer side at most 8 times the shorter one")
        if model == "wan2.7-image" and total > BASE_MODEL_MAX_PIXELS:
            return (f"{size} has {total} pixels; wan2.7-image serves at most 2048*2048 = "
                    f"{BASE_MODEL_MAX_PIXELS}", "use a smaller size, or set model: wan2.7-image-pro")
    if dialect == "parameters":
        allowed = PARAMETERS_SIZES[model]
        if to_wxh(size) not in allowed:
            return (f"{size} is not offered by the parameters dialect for {model}; allowed: "
                    f"{', '.join(allowed)}", "pick one of the listed WxH sizes (or tiers 1K/2K"
                    + ("/4K" if model == "wan2.7-image-pro" else "") + ")")
    return None
