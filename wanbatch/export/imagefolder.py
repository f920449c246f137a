"""An image folder: ``images/xx/<image_id>.png`` plus ``metadata.jsonl`` (``file_name`` + columns).

The layout ``datasets.load_dataset("imagefolder", data_dir=...)`` reads, and that any tool can
browse. It holds images only, so failed rows cannot be part of it.

An edit row's stored inputs are copied once each to ``inputs/xx/<sha256>.<ext>`` and named by
``source_image_file_name``, ``source_image_2_file_name``, … (``datasets`` loads every
``*_file_name`` as an image column: ``source_image``, …), with ``instruction`` (the prompt) and, for
an input sent as a URL (never stored), ``source_url``.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pyarrow as pa

from wanbatch.dataset.view import DatasetView
from wanbatch.errors import DatasetError
from wanbatch.export._common import (
    Output,
    exported_image,
    input_image,
    is_url,
    iter_batches,
    json_record,
    source_column,
    var_columns,
)


def write(view: DatasetView, table: pa.Table, out: Output, shard_rows: int | None) -> None:
    metadata = out.path("metadata.jsonl")
    copied: dict[str, str | None] = {}  # input sha256 -> its file in the export (None: not stored)
    with metadata.open("w", encoding="utf-8") as meta:
        for batch in iter_batches(table, range(table.num_rows)):
            for row in batch:
                image, ext, changed = exported_image(view, row, out.images)
                if image is None:
                    out.missing.append(row["image_id"])
                    continue
                row = {**row, **changed}
                rel = f"images/{row['image_id'][:2]}/{row['image_id']}.{ext}"
                _put(out, rel, image, f"image {row['path']}")
                # Nulls are left out: on an all-ok folder they would only become untyped columns.
                fields = json_record(row, vars_as_object=False)
                record = {"file_name": rel, **{k: v for k, v in fields.items() if v is not None}}
                record.update(var_columns(row.get("vars"), record))
                if row.get("inputs"):
                    record.update(_inputs(view, row, out, copied))
                meta.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.rows += 1


def _put(out: Output, rel: str, image: Any, what: str) -> None:
    """``image`` (bytes, or a local file to copy) at ``rel`` in the export."""
    try:
        if isinstance(image, bytes):
            out.path(rel).write_bytes(image)
        else:
            shutil.copyfile(image, out.path(rel))
    except OSError as exc:
        raise DatasetError(f"cannot copy {what}: {exc.strerror or exc}") from None


def _inputs(view: DatasetView, row: dict[str, Any], out: Output,
            copied: dict[str, str | None]) -> dict[str, Any]:
    """The edit columns of a row (its inputs copied on first use)."""
    record: dict[str, Any] = {"instruction": row.get("prompt")}
    for i, item in enumerate(row["inputs"]):
        sha, source = item.get("sha256"), item.get("source")
        if sha not in copied:
            data, ext, _ = input_image(view, sha, out.images)
            copied[sha] = None
            if data is not None:
                rel = f"inputs/{sha[:2]}/{sha}.{ext}"
                _put(out, rel, data, f"input image {sha}")
                copied[sha] = rel
        if copied[sha] is not None:
            record[source_column(i) + "_file_name"] = copied[sha]
        if is_url(source):
            record[source_column(i, "url")] = source
    return record


def register() -> None:
    from wanbatch.export.registry import ExportFormat, register_format

    register_format(ExportFormat("imagefolder", write, "image files plus metadata.jsonl",
                                 sharded=False, images_only=True))
