"""The job shape every bare contender repeats, so they differ only in their HTTP stack.

One job = POST ``{base}/images/generations`` with the flat body ``{model, prompt, size, n: 1, seed}``,
read the JSON answer's image URL, stream the PNG to ``images/<seed>.png`` while hashing it (sha256),
and remember one index row; at the end all rows go into one Parquet file. That is wanbatch's work
minus what only a product does (spec, resume triage, journal, retries, image verification).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT = "a bench image"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Args:
    base: str
    key: str
    jobs: int
    concurrency: int
    size: str
    model: str
    out: Path


def parse_args(description: str) -> Args:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--base", required=True, help="gateway base URL, e.g. http://127.0.0.1:8765/v1")
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--size", default="1K")
    p.add_argument("--model", default="wan2.7-image")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--key-env", default="BENCH_KEY", help="environment variable holding the API key")
    ns = p.parse_args()
    key = os.environ.get(ns.key_env, "")
    if not key:
        p.error(f"environment variable {ns.key_env} is not set")
    (ns.out / "images").mkdir(parents=True, exist_ok=True)
    return Args(ns.base.rstrip("/"), key, ns.jobs, ns.concurrency, ns.size, ns.model, ns.out)


def body(args: Args, seed: int) -> dict[str, Any]:
    return {"model": args.model, "prompt": PROMPT, "size": args.size, "n": 1, "seed": seed}


def image_path(args: Args, seed: int) -> Path:
    return args.out / "images" / f"{seed}.png"


def row(seed: int, path: Path, nbytes: int, sha256: str) -> dict[str, Any]:
    return {"image_id": f"{seed}-0", "seed": seed, "path": str(path), "bytes": nbytes, "sha256": sha256}


async def save(seed: int, path: Path, chunks: AsyncIterable[bytes]) -> dict[str, Any]:
    """Stream a downloaded image to ``path`` while hashing it; the job's index row."""
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as fh:
        async for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    return row(seed, path, size, digest.hexdigest())


def finish(args: Args, rows: list[dict[str, Any]], started: float) -> None:
    """Write the Parquet index and print a one-line JSON summary on stdout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), args.out / "index.parquet", compression="zstd")
    ok = len(rows)
    print(json.dumps({"done_images": ok, "jobs": args.jobs,
                      "elapsed": round(time.perf_counter() - started, 3),
                      "bytes": sum(r["bytes"] for r in rows)}))
    if ok != args.jobs:
        sys.exit(1)
