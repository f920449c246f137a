"""What the Wan 2.7 image models accept, whatever the dialect (docs/protocol.md, "Models and sizes").

One home for the facts the spec checks, the dialects send and the mock enforces: models, size tiers,
pixel bounds, aspect, the fixed ``WxH`` list of the "parameters" gateways, seed and ``n`` ranges and
the parameters' documented defaults. A leaf: no I/O, no wanbatch imports.
"""

from __future__ import annotations

import re
from typing import Any

PRO = "wan2.7-image-pro"
BASE = "wan2.7-image"
MODELS: tuple[str, ...] = (PRO, BASE)

#: Size tiers and the square pixel size each stands for; 4K is served by the pro model only.
TIER_PIXELS: dict[str, tuple[int, int]] = {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)}
TIERS: tuple[str, ...] = tuple(TIER_PIXELS)
MIN_PIXELS = 768 * 768
MAX_PIXELS = 4096 * 4096
#: wan2.7-image serves pixel sizes up to 2K in total.
BASE_MODEL_MAX_PIXELS = 2048 * 2048
MAX_ASPECT = 8

_PRO_ONLY = ("4096x4096", "4096x2304", "2304x4096", "4096x3072", "3072x4096")
_BOTH = ("2048x2048", "2688x1536", "1536x2688", "2368x1728", "1728x2368", "1024x1024", "1696x960",
         "960x1696", "1472x1104", "1104x1472", "1248x832", "832x1248")
#: The only ``WxH`` sizes gateways of the "parameters" dialect accept, per model.
PARAMETERS_SIZES: dict[str, tuple[str, ...]] = {PRO: _PRO_ONLY + _BOTH, BASE: _BOTH}

MAX_SEED = 2_147_483_647
#: Images per request: 1–4, or 1–12 with ``enable_sequential``.
MAX_N = 4
MAX_N_SEQUENTIAL = 12

#: The request parameters a spec may set (canonical keys), besides model, prompt, size, n and seed.
PARAM_KEYS: tuple[str, ...] = ("watermark", "thinking_mode", "color_palette", "enable_sequential")
#: Values the gateways assume when a parameter is absent: sending them changes nothing, so they are
#: dropped from the canonical params (and from job identity), and a dialect need not express them.
PARAM_DEFAULTS: dict[str, Any] = {"watermark": False, "thinking_mode": True, "enable_sequential": False}

_PIXELS = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$")


def is_default(key: str, value: Any) -> bool:
    """Whether sending ``key: value`` changes nothing (``None`` or the documented default)."""
    return value is None or (key in PARAM_DEFAULTS and value == PARAM_DEFAULTS[key])


def normalize_size(value: str) -> str | None:
    """A tier (any case) or ``W*H``/``WxH``/``W×H`` → ``"2K"`` or ``"W*H"``; None when it is neither."""
    tier = value.strip().upper()
    if tier in TIER_PIXELS:
        return tier
    if m := _PIXELS.match(value):
        return f"{int(m.group(1))}*{int(m.group(2))}"
    return None


def pixels(size: str) -> tuple[int, int]:
    """Width and height a normalised size stands for (a tier's nominal square)."""
    if size in TIER_PIXELS:
        return TIER_PIXELS[size]
    w, h = size.replace("x", "*").split("*")
    return int(w), int(h)


def to_wxh(size: str) -> str:
    """The ``WxH`` form: ``2K`` → ``2048x2048``, ``1696*960`` → ``1696x960`` (any accepted spelling)."""
    w, h = pixels(normalize_size(size) or size)
    return f"{w}x{h}"


def max_n(sequential: bool) -> int:
    return MAX_N_SEQUENTIAL if sequential else MAX_N


def size_problem(size: str, model: str) -> tuple[str, str] | None:
    """Why ``model`` cannot serve the normalised ``size`` (message, hint), or None when it can."""
    if size == "4K" and model != PRO:
        return (f"4K is only served by {PRO}; {model} allows 1K, 2K or pixels up to 2048*2048",
                f"use 2K, or set model: {PRO}")
    if size in TIER_PIXELS:
        return None
    w, h = pixels(size)
    total = w * h
    if not MIN_PIXELS <= total <= MAX_PIXELS:
        return (f"{size} has {total} pixels; allowed total is within [768*768, 4096*4096] "
                f"= [{MIN_PIXELS}, {MAX_PIXELS}]", "pick a size between 768*768 and 4096*4096")
    if w == 0 or h == 0 or max(w, h) > MAX_ASPECT * min(w, h):
        return (f"{size} has aspect ratio {w}:{h}; allowed is within [1:8, 8:1]",
                "make the longer side at most 8 times the shorter one")
    if model == BASE and total > BASE_MODEL_MAX_PIXELS:
        return (f"{size} has {total} pixels; {BASE} serves at most 2048*2048 = "
                f"{BASE_MODEL_MAX_PIXELS}", f"use a smaller size, or set model: {PRO}")
    return None


# ---------------------------------------------------------------------------------- input images
# Model Studio, "Wan2.7 - image generation and editing" API reference (docs/protocol.md, "Editing"):
# 1–9 input images per request, URL or data URI; JPEG, PNG, WEBP or BMP; each side 240–8000 px;
# aspect ratio within 1:8–8:1; at most 20 MB each. Editing and image sets are capped at 2K (4K is
# text-to-image on the pro model only); thinking_mode applies to text-to-image only.

#: Most input images one request may carry.
MAX_INPUTS = 9
#: Formats an input may have (Pillow's names, lower-cased) and the MIME subtype of each.
INPUT_FORMATS: dict[str, str] = {"jpeg": "jpeg", "png": "png", "webp": "webp", "bmp": "bmp"}
#: File extension an input is stored under in a dataset's ``inputs/`` folder.
INPUT_EXT: dict[str, str] = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp"}
MIN_INPUT_SIDE = 240
MAX_INPUT_SIDE = 8000
MAX_INPUT_BYTES = 20 * 1024 * 1024
#: Most output pixels of an editing request or an image set (the 2K tier).
EDIT_MAX_PIXELS = 2048 * 2048
#: Request parameters that only make sense with input images.
EDIT_PARAM_KEYS: tuple[str, ...] = ("bbox_list",)


def input_problem(fmt: str | None, width: int, height: int, nbytes: int) -> str | None:
    """Why an input image cannot be sent (the rule it breaks), or None."""
    if fmt not in INPUT_FORMATS:
        return (f"format {fmt or 'unknown'} is not accepted; inputs must be "
                f"{'/'.join(f.upper() for f in INPUT_FORMATS)}")
    if nbytes > MAX_INPUT_BYTES:
        return f"{nbytes / 1048576:.1f} MB is over the 20 MB an input may have"
    if not (MIN_INPUT_SIDE <= width <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= height <= MAX_INPUT_SIDE):
        return f"{width}×{height} px: each side must be within {MIN_INPUT_SIDE}–{MAX_INPUT_SIDE} px"
    if not 1 / MAX_ASPECT <= width / height <= MAX_ASPECT:
        return f"{width}×{height} px: the aspect ratio must be within 1:8–8:1"
    return None


def edit_size_problem(size: str) -> str | None:
    """Why ``size`` (normalised) cannot be asked of an editing request or an image set, or None."""
    if size == "4K":
        return "4K is text-to-image only; editing and image sets go up to 2K"
    width, height = pixels(size)
    if width * height > EDIT_MAX_PIXELS:
        return f"{size} is over 2K ({width * height} pixels); editing and image sets go up to 2048*2048"
    return None


def bbox_problem(value: Any, inputs: int) -> str | None:
    """Why ``bbox_list`` does not fit ``inputs`` input images, or None. Its shape: one list per input
    image, in order, each holding boxes ``[x1, y1, x2, y2]`` in that image's pixels (an empty list for
    an image without boxes)."""
    if not isinstance(value, list):
        return "bbox_list must be a list with one list of boxes per input image"
    if len(value) != inputs:
        return f"bbox_list has {len(value)} entries; it needs one per input image ({inputs})"
    for i, boxes in enumerate(value, 1):
        if not isinstance(boxes, list):
            return f"bbox_list entry {i} must be a list of boxes [x1, y1, x2, y2]"
        for box in boxes:
            ints = isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)
            if not ints or not (box[0] < box[2] and box[1] < box[3]):
                return (f"bbox_list entry {i}: {box!r} is not a box [x1, y1, x2, y2] of whole pixels "
                        "with x1 < x2 and y1 < y2")
    return None
