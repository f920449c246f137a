"""Seeds: the forms a spec may write them in, and :class:`SeedSpec`, their normalised form.

Ranges stay ``range`` objects so a sweep of a billion seeds costs no memory.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from wanbatch.models import MAX_SEED
from wanbatch.spec.issues import describe, fail

#: A random draw is materialised; beyond this a range is the better tool.
MAX_RANDOM = 1_000_000
_RANGE_TEXT = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")
_HINT = f"seeds are integers in [0, {MAX_SEED}]"

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SeedRangeIn(_In):
    start: Seed
    count: Annotated[int, Field(ge=1)]


class SeedRandomIn(_In):
    random: Annotated[int, Field(ge=1, le=MAX_RANDOM)]
    base: int = 0


def _parse_text(text: str) -> range:
    m = _RANGE_TEXT.match(text)
    if not m:
        fail(f"must be a range \"a..b\", a list, a number or a mapping; got {describe(text)}",
             "write e.g. \"0..99\" (both ends included)")
    a, b = int(m.group(1)), int(m.group(2))
    if b < a:
        fail(f"range {a}..{b} is reversed (end before start)", f"write \"{b}..{a}\"")
    if a < 0 or b > MAX_SEED:
        fail(f"range {a}..{b} leaves [0, {MAX_SEED}]", _HINT)
    return range(a, b + 1)


def _seed_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "@random" if "random" in value else "@range"
    if isinstance(value, list):
        return "@list"
    if isinstance(value, str):
        return "@text"
    return "@int"


SeedsIn = Annotated[
    Annotated[SeedRangeIn, Tag("@range")]
    | Annotated[SeedRandomIn, Tag("@random")]
    | Annotated[list[Seed], Tag("@list"), Field(min_length=1)]
    | Annotated[Annotated[str, AfterValidator(_parse_text)], Tag("@text")]
    | Annotated[Seed, Tag("@int")],
    Discriminator(_seed_tag),
]
"""What ``seeds:`` accepts, validated; the text form arrives as a ``range``."""

SEED_KEYS = {"range": list(SeedRangeIn.model_fields), "random": list(SeedRandomIn.model_fields)}


class SeedSpec(BaseModel):
    """The seeds of every job: a range, an explicit list, or ``derived`` (from each job's content)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["derived", "range", "list", "random"] = "derived"
    start: int = 0
    stop: int = 0
    items: tuple[int, ...] = ()
    base: int | None = None

    def values(self) -> Sequence[int] | None:
        """The seeds in order, or None when each job derives its own."""
        if self.kind == "derived":
            return None
        if self.kind == "range":
            return range(self.start, self.stop)
        return self.items

    def count(self) -> int:
        """Seeds per (prompt, size): 1 when derived."""
        values = self.values()
        return 1 if values is None else len(values)

    def describe(self) -> Any:
        """The JSON form recorded in the manifest (compact: ranges and random draws stay unexpanded)."""
        if self.kind == "derived":
            return None
        if self.kind == "range":
            return {"start": self.start, "count": self.stop - self.start}
        if self.kind == "random":
            return {"random": len(self.items), "base": self.base}
        return list(self.items)

    @classmethod
    def from_input(cls, value: Any) -> SeedSpec:
        """Build from a validated :data:`SeedsIn` value (or None when the spec gives no seeds)."""
        if value is None:
            return cls()
        if isinstance(value, SeedRangeIn):
            return cls(kind="range", start=value.start, stop=value.start + value.count)
        if isinstance(value, range):
            return cls(kind="range", start=value.start, stop=value.stop)
        if isinstance(value, SeedRandomIn):
            drawn = random.Random(value.base).sample(range(MAX_SEED + 1), value.random)
            return cls(kind="random", items=tuple(drawn), base=value.base)
        if isinstance(value, int):
            return cls(kind="list", items=(value,))
        return cls(kind="list", items=tuple(dict.fromkeys(value)))


def range_problem(value: Any) -> str | None:
    """A start/count range that runs past the largest seed."""
    if isinstance(value, SeedRangeIn) and value.start + value.count - 1 > MAX_SEED:
        return f"start {value.start} + count {value.count} runs past the largest seed {MAX_SEED}"
    return None
