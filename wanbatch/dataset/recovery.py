"""Reconciling a dataset after writers died (SIGKILL, power loss, full disk) — idempotent.

For every journal folder whose lock nobody holds (its writer is gone):

1. rows of segments not covered by any part (see :mod:`.parts`) are replayed; an ``ok`` row whose
   image is missing is dropped, unless a temp file of that writer has the journaled size and sha256
   (then its rename is finished);
2. those rows become one new part, covering the dead writer's segments, *before* anything is deleted;
3. its pending async tasks, and the links of paid images it could not download, move to the current
   writer's task journal;
4. its journal and temp folders are removed.

Then leftovers nobody owns are removed: half-written parts and manifest temps, stray temp files, and
temp files a killed run left in ``leases/`` (a dead run's lease itself is taken over by the next run
whose slice overlaps it, see :mod:`.lease`; ``wanbatch status`` lists it as dead until then). If
anything was recovered, image files without any row are listed in ``orphan_images``: they were paid
for, so they are kept for the runner to adopt (``DatasetWriter.existing_image``).

Temp files: each writer keeps its temp files — the probe written when it opens included — in its own
``.tmp/<writer>/`` folder, removed with its journal when it is found dead; so a SIGKILL at any moment
leaves nothing behind that a later recovery does not sweep.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..types import Job
from .fsutil import disk_errors
from .journal import (
    NEWBORN,
    NEWBORN_AGE,
    TASKS,
    PaidLinks,
    TaskRef,
    decode_row,
    read_journal,
    read_lines,
    segments,
    try_lock,
)
from .layout import OWN_TEMP, WRITER_ID, Layout
from .lease import sweep as sweep_leases
from .ledger import IN_DOUBT, LEDGER, billed_intents, read_ledger
from .manifest import record_ledger, root_lock
from .parts import TMP_SUFFIX, all_covers, part_name, read_parts, rows_to_table, write_part
from .rows import failed_row

#: Probes older versions wrote straight into ``.tmp/`` are swept once this old (a live opener of such
#: a version unlinks its probe within milliseconds).
LEGACY_PROBE_AGE = 60.0
_LEGACY_PROBE = re.compile(r"^probe-[0-9a-f]{8}$")
_COMPACT_WORK = re.compile(r"^\.compact-[0-9a-f]{8}$")


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
    ledgers_folded: int = 0  # dead writers' ledgers folded into the manifest
    images_in_doubt: int = 0  # requests they sent and never saw answered
    images_unstored: int = 0  # delivered and billed, never stored (no row, no file, no kept link)
    temp_files_removed: int = 0
    partial_parts_removed: int = 0
    orphan_images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover(
    layout: Layout, writer: str, *, adopt_task: Callable[[str, TaskRef], None],
    image_files: Callable[[], Iterable[str]], buffered_ids: Collection[str] = (),
    adopt_links: Callable[[str, PaidLinks], None] | None = None,
) -> RecoveryReport:
    """Recover the dead writers of ``layout`` on behalf of the live ``writer``.

    ``adopt_task(job_id, ref)`` journals a dead writer's pending task in the live one (and
    ``adopt_links(job_id, paid)`` its paid, undownloaded links);
    ``image_files()`` lists every image (relative paths, object storage included); ``buffered_ids``
    are image ids the live writer holds rows for that are not in a part yet.
    """
    report = RecoveryReport()
    # listed at most once: the billed-but-unstored check and the orphan scan read the same listing
    image_files = functools.cache(lambda listed=image_files: list(listed()))
    dead: list[tuple[str, Path, int]] = []
    if layout.journal.is_dir():
        for folder in sorted(layout.journal.iterdir()):
            if folder.name == writer or not folder.is_dir():
                continue
            if folder.name.startswith("."):  # being born (see journal.NEWBORN), or a crash left it
                if folder.name.startswith(NEWBORN) and WRITER_ID.match(folder.name[len(NEWBORN):]) \
                        and _older_than(folder, NEWBORN_AGE):
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            if not WRITER_ID.match(folder.name):
                continue  # not a writer's journal: not ours to recover or remove
            fd = try_lock(folder / "lock")
            if fd is None:
                report.writers_alive += 1
            else:
                dead.append((folder.name, folder, fd))
    try:
        if dead:
            _recover_writers(layout, writer, adopt_task, adopt_links, dead, report, image_files)
        _sweep(layout, report)
        report.temp_files_removed += sweep_leases(layout.leases)
        if report.writers_recovered:
            report.orphan_images = _orphans(layout, image_files(), buffered_ids)
    finally:
        for _, _, fd in dead:
            os.close(fd)
    return report


def _recover_writers(
    layout: Layout, live_writer: str, adopt_task: Callable[[str, TaskRef], None],
    adopt_links: Callable[[str, PaidLinks], None] | None, dead: list[tuple[str, Path, int]],
    report: RecoveryReport, image_files: Callable[[], Iterable[str]],
) -> None:
    covers = all_covers(layout)
    rows: list[dict[str, Any]] = []
    new_covers: dict[str, int] = {}
    journaled: dict[str, set[str]] = {}  # writer → image ids its journal segments hold rows for
    for writer, folder, _ in dead:
        done_upto = covers.get(writer, 0)
        seen = journaled.setdefault(writer, set())
        for seq, path in segments(folder):
            items, torn = read_lines(path)
            report.torn_lines += torn
            new_covers[writer] = max(new_covers.get(writer, 0), seq)
            seen.update(i["image_id"] for i in items if isinstance(i.get("image_id"), str))
            if seq <= done_upto:
                report.rows_already_indexed += len(items)
                continue
            for item in items:
                row = decode_row(item)
                if row.get("status") == "ok" and not _ensure_image(layout, writer, row, report):
                    report.rows_dropped += 1
                    continue
                rows.append(row)
    ledgers = []
    files = _ImageIds(image_files)
    for writer, folder, _ in dead:
        ledger = read_ledger(folder / LEDGER)
        ledgers.append(ledger)
        polled, links = read_journal(folder / TASKS)  # a journaled task is polled on resume, not in doubt
        unstored = list(_billed_unstored(layout, folder, ledger.run_id, journaled.pop(writer, set()),
                                         polled, links, files))
        report.images_unstored += len(unstored)
        rows += [failed_row(job, k, kind=IN_DOUBT, provider=provider, run_id=ledger.run_id or writer,
                            message="delivered and billed, but its run stopped before the image was "
                                    "stored (e.g. a full disk)")
                 for job, k, provider in unstored]
        for intent in ledger.open.values():  # sent, never answered: maybe billed
            if intent.job.job_id in polled:
                continue
            report.images_in_doubt += intent.images
            rows += [failed_row(intent.job, k, kind=IN_DOUBT, provider=intent.provider,
                                run_id=ledger.run_id or writer,
                                message="the request was sent when its run was killed; it may have been "
                                        "billed")
                     for k in intent.slots]
    if rows:
        # Covers only the writers whose rows are in this part: a crash before it is renamed replays all.
        write_part(layout, rows_to_table(rows), new_covers, part_name("r", live_writer))
        report.rows_recovered = len(rows)
    for ledger in ledgers:  # after the rows: a crash here replays them (duplicates dedupe), never loses them
        if ledger.run_id is not None and not ledger.empty \
                and record_ledger(layout, ledger.run_id, ledger.entry()):
            report.ledgers_folded += 1
    for writer, folder, _ in dead:
        tasks, links = read_journal(folder / TASKS)
        for job, ref in tasks.items():
            adopt_task(job, ref)
            report.tasks_adopted += 1
        if adopt_links is not None:
            for job, paid in links.items():
                adopt_links(job, paid)
        report.temp_files_removed += _count_files(layout.writer_tmp(writer))
        with disk_errors(f"remove the journal of writer {writer}"), \
                contextlib.suppress(FileNotFoundError):  # a peer recovering it too removed it first
            shutil.rmtree(layout.writer_tmp(writer), ignore_errors=True)
            for entry in sorted(folder.iterdir(), key=lambda p: p.name == "lock"):
                entry.unlink(missing_ok=True)  # the lock last: a peer re-checks it after locking
            folder.rmdir()
        report.writers_recovered += 1


#: Candidate slots checked against the index at a time (bounds memory on a huge dead writer's ledger).
CHECK_CHUNK = 20_000


class _ImageIds:
    """Image ids with a file (listed once, on first need): a rerun adopts those, so they need no row."""

    def __init__(self, image_files: Callable[[], Iterable[str]]) -> None:
        self._list = image_files
        self._ids: set[str] | None = None

    def __contains__(self, image_id: str) -> bool:
        if self._ids is None:
            self._ids = {rel.rsplit("/", 1)[-1].rsplit(".", 1)[0] for rel in self._list()}
        return image_id in self._ids


def _billed_unstored(
    layout: Layout, folder: Path, run_id: str | None, journaled: set[str], polled: Collection[str],
    links: dict[str, PaidLinks], files: _ImageIds,
) -> Iterator[tuple[Job, int, str]]:
    """(job, slot, provider) of the slots a dead writer's requests were billed for that have no row
    (neither in its journal segments nor, under its run, in the index), no image file and no kept link:
    the paid image was lost before its row was written (a full disk, a kill mid-download). Without a
    row a rerun would pay for them again; they become ``in_doubt`` rows instead.

    Streams the ledger (:func:`.ledger.billed_intents`); slots missing from the journal are checked
    against the index :data:`CHECK_CHUNK` at a time."""
    chunk: list[tuple[Job, int, str]] = []
    for intent in billed_intents(folder / LEDGER):
        job = intent.job
        if job.job_id in polled:  # its task is polled on resume
            continue
        kept = links.get(job.job_id)
        for k in intent.slots:
            if f"{job.job_id}-{k}" not in journaled and (kept is None or k not in kept.links):
                chunk.append((job, k, intent.provider))
        if len(chunk) >= CHECK_CHUNK:
            yield from _without_rows(layout, chunk, run_id, files)
            chunk = []
    if chunk:
        yield from _without_rows(layout, chunk, run_id, files)


def _without_rows(layout: Layout, chunk: list[tuple[Job, int, str]], run_id: str | None,
                  files: _ImageIds) -> list[tuple[Job, int, str]]:
    ids = sorted({f"{job.job_id}-{k}" for job, k, _ in chunk})
    wanted = pc.field("image_id").isin(pa.array(ids, pa.string()))
    if run_id is not None:
        wanted = wanted & (pc.field("run_id") == run_id)
    indexed = set(read_parts(layout, ["image_id"], wanted)["image_id"].to_pylist())
    out: list[tuple[Job, int, str]] = []
    for job, k, provider in chunk:
        image_id = f"{job.job_id}-{k}"
        if image_id not in indexed and image_id not in files:
            indexed.add(image_id)  # once, whatever number of intents named it
            out.append((job, k, provider))
    return out


def _ensure_image(layout: Layout, writer: str, row: dict[str, Any], report: RecoveryReport) -> bool:
    """True if the image of an ok row is in place (possibly by finishing its rename from ``.tmp``)."""
    rel = row.get("path")
    if not isinstance(rel, str) or not rel:
        return False
    target = layout.root / rel
    if target.is_file():
        return True
    size, digest = row.get("bytes"), row.get("sha256")
    tmp = layout.writer_tmp(writer)
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


def _sweep(layout: Layout, report: RecoveryReport) -> None:
    """Remove temp files and half-written parts that no live writer owns.

    Each folder is listed *before* the journals: a writer's journal exists before any of its temp
    files, so a temp file seen here belongs to a journal in the later listing if its writer lives.
    Only what wanbatch provably made is removed: folders under ``.tmp`` named by a writer id, a
    legacy open probe, compaction work folders and files named by wanbatch's temp patterns
    (``layout.OWN_TEMP``); anything else found there is left alone."""
    with disk_errors("clean temporary files"):
        entries = list(layout.tmp.iterdir()) if layout.tmp.is_dir() else []
        live = _journal_names(layout)
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                if WRITER_ID.match(entry.name) and entry.name not in live:
                    report.temp_files_removed += _count_files(entry)
                    shutil.rmtree(entry, ignore_errors=True)
            elif _LEGACY_PROBE.match(entry.name) and _older_than(entry, LEGACY_PROBE_AGE):
                entry.unlink(missing_ok=True)
                report.temp_files_removed += 1
    with root_lock(layout), disk_errors("clean temporary files"):  # compactions, manifest writes
        for folder in (layout.index, layout.root, layout.runs):
            if not folder.is_dir():
                continue
            listed = list(folder.iterdir())
            live = _journal_names(layout)
            for entry in listed:
                name = entry.name
                if folder == layout.index and _COMPACT_WORK.match(name) and entry.is_dir() \
                        and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)  # a compaction killed mid-way (we hold its lock)
                    continue
                if OWN_TEMP.match(name) and entry.is_file() and not entry.is_symlink() \
                        and not any(w in name for w in live if w):
                    entry.unlink(missing_ok=True)
                    if name.endswith(TMP_SUFFIX):
                        report.partial_parts_removed += 1
                    else:
                        report.temp_files_removed += 1


def _journal_names(layout: Layout) -> set[str]:
    try:
        return {p.name for p in layout.journal.iterdir()} if layout.journal.is_dir() else set()
    except FileNotFoundError:
        return set()


def _count_files(folder: Path) -> int:
    try:
        return sum(1 for e in folder.iterdir() if e.is_file())
    except OSError:
        return 0


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


def _orphans(layout: Layout, image_files: Iterable[str], buffered_ids: Collection[str]) -> list[str]:
    """Image ids with a file in ``images/`` but no row at all (killed between place and append)."""
    ids = {rel.rsplit("/", 1)[1].rsplit(".", 1)[0]: rel for rel in image_files}
    if not ids:
        return []
    table = read_parts(layout, ["image_id"], pc.field("image_id").isin(pa.array(list(ids))))
    known = set(table["image_id"].to_pylist()) | set(buffered_ids)
    return sorted(i for i in ids if i not in known)
