"""Reading a dataset: what ``plan``, ``status``, ``export``, ``gallery`` and a run's start-up see.

A :class:`DatasetView` never writes: no locks, no journal, no folder created. So it works on a
read-only mount, and on object storage (``s3://bucket/prefix``), where it reads the index parts, the
manifest and the images through ``pyarrow.fs`` (no staging copy).

The index is whatever ``index/*.parquet`` holds. Between a flush of a newer row for an image and the
next compaction, an image can have more than one row; :meth:`DatasetView.read_index` resolves that
(an ``ok`` row beats a ``failed`` one, then the latest ``created_at`` wins), so prefer it to a raw
glob when exactly one row per image matters.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import DatasetError, NotADatasetError
from .folds import Files, StatusFold, TriageFold
from .fsutil import disk_errors
from .idkeys import IdSet
from .journal import TASKS, PaidLinks, read_journal, read_tasks, segments
from .layout import INPUTS, MANIFEST, SHA256, Layout, is_dataset, is_part
from .ledger import (
    LEDGER,
    DatasetLedger,
    RunLedger,
    dataset_ledger,
    ok_images_by_run,
    read_ledger,
    summary_billed_reader,
)
from .parts import dedupe, read_parts
from .remote import RemoteRoot, is_remote, short
from .schema import INDEX_SCHEMA

if TYPE_CHECKING:
    # imported where used: importing pyarrow.dataset builds a scalar, which makes pyarrow import
    # pandas before the CLI could tell it not to (wanbatch.cli.arrow_without_pandas)
    import pyarrow.dataset as ds

TRIAGE_COLUMNS = ("image_id", "status", "path", "error_kind", "created_at")


class _Adds(Protocol):
    def add(self, batch: pa.RecordBatch) -> None: ...


_Fold = TypeVar("_Fold", bound=_Adds)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class TriageState:
    """What a dataset already holds, for deciding what a run still requests.

    ``done``: image ids with an ``ok`` row whose image file exists (an :class:`~.idkeys.IdSet`: 12 bytes
    an id); ``failed``: image id → error kind
    of slots whose latest row is failed and that have no ok row; ``unindexed``: image id → relative
    path of an image file that no ok row claims (a crash came between the file and its row: a run
    re-indexes it without a request).
    """

    done: AbstractSet[str] = field(default_factory=IdSet)
    failed: dict[str, str] = field(default_factory=dict)
    unindexed: dict[str, str] = field(default_factory=dict)


class DatasetView:
    """A read-only view of one dataset, a local folder or an object-store prefix. Use :meth:`open`."""

    def __init__(self, fs: pafs.FileSystem, base: str, location: str, layout: Layout | None) -> None:
        self.fs = fs
        self.base = base  # the root inside ``fs``
        self.location = location  # as shown to users: the folder, or the canonical URI
        self.layout = layout  # local datasets only (journals are read from it)
        self._parts: list[str] | None = None  # object storage: the index listing, once per view

    @classmethod
    def open(cls, path_or_uri: str | Path) -> DatasetView:
        """The dataset at ``path_or_uri``; a clear :class:`DatasetError` if there is none."""
        view = cls.find(path_or_uri)
        if view is None and not is_remote(str(path_or_uri)) and not Path(path_or_uri).expanduser().exists():
            raise NotADatasetError(f"{path_or_uri}: no such dataset folder")
        if view is None:
            raise NotADatasetError(
                f"{_shown(path_or_uri)}: not a wanbatch dataset (no {MANIFEST} or index/ inside)")
        return view

    @classmethod
    def find(cls, path_or_uri: str | Path) -> DatasetView | None:
        """Like :meth:`open`, but None where there is no dataset (yet)."""
        text = str(path_or_uri)
        if is_remote(text):
            remote = RemoteRoot(text)
            with remote.errors("open the dataset"):
                found = is_dataset(remote.fs, remote.base)
            return cls(remote.fs, remote.base, remote.uri, None) if found else None
        if "://" in text:
            raise NotADatasetError(f"{text}: use a plain folder path or an object-store URI such as s3://bucket/x")
        root = Path(path_or_uri).expanduser()
        with disk_errors(f"open the dataset {root}"):
            if not root.is_dir():
                if root.exists():
                    raise NotADatasetError(f"{root}: is a file, not a dataset folder")
                return None
            full = root.resolve()
            found = is_dataset(pafs.LocalFileSystem(), str(full))
        return cls(pafs.LocalFileSystem(), str(full), str(root), Layout(full)) if found else None

    @property
    def is_remote(self) -> bool:
        return self.layout is None

    def __repr__(self) -> str:
        return f"DatasetView({self.location!r})"

    # ----------------------------------------------------------------------------------- the index

    def known_parts(self, parts: Sequence[str] | None) -> None:
        """Use ``parts`` (e.g. what the writer's mirror knows is in the bucket) as this view's listing
        of ``index/`` until a read finds one gone (then it lists)."""
        if parts is not None and self.layout is None:
            self._parts = sorted(parts)

    def parts(self, *, fresh: bool = False) -> list[str]:
        """Paths (inside :attr:`fs`) of the visible index parts, sorted by name. On object storage
        the listing is one request, kept for this view's later reads unless ``fresh``."""
        if self.layout is not None:
            return [str(p) for p in self.layout.parts()]
        if self._parts is not None and not fresh:
            return list(self._parts)
        with self._errors("list the index"):
            infos = self.fs.get_file_info(pafs.FileSelector(f"{self.base}/index", allow_not_found=True))
        self._parts = sorted(i.path for i in infos if i.type == pafs.FileType.File and is_part(i.base_name))
        return list(self._parts)

    def open_index(self) -> ds.Dataset:
        """A pyarrow dataset over the current ``index/*.parquet`` with INDEX_SCHEMA (raw rows)."""
        import pyarrow.dataset as ds

        return ds.dataset(self.parts(), schema=INDEX_SCHEMA, format="parquet", filesystem=self.fs)

    def read_parts(self, columns: Sequence[str] | None = None, flt: Any = None) -> pa.Table:
        """Every row of every visible part (relisting if a compaction removes one mid-read)."""
        if self.layout is not None:
            return read_parts(self.layout, columns, flt)
        empty = INDEX_SCHEMA.empty_table().select(list(columns) if columns else INDEX_SCHEMA.names)

        def read(parts: list[str]) -> pa.Table:
            if not parts:
                return empty
            import pyarrow.dataset as ds

            dataset = ds.dataset(parts, schema=INDEX_SCHEMA, format="parquet", filesystem=self.fs)
            return dataset.to_table(columns=list(columns) if columns else None, filter=flt)

        return self._relisting(read)

    def read_index(self, columns: Sequence[str] | None = None, *, dedupe: bool = True) -> pa.Table:
        """The index as a table; with ``dedupe`` one row per image_id (see the module docstring)."""
        wanted = list(columns) if columns is not None else None
        if wanted is not None:
            unknown = [c for c in wanted if c not in INDEX_SCHEMA.names]
            if unknown:
                known = ", ".join(INDEX_SCHEMA.names)
                raise DatasetError(f"unknown index column(s) {unknown}; known: {known}")
        if not dedupe:
            return self.read_parts(wanted)
        need = list(dict.fromkeys((wanted or INDEX_SCHEMA.names) + ["image_id", "status", "created_at"]))
        table = _dedupe(self.read_parts(need))
        return table.select(wanted) if wanted is not None else table

    def fold(self, columns: Sequence[str], start: Callable[[], _Fold]) -> _Fold:
        """Stream ``columns`` of every visible part, batch by batch, into a fresh ``start()``; memory is
        what the fold keeps, never the whole table. Parts are read one at a time on this thread (a
        threaded scan reads ahead of a slow consumer: ~1 GB of queued batches at 10M rows). A part
        removed by a compaction mid-scan restarts the scan on the new listing (the compacted parts hold
        every row of the old ones)."""
        wanted = list(columns)

        def read(parts: list[str]) -> _Fold:
            acc = start()
            for part in parts:
                for batch in _part_batches(self.fs, part, wanted):
                    acc.add(batch)
            return acc

        return self._relisting(read)

    def _relisting(self, read: Callable[[list[str]], _T]) -> _T:
        """``read(parts)`` of the current listing; a part that a compaction removed mid-read (the
        compacted parts hold every row of the old ones) means: list again and read again, up to 8
        times. Other errors become one :class:`DatasetError` naming the dataset."""
        last: BaseException | None = None
        for attempt in range(8):
            try:
                return read(self.parts(fresh=attempt > 0))
            except FileNotFoundError as exc:
                last = exc
            except (OSError, pa.ArrowException) as exc:
                if "not found" not in str(exc).lower() and "no such" not in str(exc).lower():
                    raise DatasetError(f"cannot read the index of {self.location}: {short(exc)}") from None
                last = exc
        raise DatasetError(f"cannot read the index of {self.location}: {short(last or Exception())}")

    # ----------------------------------------------------------------------------------- triage

    def triage(self, shard: tuple[int, int] | None = None, *,
               staged: Iterable[list[str]] = ()) -> TriageState:
        """Done, failed and unindexed slots (of one shard's slice with ``shard=(i, N)``): the index
        streamed into fixed-size keys (:mod:`.folds`), then one listing of ``images/`` — locally.

        On object storage the images are never listed (at 1M images that is ~1,000 LIST requests):
        an ok row's image is in the bucket, because a part is uploaded only after every image it
        names. ``staged``: image files known elsewhere (a writer's staging folder), unindexed when
        no ok row has them."""
        rows = self.fold(TRIAGE_COLUMNS, lambda: TriageFold(shard))
        if self.is_remote:
            files = Files.of(staged, shard, trusted=True)
        else:
            files = Files.of(self.image_file_chunks(), shard)
        done, failed, unindexed = rows.result(files)
        return TriageState(done=done, failed=failed, unindexed=unindexed)

    def image_files(self) -> list[str]:
        """Relative paths of every image file (``images/<xx>/<name>``)."""
        return [rel for chunk in self.image_file_chunks() for rel in chunk]

    def image_file_chunks(self) -> Iterator[list[str]]:
        """The image files' relative paths, one ``images/<xx>/`` folder at a time (bounded memory)."""
        if self.layout is not None:
            with disk_errors("list the images"):
                yield from self.layout.image_file_chunks()
            return
        with self._errors("list the images"):
            infos = self.fs.get_file_info(pafs.FileSelector(f"{self.base}/images", recursive=True,
                                                            allow_not_found=True))
        cut = len(self.base) + 1
        yield [i.path[cut:] for i in infos
               if i.type == pafs.FileType.File and i.path[cut:].count("/") == 2 and i.base_name[:1] != "."]

    # ----------------------------------------------------------------------------------- files

    def local_path(self, rel: str) -> Path | None:
        """The local file of ``rel`` if this is a local dataset and the file exists.

        ``rel`` comes from an index or manifest, which may be tampered with: a path that is absolute,
        has a ``..`` segment, or is (or passes through) a symlink is treated as missing (None), so
        nothing outside the dataset is ever read.
        """
        if self.layout is None or not inside_rel(rel):
            return None
        path = self.layout.root / rel
        if _through_symlink(self.layout.root, rel):
            return None
        return path if path.is_file() else None

    def input_path(self, sha256: str) -> str | None:
        """The relative path (``inputs/<xx>/<sha256>.<ext>``) of the stored input image with this
        content, or None when the dataset does not hold it (a URL input, an older dataset)."""
        if not isinstance(sha256, str) or not SHA256.match(sha256):
            return None
        folder = f"{INPUTS}/{sha256[:2]}"
        if self.layout is not None:
            try:
                names = os.listdir(self.layout.root / folder)
            except (FileNotFoundError, NotADirectoryError):
                return None
        else:
            with self._errors(f"list {folder}"):
                selector = pafs.FileSelector(f"{self.base}/{folder}", allow_not_found=True)
                infos = self.fs.get_file_info(selector)
            names = [i.base_name for i in infos if i.type == pafs.FileType.File]
        for name in sorted(names):
            if name.rsplit(".", 1)[0] == sha256:
                rel = f"{folder}/{name}"
                return rel if self.layout is None or self.local_path(rel) is not None else None
        return None

    def read_bytes(self, rel: str) -> bytes | None:
        """The bytes of the file ``rel`` (e.g. an image), None if it does not exist."""
        if not inside_rel(rel):
            return None
        if self.layout is not None:
            path = self.layout.root / rel
            if _through_symlink(self.layout.root, rel):
                return None
            try:
                return path.read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            except OSError as exc:
                raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            with self._errors(f"read {rel}"), self.fs.open_input_stream(f"{self.base}/{rel}") as fh:
                data: bytes = fh.read()
                return data
        except FileNotFoundError:
            return None

    def manifest(self) -> dict[str, Any]:
        """The manifest (``{}`` if there is none)."""
        raw = self.read_bytes(MANIFEST)
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise DatasetError(f"{self.location}/{MANIFEST}: the manifest is not valid JSON ({exc}); "
                               "restore or delete it") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{self.location}/{MANIFEST}: the manifest is not a JSON object")
        return data

    def journals(self) -> tuple[int, int]:
        """Pending async tasks over all writers (journaled, and their job has no row in the index),
        and rows still only in journals (an upper bound).

        Journals live next to the writer (for ``s3://`` in its staging folder), so a remote view
        reports none."""
        if self.layout is None or not self.layout.journal.is_dir():
            return 0, 0
        pending: set[str] = set()
        unindexed = 0
        for folder in self.layout.journal.iterdir():
            if not folder.is_dir():
                continue
            pending.update(read_tasks(folder / TASKS))
            for _, seg in segments(folder):
                try:
                    with seg.open("rb") as fh:
                        unindexed += sum(1 for _ in fh)
                except OSError:
                    continue
        if pending:  # only the tasks' jobs are read from the index (a filter pushed into the scan)
            import pyarrow.dataset as ds

            answered = self.read_parts(["job_id"], ds.field("job_id").isin(pa.array(sorted(pending))))
            pending -= set(answered["job_id"].to_pylist())
        return len(pending), unindexed

    def paid_links(self) -> dict[str, PaidLinks]:
        """Links of images paid for and not downloaded, over all writers' journals (a rerun within
        their life downloads them). Journals are local: a remote view reports none."""
        found: dict[str, PaidLinks] = {}
        if self.layout is None or not self.layout.journal.is_dir():
            return found
        for folder in sorted(self.layout.journal.iterdir()):
            if folder.is_dir():
                found.update(read_journal(folder / TASKS)[1])
        return found

    def ledger(self, table: pa.Table | None = None, *,
               ok_by_run: Mapping[str | None, int] | None = None,
               exclude_runs: Collection[str] = (),
               manifest: Mapping[str, Any] | None = None) -> DatasetLedger:
        """What the dataset has cost so far (billed + in doubt, over every run): see :mod:`.ledger`.

        ``table``, if given, holds at least the ``image_id``, ``status`` and ``run_id`` columns of
        every row; ``ok_by_run`` (run_id → ok images, e.g. from a status fold) saves the read. Without
        either, the index is streamed into keys (bounded memory, as :meth:`triage`). ``exclude_runs``:
        runs in progress counted from their leases (see :mod:`.lease`); ``manifest``: as read already."""
        if ok_by_run is None:
            if table is not None:
                ok_by_run = ok_images_by_run(table)
            else:
                columns = ("image_id", "status", "error_kind", "created_at", "bytes", "run_id")
                ok_by_run = self.fold(columns, StatusFold).result()[4]
        return dataset_ledger(self.manifest() if manifest is None else manifest, ok_by_run,
                              summary_billed_reader(self.read_bytes), self.journal_ledgers(), exclude_runs)

    def ok_by_run(self) -> dict[str | None, int]:
        """run_id → ok images (one streamed fold of the index), for several :meth:`ledger` calls."""
        columns = ("image_id", "status", "error_kind", "created_at", "bytes", "run_id")
        return dict(self.fold(columns, StatusFold).result()[4])

    def journal_ledgers(self) -> list[RunLedger]:
        """The ledgers still in writers' journals (runs in progress, or dead and not recovered yet)."""
        if self.layout is None or not self.layout.journal.is_dir():
            return []
        found = []
        for folder in sorted(self.layout.journal.iterdir()):
            if folder.is_dir():
                try:
                    found.append(read_ledger(folder / LEDGER))
                except DatasetError:
                    continue  # removed while we read it: folded already
        return found

    def size(self, path: str) -> int:
        """Size in bytes of ``path`` (inside :attr:`fs`), 0 if it is gone."""
        try:
            info = self.fs.get_file_info(path)
        except OSError:
            return 0
        return info.size or 0

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        where = f"in {self.location}" if self.layout is not None else f"in object storage at {self.location}"
        return RemoteRoot.translate(where, what)


def triage_of(table: pa.Table, image_files: Iterable[str]) -> TriageState:
    """The triage of rows (:data:`TRIAGE_COLUMNS`) against the image files on disk."""
    fold = TriageFold()
    for batch in table.select(list(TRIAGE_COLUMNS)).to_batches():
        fold.add(batch)
    done, failed, unindexed = fold.result(Files.of([list(image_files)]))
    return TriageState(done=done, failed=failed, unindexed=unindexed)


def _part_batches(fs: pafs.FileSystem, part: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of one part, 64k rows at a time, typed as INDEX_SCHEMA (columns a part written
    by another tool lacks are null)."""
    schema = pa.schema([INDEX_SCHEMA.field(c) for c in columns])
    with fs.open_input_file(part) as fh, pq.ParquetFile(fh, pre_buffer=False) as file:
        present = [c for c in columns if c in file.schema_arrow.names]
        for batch in file.iter_batches(batch_size=64 * 1024, columns=present, use_threads=False):
            if batch.schema == schema:
                yield batch
                continue
            rows = batch.num_rows
            arrays = [batch.column(f.name).cast(f.type) if f.name in present else pa.nulls(rows, f.type)
                      for f in schema]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _dedupe(table: pa.Table) -> pa.Table:
    return dedupe(table)


def _shown(path_or_uri: str | Path) -> str:
    text = str(path_or_uri)
    return RemoteRoot.canonical(text) if is_remote(text) else text


def open_index(root: str | Path) -> ds.Dataset:
    """A pyarrow dataset over the current ``index/*.parquet`` of ``root`` (a folder or ``s3://…``)."""
    return DatasetView.open(root).open_index()


def read_index(root: str | Path, columns: Sequence[str] | None = None, *, dedupe: bool = True) -> pa.Table:
    """The index of ``root`` as a table; see :meth:`DatasetView.read_index`."""
    return DatasetView.open(root).read_index(columns, dedupe=dedupe)


def inside_rel(rel: object) -> bool:
    """Whether ``rel`` (read from an index or manifest) names a path inside the dataset: relative,
    no ``..`` or empty segments, no backslashes or NUL."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _through_symlink(root: Path, rel: str) -> bool:
    """Whether any component of ``root/rel`` below ``root`` is a symlink."""
    path = root
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink():
            return True
    return False
