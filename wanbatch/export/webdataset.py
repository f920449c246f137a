"""WebDataset tar shards: ``shard-000000.tar`` holding ``<key>.png``, ``<key>.txt`` (the prompt) and
``<key>.json`` (the row) per image — the img2dataset convention, so training loaders find a caption.

Image files are streamed into the tar from disk (never loaded whole) unless they are re-encoded; tar
members carry the row's ``created_at`` as mtime and no owner, so the same dataset always gives
byte-identical shards.
"""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa

from wanbatch.dataset.view import DatasetView
from wanbatch.export._common import (
    TARGET_SHARD_BYTES,
    Output,
    exported_image,
    iter_batches,
    json_record,
    plan_shards,
    sample_key,
)


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info


def write(view: DatasetView, table: pa.Table, out: Output, shard_rows: int | None) -> None:
    sizes = [b or 0 for b in table.column("bytes").to_pylist()]
    shards = plan_shards(sizes, shard_rows=shard_rows, target_bytes=TARGET_SHARD_BYTES)
    for i, rows in enumerate(shards):
        target = out.path(f"shard-{i:06d}.tar")  # under the split's folder when split
        with tarfile.open(target, "w", format=tarfile.USTAR_FORMAT) as tar:
            for batch in iter_batches(table, rows):
                for row in batch:
                    image, ext, changed = exported_image(view, row, out.images)
                    if row["status"] == "ok" and image is None:
                        out.missing.append(row["image_id"])
                        continue
                    row = {**row, **changed}
                    key = sample_key(row["image_id"])
                    mtime = row["created_at"].timestamp() if row.get("created_at") else 0
                    if image is not None:
                        if isinstance(image, bytes):
                            tar.addfile(_member(f"{key}.{ext}", len(image), mtime), io.BytesIO(image))
                        else:
                            with image.open("rb") as fh:
                                tar.addfile(_member(f"{key}.{ext}", image.stat().st_size, mtime), fh)
                    caption = (row.get("prompt") or "").encode("utf-8")
                    tar.addfile(_member(f"{key}.txt", len(caption), mtime), io.BytesIO(caption))
                    sidecar = json.dumps(json_record(row, vars_as_object=True), ensure_ascii=False)
                    data = sidecar.encode("utf-8")
                    tar.addfile(_member(f"{key}.json", len(data), mtime), io.BytesIO(data))
                    out.rows += 1


def register() -> None:
    from wanbatch.export.registry import ExportFormat, register_format

    register_format(ExportFormat("webdataset", write, "WebDataset tar shards",
                                 sharded=True, images_only=False))
