"""A tampered index (``path`` or ``image_id`` with ``..``, absolute paths, symlinked images) never
makes export or the gallery read or write outside the dataset: such rows are skipped as missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.synthetic import make_dataset
from wanbatch.dataset import DatasetView
from wanbatch.export import export_dataset
from wanbatch.gallery import build_gallery


def tamper(root: Path, outside: Path) -> list[str]:
    """Point the first rows at files outside the dataset, in each hostile shape; their image ids."""
    first = next(iter(DatasetView.open(root).image_files()))
    (outside / "secret.png").write_bytes((root / first).read_bytes())
    parts = sorted((root / "index").glob("*.parquet"))
    table = pq.read_table(parts[0])
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    link = root / ok[2]["path"]
    link.unlink()
    link.symlink_to(outside / "secret.png")
    ok[0]["path"] = str(outside / "secret.png")
    ok[1]["path"] = "images/../../outside/secret.png"
    ok[3]["image_id"] = "../../../escaped"
    pq.write_table(pa_table(rows, table.schema), parts[0])
    return [ok[0]["image_id"], ok[1]["image_id"], ok[2]["image_id"], ok[3]["image_id"]]


def pa_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def test_export_and_gallery_skip_rows_that_point_outside(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_dataset(root, prompts=2, seeds=3, failed=0)
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = tamper(root, outside)
    before = sorted(p.name for p in tmp_path.rglob("*") if "escaped" in p.name)
    out = export_dataset(root, "imagefolder", tmp_path / "exp")
    assert set(bad) <= set(out.missing), out.missing
    exported = {p.name for p in (tmp_path / "exp").rglob("*.png")}
    assert len(exported) == 2  # only the untampered rows
    build_gallery(root, tmp_path / "g.html", thumb=32)
    assert sorted(p.name for p in tmp_path.rglob("*") if "escaped" in p.name) == before == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]
