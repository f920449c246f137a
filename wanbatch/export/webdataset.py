"""WebDataset tar shards: ``shard-000000.tar`` holding ``<key>.png``, ``<key>.txt`` (the prompt) and
``<key>.json`` (the row) per image — the img2dataset convention, so training loaders find a caption.
An edit row also carries its stored input images, ``<key>.input_0.png``, ``<key>.input_1.jpg``, … in
request order; the json's ``inputs`` gives each one's sha256, source and member name (``file``, null
for a URL input, which wanbatch never stored).

Image files are streamed into the tar from disk (never loaded whole) unless they are re-encoded; tar
members carry the row's ``created_at`` as mtime and no owner, so the same dataset always gives
byte-identical shards.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pyarrow as pa

from wanbatch.dataset.view import DatasetView
from wanbatch.export._common import (
    TARGET_SHARD_BYTES,
    Output,
    exported_image,
    input_image,
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
                    if row.get("inputs"):
                        row["inputs"] = _add_inputs(tar, view, row["inputs"], key, mtime, out)
                    caption = (row.get("prompt") or "").encode("utf-8")
                    tar.addfile(_member(f"{key}.txt", len(caption), mtime), io.BytesIO(caption))
                    sidecar = json.dumps(json_record(row, vars_as_object=True), ensure_ascii=False)
                    data = sidecar.encode("utf-8")
                    tar.addfile(_member(f"{key}.json", len(data), mtime), io.BytesIO(data))
                    out.rows += 1


def _add_inputs(tar: tarfile.TarFile, view: DatasetView, inputs: list[dict[str, Any]], key: str,
                mtime: float, out: Output) -> list[dict[str, Any]]:
    """Add a row's stored inputs to the tar as ``<key>.input_<i>.<ext>``; the inputs with their member."""
    listed = []
    for i, item in enumerate(inputs):
        data, ext, _ = input_image(view, item.get("sha256"), out.images)
        name = None
        if data is not None:
            name = f"{key}.input_{i}.{ext}"
            if isinstance(data, bytes):
                tar.addfile(_member(name, len(data), mtime), io.BytesIO(data))
            else:
                with data.open("rb") as fh:
                    tar.addfile(_member(name, data.stat().st_size, mtime), fh)
        listed.append({**item, "file": name})
    return listed


def register() -> None:
    from wanbatch.export.registry import ExportFormat, register_format

    register_format(ExportFormat("webdataset", write, "WebDataset tar shards",
                                 sharded=True, images_only=False))
