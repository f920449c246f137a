"""Index parts: immutable Parquet files ``index/part-*.parquet`` with INDEX_SCHEMA.

A part is written under a hidden temp name, fsynced and renamed into place, so a reader listing
``index/*.parquet`` never sees half a file. Each part's key-value metadata ``wanbatch.covers`` maps
writer → last journal segment whose rows the part holds; recovery uses it to know which journal rows
are already indexed, whatever crash happened between the rename and the deletion of the segments.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DatasetError
from .fsutil import commit_via, disk_errors
from .layout import Layout
from .schema import INDEX_SCHEMA

COVERS_KEY = b"wanbatch.covers"
TMP_SUFFIX = ".parquet.tmp"


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (dicts, missing keys = null) → a table with exactly INDEX_SCHEMA."""
    try:
        return pa.Table.from_pylist(list(rows), schema=INDEX_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise DatasetError(f"a row does not fit the index schema: {exc}") from exc


def part_name(kind: str, writer: str) -> str:
    """Sortable by time, unique across writers: ``part-<ms>-<kind><writer>-<rand>.parquet``."""
    return f"part-{int(time.time() * 1000):013d}-{kind}{writer}-{secrets.token_hex(3)}.parquet"


def write_part(layout: Layout, table: pa.Table, covers: dict[str, int], name: str) -> Path:
    """Write ``table`` as ``index/<name>`` atomically (temp name, fsync, rename, fsync dir)."""
    target = layout.index / name
    tmp = layout.index / f".{name[:-len('.parquet')]}{TMP_SUFFIX}"
    meta = dict(table.schema.metadata or {})
    meta[COVERS_KEY] = json.dumps(covers, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with disk_errors("write an index part"):
        layout.index.mkdir(parents=True, exist_ok=True)
        commit_via(tmp, target,
                   lambda path: pq.write_table(table, path, compression="zstd", row_group_size=128 * 1024))
    return target


def read_covers(path: Path) -> dict[str, int]:
    """The ``wanbatch.covers`` of a part ({} for parts written by other tools)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(COVERS_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def all_covers(layout: Layout) -> dict[str, int]:
    """Writer → highest segment covered by any part (parts vanishing under a compaction are skipped:
    the compacted part that replaces them carries their covers and is already in place)."""
    merged: dict[str, int] = {}
    for _ in range(5):
        try:
            for part in layout.parts():
                for writer, seq in read_covers(part).items():
                    merged[writer] = max(merged.get(writer, 0), seq)
            return merged
        except FileNotFoundError:
            merged.clear()
    raise DatasetError(f"{layout.index}: the index keeps changing under recovery; try again")


def read_parts(layout: Layout, columns: Sequence[str] | None = None, flt: Any = None) -> pa.Table:
    """Read every visible part (relisting if a compaction removes one mid-read)."""
    import pyarrow.dataset as ds

    last: Exception | None = None
    for _ in range(8):
        parts = layout.parts()
        if not parts:
            return INDEX_SCHEMA.empty_table().select(list(columns) if columns else INDEX_SCHEMA.names)
        try:
            dataset = ds.dataset([str(p) for p in parts], schema=INDEX_SCHEMA, format="parquet")
            return dataset.to_table(columns=list(columns) if columns else None, filter=flt)
        except FileNotFoundError as exc:
            last = exc
        except (pa.ArrowInvalid, OSError) as exc:
            if isinstance(exc, OSError) and not _vanished(exc):
                raise DatasetError(f"cannot read the index in {layout.index}: {exc}") from exc
            if isinstance(exc, pa.ArrowInvalid) and not _vanished(exc):
                raise DatasetError(f"the index in {layout.index} is damaged: {exc}") from exc
            last = exc
    raise DatasetError(f"cannot read the index in {layout.index}: {last}")


def _vanished(exc: BaseException) -> bool:
    text = str(exc)
    return "No such file" in text or "not found" in text.lower()


def dedupe(table: pa.Table) -> pa.Table:
    """One row per image_id: an ``ok`` row beats a ``failed`` one, then the latest ``created_at``."""
    if table.num_rows < 2:
        return table
    ok = pc.equal(table["status"], "ok").cast(pa.int8()).fill_null(0)
    keyed = table.append_column("__ok", ok).append_column(
        "__pos", pa.array(range(table.num_rows), pa.int64())
    )
    keyed = keyed.sort_by(
        [("image_id", "ascending"), ("__ok", "ascending"), ("created_at", "ascending"),
         ("__pos", "ascending")]
    )
    ids = keyed["image_id"]
    n = keyed.num_rows
    last = pc.not_equal(ids.slice(0, n - 1), ids.slice(1))
    mask = pa.concat_arrays([last.combine_chunks() if isinstance(last, pa.ChunkedArray) else last,
                             pa.array([True])])
    return keyed.filter(mask).drop_columns(["__ok", "__pos"])
