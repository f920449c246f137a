"""Prompt templates against their vars: which fields each template uses, which values feed them,
and which vars advance together (zip).

Rules (DESIGN §1): every field needs values; every var must be used by some template; a zip group
needs equal lengths. Top-level vars and zip apply to every template; an entry's own add/override.

A template is untrusted too: ``{x:>2000000000}`` would render a 2 GB prompt for every job. Format
specs may pad or cut to at most :data:`MAX_PROMPT_CHARS` and may not take their width from a var,
and the longest prompt a template can render (computed per var, without expanding the product) must
fit in :data:`MAX_PROMPT_CHARS`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from wanbatch.errors import SpecError
from wanbatch.models import MAX_INPUTS
from wanbatch.spec.inputs import InputTable, resolve_image_var
from wanbatch.spec.issues import Issues, did_you_mean
from wanbatch.spec.model import PromptIn, PromptSpec, SpecIn
from wanbatch.spec.rows import Row, Rows, load_rows
from wanbatch.spec.values import resolve_var
from wanbatch.spec.yaml_nodes import Path

_FORMATTER = string.Formatter()
_NUMBER = re.compile(r"\d+")

#: Longest prompt one request may carry, in characters. Wan 2.7's image API takes a prompt of "up to
#: 5000 characters": so say the gateways that re-publish Model Studio's "Wan2.7 - image generation and
#: editing" reference (e.g. 13108701256.mintlify.app/guides/model-api/alibaba/wan2.7-image and
#: gccai.heqingsong.uk/en/api-reference/images/wan2.7-image/generation); the official page itself
#: could not be checked when this was written, so the number is also a plain safety limit. Longer
#: text would be cut or refused upstream anyway, after being paid for.
MAX_PROMPT_CHARS = 5000


def template_fields(template: str) -> list[str]:
    """Names of the ``{fields}`` in a template, in order; raises ValueError when malformed."""
    names: list[str] = []
    for _, name, spec, _ in _FORMATTER.parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"field {{{name}}} is not a var name")
        if name not in names:
            names.append(name)
        names.extend(n for n in template_fields(spec or "") if n not in names)
    return names


def _render_problem(template: str, values: dict[str, list[str]]) -> str | None:
    """Render once with the first values, so a bad format spec fails now, not mid-run."""
    try:
        template.format_map({k: v[0] for k, v in values.items() if v})
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return str(exc)
    return None


def format_spec_problem(template: str) -> str | None:
    """Why a (well-formed) template's format specs are unsafe, or None: widths and precisions are
    capped at :data:`MAX_PROMPT_CHARS`, and a spec may not hold a field (its width would come from a
    var's value, out of reach of this check)."""
    for _, name, spec, _ in _FORMATTER.parse(template):
        if name is None or not spec:
            continue
        if "{" in spec:
            return f"{{{name}:{spec}}} takes its format from a var; write the format out, e.g. {{{name}:>10}}"
        for digits in _NUMBER.findall(spec):
            if len(digits) > 6 or int(digits) > MAX_PROMPT_CHARS:
                return (f"{{{name}:{spec}}} pads or cuts to {digits} characters; a prompt holds at most "
                        f"{MAX_PROMPT_CHARS}")
    return None


def _rendered_length(value: str, conversion: str | None, spec: str) -> int:
    text = {"r": repr, "a": ascii}.get(conversion or "", str)(value)
    return len(format(text, spec))


def longest_prompt(template: str, values: dict[str, list[str]],
                   zip_groups: list[list[str]]) -> tuple[int, dict[str, str]]:
    """Length of the longest prompt ``template`` renders over every combination, and the values that
    give it, without expanding the product: a prompt's length is its literal text plus one term per
    axis (a var, or a zip group advancing together), so the longest takes each axis's longest row.

    Expects a template that renders (format specs already checked) and values for all its fields.
    """
    fields: list[tuple[str, str | None, str]] = []
    length = 0
    for literal, name, spec, conversion in _FORMATTER.parse(template):
        length += len(literal)
        if name is not None:
            fields.append((name, conversion, spec or ""))
    grouped = {name for group in zip_groups for name in group}
    axes = [list(group) for group in zip_groups] + [[name] for name in values if name not in grouped]
    chosen: dict[str, str] = {}
    for names in axes:
        used = [(names.index(name), conversion, spec) for name, conversion, spec in fields if name in names]
        if not used:
            continue
        best, best_row = -1, ()
        for row in zip(*(values[name] for name in names), strict=True):
            size = sum(_rendered_length(row[i], conversion, spec) for i, conversion, spec in used)
            if size > best:
                best, best_row = size, row
        length += best
        chosen.update(zip(names, best_row, strict=True))
    return length, chosen


@dataclass(slots=True)
class _Entry:
    template: str
    path: Path  # where the template is written
    base: Path  # where the entry's own vars/zip are written
    own: PromptIn | None


def resolve_prompts(spec: SpecIn, issues: Issues, spec_dir: FsPath, table: InputTable | None = None,
                    upstream: frozenset[str] = frozenset()) -> list[PromptSpec]:
    table = table if table is not None else InputTable()
    entries = _entries(spec, issues)
    top = _resolve_vars(spec.vars, ("vars",), issues, spec_dir)
    images: dict[str, list[str]] = {}
    for name, value in spec.images.items():
        if not name.isidentifier():
            issues.add(("images", name), f"image var name {name!r} must be a Python identifier",
                       "rename it, e.g. " + "".join(c if c.isalnum() else "_" for c in name), at_key=True)
        if name in spec.vars:
            issues.add(("images", name), f"{name!r} is both a var and an image var", "keep it in one place",
                       at_key=True)
        found = resolve_image_var(name, value, ("images", name), issues, spec_dir, table, upstream=upstream)
        images[name] = found if found is not None else []
    rows = load_rows(spec.rows, issues, spec_dir) if spec.rows is not None else None
    if spec.rows is not None and rows is None:
        issues.raise_if_any()  # without its columns, every template field would be a follow-on error
    columns = rows.columns if rows else []
    for name in columns:
        if name in spec.vars or any(e.own and name in e.own.vars for e in entries):
            issues.add(("rows",), f"column {name!r} of rows is also a var", "keep it in one place",
                       at_key=True)
    if rows:  # rows first: the outermost axis, so a gallery and an export list them in file order
        top = {**{name: rows.column(name) for name in columns}, **top}
    input_columns = _input_columns(spec, entries, rows, issues, spec_dir, table)
    top = {**top, **images}
    zipped_columns = [n for g in spec.zip for n in g if n in columns]
    for name in zipped_columns:
        issues.add(("zip",),
                   f"zip names {name!r}, a column of rows; a row's columns already advance together",
                   f"remove {name} from zip")
    known = set(spec.vars).union(images, *(e.own.vars for e in entries if e.own))
    top_groups = _known_names(_groups(spec.zip, ("zip",), issues), known, issues)
    if len(columns) >= 2:
        top_groups.append((list(columns), ("rows",)))
    used_anywhere: set[str] = set()
    used_images: set[str] = set()
    unreadable = False
    out: list[PromptSpec] = []
    for entry in entries:
        try:
            fields = template_fields(entry.template)
        except ValueError as exc:
            issues.add(entry.path, f"malformed template: {exc}",
                       "fields are {name}; write {{ and }} for literal braces")
            unreadable = True
            continue
        own = _resolve_vars(entry.own.vars, (*entry.base, "vars"), issues, spec_dir) if entry.own else {}
        merged = {**top, **own}
        inputs, inputs_path = _entry_inputs(spec, entry)
        for name in [f for f in fields if f in images or f in input_columns]:
            issues.add(entry.path, f"template uses {{{name}}}, an image var; images are sent, not rendered",
                       f'refer to it by its position in inputs, e.g. "image {inputs.index(name) + 1}"'
                       if name in inputs else "remove it from the template")
        fields = [f for f in fields if f not in images and f not in input_columns]
        _check_inputs(inputs, inputs_path, images, input_columns, columns, issues)
        used_images.update(inputs)
        declared = (set(spec.vars) | set(columns) | set(images)
                    | (set(entry.own.vars) if entry.own else set()))
        own_groups = _groups(entry.own.zip, (*entry.base, "zip"), issues) if entry.own else []
        own_groups = _known_names(own_groups, declared, issues)
        for name in fields:
            if name not in declared:
                guess = did_you_mean(name, declared)
                issues.add(entry.path, f"template uses {{{name}}} but no values are given for {name!r}",
                           f"did you mean {{{guess}}}?" if guess else f"add {name}: [...] under vars")
        used_anywhere.update(fields)
        for name in set(entry.own.vars if entry.own else ()) - set(fields):
            issues.add((*entry.base, "vars", name), f"var {name!r} is not used by this template",
                       f"use {{{name}}} in the template or remove it", at_key=True)
        groups = _equal_lengths(top_groups + own_groups, merged, issues)
        used = [v for v in merged if v in fields]
        zipped = [[v for v in g if v in fields] for g, _ in groups]
        sent = [[v for v in g if v in fields or v in inputs] for g, _ in groups]
        if unsafe := format_spec_problem(entry.template):
            issues.add(entry.path, f"unsafe format spec: {unsafe}",
                       "format specs may only pad or cut to a few characters, e.g. {name:>10} or {name:.20}")
        elif all(merged.get(f) for f in fields):
            if problem := _render_problem(entry.template, merged):
                issues.add(entry.path, f"cannot render the template: {problem}",
                           "fields are {name} or {name:format}; write {{ and }} for literal braces")
            else:
                _check_length(entry, {v: merged[v] for v in used}, [g for g in zipped if g], issues)
        metadata = [c for c in columns if c not in fields and c not in inputs]
        zipped = [list(g) if path == ("rows",) else z for (g, path), z in zip(groups, sent, strict=True)]
        kept = {v: merged[v] for v in [*used, *metadata] if merged[v]}
        # an image var with no images yet (an earlier stage has not run) stays: it plans no job,
        # where dropping it would plan text-to-image jobs instead
        kept.update({v: merged.get(v, []) for v in inputs if v in merged and v not in kept})
        out.append(PromptSpec(template=entry.template, vars=kept,
                              zip=[g for g in zipped if len(g) >= 2], metadata=metadata, inputs=list(inputs)))
    for name in images:
        if name not in used_images and not unreadable:
            issues.add(("images", name), f"image var {name!r} is not sent by any prompt",
                       f"add it to inputs: [{name}] or remove it", at_key=True)
    for name in spec.vars:
        if name not in used_anywhere and not unreadable:
            issues.add(("vars", name), f"var {name!r} is not used by any template",
                       f"use {{{name}}} in a template or remove it", at_key=True)
    if rows and not unreadable:
        if not used_anywhere.intersection(columns) and not input_columns:
            issues.add(("rows",), f"no template uses a column of rows (columns: {', '.join(columns)})",
                       f"use e.g. {{{columns[0]}}} in a template", at_key=True)
        else:
            _row_warnings(rows, [c for c in columns if c in used_anywhere or c in input_columns], issues)
    return out


def _entry_inputs(spec: SpecIn, entry: _Entry) -> tuple[list[str], Path]:
    """The image vars ``entry`` sends, and where that list is written (its own, else the spec's)."""
    if entry.own is not None and entry.own.inputs is not None:
        return list(entry.own.inputs), (*entry.base, "inputs")
    return list(spec.inputs or []), ("inputs",)


def _check_inputs(inputs: list[str], path: Path, images: dict[str, list[str]], input_columns: set[str],
                  columns: list[str], issues: Issues) -> None:
    if len(inputs) > MAX_INPUTS:
        issues.add(path, f"a request carries at most {MAX_INPUTS} input images; inputs names {len(inputs)}",
                   f"keep {MAX_INPUTS} or fewer image vars in inputs")
    for name in inputs:
        if inputs.count(name) > 1:
            issues.add(path, f"inputs names {name!r} twice", "name each image var once")
        if name not in images and name not in input_columns and name not in columns:
            guess = did_you_mean(name, [*images, *columns])
            issues.add(path, f"inputs names {name!r}, which is neither an image var nor a column of rows",
                       f"did you mean {guess!r}?" if guess else f"add it under images: ({name}: a/*.png)")


def _input_columns(spec: SpecIn, entries: list[_Entry], rows: Rows | None, issues: Issues,
                   spec_dir: FsPath, table: InputTable) -> set[str]:
    """Columns of ``rows`` that some prompt sends as input images; each cell is checked at its row."""
    if rows is None:
        return set()
    named = set(spec.inputs or []).union(*(e.own.inputs or [] for e in entries if e.own))
    found = {c for c in rows.columns if c in named}
    for row in rows.rows:
        for name in sorted(found):
            text = row.values.get(name, "")
            try:
                if not text:
                    raise SpecError(f"empty cell in column {name!r}: an input image is needed",
                                    hint="give a path or URL in every row")
                table.value(text, spec_dir, f"rows.{name}")
            except SpecError as exc:
                issues.located.append(SpecError(exc.message, file=row.file, line=row.line,
                                                column=row.column, field=f"rows.{name}", hint=exc.hint))
    return found


#: Warnings of one kind listed one by one before the rest are counted.
MAX_ROW_WARNINGS = 10


def _row_warnings(rows: Rows, used: list[str], issues: Issues) -> None:
    """Rows that request the same thing as an earlier one, and empty cells, each at its row."""
    first: dict[tuple[str, ...], Row] = {}
    duplicates: list[str] = []
    empties: list[str] = []
    for row in rows.rows:
        key = tuple(row.values.get(c, "") for c in used)
        if key in first:
            earlier = first[key]
            same = ("repeats" if row.values == earlier.values else
                    "renders the same prompt as")
            why = "" if same == "repeats" else " (it differs only in columns no template uses)"
            duplicates.append(f"{row.where}: rows: this row {same} line {earlier.line}{why}; "
                              "both become one job, which keeps the first row's values")
        else:
            first[key] = row
        for name in rows.columns:
            if not row.values.get(name, ""):
                effect = "the prompt gets an empty value" if name in used else "its metadata is empty"
                empties.append(f"{row.where}: rows: empty cell in column {name!r}: {effect}")
    for found, what in ((duplicates, "duplicate rows"), (empties, "empty cells")):
        issues.warnings.extend(found[:MAX_ROW_WARNINGS])
        if len(found) > MAX_ROW_WARNINGS:
            issues.warnings.append(f"rows: … and {len(found) - MAX_ROW_WARNINGS} more {what}")


def _check_length(entry: _Entry, values: dict[str, list[str]], zipped: list[list[str]],
                  issues: Issues) -> None:
    length, chosen = longest_prompt(entry.template, values, zipped)
    if length > MAX_PROMPT_CHARS:
        example = ", ".join(f"{k}={v[:30] + '…' if len(v) > 30 else v!r}" for k, v in chosen.items())
        issues.add(entry.path, f"renders prompts of up to {length} characters; the API takes at most "
                   f"{MAX_PROMPT_CHARS}", f"shorten the template or its longest values ({example})"
                   if example else "shorten the template")


def _entries(spec: SpecIn, issues: Issues) -> list[_Entry]:
    if spec.prompt is not None and spec.prompts is not None:
        issues.add(("prompts",), "give either prompt or prompts, not both",
                   "move the single prompt into the prompts list", at_key=True)
    if spec.prompt is not None:
        return [_Entry(spec.prompt, ("prompt",), ("prompt",), None)]
    if spec.prompts is None:
        issues.add((), "a spec needs prompt (one template) or prompts (a list of templates)",
                   'add e.g. prompt: "a {subject} in {style} style"')
        return []
    raw = issues.doc.data.get("prompts") if isinstance(issues.doc.data, dict) else None
    entries = []
    for i, item in enumerate(spec.prompts):
        written_as_text = isinstance(raw, list) and i < len(raw) and isinstance(raw[i], str)
        path = ("prompts", i) if written_as_text else ("prompts", i, "template")
        entries.append(_Entry(item.template, path, ("prompts", i), item))
    return entries


def _resolve_vars(values: dict[str, Any], base: Path, issues: Issues,
                  spec_dir: FsPath) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in values.items():
        if not name.isidentifier():
            issues.add((*base, name), f"var name {name!r} must be a Python identifier (letters, digits, _)",
                       "rename it, e.g. " + "".join(c if c.isalnum() else "_" for c in name), at_key=True)
        resolved = resolve_var(name, value, (*base, name), issues, spec_dir)
        out[name] = resolved or []
    return out


def _groups(groups: list[list[str]], path: Path, issues: Issues) -> list[tuple[list[str], Path]]:
    data = issues.doc.data
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    nested = isinstance(data, list) and bool(data) and isinstance(data[0], list)
    return [(g, (*path, i) if nested else path) for i, g in enumerate(groups)]


def _known_names(groups: list[tuple[list[str], Path]], known: set[str],
                 issues: Issues) -> list[tuple[list[str], Path]]:
    """Groups whose members are all declared vars (an issue for each unknown name)."""
    good = []
    for group, path in groups:
        unknown = [name for name in group if name not in known]
        for name in unknown:
            guess = did_you_mean(name, known)
            issues.add(path, f"zip names {name!r}, which is not a var",
                       f"did you mean {guess!r}?" if guess else "zip lists names of vars")
        if not unknown:
            good.append((group, path))
    return good


def _equal_lengths(groups: list[tuple[list[str], Path]], merged: dict[str, list[str]],
                   issues: Issues) -> list[tuple[list[str], Path]]:
    """Groups whose vars can advance together here: disjoint and of equal lengths."""
    seen: set[str] = set()
    good = []
    for group, path in groups:
        ok = True
        for name in group:
            if name in seen:
                issues.add(path, f"var {name!r} is in more than one zip group", "keep it in one group")
                ok = False
            seen.add(name)
        lengths = {name: len(merged[name]) for name in group if merged.get(name)}
        if ok and len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}={v}" for k, v in lengths.items())
            issues.add(path, f"zipped vars must have equal lengths; got {detail}",
                       "give each zipped var the same number of values, "
                       "or drop zip for the cartesian product")
            ok = False
        if ok:
            good.append((group, path))
    return good
