"""A read-only summary of a dataset for ``wanbatch status`` (a :class:`DatasetView`: never writes,
never takes locks; a folder or ``s3://…``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .folds import StatusFold
from .lease import holders
from .view import DatasetView

STATUS_COLUMNS = ("image_id", "status", "error_kind", "created_at", "bytes", "run_id")


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
    #: failed images that were paid for and whose links are kept: a rerun downloads them (within
    #: limits.link_life of ``paid_links_oldest``, epoch seconds) instead of paying again
    paid_not_downloaded: int = 0
    paid_links_oldest: float | None = None
    #: runs holding a slice of the work (see :mod:`.lease`): run_id, host, pid, since, slice, live, …
    leases: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(root: str | Path | DatasetView) -> StatusReport:
    """Counts from the index (deduplicated), the journals and the manifest. The index is streamed
    into fixed-size keys (:class:`~wanbatch.dataset.folds.StatusFold`), never loaded whole."""
    view = root if isinstance(root, DatasetView) else DatasetView.open(root)
    fold = view.fold(STATUS_COLUMNS, StatusFold)
    rows = fold.rows
    distinct, images_ok, image_bytes, failed, ok_by_run = fold.result()
    by_kind: dict[str, int] = {}
    for kind in failed.values():
        by_kind[kind] = by_kind.get(kind, 0) + 1
    parts = view.parts()
    manifest = view.manifest()
    pending, unindexed = view.journals()
    links = view.paid_links()
    waiting = [paid.at for job, paid in links.items() for k in paid.links if f"{job}-{k}" in failed]
    return StatusReport(
        root=view.location,
        name=manifest.get("name"),
        images_ok=images_ok,
        images_failed=len(failed),
        failed_by_kind=dict(sorted(by_kind.items())),
        pending_tasks=pending,
        parts=len(parts),
        rows=rows,
        duplicate_rows=rows - distinct,
        runs=[r for r in manifest.get("runs") or [] if isinstance(r, dict)],
        image_bytes=image_bytes,
        index_bytes=sum(view.size(p) for p in parts),
        journal_rows_unindexed=unindexed,
        ledger=view.ledger(ok_by_run=ok_by_run).to_dict(),
        paid_not_downloaded=len(waiting),
        paid_links_oldest=min(waiting) if waiting else None,
        leases=holders(view.location if view.is_remote else view.base),
    )
