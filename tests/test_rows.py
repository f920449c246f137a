"""``rows:``: one set of vars per row (CSV, JSONL or inline), metadata columns kept out of the job id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import wanbatch
from wanbatch.errors import SpecErrors
from wanbatch.plan import plan
from wanbatch.runner import RunOptions
from wanbatch.spec import load_spec

SPEC = """
    name: shop
    prompt: "{{subject}}, {{style}}"
    rows: {rows}
    vars:
      style: [ink, oil]
    output: {output}
"""


def spec_with(write_spec: Callable[..., Path], tmp_path: Path, rows: str) -> Path:
    return write_spec(SPEC.format(rows=rows, output=tmp_path / "out"))


def test_csv_rows_are_one_set_of_vars_each_and_labels_are_metadata(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("subject,label\na lamp,lamp\na red fox,fox\n", encoding="utf-8")
    spec = load_spec(spec_with(write_spec, tmp_path, "{file: r.csv}"))
    jobs = list(plan(spec).jobs())
    assert [(j.prompt, j.vars["label"]) for j in jobs] == [
        ("a lamp, ink", "lamp"), ("a lamp, oil", "lamp"),
        ("a red fox, ink", "fox"), ("a red fox, oil", "fox")]
    assert spec.warnings == ()
    # the label never reaches the request: the same rows without it give the same job ids
    (tmp_path / "bare.csv").write_text("subject\na lamp\na red fox\n", encoding="utf-8")
    bare_spec = SPEC.format(rows="{file: bare.csv}", output=tmp_path / "out")
    bare = load_spec(write_spec(bare_spec, "bare.yaml"))
    assert [j.job_id for j in plan(bare).jobs()] == [j.job_id for j in jobs]


def test_jsonl_and_inline_rows(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"subject": "a lamp", "id": 7}\n\n{"subject": "a fox", "id": 8}\n',
                                      encoding="utf-8")
    spec = load_spec(spec_with(write_spec, tmp_path, "{file: r.jsonl}"))
    firsts = [(j.prompt, j.vars["id"]) for j in plan(spec).jobs()][::2]
    assert firsts == [("a lamp, ink", "7"), ("a fox, ink", "8")]
    inline = load_spec(spec_with(write_spec, tmp_path, "[{subject: a lamp, id: 7}, {subject: a fox, id: 8}]"))
    assert [j.job_id for j in plan(inline).jobs()] == [j.job_id for j in plan(spec).jobs()]


def test_duplicate_rows_and_empty_cells_are_warned_at_their_line(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("subject,label\na lamp,lamp\na fox,fox\na lamp,other\n,none\na fox,fox\n",
                   encoding="utf-8")
    spec = load_spec(spec_with(write_spec, tmp_path, "{file: r.csv}"))
    assert plan(spec).job_count == 3 * 2  # 5 rows, 3 distinct requests
    warnings = "\n".join(spec.warnings)
    assert f"{csv}:4: rows: this row renders the same prompt as line 2" in warnings
    assert f"{csv}:6: rows: this row repeats line 3" in warnings
    assert f"{csv}:5: rows: empty cell in column 'subject': the prompt gets an empty value" in warnings


@pytest.mark.parametrize(("content", "line", "column", "fragment"), [
    ("subject,subject\na,b\n", 1, 9, "named twice"),
    ("subject,label\na lamp,lamp,extra\n", 2, 13, "3 cells; the header names 2"),
    ("", 1, 1, "empty"),
])
def test_csv_mistakes_point_at_file_line_and_column(
        write_spec: Callable[..., Path], tmp_path: Path, content: str, line: int, column: int,
        fragment: str) -> None:
    (tmp_path / "r.csv").write_text(content, encoding="utf-8")
    with pytest.raises(SpecErrors) as info:
        load_spec(spec_with(write_spec, tmp_path, "{file: r.csv}"))
    err = info.value.errors[0]
    assert (err.file, err.line, err.column) == (str(tmp_path / "r.csv"), line, column)
    assert fragment in err.message


def test_jsonl_mistake_and_spec_level_rows_mistakes(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"subject": "a"}\n{"subject": ["x"]}\n', encoding="utf-8")
    with pytest.raises(SpecErrors) as info:
        load_spec(spec_with(write_spec, tmp_path, "{file: r.jsonl}"))
    assert (info.value.errors[0].line, info.value.errors[0].column) == (2, 2)
    with pytest.raises(SpecErrors) as info:  # a rows column no template uses at all
        load_spec(spec_with(write_spec, tmp_path, "[{label: x}]"))
    assert "no template uses a column of rows" in info.value.render()
    with pytest.raises(SpecErrors) as info:
        load_spec(spec_with(write_spec, tmp_path, "{file: r.txt}"))
    assert "supported: .csv, .jsonl" in info.value.render()


def test_a_run_keeps_metadata_columns_in_the_index(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("subject,label\na lamp,lamp\na fox,fox\n", encoding="utf-8")
    spec = load_spec(spec_with(write_spec, tmp_path, "{file: r.csv}"))
    result = wanbatch.run(spec, RunOptions(output=str(tmp_path / "out")))
    assert result.exit_code == 0
    rows = pq.read_table(tmp_path / "out" / "index").to_pylist()
    labels = sorted((dict(r["vars"])["subject"], dict(r["vars"])["label"]) for r in rows)
    assert labels == [("a fox", "fox"), ("a fox", "fox"), ("a lamp", "lamp"), ("a lamp", "lamp")]
