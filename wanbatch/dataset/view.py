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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ..errors import DatasetError, NotADatasetError
from .fsutil import disk_errors
from .journal import TASKS, read_tasks, segments
from .layout import MANIFEST, Layout, is_dataset, is_part
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


@dataclass(frozen=True, slots=True)
class TriageState:
    """What a dataset already holds, for deciding what a run still requests.

    ``done``: image ids with an ``ok`` row whose image file exists; ``failed``: image id → error kind
    of slots whose latest row is failed and that have no ok row; ``unindexed``: image id → relative
    path of an image file that no ok row claims (a crash came between the file and its row: a run
    re-indexes it without a request).
    """

    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    unindexed: dict[str, str] = field(default_factory=dict)


class DatasetView:
    """A read-only view of one dataset, a local folder or an object-store prefix. Use :meth:`open`."""

    def __init__(self, fs: pafs.FileSystem, base: str, location: str, layout: Layout | None) -> None:
        self.fs = fs
        self.base = base  # the root inside ``fs``
        self.location = location  # as shown to users: the folder, or the canonical URI
        self.layout = layout  # local datasets only (journals are read from it)

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

    def parts(self) -> list[str]:
        """Paths (inside :attr:`fs`) of the visible index parts, sorted by name."""
        if self.layout is not None:
            return [str(p) for p in self.layout.parts()]
        with self._errors("list the index"):
            infos = self.fs.get_file_info(pafs.FileSelector(f"{self.base}/index", allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and is_part(i.base_name))

    def open_index(self) -> ds.Dataset:
        """A pyarrow dataset over the current ``index/*.parquet`` with INDEX_SCHEMA (raw rows)."""
        return ds.dataset(self.parts(), schema=INDEX_SCHEMA, format="parquet", filesystem=self.fs)

    def read_parts(self, columns: Sequence[str] | None = None, flt: Any = None) -> pa.Table:
        """Every row of every visible part (relisting if a compaction removes one mid-read)."""
        if self.layout is not None:
            return read_parts(self.layout, columns, flt)
        last: BaseException | None = None
        for _ in range(8):
            parts = self.parts()
            if not parts:
                return INDEX_SCHEMA.empty_table().select(list(columns) if columns else INDEX_SCHEMA.names)
            try:
                dataset = ds.dataset(parts, schema=INDEX_SCHEMA, format="parquet", filesystem=self.fs)
                return dataset.to_table(columns=list(columns) if columns else None, filter=flt)
            except FileNotFoundError as exc:
                last = exc
            except (OSError, pa.ArrowException) as exc:
                if "not found" not in str(exc).lower() and "no such" not in str(exc).lower():
                    raise DatasetError(f"cannot read the index of {self.location}: {short(exc)}") from None
                last = exc
        raise DatasetError(f"cannot read the index of {self.location}: {short(last or Exception())}")

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

    # ----------------------------------------------------------------------------------- triage

    def triage(self) -> TriageState:
        """Done, failed and unindexed slots (one listing of ``images/``, no stat per row)."""
        table = self.read_parts(["image_id", "status", "path", "error_kind", "created_at"])
        return triage_of(table, self.image_files())

    def image_files(self) -> list[str]:
        """Relative paths of every image file (``images/<xx>/<name>``)."""
        if self.layout is not None:
            with disk_errors("list the images"):
                return self.layout.image_files()
        with self._errors("list the images"):
            infos = self.fs.get_file_info(pafs.FileSelector(f"{self.base}/images", recursive=True,
                                                            allow_not_found=True))
        cut = len(self.base) + 1
        return [i.path[cut:] for i in infos
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

    def journals(self, jobs_with_rows: set[str]) -> tuple[int, int]:
        """Pending async tasks over all writers, and rows still only in journals (an upper bound).

        Journals live next to the writer (for ``s3://`` in its staging folder), so a remote view
        reports none."""
        if self.layout is None or not self.layout.journal.is_dir():
            return 0, 0
        pending: set[str] = set()
        unindexed = 0
        for folder in self.layout.journal.iterdir():
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

    def ledger(self, table: pa.Table | None = None) -> DatasetLedger:
        """What the dataset has cost so far (billed + in doubt, over every run): see :mod:`.ledger`.

        ``table``, if given, holds at least the ``image_id``, ``status`` and ``run_id`` columns of
        every row (saves a read)."""
        if table is None:
            table = self.read_parts(["image_id", "status", "run_id"])
        ok_by_run = ok_images_by_run(table)
        return dataset_ledger(self.manifest(), ok_by_run, summary_billed_reader(self.read_bytes),
                              self.journal_ledgers())

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


def triage_of(table: pa.Table, image_files: Sequence[str]) -> TriageState:
    """The triage of rows (``image_id``, ``status``, ``path``, ``error_kind``, ``created_at``) against
    the image files on disk."""
    ok = table.filter(pc.equal(table["status"], "ok"))
    existing = pa.array(list(image_files), pa.string())
    done: set[str] = set(ok["image_id"].filter(pc.is_in(ok["path"], value_set=existing)).to_pylist())
    unindexed: dict[str, str] = {}
    for rel in image_files:
        image_id = rel.rsplit("/", 1)[1].rsplit(".", 1)[0]
        if image_id not in done:
            unindexed[image_id] = rel
    return TriageState(done=done, failed=failed_from(table), unindexed=unindexed)


def failed_from(table: pa.Table) -> dict[str, str]:
    """image_id → error_kind for images with no ok row, from their latest failed row."""
    status = table["status"]
    ok_ids = table["image_id"].filter(pc.equal(status, "ok"))
    failed = table.filter(pc.equal(status, "failed"))
    if failed.num_rows == 0:
        return {}
    failed = failed.filter(pc.invert(pc.is_in(failed["image_id"], value_set=ok_ids.combine_chunks())))
    failed = failed.sort_by([("created_at", "ascending")])
    kinds = failed["error_kind"].fill_null("unknown").to_pylist()
    return dict(zip(failed["image_id"].to_pylist(), kinds, strict=True))


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
