"""How a mock gateway behaves: dialect, latency, injected faults, auth, moderation, images.

A plain dataclass that validates itself in ``__post_init__`` (a bad value raises ``ValueError`` with a
message meant for a person), so the app, the server and the CLI can trust it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from wanbatch.mock import quota

#: Every fault the mock can inject, in the order rates are laid out on [0, 1) when one is drawn.
FAULTS: tuple[str, ...] = (
    "429",
    "429_retry_after",
    "500",
    "502",
    "503",
    "timeout",
    "524",
    "200_error",
    "short_data",
    "html_500",
    "empty_502",
    "task_fail",
    "403",
    "200_html",
    "200_truncated",
    "200_not_a_list",
)


#: Faults of the file route (``GET /files/{token}``, the object store): ``file_fail_first``.
FILE_FAULTS: tuple[str, ...] = ("500", "503", "403")

#: What a key that ran dry answers (``dry_after``).
DRY_ANSWERS: tuple[str, ...] = ("401", "403", "arrearage")


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution in seconds: ``fixed``, ``uniform`` (a, b) or ``lognormal`` (median, sigma)."""

    kind: Literal["fixed", "uniform", "lognormal"]
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, value: float | int | str) -> Latency:
        """Read ``0.5``, ``"0.5"``, ``"uniform:a,b"`` or ``"lognormal:median,sigma"``."""
        if isinstance(value, bool):
            raise ValueError(f"latency must be seconds or a distribution, not {value!r}")
        if isinstance(value, (int, float)):
            return cls._fixed(float(value))
        text = value.strip()
        name, sep, args = text.partition(":")
        if not sep:
            try:
                return cls._fixed(float(text))
            except ValueError:
                raise ValueError(_LATENCY_HELP.format(value=value)) from None
        try:
            a_text, b_text = args.split(",")
            a, b = float(a_text), float(b_text)
        except ValueError:
            raise ValueError(_LATENCY_HELP.format(value=value)) from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(_LATENCY_HELP.format(value=value))
        if name == "uniform":
            if not 0 <= a <= b:
                raise ValueError(f"latency {value!r}: uniform needs 0 <= a <= b")
            return cls("uniform", a, b)
        if name == "lognormal":
            if a <= 0 or b < 0:
                raise ValueError(f"latency {value!r}: lognormal needs median > 0 and sigma >= 0")
            return cls("lognormal", a, b)
        raise ValueError(_LATENCY_HELP.format(value=value))

    @classmethod
    def _fixed(cls, seconds: float) -> Latency:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be >= 0 seconds, not {seconds!r}")
        return cls("fixed", seconds)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return rng.lognormvariate(math.log(self.a), self.b)


_LATENCY_HELP = (
    "latency {value!r} not understood: give seconds (0.5), 'uniform:a,b' or 'lognormal:median,sigma'"
)


@dataclass
class MockConfig:
    """Behaviour of one mock gateway. See ``wanbatch.mock`` for the routes.

    ``faults`` maps a fault name (see :data:`FAULTS`) to a rate in [0, 1]; rates add up to at most 1
    and are drawn from an RNG seeded with ``fault_seed``. ``fail_first`` maps a fault name to K: the
    first K requests of each distinct job key get that fault (several entries stack, in order).
    ``image_kb`` is the approximate PNG size; ``None`` scales with pixels (about 25000 KB at 4096²).
    ``task_duration`` ``None`` means one latency sample per task. ``max_inflight``, ``quota_rpm``
    (per ``quota_window`` seconds, scaled), ``quota_retry_after``: the hidden quota of
    :mod:`wanbatch.mock.quota` (``None``: no limit, no Retry-After).
    """

    dialect: str = "flat"
    latency: float | str = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)
    fault_seed: int = 0
    api_key: str | None = None
    forbidden_keys: list[str] = field(default_factory=list)
    moderation_words: list[str] = field(default_factory=lambda: ["forbidden-word"])
    url_ttl: float = 86400.0
    scale: float = 1.0
    image_kb: float | None = None
    hang: float = 600.0
    task_duration: float | None = None
    #: Seconds an async submission takes to answer (the task id comes back after it).
    submit_latency: float = 0.0
    new_api_status: int = 500
    max_inflight: int | None = None
    quota_rpm: float | None = None
    quota_window: float = 60.0
    quota_retry_after: float | None = None
    #: Status of the Arrearage answer to a key in ``forbidden_keys`` (DashScope: 400; 403 kept for
    #: the mock's first tests). Profiles set 400.
    arrearage_status: int = 403
    #: After this many generation requests every one is refused with ``dry_answer`` (a key running
    #: dry mid-run): ``"401"``, ``"403"`` or ``"arrearage"`` (400).
    dry_after: int | None = None
    dry_answer: str = "arrearage"
    #: A real gateway's behaviour (``mock.profiles``); set by ``MockConfig.from_profile``.
    profile: str | None = None
    #: The object store's faults: the first K downloads of each image get that fault (entries
    #: stack in order, like ``fail_first``): ``500``/``503`` (InternalError), ``403`` (AccessDenied).
    file_fail_first: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> MockConfig:
        """A config behaving like the gateway ``name`` (see :data:`wanbatch.mock.profiles.PROFILES`)."""
        from wanbatch.mock.profiles import get_profile

        profile = get_profile(name)
        return cls(**{**profile.config(), "profile": name, **overrides})

    def __post_init__(self) -> None:
        from wanbatch.mock.registry import mock_dialect_names  # handlers register when plugins load

        if self.dialect not in (names := mock_dialect_names()):
            raise ValueError(f"dialect must be one of {', '.join(map(repr, names))}, not {self.dialect!r}")
        self.latency_dist: Latency = Latency.parse(self.latency)
        for name, rate in self.faults.items():
            _check_fault_name(name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError(f"fault {name}: rate must be a number in [0, 1], not {rate!r}")
        if sum(self.faults.values()) > 1 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        for name, k in self.fail_first.items():
            _check_fault_name(name)
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError(f"fail_first {name}: K must be an integer >= 0, not {k!r}")
        for name, k in self.file_fail_first.items():
            if name not in FILE_FAULTS:
                raise ValueError(f"unknown file fault {name!r}; known: {', '.join(FILE_FAULTS)}")
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise ValueError(f"file_fail_first {name}: K must be an integer >= 0, not {k!r}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], not {self.scale!r}")
        if self.image_kb is not None and not self.image_kb > 0:
            raise ValueError(f"image_kb must be > 0, not {self.image_kb!r}")
        for name in ("url_ttl", "hang", "submit_latency"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        if self.task_duration is not None and not self.task_duration >= 0:
            raise ValueError(f"task_duration must be >= 0 seconds, not {self.task_duration!r}")
        if self.new_api_status not in (400, 500):
            raise ValueError(f"new_api_status must be 400 or 500, not {self.new_api_status!r}")
        if any(not w for w in self.moderation_words):
            raise ValueError("moderation words must not be empty")
        if self.arrearage_status not in (400, 403):
            raise ValueError(f"arrearage_status must be 400 or 403, not {self.arrearage_status!r}")
        dry = self.dry_after
        if dry is not None and (isinstance(dry, bool) or not isinstance(dry, int) or dry < 0):
            raise ValueError(f"dry_after must be an integer >= 0, not {self.dry_after!r}")
        if self.dry_answer not in DRY_ANSWERS:
            raise ValueError(f"dry_answer must be one of {', '.join(DRY_ANSWERS)}, not {self.dry_answer!r}")
        quota.check(self.max_inflight, self.quota_rpm, self.quota_window, self.quota_retry_after)


def _check_fault_name(name: str) -> None:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
