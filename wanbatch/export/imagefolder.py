"""An image folder: ``images/xx/<image_id>.png`` plus ``metadata.jsonl`` (``file_name`` + columns).

The layout ``datasets.load_dataset("imagefolder", data_dir=...)`` reads, and that any tool can
browse. It holds images only, so failed rows cannot be part of it.
"""

from __future__ import annotations

import json
import shutil

import pyarrow as pa

from wanbatch.dataset.view import DatasetView
from wanbatch.errors import DatasetError
from wanbatch.export._common import Output, exported_image, iter_batches, json_record, var_columns


def write(view: DatasetView, table: pa.Table, out: Output, shard_rows: int | None) -> None:
    metadata = out.path("metadata.jsonl")
    with metadata.open("w", encoding="utf-8") as meta:
        for batch in iter_batches(table, range(table.num_rows)):
            for row in batch:
                image, ext, changed = exported_image(view, row, out.images)
                if image is None:
                    out.missing.append(row["image_id"])
                    continue
                row = {**row, **changed}
                rel = f"images/{row['image_id'][:2]}/{row['image_id']}.{ext}"
                try:
                    if isinstance(image, bytes):
                        out.path(rel).write_bytes(image)
                    else:
                        shutil.copyfile(image, out.path(rel))
                except OSError as exc:
                    raise DatasetError(f"cannot copy image {row['path']}: {exc.strerror or exc}") from None
                # Nulls are left out: on an all-ok folder they would only become untyped columns.
                fields = json_record(row, vars_as_object=False)
                record = {"file_name": rel, **{k: v for k, v in fields.items() if v is not None}}
                record.update(var_columns(row.get("vars"), record))
                meta.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.rows += 1


def register() -> None:
    from wanbatch.export.registry import ExportFormat, register_format

    register_format(ExportFormat("imagefolder", write, "image files plus metadata.jsonl",
                                 sharded=False, images_only=True))
