"""A read-only summary of a dataset for ``wanbatch status`` (never writes, never takes locks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from .journal import TASKS, read_tasks
from .layout import Layout
from .manifest import read_manifest
from .parts import read_parts
from .reader import _existing, failed_from


@dataclass(slots=True)
class StatusReport:
    root: str
    name: str | None
    images_ok: int
    images_failed: int
    failed_by_kind: dict[str, int]
    pending_tasks: int
    parts: int
    rows: int
    duplicate_rows: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    image_bytes: int = 0
    index_bytes: int = 0
    journal_rows_unindexed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(root: str | Path) -> StatusReport:
    """Counts from the index (deduplicated), the journals and the manifest."""
    layout = _existing(root)
    table = read_parts(layout, ["image_id", "job_id", "status", "error_kind", "created_at", "bytes"])
    ok_mask = pc.equal(table["status"], "ok")
    ok = table.filter(ok_mask)
    ok_ids = pc.unique(ok["image_id"])
    # bytes of each ok image once (the first row seen for it)
    first = pc.index_in(ok_ids, value_set=ok["image_id"])
    image_bytes = pc.sum(pc.take(ok["bytes"], first)).as_py() if len(ok_ids) else 0
    failed = failed_from(table)
    by_kind: dict[str, int] = {}
    for kind in failed.values():
        by_kind[kind] = by_kind.get(kind, 0) + 1
    distinct = len(pc.unique(table["image_id"])) if table.num_rows else 0
    parts = layout.parts()
    manifest = read_manifest(layout)
    pending, unindexed = _journals(layout, set(table["job_id"].to_pylist()) if table.num_rows else set())
    return StatusReport(
        root=str(layout.root),
        name=manifest.get("name"),
        images_ok=len(ok_ids),
        images_failed=len(failed),
        failed_by_kind=dict(sorted(by_kind.items())),
        pending_tasks=pending,
        parts=len(parts),
        rows=table.num_rows,
        duplicate_rows=table.num_rows - distinct,
        runs=[r for r in manifest.get("runs") or [] if isinstance(r, dict)],
        image_bytes=int(image_bytes or 0),
        index_bytes=sum(_size(p) for p in parts),
        journal_rows_unindexed=unindexed,
    )


def _journals(layout: Layout, jobs_with_rows: set[str]) -> tuple[int, int]:
    """Pending async tasks over all writers, and rows still only in journals (an upper bound)."""
    from .journal import segments

    pending: set[str] = set()
    unindexed = 0
    if not layout.journal.is_dir():
        return 0, 0
    for folder in layout.journal.iterdir():
        if not folder.is_dir():
            continue
        pending.update(j for j in read_tasks(folder / TASKS) if j not in jobs_with_rows)
        for _, seg in segments(folder):
            try:
                with seg.open("rb") as fh:
                    unindexed += sum(1 for _ in fh)
            except OSError:
                continue
    return len(pending), unindexed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
