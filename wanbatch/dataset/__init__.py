"""Everything on disk: images, the journal, the Parquet index, recovery, compaction, manifest.

    ROOT/wanbatch.json            manifest: format version, name, tool version, spec, runs
    ROOT/images/3f/3fa9….png      images, renamed into place once verified
    ROOT/index/part-*.parquet     the index (INDEX_SCHEMA), readable by pyarrow/pandas/polars/DuckDB
    ROOT/runs/<run_id>.json       per-run summaries
    ROOT/journal/<writer>/        each writer's durable rows and async task ids (see .journal)
    ROOT/.tmp/<writer>/           downloads in progress (same file system: atomic rename)

Two ways in: :class:`DatasetView` reads (no locks, no writes: read-only mounts and ``s3://``), and
:class:`DatasetWriter` writes (journal, temp files, placement, parts, compaction, manifest), composed
with a storage: the folder itself, or a mirror to object storage.
"""

from __future__ import annotations

from .compaction import CompactReport, compact
from .layout import is_dataset
from .recovery import RecoveryReport
from .rows import failed_row, ok_row
from .schema import COLUMNS, INDEX_SCHEMA
from .status import StatusReport, status
from .view import DatasetView, TriageState, open_index, read_index
from .writer import DatasetWriter, LocalStorage, Storage

__all__ = [
    "COLUMNS",
    "INDEX_SCHEMA",
    "CompactReport",
    "DatasetView",
    "DatasetWriter",
    "LocalStorage",
    "RecoveryReport",
    "StatusReport",
    "Storage",
    "TriageState",
    "compact",
    "failed_row",
    "is_dataset",
    "ok_row",
    "open_index",
    "read_index",
    "status",
]
