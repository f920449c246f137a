"""Reading the index: what users, exporters and the gallery see.

The index is whatever ``index/*.parquet`` holds. Between a flush of a newer row for an image and the
next compaction, an image can have more than one row; :func:`read_index` resolves that (an ``ok`` row
beats a ``failed`` one, then the latest ``created_at`` wins), so prefer it to a raw glob when exactly
one row per image matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..errors import DatasetError, NotADatasetError
from .layout import Layout
from .parts import dedupe, read_parts
from .schema import INDEX_SCHEMA


def open_index(root: str | Path) -> ds.Dataset:
    """A pyarrow dataset over the current ``index/*.parquet`` with INDEX_SCHEMA (raw rows).

    ``root`` may be an object-store URI (``s3://bucket/prefix``): the dataset then reads the parts
    through pyarrow's file system for it (see :mod:`wanbatch.dataset.remote`).
    """
    if _remote(root):
        from . import remote

        return remote.open_index(str(root))
    layout = _existing(root)
    return ds.dataset([str(p) for p in layout.parts()], schema=INDEX_SCHEMA, format="parquet")


def read_index(root: str | Path, columns: Sequence[str] | None = None, *, dedupe: bool = True) -> pa.Table:
    """The index as a table; with ``dedupe`` one row per image_id (see the module docstring)."""
    if _remote(root):
        from . import remote

        def read(columns: Sequence[str] | None) -> pa.Table:
            return remote.read_parts_remote(str(root), columns)
    else:
        layout = _existing(root)

        def read(columns: Sequence[str] | None) -> pa.Table:
            return read_parts(layout, columns)
    wanted = list(columns) if columns is not None else None
    if wanted is not None:
        unknown = [c for c in wanted if c not in INDEX_SCHEMA.names]
        if unknown:
            raise DatasetError(f"unknown index column(s) {unknown}; known: {', '.join(INDEX_SCHEMA.names)}")
    if not dedupe:
        return read(wanted)
    need = list(dict.fromkeys((wanted or INDEX_SCHEMA.names) + ["image_id", "status", "created_at"]))
    table = _dedupe(read(need))
    return table.select(wanted) if wanted is not None else table


def _dedupe(table: pa.Table) -> pa.Table:
    return dedupe(table)


def failed_from(table: pa.Table) -> dict[str, str]:
    """image_id → error_kind for images with no ok row, from their latest failed row."""
    status = table["status"]
    ok_ids = table["image_id"].filter(pc.equal(status, "ok"))
    failed = table.filter(pc.equal(status, "failed"))
    if failed.num_rows == 0:
        return {}
    failed = failed.filter(pc.invert(pc.is_in(failed["image_id"], value_set=ok_ids.combine_chunks())))
    failed = failed.sort_by([("created_at", "ascending")])
    return dict(zip(failed["image_id"].to_pylist(), failed["error_kind"].fill_null("unknown").to_pylist()))


def _remote(root: str | Path) -> bool:
    from .remote import is_remote

    return is_remote(root)


def _existing(root: str | Path) -> Layout:
    if _remote(root):  # tools that read a folder (status) get a fresh local copy of index + manifest
        from .remote import snapshot

        return Layout(snapshot(str(root)))
    layout = Layout.of(root)
    if not layout.root.is_dir():
        raise NotADatasetError(f"{layout.root}: no such dataset folder")
    if not layout.is_dataset():
        raise NotADatasetError(f"{layout.root}: not a wanbatch dataset (no wanbatch.json or index/)")
    return layout
