"""Collect spec mistakes with their source positions and raise them together.

Validation reports every mistake it finds in one go, in file order, so a user fixes a spec in one
pass. Pydantic's errors are translated here into messages that name the field, say what is allowed
and, where we can, how to fix it ("did you mean …").
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from wanbatch.errors import SpecError, SpecErrors
from wanbatch.spec.yaml_nodes import Document, Path, render_path

#: Our discriminated unions tag their members "@…": such steps of pydantic's ``loc`` are not in the data.
TAG_PREFIX = "@"

_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}

_TYPE_HINTS = {
    "an integer": "write a whole number without quotes, e.g. 8",
    "a number": "write a number without quotes, e.g. 0.5",
    "true or false": "write true or false",
    "a string": "quote the value to make it a string",
    "a list": "write a list, e.g. [a, b]",
    "a mapping": "write key: value pairs (indented below, or {key: value})",
}


def fail(message: str, hint: str | None = None) -> NoReturn:
    """Raise inside a pydantic validator with our own message and hint."""
    raise PydanticCustomError("spec", "{message}", {"message": message, "hint": hint or ""})


def describe(value: Any) -> str:
    """A short, readable rendering of a YAML value for messages."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


#: Given the path of a mapping and its data, the keys it may hold (for "unknown key" messages).
AllowedKeys = Callable[[Path, Any], list[str]]


@dataclass(slots=True)
class Issue:
    doc: Document
    path: Path
    message: str
    hint: str | None
    at_key: bool

    def to_error(self) -> SpecError:
        mark = self.doc.mark(self.path, at_key=self.at_key)
        return SpecError(self.message, file=self.doc.file, line=mark.line, column=mark.column,
                         field=render_path(self.path) or None, hint=self.hint or None)


class Issues:
    """Mistakes found so far in one spec (and the files it draws on)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.items: list[Issue] = []
        self.located: list[SpecError] = []
        """Mistakes located in files that are not YAML (a rows CSV or JSONL), already rendered."""
        self.warnings: list[str] = []
        """Things that are allowed but probably not meant (``file:line:col: message``), in order."""

    def __bool__(self) -> bool:
        return bool(self.items or self.located)

    def warn(self, path: Path, message: str, hint: str | None = None, *, at_key: bool = False,
             doc: Document | None = None) -> None:
        """Record a warning at ``path`` of the spec (or of ``doc``): printed, never fatal."""
        text = Issue(doc or self.doc, path, message, hint, at_key).to_error().render()
        if text not in self.warnings:
            self.warnings.append(text)

    def add(self, path: Path, message: str, hint: str | None = None, *, at_key: bool = False,
            doc: Document | None = None) -> None:
        issue = Issue(doc or self.doc, path, message, hint, at_key)
        if not any((i.doc, i.path, i.message) == (issue.doc, issue.path, issue.message) for i in self.items):
            self.items.append(issue)

    def raise_if_any(self) -> None:
        if not self:
            return
        errors = [i.to_error() for i in self.items] + self.located
        main = self.doc.file
        errors.sort(key=lambda e: (e.file != main, e.file or "", e.line or 0, e.column or 0))
        raise SpecErrors(errors)

    def add_validation_error(self, exc: ValidationError, data: Any, allowed_keys: AllowedKeys,
                             base: Path = (), doc: Document | None = None) -> None:
        """Translate every pydantic error of validating ``data`` (found at ``base`` in ``doc``)."""
        raw = exc.errors(include_url=False)
        suggested: set[Path] = set()
        pending: list[tuple[Path, bool, str, str | None]] = []
        for err in raw:
            path, _found = data_path(data, err["loc"])
            full = (*base, *path)
            kind = err["type"]
            if kind == "extra_forbidden":
                key = str(path[-1])
                allowed = allowed_keys(full[:-1], _parent(data, path))
                message, key_hint = unknown_key(key, allowed)
                guess = did_you_mean(key, allowed)
                if guess:
                    suggested.add((*full[:-1], guess))
                pending.append((full, True, message, key_hint))
            elif kind == "missing":
                pending.append((full, False, "is required", f"add {full[-1]}: …"))
            else:
                message, hint = _message(err)
                pending.append((full, False, message, hint))
        for full, at_key, message, hint in pending:
            if message == "is required" and full in suggested:
                continue  # the misspelt key already says it
            self.add(full, message, hint, at_key=at_key, doc=doc)


def unknown_key(key: str, allowed: list[str]) -> tuple[str, str]:
    if key in ("negative_prompt", "prompt_extend"):
        return (f"{key!r} is not supported by Wan 2.7",
                f"remove {key}; Wan 2.7 models ignore or refuse it")
    guess = did_you_mean(key, allowed)
    message = f"unknown key {key!r}; allowed: {', '.join(allowed)}"
    hint = f"did you mean {guess!r}?" if guess else "remove it or use one of the allowed keys"
    return message, hint


def _parent(data: Any, path: Path) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def data_path(data: Any, loc: tuple[str | int, ...]) -> tuple[Path, bool]:
    """Map a pydantic ``loc`` onto the data: drop union tags and wrapper steps that the YAML lacks.

    Returns the path and whether it exists in the data (a missing key does not).
    """
    path: list[str | int] = []
    cur = data
    exists = True
    for part in loc:
        if not exists:
            if isinstance(part, str) and not part.startswith(TAG_PREFIX):
                path.append(part)
            continue
        if isinstance(part, str) and part.startswith(TAG_PREFIX):
            continue
        if isinstance(cur, Mapping) and isinstance(part, str):
            if part in cur:
                path.append(part)
                cur = cur[part]
            else:
                path.append(part)
                exists = False
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path.append(part)
            cur = cur[part]
        # anything else is a tag or a step a before-validator added (a scalar wrapped in a list)
    return tuple(path), exists


def _message(err: Any) -> tuple[str, str | None]:
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == "spec":
        return ctx["message"], ctx.get("hint") or None
    if kind in _TYPE_NAMES:
        want = _TYPE_NAMES[kind]
        return f"must be {want}, got {describe(value)}", _TYPE_HINTS.get(want)
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        choices = [c.strip(" '") for c in expected.replace(" or ", ", ").split(",")]
        guess = did_you_mean(str(value), choices) if isinstance(value, str) else None
        hint = f"did you mean {guess!r}?" if guess else f"use one of: {', '.join(choices)}"
        return f"must be one of {', '.join(choices)}; got {describe(value)}", hint
    bounds = {"greater_than_equal": ("≥", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("≤", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        bound = ctx.get(key)
        return f"must be {op} {bound}, got {describe(value)}", f"use a value {op} {bound}"
    if kind == "too_short":
        return "must not be empty", "give at least one value"
    if kind == "finite_number":
        return "must be a finite number", "write an ordinary number (not .inf or .nan)"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, "), None
    return str(err["msg"]), None
