"""What every dataset must hold after any crash and a completed rerun, and the mock's counters (read,
or waited for)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx

from wanbatch.dataset import compact, read_index

#: One client for every poll: ``httpx.get`` builds a client (and an SSL context: tens of ms of CPU)
#: per call, which in tight polling loops starved the run being watched.
_CLIENT = httpx.Client(timeout=10)


def mock_stats(base: str) -> dict[str, Any]:
    """The mock's counters, without the recent request bodies (cheap enough to poll)."""
    return _CLIENT.get(f"{base}/_mock/stats?bodies=0").json()


def posts_reached(base: str, count: int, limit: float) -> bool:
    """Whether ``count`` image requests (flat dialect) reached the mock at ``base`` within ``limit``
    seconds, polling its counters."""
    deadline = time.monotonic() + limit
    while mock_stats(base)["requests"].get("/v1/images/generations", 0) < count:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def settled_stats(base: str) -> dict[str, Any]:
    """Stats once every async task the mock holds has finished (tasks bill when they finish)."""
    time.sleep(0.3)  # longer than the longest task; any request settles the due ones
    return mock_stats(base)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(root: Path) -> dict[str, dict[str, Any]]:
    """The invariants every dataset must keep after any crash and a completed rerun; returns ok rows
    by image id.

    One row per image (also in the raw parts once compacted), every ok row's file present with its
    recorded sha256, every file under images/ claimed by an ok row, no temp file, no journal left.
    """
    table = read_index(root)
    rows = table.to_pylist()
    ids = [r["image_id"] for r in rows]
    assert len(ids) == len(set(ids)), "read_index returned duplicate image ids"
    ok = {r["image_id"]: r for r in rows if r["status"] == "ok"}
    for image_id, row in ok.items():
        path = root / row["path"]
        assert path.is_file(), f"{image_id}: ok row without its file {row['path']}"
        assert sha256_of(path) == row["sha256"], f"{image_id}: file does not match its sha256"
        assert path.stat().st_size == row["bytes"]
    on_disk = {p.relative_to(root).as_posix() for p in (root / "images").rglob("*") if p.is_file()}
    claimed = {r["path"] for r in ok.values()}
    assert on_disk == claimed, f"orphan files {sorted(on_disk - claimed)[:5]}"
    leftovers = [p for p in (root / ".tmp").rglob("*") if p.is_file()] if (root / ".tmp").exists() else []
    assert leftovers == [], f"temp files left: {leftovers[:5]}"
    hidden = [p.name for p in (root / "index").iterdir() if p.name.startswith(".")]
    assert hidden == [], f"half-written parts left: {hidden}"
    journals = list((root / "journal").iterdir()) if (root / "journal").exists() else []
    assert journals == [], f"journals left after a clean finish: {[j.name for j in journals]}"
    compact(root)
    raw = read_index(root, ["image_id"], dedupe=False).column("image_id").to_pylist()
    assert len(raw) == len(set(raw)) == len(rows), "raw parts hold duplicates after compaction"
    return ok
