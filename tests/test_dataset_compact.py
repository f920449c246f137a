"""Compaction: one row per image with the right winner, and readers never miss a row meanwhile."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wanbatch.dataset import DatasetWriter, compact, failed_row, ok_row, read_index
from wanbatch.types import Job, StoredImage

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(i: int) -> Job:
    return Job(job_id=f"{i:016x}", model="wan2.7-image", prompt=f"p{i}", size="1K", seed=i, n=1, params={})


def ok(ds: DatasetWriter, i: int, minutes: int, revised: str = "") -> dict[str, object]:
    j = job(i)
    tmp = ds.tmp_path()
    tmp.write_bytes(b"img")
    rel = ds.place(tmp, f"{j.job_id}-0", "png")
    row = ok_row(j, 0, StoredImage(rel, "png", 8, 8, 3, "0" * 64), provider="gw", run_id="r",
                 revised_prompt=revised)
    return row | {"created_at": T0 + timedelta(minutes=minutes)}


def failed(i: int, minutes: int, kind: str) -> dict[str, object]:
    return failed_row(job(i), 0, kind=kind, message=kind, provider="gw", run_id="r") | {
        "created_at": T0 + timedelta(minutes=minutes)}


def test_compaction_merges_and_picks_the_winner(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetWriter.open(root) as ds:
        batches = [
            [failed(1, 0, "timeout"), ok(ds, 2, 0), failed(3, 0, "moderation"), ok(ds, 4, 0, "old")],
            [ok(ds, 1, 1), failed(2, 1, "timeout"), failed(3, 1, "rate_limited"), ok(ds, 4, 1, "new")],
            [failed(1, 2, "late failure"), ok(ds, 5, 2)],
        ]
        for batch in batches:
            ds.append(batch)
            ds.flush()
        for i in range(15):
            ds.append([failed(100 + i, 0, "x")])
            ds.flush()
        assert ds.should_compact()  # 18 parts
        report = ds.compact(target_rows=12)
        assert not ds.should_compact()
    assert (report.parts_before, report.rows_before, report.rows_after) == (18, 25, 20)
    assert report.duplicates_removed == 5 and report.parts_after == 2  # 20 rows, 12 per part
    rows = {r["image_id"][:16]: r for r in read_index(root, dedupe=False).to_pylist()}
    assert len(rows) == 20
    assert rows[f"{1:016x}"]["status"] == "ok"  # ok beats a later failure
    assert rows[f"{2:016x}"]["status"] == "ok"
    assert rows[f"{3:016x}"]["error_kind"] == "rate_limited"  # latest failure
    assert rows[f"{4:016x}"]["revised_prompt"] == "new"  # latest ok
    assert compact(root).duplicates_removed == 0  # idempotent


def test_readers_never_see_fewer_rows_during_compaction(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = DatasetWriter.open(root)
    committed = 0  # distinct images flushed so far (a reader starting later must see at least these)
    next_id = 0

    def flush_new(count: int, rewrite: int = 0) -> None:
        nonlocal committed, next_id
        rows = [ok(ds, next_id + k, 0) for k in range(count)]
        rows += [failed(k, 5, "again") for k in range(rewrite)]  # duplicates of old images
        ds.append(rows)
        ds.flush()
        next_id += count
        committed = next_id

    for _ in range(20):
        flush_new(30, rewrite=5)

    stop = threading.Event()
    violations: list[str] = []
    reads = [0, 0]  # whole reads, relists after a part vanished

    def reader() -> None:
        while not stop.is_set():
            expected = committed
            files = sorted((root / "index").glob("*.parquet"))
            try:
                tables = [pq.read_table(f, columns=["image_id"]) for f in files]
            except FileNotFoundError:
                reads[1] += 1
                continue
            seen = {i for t in tables for i in t["image_id"].to_pylist()}
            if len(seen) < expected:
                violations.append(f"saw {len(seen)} images, expected at least {expected}")
            reads[0] += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for _ in range(4):
            ds.compact(target_rows=250)
            flush_new(20, rewrite=3)
            flush_new(20)
    finally:
        stop.set()
        thread.join(timeout=20)
        ds.close()
    assert not thread.is_alive()
    assert reads[0] >= 5, "the reader barely ran"
    assert not violations, violations[:3]
    final = read_index(root)
    assert final.num_rows == committed


def test_streaming_compaction_in_many_buckets_equals_one_dedupe_of_the_whole_index(tmp_path: Path) -> None:
    """With buckets of 7 rows, 300 images over 4 parts (duplicates, ok/failed winners, ids a key cannot
    express) compact to exactly what deduplicating the whole table gives."""
    import pyarrow.compute as pc

    from wanbatch.dataset.compaction import compact as compact_streaming
    from wanbatch.dataset.parts import dedupe

    root = tmp_path / "ds"
    odd = [f"odd-{i}" for i in range(5)]
    with DatasetWriter.open(root) as ds:
        for part in range(4):
            rows = [failed(i * 7919, part, "server_error") for i in range(part, 300, 2)]
            rows += [ok(ds, i * 7919, part + 1, revised=f"r{part}") for i in range(0, 300, 3 + part)]
            rows += [{"image_id": o, "job_id": "odd", "status": "failed", "error_kind": f"k{part}",
                      "created_at": T0 + timedelta(minutes=part)} for o in odd]
            ds.append(rows)
            ds.flush()
    before = read_index(root, dedupe=False)
    expected = dedupe(before).sort_by("image_id")
    report = compact_streaming(root, target_rows=50, bucket_rows=7)
    after = read_index(root, dedupe=False).sort_by("image_id")
    assert report.rows_before == before.num_rows and report.rows_after == after.num_rows == expected.num_rows
    assert report.duplicates_removed > 0 and report.parts_after == -(-expected.num_rows // 50)
    assert after.num_rows == len(pc.unique(after["image_id"]))
    for column in ("image_id", "status", "error_kind", "revised_prompt", "created_at"):
        assert after[column].to_pylist() == expected[column].to_pylist(), column
    assert not [p for p in (root / "index").iterdir() if p.name.startswith(".")]  # no bucket or temp left
