"""``rows:`` — one set of vars per row, from a CSV or JSONL file beside the spec or an inline list.

A row is the natural unit of a captioned or labelled set: its columns advance together (a zip of all
of them), the columns a template renders shape the request, and the others (a label, a source id)
ride along as metadata into the index's ``vars``. Metadata never reaches the request, so it never
changes a job id.

Rows are read once, at load time. Mistakes in the file are errors at ``file:line:column``; what is
allowed but probably unmeant (a duplicate row, an empty cell) is a warning at the row's line, decided
by :mod:`wanbatch.spec.templates`, which knows which columns the templates use.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path as FsPath

from wanbatch.errors import SpecError
from wanbatch.spec.files import MAX_VARS_FILE_BYTES, FileProblem, read_text_capped
from wanbatch.spec.issues import Issues
from wanbatch.spec.model import RowsFile
from wanbatch.spec.paths import confined
from wanbatch.spec.yaml_nodes import Path

ROW_FILES = (".csv", ".jsonl")


@dataclass(frozen=True, slots=True)
class Row:
    values: dict[str, str]
    file: str
    line: int
    column: int | None = None  # inline rows: where the row's mapping starts

    @property
    def where(self) -> str:
        """``file:line`` (a rows file) or ``spec:line:column`` (an inline row), for warnings."""
        return f"{self.file}:{self.line}" + (f":{self.column}" if self.column else "")


@dataclass(frozen=True, slots=True)
class Rows:
    columns: list[str]
    rows: list[Row]

    def column(self, name: str) -> list[str]:
        return [row.values.get(name, "") for row in self.rows]


def load_rows(rows: list[dict[str, str]] | RowsFile, issues: Issues, spec_dir: FsPath) -> Rows | None:
    """The rows a spec gives; None (with issues added) when they cannot be read."""
    if isinstance(rows, RowsFile):
        return _from_file(rows, issues, spec_dir)
    doc = issues.doc
    columns: list[str] = []
    out: list[Row] = []
    for i, row in enumerate(rows):
        path: Path = ("rows", i)
        mark = doc.mark(path)
        values = {key: doc.raw.get((*path, key), value).strip() for key, value in row.items()}
        if not values:
            issues.add(path, "a row needs at least one column", "write e.g. - {subject: a fox, label: fox}")
            return None
        columns.extend(k for k in values if k not in columns)
        out.append(Row(values, doc.file, mark.line, mark.column))
    return Rows(columns, out)


def _from_file(ref: RowsFile, issues: Issues, spec_dir: FsPath) -> Rows | None:
    suffix = FsPath(ref.file).suffix.lower()
    if suffix not in ROW_FILES:
        issues.add(("rows", "file"), f"cannot read rows from {ref.file!r}; supported: {', '.join(ROW_FILES)}",
                   "use a .csv with a header row, or .jsonl with one JSON object per line")
        return None
    try:
        path = confined(FsPath(ref.file), spec_dir, "rows.file", max_bytes=MAX_VARS_FILE_BYTES)
    except SpecError as exc:
        issues.add(("rows", "file"), exc.message, exc.hint)
        return None
    try:
        text = read_text_capped(path, MAX_VARS_FILE_BYTES, what="rows file")
    except FileNotFoundError:
        issues.add(("rows", "file"), f"file not found: {ref.file} (looked in {spec_dir})",
                   "paths are relative to the spec's directory")
        return None
    except FileProblem as exc:
        issues.add(("rows", "file"), f"{ref.file} {exc.message}", exc.hint)
        return None
    reader = _read_csv if suffix == ".csv" else _read_jsonl
    before = len(issues.located)
    rows = reader(text, str(spec_dir / ref.file), issues)
    if len(issues.located) > before:
        return None
    if not rows.rows:
        issues.add(("rows", "file"), f"{ref.file} holds no rows", "add at least one row below the header")
        return None
    return rows


def _error(issues: Issues, file: str, line: int, column: int, message: str, hint: str | None = None) -> None:
    issues.located.append(SpecError(message, file=file, line=line, column=column, field="rows", hint=hint))


def _cell_columns(line: str) -> list[int]:
    """1-based column where each cell of one CSV line starts (quotes respected)."""
    starts, quoted = [1], False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            starts.append(i + 2)
    return starts


def _read_csv(text: str, file: str, issues: Issues) -> Rows:
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if not header:
            _error(issues, file, 1, 1, "the file is empty; a header row naming the columns is expected",
                   "put the column names on the first line, e.g. subject,label")
            return Rows([], [])
        names = [h.strip() for h in header]
        starts = _cell_columns(lines[0]) if lines else [1]
        for i, name in enumerate(names):
            col = starts[i] if i < len(starts) else 1
            if not name:
                _error(issues, file, 1, col, f"column {i + 1} of the header has no name", "name every column")
            elif name in names[:i]:
                _error(issues, file, 1, col, f"column {name!r} is named twice in the header",
                       "give each column its own name")
        out: list[Row] = []
        last = reader.line_num
        for cells in reader:
            start, last = last + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(names) and any(c.strip() for c in cells[len(names):]):
                starts = _cell_columns(lines[start - 1]) if start - 1 < len(lines) else [1]
                col = starts[len(names)] if len(names) < len(starts) else 1
                _error(issues, file, start, col, f"this row has {len(cells)} cells; the header names "
                       f"{len(names)} columns", "quote cells that contain commas, e.g. \"lamp, brass\"")
                continue
            values = {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(names)}
            out.append(Row(values, file, start))
    except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit: far beyond any prompt anyway
        _error(issues, file, reader.line_num, 1, f"cannot read this line: {exc}",
               "one value per cell; a prompt takes at most 5000 characters")
        return Rows([], [])
    return Rows(names, out)


def _read_jsonl(text: str, file: str, issues: Issues) -> Rows:
    columns: list[str] = []
    out: list[Row] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            _error(issues, file, lineno, exc.colno, f"not JSON: {exc.msg}", "one JSON object per line")
            continue
        except (ValueError, RecursionError) as exc:  # a 5000-digit number, arrays nested 10⁵ deep
            problem = ("nested too deeply" if isinstance(exc, RecursionError)
                       else "a number with too many digits")
            _error(issues, file, lineno, 1, f"cannot be read: {problem}", "one flat JSON object per line")
            continue
        if not isinstance(record, dict):
            _error(issues, file, lineno, 1, "each line must be a JSON object",
                   'write e.g. {"subject": "a fox"}')
            continue
        values: dict[str, str] = {}
        for key, value in record.items():
            if isinstance(value, dict | list):
                col = line.find(json.dumps(key)) + 1 or 1
                _error(issues, file, lineno, col, f"{key!r} must be text, a number or null, not "
                       f"{'an object' if isinstance(value, dict) else 'a list'}",
                       "flatten it into its own keys")
                continue
            text = value if isinstance(value, str) else "" if value is None else json.dumps(value)
            values[key] = text.strip()
        columns.extend(k for k in values if k not in columns)
        out.append(Row(values, file, lineno))
    return Rows(columns, out)
