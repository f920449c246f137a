"""Hugging Face ``datasets`` Parquet: ``data/train-XXXXX-of-NNNNN.parquet`` with an ``Image`` column.

The ``huggingface`` schema metadata declares the features, so ``load_dataset("parquet", ...)`` (and
the Hub viewer) decode ``image`` as ``Image()`` without ``datasets`` being needed to write it. ``vars``
becomes a JSON string because ``datasets`` has no map type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from wanbatch.dataset.schema import INDEX_SCHEMA
from wanbatch.dataset.view import DatasetView
from wanbatch.export._common import (
    TARGET_SHARD_BYTES,
    Output,
    dataset_name,
    iter_batches,
    plan_shards,
    read_image,
    vars_json,
)

IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---
# {name}

Images generated with wanbatch ({rows} rows). Load with:

```python
from datasets import load_dataset
ds = load_dataset("parquet", data_files="data/train-*.parquet", split="train")
```

`vars` holds the template variables as a JSON object string; `params` the request parameters as JSON.
"""


def export_schema() -> pa.Schema:
    """The index columns (``vars`` as a JSON string) after an ``image`` column, with HF features."""
    fields = [pa.field("image", IMAGE_TYPE)]
    for f in INDEX_SCHEMA:
        fields.append(pa.field(f.name, pa.string()) if f.name == "vars" else f.with_nullable(True))
    features: dict[str, Any] = {"image": {"_type": "Image"}}
    for f in fields[1:]:
        features[f.name] = {"dtype": _dtype(f.type), "_type": "Value"}
    meta = {"info": {"features": features}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(meta)})


def _dtype(t: pa.DataType) -> str:
    # datasets spells Arrow primitive types as Arrow prints them ("int64", "timestamp[ms, tz=UTC]").
    return "string" if pa.types.is_string(t) or pa.types.is_large_string(t) else str(t)


def write(view: DatasetView, table: pa.Table, out: Output, shard_rows: int | None) -> None:
    schema = export_schema()
    sizes = [b or 0 for b in table.column("bytes").to_pylist()]
    shards = plan_shards(sizes, shard_rows=shard_rows, target_bytes=TARGET_SHARD_BYTES)
    for i, rows in enumerate(shards):
        target = out.path(f"data/train-{i:05d}-of-{len(shards):05d}.parquet")
        with pq.ParquetWriter(target, schema, compression="zstd") as writer:
            for batch in iter_batches(table, rows):
                records = []
                for row in batch:
                    data = read_image(view, row)
                    if row["status"] == "ok" and data is None:
                        out.missing.append(row["image_id"])
                        continue
                    image = None if data is None else {"bytes": data, "path": Path(row["path"]).name}
                    records.append({**row, "image": image, "vars": vars_json(row["vars"])})
                if records:
                    writer.write_table(pa.Table.from_pylist(records, schema=schema))
                    out.rows += len(records)
    name = dataset_name(view)
    out.path("README.md").write_text(README.format(name=name, rows=out.rows), encoding="utf-8")


def register() -> None:
    from wanbatch.export.registry import ExportFormat, register_format

    register_format(ExportFormat("hf", write, "Hugging Face datasets Parquet shards with an Image column",
                                 sharded=True, images_only=False))
