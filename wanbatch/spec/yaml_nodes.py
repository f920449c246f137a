"""YAML text → plain values, plus where every value and key sits in the source.

PyYAML's ``safe_load`` forgets positions, so a validation error could not point at the line that
caused it. We compose the node graph instead and build the plain values ourselves, recording a
:class:`Mark` for each value path (``("limits", "concurrency")``, ``("sizes", 1)``) and for each
mapping key. Duplicate keys, which PyYAML silently overwrites, are reported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wanbatch.errors import SpecError, SpecErrors

Path = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based source position."""

    line: int
    column: int


START = Mark(1, 1)


@dataclass(slots=True)
class Document:
    """A parsed YAML file: plain ``data`` and the positions of everything in it."""

    file: str
    data: Any
    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)
    raw: dict[Path, str] = field(default_factory=dict)
    """Source text of each non-null scalar (``1.50`` stays ``"1.50"``, ``yes`` stays ``"yes"``)."""

    def mark(self, path: Path, *, at_key: bool = False) -> Mark:
        """Where ``path`` is written; the nearest written ancestor when it is absent."""
        if at_key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), START)


def _mark(node: Node | yaml.Mark) -> Mark:
    m = node.start_mark if isinstance(node, Node) else node
    return Mark(m.line + 1, m.column + 1)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.constructor = SafeConstructor()
        self.errors: list[SpecError] = []
        self.active: set[int] = set()

    def error(self, node: Node, message: str, path: Path, hint: str | None = None) -> None:
        m = _mark(node)
        self.errors.append(
            SpecError(message, file=self.doc.file, line=m.line, column=m.column,
                      field=render_path(path) or None, hint=hint)
        )

    def build(self, node: Node, path: Path, depth: int = 0) -> Any:
        self.doc.values.setdefault(path, _mark(node))
        if depth > _MAX_DEPTH or id(node) in self.active:
            self.error(node, "nesting too deep (recursive alias?)", path)
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path, depth)
            self.error(node, f"unsupported YAML node {type(node).__name__}", path)
            return None
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        try:
            value = self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            self.error(node, f"cannot read this value: {getattr(exc, 'problem', exc)}", path)
            return None
        if value is not None:
            self.doc.raw[path] = node.value
        return value

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(value_node.value if isinstance(value_node, SequenceNode) else [value_node])
                continue
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, "a key must be a plain name, not a list or mapping", path)
                continue
            key = key_node.value
            sub = (*path, key)
            if key in out:
                first = self.doc.keys[sub]
                self.error(key_node, f"duplicate key {key!r} (first written at line {first.line})", sub,
                           hint="remove one of the two; YAML would silently keep only the last")
                continue
            self.doc.keys[sub] = _mark(key_node)
            out[key] = self.build(value_node, sub, depth + 1)
        for source in merged:  # YAML merge keys (<<: *base): explicit keys win
            if not isinstance(source, MappingNode):
                self.error(source, "'<<' merges only mappings", path)
                continue
            for key, value in self._mapping(source, path, depth + 1).items():
                out.setdefault(key, value)
        return out


def render_path(path: Path) -> str:
    """``("prompts", 0, "vars")`` → ``"prompts[0].vars"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def compose(text: str, file: str) -> Document:
    """Parse ``text`` (one YAML document) keeping positions; syntax errors become :class:`SpecError`."""
    doc = Document(file=file, data=None)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecErrors([SpecError(f"YAML syntax error: {problem}", file=file, line=line, column=column,
                                    hint="check indentation, quoting and the ':' after each key")]) from None
    except yaml.YAMLError as exc:
        raise SpecErrors([SpecError(f"YAML syntax error: {exc}", file=file)]) from None
    if root is None:
        return doc
    builder = _Builder(doc)
    doc.data = builder.build(root, ())
    if builder.errors:
        raise SpecErrors(sorted(builder.errors, key=lambda e: (e.line or 0, e.column or 0)))
    return doc
