"""A read-only summary of a dataset for ``wanbatch status`` (a :class:`DatasetView`: never writes,
never takes locks; a folder or ``s3://…``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from .view import DatasetView, failed_from


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
    #: billed_images, in_doubt_images, spent, max_images, max_cost (see :mod:`.ledger`)
    ledger: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(root: str | Path | DatasetView) -> StatusReport:
    """Counts from the index (deduplicated), the journals and the manifest."""
    view = root if isinstance(root, DatasetView) else DatasetView.open(root)
    table = view.read_parts(["image_id", "job_id", "status", "error_kind", "created_at", "bytes", "run_id"])
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
    parts = view.parts()
    manifest = view.manifest()
    pending, unindexed = view.journals(set(table["job_id"].to_pylist()) if table.num_rows else set())
    return StatusReport(
        root=view.location,
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
        index_bytes=sum(view.size(p) for p in parts),
        journal_rows_unindexed=unindexed,
        ledger=view.ledger(table).to_dict(),
    )
