"""Durations as users write them (``300s``, ``5m``, ``250ms``, ``1.5``) → float seconds."""

from __future__ import annotations

import re
from typing import Any

from wanbatch.spec.issues import describe, fail

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_HINT = "write a number of seconds or a string like 300s, 5m, 1.5s, 250ms, 1h"


def parse_duration(value: Any) -> float:
    """Pydantic before-validator: accept seconds as a number or a string with a unit."""
    if isinstance(value, bool) or value is None:
        fail(f"must be a duration, got {describe(value)}", _HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or ""]
    else:
        fail(f"must be a duration, got {describe(value)}", _HINT)
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        fail(f"must be a duration ≥ 0, got {describe(value)}", _HINT)
    return seconds
