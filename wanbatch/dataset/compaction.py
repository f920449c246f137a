"""Merging many small index parts into few large ones, one row per image.

Guarantee for readers that list and read ``index/*.parquet`` at any moment: no row they could see
before disappears. The new parts hold every row of the old ones (deduplicated) and are renamed into
place *before* the old parts are deleted. So a reader sees either the old parts (an older, complete
state), or old and new together (every image, some twice — :func:`~wanbatch.dataset.read_index`
dedupes), or the new ones only. A reader that listed an old part which is then deleted gets
``FileNotFoundError`` and relists (``read_index`` does so). A crash at any point leaves one of those
states; the next compaction finishes the job. Parts flushed while a compaction runs are not in its
snapshot and are left alone. Compactions of one root are serialised by ``ROOT/.lock``.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DatasetError, NotADatasetError
from .fsutil import commit_via, disk_errors, fsync_dir
from .idkeys import IdSet, parse_ids
from .layout import Layout
from .manifest import root_lock
from .parts import COVERS_KEY, TMP_SUFFIX, dedupe, part_name, read_covers
from .schema import INDEX_SCHEMA

#: Rows per bucket in pass 2 (a bucket is read whole and deduplicated: ~1 KB a row with every
#: column filled, twice while it is sorted); pass 1 holds at most SPREAD_HOLD rows before writing.
BUCKET_ROWS = 100_000
SPREAD_BATCH = 16 * 1024
SPREAD_HOLD = 32 * 1024
WORK_PREFIX = ".compact-"


@dataclass(frozen=True, slots=True)
class CompactReport:
    parts_before: int
    parts_after: int
    rows_before: int
    rows_after: int
    duplicates_removed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compact(root: str | Path, *, target_rows: int = 1_000_000,
            bucket_rows: int = BUCKET_ROWS, keep_largest: bool = False,
            drop: Collection[str] | None = None) -> CompactReport:
    """Merge the parts of ``root`` into parts of at most ``target_rows`` rows, one row per image.

    Streams, in memory bounded by ``bucket_rows`` whatever the index size: pass 1 reads the parts
    batch by batch and spreads the rows over ``rows / bucket_rows`` bucket files by job-id prefix
    (every row of an image lands in the same bucket, in the order read); pass 2 dedupes one bucket at
    a time (:func:`~wanbatch.dataset.parts.dedupe`) into the new parts. The buckets live in a hidden
    ``index/.compact-*`` folder, removed at the end (or by the next recovery, under the same lock).

    ``keep_largest``: leave the largest part as it is and merge only the others (the end of a run:
    the index becomes one large part plus one part of recent rows, without rewriting the large one).
    Rows in the two may overlap; readers dedupe, and the next full compaction removes the repeats.
    ``drop``: image ids whose rows are left out (`wanbatch prune`); the files are the caller's.
    """
    if target_rows < 1 or bucket_rows < 1:
        raise DatasetError(f"target_rows and bucket_rows must be positive, got {target_rows}, {bucket_rows}")
    layout = Layout.of(root)
    if not layout.is_dataset():
        raise NotADatasetError(f"{layout.root}: not a wanbatch dataset (no wanbatch.json or index/)")
    with root_lock(layout):
        parts = layout.parts()
        if keep_largest and len(parts) > 2:
            largest = max(parts, key=lambda p: p.stat().st_size)
            parts = [p for p in parts if p != largest]
        elif keep_largest:
            return CompactReport(len(parts), len(parts), 0, 0, 0)
        if not parts:
            return CompactReport(0, 0, 0, 0, 0)
        covers: dict[str, int] = {}
        try:
            rows_before = 0
            for part in parts:
                for writer, seq in read_covers(part).items():
                    covers[writer] = max(covers.get(writer, 0), seq)
                rows_before += pq.ParquetFile(part).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"cannot read the index of {layout.root} to compact it: {exc}") from exc
        live = {p.name for p in layout.journal.iterdir()} if layout.journal.is_dir() else set()
        covers = {w: s for w, s in covers.items() if w in live}  # finished writers need no memory
        if not drop and len(parts) == 1 and _distinct(parts[0]) == rows_before:
            return CompactReport(1, 1, rows_before, rows_before, 0)
        work = layout.index / f"{WORK_PREFIX}{secrets.token_hex(4)}"
        with disk_errors("compact the index"):
            work.mkdir()
        try:
            buckets = _spread(parts, work, max(1, -(-rows_before // bucket_rows)))
            rows_after = _merge(layout, buckets, covers, target_rows, drop)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"cannot compact the index of {layout.root}: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with disk_errors("remove compacted parts"):
            for part in parts:
                part.unlink(missing_ok=True)
            fsync_dir(layout.index)
        return CompactReport(
            parts_before=len(parts), parts_after=len(layout.parts()), rows_before=rows_before,
            rows_after=rows_after, duplicates_removed=rows_before - rows_after,
        )


def _distinct(part: Path) -> int:
    """Distinct image ids of one part (its ids as keys: 12 bytes a row)."""
    ids = pq.read_table(part, columns=["image_id"])["image_id"]
    job, slot, keyed = parse_ids(ids)
    keys = IdSet(job[keyed], slot[keyed], ids.filter(pa.array(~keyed)).to_pylist())
    return len(keys)


def _bucket_of(ids: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """Bucket of each row: a contiguous range of job-id prefixes; ids a key cannot express go to 0."""
    job, _, keyed = parse_ids(ids)
    top = (job >> np.uint64(32)).astype(np.uint64)
    bucket = (top * np.uint64(count)) >> np.uint64(32)
    return np.where(keyed, bucket, 0).astype(np.int64)


def _spread(parts: list[Path], work: Path, count: int) -> list[Path]:
    """Pass 1: every row into its bucket file, in the order read (parts by name, then row order)."""
    files = [work / f"bucket-{b:05d}.arrows" for b in range(count)]
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}  # Arrow IPC: no buffering per open file
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    pending: dict[int, list[pa.Table]] = {}
    held = 0

    def drain() -> None:
        nonlocal held
        for b, tables in pending.items():
            if b not in writers:
                writers[b] = pa.ipc.new_stream(files[b], INDEX_SCHEMA, options=options)
            for table in tables:
                writers[b].write_table(table)
        pending.clear()
        held = 0

    try:
        for batch in _batches(parts):
            table = pa.Table.from_batches([batch])
            if count == 1:
                pending.setdefault(0, []).append(table)
            else:
                bucket = _bucket_of(table["image_id"], count)
                order = np.argsort(bucket, kind="stable")
                table = table.take(pa.array(order))
                bounds = np.searchsorted(bucket[order], np.arange(count + 1))
                for b in range(count):
                    if bounds[b + 1] > bounds[b]:
                        pending.setdefault(b, []).append(table.slice(bounds[b], bounds[b + 1] - bounds[b]))
            held += table.num_rows
            if held >= SPREAD_HOLD:
                drain()
        drain()
    finally:
        for writer in writers.values():
            writer.close()
    return [files[b] for b in sorted(writers)]


def _batches(parts: list[Path]) -> Iterator[pa.RecordBatch]:
    """Every row of ``parts`` in order, a few thousand rows at a time, cast to INDEX_SCHEMA."""
    for part in parts:
        with pq.ParquetFile(part, pre_buffer=False) as file:
            for batch in file.iter_batches(batch_size=SPREAD_BATCH, use_threads=False):
                yield batch if batch.schema == INDEX_SCHEMA else _conform(batch)


def _conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of a part written by another tool, with INDEX_SCHEMA (missing columns null)."""
    names = set(batch.schema.names)
    arrays = [batch.column(f.name).cast(f.type) if f.name in names else pa.nulls(batch.num_rows, f.type)
              for f in INDEX_SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=INDEX_SCHEMA)


def _merge(layout: Layout, buckets: list[Path], covers: dict[str, int], target_rows: int,
           drop: Collection[str] | None = None) -> int:
    """Pass 2: each bucket deduplicated (the rows of ``drop`` left out), appended to new parts of at
    most ``target_rows`` rows."""
    dropped = pa.array(sorted(drop), pa.string()) if drop else None
    meta = {COVERS_KEY: json.dumps(covers, sort_keys=True).encode()}
    schema = INDEX_SCHEMA.with_metadata(meta)
    out: _PartOut | None = None
    total = 0
    try:
        for path in buckets:
            with pa.ipc.open_stream(path) as reader:
                table = dedupe(reader.read_all())
            if dropped is not None:
                table = table.filter(pc.invert(pc.is_in(table["image_id"], value_set=dropped)))
            path.unlink()
            start = 0
            while start < table.num_rows:
                if out is None:
                    out = _PartOut(layout, schema)
                chunk = table.slice(start, target_rows - out.rows)
                out.write(chunk)
                start += chunk.num_rows
                total += chunk.num_rows
                if out.rows >= target_rows:
                    out.commit()
                    out = None
            del table
        if out is not None:
            out.commit()
            out = None
    finally:
        if out is not None:
            out.abort()
    return total


class _PartOut:
    """One new part written in row groups under a hidden temp name, renamed into place at the end."""

    def __init__(self, layout: Layout, schema: pa.Schema) -> None:
        name = part_name("c", "")
        self.target = layout.index / name
        self.tmp = layout.index / f".{name[:-len('.parquet')]}{TMP_SUFFIX}"
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=128 * 1024)
        self.rows += table.num_rows

    def commit(self) -> None:
        self.writer.close()
        commit_via(self.tmp, self.target, lambda _: None)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)
