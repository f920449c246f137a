"""Image sizes in a spec: normalisation (``2k`` → ``2K``, ``1920x1080`` → ``1920*1080``) and whether
the model and the dialect can serve them. The facts live in :mod:`wanbatch.models` and in each
dialect (asked through :mod:`wanbatch.registry`)."""

from __future__ import annotations

from typing import Any

from wanbatch.models import TIERS, normalize_size as model_normalize_size, size_problem as model_size_problem
from wanbatch.registry import dialect_names, get_dialect
from wanbatch.spec.issues import describe, fail

_HINT = "use a tier 1K, 2K, 4K or pixels as W*H, e.g. 1920*1080"


def normalize_size(value: Any) -> str:
    """Pydantic before-validator: a tier (any case) or ``W*H``/``WxH``/``W×H`` → canonical form."""
    if isinstance(value, str) and (size := model_normalize_size(value)) is not None:
        return size
    fail(f"must be one of the tiers {', '.join(TIERS)} or pixels W*H; got {describe(value)}", _HINT)


def size_problem(size: str, model: str, dialect: str) -> tuple[str, str] | None:
    """Why ``model`` over ``dialect`` cannot serve ``size`` (message, hint), or None when it can."""
    if problem := model_size_problem(size, model):
        return problem
    if dialect in dialect_names():
        return get_dialect(dialect).size_problem(size, model)
    return None
