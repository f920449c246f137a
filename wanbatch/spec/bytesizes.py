"""Byte sizes and rates as users write them (``64MB``, ``512 KiB``, ``32KB/s``, ``1048576``) → int bytes.

Decimal units are powers of 1000, binary ones (``KiB``…) of 1024; ``/s`` is accepted after a rate.
"""

from __future__ import annotations

import re
from typing import Any

from wanbatch.spec.issues import describe, fail

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)?\s*(/\s*s)?\s*$", re.IGNORECASE)
_HINT = "write a number of bytes or a string like 64MB, 512KiB, 2GB (rates: 32KB/s)"


def parse_bytes(value: Any) -> int:
    """Pydantic before-validator: a whole number of bytes, from an integer or a string with a unit."""
    if isinstance(value, bool) or value is None:
        fail(f"must be a size in bytes, got {describe(value)}", _HINT)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    else:
        fail(f"must be a size in bytes, got {describe(value)}", _HINT)
    if size < 0:
        fail(f"must be a size ≥ 0, got {describe(value)}", _HINT)
    return size
