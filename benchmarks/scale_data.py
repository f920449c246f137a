"""Build a synthetic finished dataset for a spec: every image slot has an ``ok`` row and a file.

Rows are written with pyarrow directly in INDEX_SCHEMA (parts of 100,000 rows, as compaction would
leave them); image files are empty (``done_image_ids`` only lists folders, it never reads a file).
The image ids come from the spec's own plan, so ``wanbatch plan`` on it must find everything done.

    python benchmarks/scale_data.py SPEC OUT   → prints {"rows", "files", "rows_s", "files_s"}
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wanbatch.dataset.schema import INDEX_SCHEMA
from wanbatch.plan import plan
from wanbatch.spec import load_spec

PART_ROWS = 100_000


def write_part(out: Path, number: int, cols: dict[str, list]) -> None:
    n = len(cols["image_id"])
    now = datetime.now(UTC)
    given = {
        **cols,
        "status": ["ok"] * n, "pipeline": ["scale"] * n, "n": [1] * n, "slot": [0] * n,
        "format": ["png"] * n, "bytes": [0] * n, "created_at": [now] * n, "run_id": ["synthetic"] * n,
    }
    arrays = [pa.array(given[f.name], f.type) if f.name in given else pa.nulls(n, f.type)
              for f in INDEX_SCHEMA]
    table = pa.Table.from_arrays(arrays, schema=INDEX_SCHEMA)
    pq.write_table(table, out / "index" / f"part-{number:013d}-csynthetic.parquet", compression="zstd",
                   row_group_size=128 * 1024)


def main(spec_path: str, out_text: str) -> None:
    out = Path(out_text)
    (out / "index").mkdir(parents=True)
    images = out / "images"
    started = time.perf_counter()
    cols: dict[str, list] = {k: [] for k in ("image_id", "job_id", "model", "prompt", "seed", "size", "path")}
    ids: list[str] = []
    parts = 0
    for job in plan(load_spec(spec_path)).jobs():
        for image_id in job.image_ids():
            cols["image_id"].append(image_id)
            cols["job_id"].append(job.job_id)
            cols["model"].append(job.model)
            cols["prompt"].append(job.prompt)
            cols["seed"].append(job.seed)
            cols["size"].append(job.size)
            cols["path"].append(f"images/{image_id[:2]}/{image_id}.png")
            ids.append(image_id)
        if len(cols["image_id"]) >= PART_ROWS:
            write_part(out, parts, cols)
            parts += 1
            cols = {k: [] for k in cols}
    if cols["image_id"]:
        write_part(out, parts, cols)
    rows_s = time.perf_counter() - started
    started = time.perf_counter()
    for prefix in {i[:2] for i in ids}:
        (images / prefix).mkdir(parents=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for image_id in ids:
        os.close(os.open(images / image_id[:2] / f"{image_id}.png", flags, 0o644))
    files_s = time.perf_counter() - started
    (out / ".synthetic-complete").write_text(str(len(ids)))
    print(json.dumps({"rows": len(ids), "parts": parts + 1, "files": len(ids), "rows_s": round(rows_s, 2),
                      "files_s": round(files_s, 2)}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
