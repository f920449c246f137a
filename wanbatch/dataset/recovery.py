"""Reconciling a dataset after writers died (SIGKILL, power loss, full disk) — idempotent.

For every journal folder whose lock nobody holds (its writer is gone):

1. rows of segments not covered by any part (see :mod:`.parts`) are replayed; an ``ok`` row whose
   image is missing is dropped, unless a temp file of that writer has the journaled size and sha256
   (then its rename is finished);
2. those rows become one new part, covering the dead writer's segments, *before* anything is deleted;
3. its pending async tasks move to the current writer's task journal;
4. its journal and temp folders are removed.

Then leftovers nobody owns are removed: half-written parts and manifest temps, stray temp files. If
anything was recovered, image files without any row are listed in ``orphan_images``: they were paid
for, so they are kept for the runner to adopt (``Dataset.existing_image``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from .fsutil import disk_errors
from .manifest import root_lock
from .journal import TASKS, decode_row, read_lines, read_tasks, segments, try_lock
from .parts import TMP_SUFFIX, all_covers, part_name, read_parts, rows_to_table, write_part

if TYPE_CHECKING:
    from .store import Dataset


@dataclass(slots=True)
class RecoveryReport:
    writers_recovered: int = 0
    writers_alive: int = 0
    rows_recovered: int = 0
    rows_already_indexed: int = 0
    rows_dropped: int = 0  # ok rows whose image is gone
    torn_lines: int = 0
    images_rescued: int = 0
    tasks_adopted: int = 0
    temp_files_removed: int = 0
    partial_parts_removed: int = 0
    orphan_images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover(dataset: Dataset) -> RecoveryReport:
    layout = dataset.layout
    report = RecoveryReport()
    dead: list[tuple[str, Path, int]] = []
    if layout.journal.is_dir():
        for folder in sorted(layout.journal.iterdir()):
            if folder.name == dataset.writer or not folder.is_dir():
                continue
            fd = try_lock(folder / "lock")
            if fd is None:
                report.writers_alive += 1
            else:
                dead.append((folder.name, folder, fd))
    try:
        if dead:
            _recover_writers(dataset, dead, report)
        _sweep(dataset, report)
        if report.writers_recovered:
            report.orphan_images = _orphans(dataset)
    finally:
        for _, _, fd in dead:
            os.close(fd)
    return report


def _recover_writers(dataset: Dataset, dead: list[tuple[str, Path, int]], report: RecoveryReport) -> None:
    layout = dataset.layout
    covers = all_covers(layout)
    rows: list[dict[str, Any]] = []
    new_covers: dict[str, int] = {}
    for writer, folder, _ in dead:
        done_upto = covers.get(writer, 0)
        for seq, path in segments(folder):
            items, torn = read_lines(path)
            report.torn_lines += torn
            new_covers[writer] = max(new_covers.get(writer, 0), seq)
            if seq <= done_upto:
                report.rows_already_indexed += len(items)
                continue
            for item in items:
                row = decode_row(item)
                if row.get("status") == "ok" and not _ensure_image(dataset, writer, row, report):
                    report.rows_dropped += 1
                    continue
                rows.append(row)
    if rows:
        # Covers only the writers whose rows are in this part: a crash before it is renamed replays all.
        write_part(layout, rows_to_table(rows), new_covers, part_name("r", dataset.writer))
        report.rows_recovered = len(rows)
    for writer, folder, _ in dead:
        for job, (provider, task) in read_tasks(folder / TASKS).items():
            dataset.journal_task(job, provider, task)
            report.tasks_adopted += 1
        report.temp_files_removed += _count_files(layout.writer_tmp(writer))
        with disk_errors(f"remove the journal of writer {writer}"):
            shutil.rmtree(layout.writer_tmp(writer), ignore_errors=True)
            for entry in sorted(folder.iterdir(), key=lambda p: p.name == "lock"):
                entry.unlink(missing_ok=True)  # the lock last: a peer re-checks it after locking
            folder.rmdir()
        report.writers_recovered += 1


def _ensure_image(dataset: Dataset, writer: str, row: dict[str, Any], report: RecoveryReport) -> bool:
    """True if the image of an ok row is in place (possibly by finishing its rename from ``.tmp``)."""
    rel = row.get("path")
    if not isinstance(rel, str) or not rel:
        return False
    target = dataset.root / rel
    if target.is_file():
        return True
    size, digest = row.get("bytes"), row.get("sha256")
    tmp = dataset.layout.writer_tmp(writer)
    if not isinstance(size, int) or not isinstance(digest, str) or not tmp.is_dir():
        return False
    for candidate in tmp.iterdir():
        try:
            if candidate.stat().st_size != size or _sha256(candidate) != digest:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(candidate, target)
        except OSError:
            continue
        report.images_rescued += 1
        return True
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sweep(dataset: Dataset, report: RecoveryReport) -> None:
    """Remove temp files and half-written parts that no live writer owns."""
    layout = dataset.layout
    live = {p.name for p in layout.journal.iterdir()} if layout.journal.is_dir() else set()
    with disk_errors("clean temporary files"):
        if layout.tmp.is_dir():
            for entry in layout.tmp.iterdir():
                if entry.is_dir():
                    if entry.name not in live:
                        report.temp_files_removed += _count_files(entry)
                        shutil.rmtree(entry, ignore_errors=True)
                elif not entry.name.startswith("probe-"):
                    entry.unlink(missing_ok=True)
                    report.temp_files_removed += 1
    with root_lock(layout), disk_errors("clean temporary files"):  # compactions, manifest writes
        for folder in (layout.index, layout.root, layout.runs):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                name = entry.name
                if name.startswith(".") and name.endswith(".tmp") and entry.is_file() \
                        and not any(w in name for w in live if w):
                    entry.unlink(missing_ok=True)
                    if name.endswith(TMP_SUFFIX):
                        report.partial_parts_removed += 1
                    else:
                        report.temp_files_removed += 1


def _count_files(folder: Path) -> int:
    try:
        return sum(1 for e in folder.iterdir() if e.is_file())
    except OSError:
        return 0


def _orphans(dataset: Dataset) -> list[str]:
    """Image ids with a file in ``images/`` but no row at all (killed between place and append)."""
    on_disk = dataset._list_images()  # noqa: SLF001 - one listing helper for the package
    if not on_disk:
        return []
    ids = {rel.rsplit("/", 1)[1].rsplit(".", 1)[0]: rel for rel in on_disk}
    import pyarrow as pa

    table = read_parts(dataset.layout, ["image_id"], pc.field("image_id").isin(pa.array(list(ids))))
    known = set(table["image_id"].to_pylist()) | {r["image_id"] for r in dataset._buffer}  # noqa: SLF001
    return sorted(i for i in ids if i not in known)

