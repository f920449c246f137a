"""Values of template vars: inline lists and scalars, or files beside the spec.

A file is read once at load time, so a plan (and its job ids) cannot change while a run is going.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path as FsPath

from wanbatch.errors import SpecError
from wanbatch.spec.files import MAX_VARS_FILE_BYTES, FileProblem, read_text_capped
from wanbatch.spec.issues import Issues, did_you_mean
from wanbatch.spec.model import VarFile
from wanbatch.spec.paths import confined
from wanbatch.spec.yaml_nodes import Path

SUPPORTED = (".txt", ".csv", ".jsonl")


class VarFileError(Exception):
    """A problem with a vars file: (message, hint)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def resolve_var(name: str, value: list[str] | str | VarFile, path: Path, issues: Issues,
                spec_dir: FsPath) -> list[str] | None:
    """The values of var ``name`` written at ``path``; None (with an issue added) when unusable."""
    if isinstance(value, VarFile):
        try:
            return read_var_file(spec_dir, value, name)
        except (VarFileError, SpecError) as exc:
            issues.add((*path, "file"), exc.message, exc.hint)
            return None
    raw = issues.doc.raw
    if isinstance(value, str):
        return [raw.get(path, value)]
    # keep numbers as written (1.50 stays "1.50")
    return [raw.get((*path, i), v) for i, v in enumerate(value)]


def read_var_file(spec_dir: FsPath, ref: VarFile, name: str) -> list[str]:
    """The values of ``ref``; :class:`VarFileError`, or :class:`SpecError` for a file the spec may not
    read (:func:`wanbatch.spec.paths.confined`)."""
    path = FsPath(ref.file)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise VarFileError(f"cannot read values from {ref.file!r}; supported: {', '.join(SUPPORTED)}",
                           "use a .txt file (one value per line), a .csv with a header, or .jsonl")
    if ref.column is not None and suffix == ".txt":
        raise VarFileError("'column' applies only to .csv and .jsonl files", "remove column")
    path = confined(path, spec_dir, f"vars.{name}.file", max_bytes=MAX_VARS_FILE_BYTES)
    try:
        text = read_text_capped(path, MAX_VARS_FILE_BYTES, what="vars file")
    except FileNotFoundError:
        raise VarFileError(f"file not found: {ref.file} (looked in {spec_dir})",
                           "paths are relative to the spec's directory") from None
    except FileProblem as exc:
        raise VarFileError(f"{ref.file} {exc.message}", exc.hint) from None
    column = ref.column or name
    if suffix == ".txt":
        values = [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]
    elif suffix == ".csv":
        values = _csv_column(text, column, ref.file)
    else:
        values = _jsonl_key(text, column, ref.file)
    if not values:
        raise VarFileError(f"{ref.file} holds no values", "add at least one value")
    return values


def _csv_column(text: str, column: str, file: str) -> list[str]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise VarFileError(f"{file} is empty; a header row is expected", "put the column names first")
    header = [h.strip() for h in header]
    if column not in header:
        guess = did_you_mean(column, header)
        raise VarFileError(f"{file} has no column {column!r}; columns: {', '.join(header)}",
                           f"did you mean column: {guess}?" if guess else "set column: to one of them")
    i = header.index(column)
    try:
        return [row[i].strip() if i < len(row) else "" for row in reader if any(c.strip() for c in row)]
    except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit: far beyond any prompt anyway
        raise VarFileError(f"{file} line {reader.line_num}: {exc}",
                           "one value per cell; a prompt takes at most 5000 characters") from None


def _jsonl_key(text: str, key: str, file: str) -> list[str]:
    values: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise VarFileError(f"{file} line {lineno} is not JSON: {exc.msg}",
                               "one JSON object per line") from None
        except (ValueError, RecursionError) as exc:  # a 5000-digit number, arrays nested 10⁵ deep
            problem = ("nested too deeply" if isinstance(exc, RecursionError)
                       else "a number with too many digits")
            raise VarFileError(f"{file} line {lineno} cannot be read: {problem}",
                               "one flat JSON object per line") from None
        if not isinstance(record, dict) or key not in record:
            keys = ", ".join(record) if isinstance(record, dict) else "none"
            raise VarFileError(f"{file} line {lineno} has no key {key!r}; keys: {keys}",
                               "set column: to the key holding the values")
        value = record[key]
        if value is None or isinstance(value, dict | list):
            raise VarFileError(f"{file} line {lineno}: {key!r} must be text or a number", None)
        values.append(value if isinstance(value, str) else json.dumps(value))
    return values
