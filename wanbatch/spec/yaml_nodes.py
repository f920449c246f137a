"""YAML text → plain values, plus where every value and key sits in the source.

PyYAML's ``safe_load`` forgets positions, so a validation error could not point at the line that
caused it. We compose the node graph instead and build the plain values ourselves, recording a
:class:`Mark` for each value path (``("limits", "concurrency")``, ``("sizes", 1)``) and for each
mapping key. Duplicate keys, which PyYAML silently overwrites, are reported here.

A spec is untrusted text, so composing it is bounded: nesting deeper than :data:`MAX_DEPTH` is
refused from the event stream, before PyYAML's recursive composer could overflow the stack, and the
values built (aliases count each time they are expanded) stop at :data:`MAX_NODES`, so a
"billion laughs" file fails in milliseconds instead of filling memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wanbatch.errors import SpecError, SpecErrors

Path = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
#: Deepest nesting of lists and mappings a spec may use (a real spec needs about 5).
MAX_DEPTH = 64
#: Most values a spec may expand to, aliases counted at each use. Long lists belong in vars files.
MAX_NODES = 250_000


class _TooBig(Exception):
    """Raised inside the builder to stop at once: nothing more is worth reading."""


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
        self.built = 0

    def error(self, node: Node, message: str, path: Path, hint: str | None = None) -> None:
        m = _mark(node)
        self.errors.append(
            SpecError(message, file=self.doc.file, line=m.line, column=m.column,
                      field=render_path(path) or None, hint=hint)
        )

    def build(self, node: Node, path: Path, depth: int = 0) -> Any:
        self.built += 1
        if self.built > MAX_NODES:
            self.error(node, f"the spec expands to more than {MAX_NODES} values (an alias bomb?)", path,
                       hint="use fewer aliases (*name); put long lists of values in a vars file")
            raise _TooBig
        self.doc.values.setdefault(path, _mark(node))
        if depth > MAX_DEPTH or id(node) in self.active:
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
        except (ValueError, OverflowError) as exc:  # a 5000-digit number, a date like 2001-02-30
            problem = "a number with too many digits" if "digits" in str(exc) else str(exc)
            self.error(node, f"cannot read this value: {problem}", path, hint="quote it to make it text")
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
        _check_depth(text, file)
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
    if (big := _expansion_bomb(root)) is not None:
        m = _mark(big)
        raise SpecErrors([SpecError(f"this value expands to more than {MAX_NODES} values (an alias bomb?)",
                                    file=file, line=m.line, column=m.column,
                                    hint="use fewer aliases (*name); "
                                         "put long lists of values in a vars file")])
    builder = _Builder(doc)
    try:
        doc.data = builder.build(root, ())
    except _TooBig:
        raise SpecErrors(builder.errors[-1:]) from None
    if builder.errors:
        raise SpecErrors(sorted(builder.errors, key=lambda e: (e.line or 0, e.column or 0)))
    return doc


def _check_depth(text: str, file: str) -> None:
    """Refuse nesting beyond :data:`MAX_DEPTH` from the parser's events (flat, no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                start = event.start_mark
                line, column = (start.line + 1, start.column + 1) if start else (None, None)
                raise SpecErrors([SpecError(f"nesting deeper than {MAX_DEPTH} levels", file=file, line=line,
                                            column=column, hint="a spec needs only a few levels of lists "
                                            "and mappings")])
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def _expansion_bomb(root: Node) -> Node | None:
    """The innermost node that expands to more than :data:`MAX_NODES` values, or None.

    Sizes are memoised per node, so this costs one visit per node written, however often aliases
    repeat it: a billion-laughs file is measured, never expanded. (Nesting is already bounded.)
    """
    sizes: dict[int, int] = {}

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = 0  # a recursive alias: the builder reports it
        if isinstance(node, SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        elif isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        sizes[key] = total
        return total

    if size(root) <= MAX_NODES:
        return None
    node = root
    while True:
        children = (node.value if isinstance(node, SequenceNode) else
                    [n for pair in node.value for n in pair] if isinstance(node, MappingNode) else [])
        inner = next((c for c in children if sizes.get(id(c), 0) > MAX_NODES), None)
        if inner is None:
            return node
        node = inner
