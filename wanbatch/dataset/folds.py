"""The index read batch by batch into fixed-size keys: triage and status in bounded memory.

A :class:`~wanbatch.dataset.view.DatasetView` streams the needed columns of every part (a Parquet
scan, never the whole table) into one of these folds. Each keeps numpy arrays of keys (see
:mod:`.idkeys`: 12 bytes per image instead of a Python string) and whatever little else it needs;
ids a key cannot express are kept as strings on the side. A shard ``(i, N)`` keeps only its slice
(``int(job_id[:8], 16) % N == i``, as :func:`wanbatch.plan.plan` cuts it) as each batch arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .idkeys import (
    EXTS,
    IdSet,
    id_of,
    longest_run,
    lookup,
    matches,
    parse_at,
    parse_ids,
    sort_keys,
    string_bytes,
    unique_sorted,
    windows,
)

FAILED_COLUMNS = ["image_id", "error_kind", "created_at"]
_PREFIX = np.frombuffer(b"images/", np.uint8)
_SLASH = ord("/")
_SUFFIXES = [np.frombuffer(f".{ext}".encode(), np.uint8) for ext in EXTS]  # 4 or 5 bytes each
_SHORTEST, _LONGEST = 10 + 18 + 4, 10 + 23 + 5  # "images/xx/", an id, ".png" … ".jpeg"


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), bool)


def _in_shard(job: np.ndarray, keyed: np.ndarray, shard: tuple[int, int] | None) -> np.ndarray:
    """Rows to keep for ``shard``: keys in its slice, and every id a key cannot express."""
    if shard is None:
        return np.ones(len(job), bool)
    i, count = shard
    return ~keyed | ((job >> np.uint64(32)) % np.uint64(count) == np.uint64(i))


def rel_keys(rels: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(job, sub, keyed)`` of relative image paths ``images/<id[:2]>/<id>.<ext>``: ``sub`` is
    ``slot << 4 | ext code`` for canonical paths of canonical ids with a known extension.

    Read from the bytes in numpy (no regex): the extension from the last 5 bytes, the fixed prefix and
    the folder from the first 12, the id between them (:func:`~.idkeys.parse_at`)."""
    chars, start, length = string_bytes(rels)
    n = len(start)
    job, sub, keyed = np.zeros(n, np.uint64), np.zeros(n, np.uint32), np.zeros(n, bool)
    cand = (length >= _SHORTEST) & (length <= _LONGEST)
    if not cand.any():
        return job, sub, keyed
    idx = np.flatnonzero(cand)
    at, size = start[idx], length[idx]
    head = windows(chars, at, 12)  # "images/", the folder, "/", the id's first two characters
    good = matches(head, _PREFIX) & (head[:, 9] == _SLASH) \
        & (head[:, 7] == head[:, 10]) & (head[:, 8] == head[:, 11])
    end = windows(chars, at + size - 5, 5)
    code = np.full(len(idx), -1, np.int64)
    stem = np.full(len(idx), -1, np.int64)
    for i, suffix in enumerate(_SUFFIXES):  # at most one matches: the dot is at a different place
        hit = matches(end[:, 5 - len(suffix):], suffix)
        code[hit] = i
        stem[hit] = size[hit] - 10 - len(suffix)
    good &= code >= 0
    pjob, pslot, pkeyed = parse_at(chars, at + 10, np.where(good, stem, -1))
    keyed[idx] = pkeyed
    job[idx] = pjob
    sub[idx] = np.where(pkeyed, (pslot << np.uint32(4)) | np.maximum(code, 0).astype(np.uint32), 0)
    return job, sub, keyed


@dataclass(slots=True)
class Files:
    """The image files: canonical ones as sorted (job, sub) keys, others as relative paths.

    ``trusted``: every image an ok row names exists, without a listing (object storage, where a part
    is uploaded only after every image it names); the files held then are only those known without
    a listing (e.g. a staging folder's), which the triage reports as unindexed when no ok row has them."""

    jobs: np.ndarray
    subs: np.ndarray
    other: set[str]
    trusted: bool = False

    @classmethod
    def of(cls, chunks: Iterable[list[str]], shard: tuple[int, int] | None = None, *,
           trusted: bool = False) -> Files:
        jobs: list[np.ndarray] = []
        subs: list[np.ndarray] = []
        other: set[str] = set()
        for rels in chunks:
            if not rels:
                continue
            arr = pa.array(rels, pa.string())
            job, sub, keyed = rel_keys(arr)
            keep = keyed & _in_shard(job, keyed, shard)
            jobs.append(job[keep])
            subs.append(sub[keep])
            other.update(arr.filter(pa.array(~keyed)).to_pylist())
        job_all, sub_all = sort_keys(np.concatenate(jobs) if jobs else np.zeros(0, np.uint64),
                                     np.concatenate(subs) if subs else np.zeros(0, np.uint32))
        return cls(job_all, sub_all, other, trusted)

    def has(self, job: np.ndarray, sub: np.ndarray) -> np.ndarray:
        if self.trusted:
            return np.ones(len(job), bool)
        return lookup(self.jobs, self.subs, longest_run(self.jobs), job, sub) >= 0

    def has_rel(self, rel: str) -> bool:
        if self.trusted or rel in self.other:
            return True
        job, sub, keyed = rel_keys(pa.array([rel], pa.string()))
        return bool(keyed[0] and self.has(job, sub)[0])


@dataclass(slots=True)
class TriageFold:
    """Rows (``image_id``, ``status``, ``path``, ``error_kind``, ``created_at``) → what a run needs."""

    shard: tuple[int, int] | None = None
    ok_job: list[np.ndarray] = field(default_factory=list)
    ok_sub: list[np.ndarray] = field(default_factory=list)  # slot << 4 | ext of the row's own path
    ok_odd: list[tuple[str, str]] = field(default_factory=list)  # (image id, path) of other ok rows
    failed: list[pa.Table] = field(default_factory=list)
    rows: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch])
        job, slot, keyed = parse_ids(table["image_id"])
        keep = _in_shard(job, keyed, self.shard)
        if not keep.all():
            mask = pa.array(keep)
            table, job, slot, keyed = table.filter(mask), job[keep], slot[keep], keyed[keep]
        self.rows += table.num_rows
        ok = _np_bool(pc.equal(table["status"], "ok"))
        if ok.any():
            path = table["path"]
            if isinstance(path, pa.ChunkedArray):
                path = path.combine_chunks()
            pjob, psub, pkeyed = rel_keys(path)
            own = ok & keyed & pkeyed & (pjob == job) & ((psub >> np.uint32(4)) == slot)
            self.ok_job.append(job[own])
            self.ok_sub.append(psub[own])
            odd = ok & ~own
            if odd.any():
                mask = pa.array(odd)
                self.ok_odd += zip(table["image_id"].filter(mask).to_pylist(),
                                   table["path"].filter(mask).to_pylist(), strict=True)
        failed = _np_bool(pc.equal(table["status"], "failed"))
        if failed.any():
            self.failed.append(table.select(FAILED_COLUMNS).filter(pa.array(failed)))

    def result(self, files: Files) -> tuple[IdSet, dict[str, str], dict[str, str]]:
        """``(done, failed, unindexed)`` as :class:`~wanbatch.dataset.view.TriageState` holds them.

        The ok keys are sorted once: the files are looked up in that order, and the done set and the
        set of every ok id (which decides the failed ones) are runs of it."""
        ok_job = np.concatenate(self.ok_job) if self.ok_job else np.zeros(0, np.uint64)
        ok_sub = np.concatenate(self.ok_sub) if self.ok_sub else np.zeros(0, np.uint32)
        self.ok_job, self.ok_sub = [], []
        ok_job, ok_sub = sort_keys(ok_job, ok_sub)  # by (job, sub): by (job, slot) too
        exists = files.has(ok_job, ok_sub)
        ok_slot = ok_sub >> np.uint32(4)
        del ok_sub
        done_other = [i for i, p in self.ok_odd if files.has_rel(p)] if self.ok_odd else []
        done = IdSet(*unique_sorted(ok_job[exists], ok_slot[exists]), [i for i in done_other if _key_less(i)],
                     sorted_unique=True)
        done_keyed_odd = [i for i in done_other if not _key_less(i)]
        if done_keyed_odd:  # canonical ids whose row points elsewhere (rare): merge as keys
            extra = IdSet.of(done_keyed_odd)
            done = IdSet(np.concatenate([done.jobs, extra.jobs]), np.concatenate([done.slots, extra.slots]),
                         done.other | extra.other)
        all_ok = IdSet(*unique_sorted(ok_job, ok_slot), [i for i, _ in self.ok_odd], sorted_unique=True)
        del ok_job, ok_slot, exists
        failed = failed_of(self.failed, all_ok)
        unindexed = unindexed_of(files, done)
        return done, failed, unindexed


def _key_less(image_id: str) -> bool:
    from .idkeys import key_of

    return key_of(image_id) is None


def failed_of(chunks: list[pa.Table], ok: IdSet) -> dict[str, str]:
    """image_id → error_kind of the latest failed row of each image with no ok row."""
    if not chunks:
        return {}
    table = pa.concat_tables(chunks)
    job, slot, keyed = parse_ids(table["image_id"])
    has_ok = ok.contains_keys(job, slot) & keyed
    if ok.other:
        others = pa.array(sorted(ok.other), pa.string())
        has_ok |= ~keyed & _np_bool(pc.is_in(table["image_id"], value_set=others))
    table = table.filter(pa.array(~has_ok))
    table = table.sort_by([("created_at", "ascending")])
    kinds = table["error_kind"].fill_null("unknown").to_pylist()
    return dict(zip(table["image_id"].to_pylist(), kinds, strict=True))


def unindexed_of(files: Files, done: IdSet) -> dict[str, str]:
    """image id → relative path of each image file whose id is not done."""
    out: dict[str, str] = {}
    slot = files.subs >> np.uint32(4)
    missing = ~done.contains_keys(files.jobs, slot)
    if missing.any():
        for job, sub in zip(files.jobs[missing].tolist(), files.subs[missing].tolist(), strict=True):
            image_id = id_of(job, sub >> 4)
            out.setdefault(image_id, f"images/{image_id[:2]}/{image_id}.{EXTS[sub & 15]}")
    for rel in sorted(files.other):
        image_id = rel.rsplit("/", 1)[1].rsplit(".", 1)[0]
        if image_id not in done:
            out.setdefault(image_id, rel)
    return out


@dataclass(slots=True)
class StatusFold:
    """Rows (``image_id``, ``status``, ``error_kind``, ``created_at``, ``bytes``) → status counts."""

    job: list[np.ndarray] = field(default_factory=list)
    slot: list[np.ndarray] = field(default_factory=list)
    ok: list[np.ndarray] = field(default_factory=list)
    nbytes: list[np.ndarray] = field(default_factory=list)
    run: list[np.ndarray] = field(default_factory=list)  # codes into ``runs``
    runs: dict[str | None, int] = field(default_factory=dict)
    other: list[tuple[str, bool, int, str | None]] = field(default_factory=list)  # ids a key cannot express
    failed: list[pa.Table] = field(default_factory=list)
    rows: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch])
        self.rows += table.num_rows
        job, slot, keyed = parse_ids(table["image_id"])
        ok = _np_bool(pc.equal(table["status"], "ok"))
        size = pc.fill_null(table["bytes"], 0).to_numpy()
        encoded = pc.dictionary_encode(table["run_id"]).combine_chunks()
        local = [self.runs.setdefault(r, len(self.runs)) for r in encoded.dictionary.to_pylist()]
        nulls = self.runs.setdefault(None, len(self.runs)) if encoded.null_count else -1
        codes = np.asarray([*local, nulls], np.int32)[encoded.indices.fill_null(len(local)).to_numpy()]
        self.job.append(job[keyed])
        self.slot.append(slot[keyed])
        self.ok.append(ok[keyed])
        self.nbytes.append(size[keyed])
        self.run.append(codes[keyed])
        if not keyed.all():
            mask = pa.array(~keyed)
            names = list(self.runs)
            self.other += zip(table["image_id"].filter(mask).to_pylist(), ok[~keyed].tolist(),
                              size[~keyed].tolist(), [names[c] for c in codes[~keyed].tolist()], strict=True)
        failed = _np_bool(pc.equal(table["status"], "failed"))
        if failed.any():
            self.failed.append(table.select(FAILED_COLUMNS).filter(pa.array(failed)))

    def result(self) -> tuple[int, int, int, dict[str, str], dict[str | None, int]]:
        """``(distinct ids, ok images, bytes of ok images once each, failed, run_id → ok images)``;
        an image's bytes and run are those of its first ok row (as read)."""
        job = np.concatenate(self.job) if self.job else np.zeros(0, np.uint64)
        slot = np.concatenate(self.slot) if self.slot else np.zeros(0, np.uint32)
        ok = np.concatenate(self.ok) if self.ok else np.zeros(0, bool)
        size = np.concatenate(self.nbytes) if self.nbytes else np.zeros(0, np.int64)
        run = np.concatenate(self.run) if self.run else np.zeros(0, np.int32)
        self.job, self.slot, self.ok, self.nbytes, self.run = [], [], [], [], []
        names = list(self.runs)
        ok_job, ok_slot = sort_keys(job[ok], slot[ok], unique=False)
        if len(unique_sorted(ok_job, ok_slot)[0]) == len(ok_job):  # no image has two ok rows (usual)
            # each ok row is its image's first: no joint sort of every row, only the ok keys' and
            # the others' (a value sort when they share one slot)
            ok_ids = IdSet(ok_job, ok_slot, sorted_unique=True)
            images_ok = len(ok_job)
            image_bytes = int(size[ok].sum())
            counts = np.bincount(run[ok], minlength=len(names)) if len(names) else np.zeros(0, np.int64)
            rest_job, rest_slot = sort_keys(job[~ok], slot[~ok])
            distinct = images_ok + int((~ok_ids.contains_keys(rest_job, rest_slot)).sum())
            del rest_job, rest_slot
        else:
            order = np.lexsort((~ok, slot, job))  # per image, its ok rows first, in the order read
            job, slot, ok, size, run = job[order], slot[order], ok[order], size[order], run[order]
            del order
            first = np.ones(len(job), bool)
            if len(job) > 1:
                first[1:] = (job[1:] != job[:-1]) | (slot[1:] != slot[:-1])
            distinct = int(first.sum())
            ok_first = first & ok
            images_ok = int(ok_first.sum())
            image_bytes = int(size[ok_first].sum())
            counts = np.bincount(run[ok_first], minlength=len(names)) if len(names) else np.zeros(0, np.int64)
            ok_ids = IdSet(job[ok_first], slot[ok_first], sorted_unique=True)
            del first, ok_first
        del job, slot, ok, size, run, ok_job, ok_slot
        by_run: dict[str | None, int] = {names[c]: int(n) for c, n in enumerate(counts.tolist()) if n}
        seen: dict[str, tuple[bool, int, str | None]] = {}
        for image_id, is_ok, nbytes, run_id in self.other:
            was = seen.get(image_id)
            if was is None or (is_ok and not was[0]):
                seen[image_id] = (is_ok, nbytes, run_id)
        distinct += len(seen)
        images_ok += sum(1 for v in seen.values() if v[0])
        image_bytes += sum(v[1] for v in seen.values() if v[0])
        for is_ok, _, run_id in seen.values():
            if is_ok:
                by_run[run_id] = by_run.get(run_id, 0) + 1
        ok_ids = IdSet(ok_ids.jobs, ok_ids.slots, [i for i, v in seen.items() if v[0]], sorted_unique=True)
        return distinct, images_ok, image_bytes, failed_of(self.failed, ok_ids), by_run
