"""The index schema: one row per image slot. Readers (pyarrow, pandas, polars, DuckDB) see it as is."""

from __future__ import annotations

import pyarrow as pa

INDEX_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
        pa.field("error_kind", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("pipeline", pa.string()),
        pa.field("model", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("template", pa.string()),
        pa.field("vars", pa.map_(pa.string(), pa.string())),
        pa.field("seed", pa.int64()),
        pa.field("size", pa.string()),
        pa.field("n", pa.int32()),
        pa.field("slot", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("params", pa.string()),  # canonical JSON
        pa.field("revised_prompt", pa.string()),
        pa.field("path", pa.string()),  # relative to the dataset root
        pa.field("format", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("task_id", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("latency_ms", pa.int64()),
        pa.field("created_at", pa.timestamp("ms", tz="UTC")),
        pa.field("run_id", pa.string()),
        # input images of an editing / reference request, in request order (null for text-to-image):
        # sha256 of the bytes sent, and where they came from (a path, a URL or "dataset:<image_id>")
        pa.field("inputs", pa.list_(pa.struct([("sha256", pa.string()), ("source", pa.string())]))),
    ]
)

COLUMNS: tuple[str, ...] = tuple(INDEX_SCHEMA.names)
