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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import DatasetError, NotADatasetError
from .fsutil import disk_errors, fsync_dir
from .layout import Layout
from .manifest import root_lock
from .parts import dedupe, part_name, read_covers, write_part
from .schema import INDEX_SCHEMA


@dataclass(frozen=True, slots=True)
class CompactReport:
    parts_before: int
    parts_after: int
    rows_before: int
    rows_after: int
    duplicates_removed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compact(root: str | Path, *, target_rows: int = 1_000_000) -> CompactReport:
    """Merge the parts of ``root`` into parts of at most ``target_rows`` rows, one row per image."""
    if target_rows < 1:
        raise DatasetError(f"target_rows must be positive, got {target_rows}")
    layout = Layout.of(root)
    if not layout.is_dataset():
        raise NotADatasetError(f"{layout.root}: not a wanbatch dataset (no wanbatch.json or index/)")
    import pyarrow.dataset as ds

    with root_lock(layout):
        parts = layout.parts()
        if not parts:
            return CompactReport(0, 0, 0, 0, 0)
        covers: dict[str, int] = {}
        for part in parts:
            for writer, seq in read_covers(part).items():
                covers[writer] = max(covers.get(writer, 0), seq)
        live = {p.name for p in layout.journal.iterdir()} if layout.journal.is_dir() else set()
        covers = {w: s for w, s in covers.items() if w in live}  # finished writers need no memory
        try:
            table = ds.dataset([str(p) for p in parts], schema=INDEX_SCHEMA, format="parquet").to_table()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"cannot read the index of {layout.root} to compact it: {exc}") from exc
        merged = dedupe(table)
        if len(parts) == 1 and merged.num_rows == table.num_rows:
            return CompactReport(1, 1, table.num_rows, table.num_rows, 0)
        written = []
        for start in range(0, max(merged.num_rows, 1), target_rows):
            chunk = merged.slice(start, target_rows)
            written.append(write_part(layout, chunk, covers, part_name("c", "")))
        with disk_errors("remove compacted parts"):
            for part in parts:
                part.unlink(missing_ok=True)
            fsync_dir(layout.index)
        return CompactReport(
            parts_before=len(parts), parts_after=len(layout.parts()), rows_before=table.num_rows,
            rows_after=merged.num_rows, duplicates_removed=table.num_rows - merged.num_rows,
        )
