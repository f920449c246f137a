"""Image ids as fixed-size keys, so the index's ids fit in memory at 10M rows and more.

An image id is ``<16 hex job id>-<slot>`` (:mod:`wanbatch.identity`): 8 bytes of job id and a small
slot number. Held as Python strings, 10M ids take ~1 GB (object, hash table, string); as two sorted
numpy arrays (``uint64`` job, ``uint32`` slot) they take 120 MB, are built with one vectorised parse
per Parquet batch and answer membership by binary search (:class:`IdSet`).

The parse is exact: only the canonical spelling (lowercase hex, ``-``, a decimal slot without
leading zeros) becomes a key, so a key stands for exactly one string. Any other id — a tool other
than wanbatch wrote the row, a test used a short id — stays a string in :attr:`IdSet.other`; the two
spaces never overlap, so counts and membership stay right whatever a dataset holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Set
from typing import Any

import numpy as np
import pyarrow as pa

_LUT = np.full(256, 255, np.uint8)
_LUT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_LUT[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX = frozenset("0123456789abcdef")
_DASH = ord("-")
_ZERO = np.uint8(ord("0"))
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_TAIL = np.arange(6)  # up to 999,999 slots: slot << 4 | ext fits 32 bits
_EMPTY_U64 = np.zeros(0, np.uint64)
_EMPTY_U32 = np.zeros(0, np.uint32)

#: Image file extensions with a small code (a key for "this row's file exists" is (job, slot, ext)).
EXTS: tuple[str, ...] = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tiff")


def parse_ids(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(job, slot, keyed)`` for an array of image ids: ``keyed[i]`` tells whether ``ids[i]`` is a
    canonical id, and then ``job[i]``/``slot[i]`` are its key (0 elsewhere)."""
    chars, start, length = string_bytes(ids)
    return parse_at(chars, start, length)


def string_bytes(strings: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(chars, start, length)``: the UTF-8 bytes of a string array and where each string lies in
    them (``length`` -1 for nulls), read from Arrow's buffers without a copy per string."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    if strings.type != pa.string():
        strings = strings.cast(pa.string())
    n = len(strings)
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    buffers = strings.buffers()
    offsets = np.frombuffer(buffers[1], np.int32)[strings.offset: strings.offset + n + 1].astype(np.int64)
    chars = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    length = np.diff(offsets)
    if strings.null_count:
        length[~np.asarray(strings.is_valid().to_numpy(zero_copy_only=False), bool)] = -1
    return chars, offsets[:-1], length


def windows(chars: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """``chars[at[i]: at[i] + width]`` for each ``i``, as an ``(len(at), width)`` array: a strided view
    of the buffer when ``at`` is evenly spaced (a batch of strings of one length), else gathered
    (bytes past the buffer's end read as its last byte; callers mask what lies outside a string)."""
    if len(at) == 0 or width <= 0:
        return np.zeros((len(at), max(width, 0)), np.uint8)
    step = int(at[1] - at[0]) if len(at) > 1 else 0
    if step >= 0 and int(at[-1]) + width <= len(chars) and (np.diff(at) == step).all():
        return np.lib.stride_tricks.as_strided(chars[at[0]:], (len(at), width), (step, 1), writeable=False)
    return chars[np.minimum(at[:, None] + np.arange(width), len(chars) - 1)]


def matches(block: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Rows of ``block`` (``(n, len(pattern))`` bytes) equal to ``pattern``, column by column (numpy's
    reductions along a short axis, ``.all(axis=1)``, are ~10x slower)."""
    out = block[:, 0] == pattern[0]
    for j in range(1, len(pattern)):
        out &= block[:, j] == pattern[j]
    return out


def parse_at(chars: np.ndarray, start: np.ndarray,
             length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_ids` of the strings ``chars[start[i]: start[i] + length[i]]``, all in numpy.

    Canonical means exactly: 16 bytes of lowercase hex, ``-``, 1 to 6 decimal digits without a leading
    zero (so 18 to 23 bytes; any non-ASCII byte fails the hex or digit test). Strings of one length
    at even spacing (a Parquet batch of ids, or of paths, of one slot width) are read as a strided
    view of the buffer (:func:`windows`), without gathering bytes."""
    n = len(start)
    job = np.zeros(n, np.uint64)
    slot = np.zeros(n, np.uint32)
    keyed = (length >= 18) & (length <= 23)
    if not keyed.any():
        return job, slot, keyed
    idx = np.flatnonzero(keyed)
    at, size = start[idx], length[idx]
    head = windows(chars, at, 17)  # 16 hex digits and the dash
    if (size == size[0]).all():
        tail, inside = windows(chars, at + 17, int(size[0]) - 17) - _ZERO, None
    else:  # slots of several widths: 6 bytes each, those past the string masked
        tail, inside = windows(chars, at + 17, len(_TAIL)) - _ZERO, (size - 17)[:, None] > _TAIL
    nibbles = np.take(_LUT, np.ascontiguousarray(head[:, :16]))  # 255 where not lowercase hex
    words = nibbles.view(np.uint64)  # two words a row: any byte above 15 sets a high nibble
    good = ((words[:, 0] | words[:, 1]) & _HIGH_NIBBLES == 0) & (head[:, 16] == _DASH)
    value = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(">u8").ravel()
    good &= (tail[:, 0] != 0) | (size == 18)  # no leading zero
    number = np.zeros(len(idx), np.uint32)
    for j in range(tail.shape[1]):  # column by column: numpy reduces a short axis ~10x slower
        digit = tail[:, j]
        more = number * 10 + digit.astype(np.uint32)
        if inside is None:
            good &= digit <= 9  # bytes below "0" wrapped around: not digits either
            number = more
        else:
            good &= (digit <= 9) | ~inside[:, j]
            number = np.where(inside[:, j], more, number)
    keyed[idx] = good
    job[idx] = np.where(good, value.astype(np.uint64), 0)
    slot[idx] = np.where(good, number, 0)
    return job, slot, keyed


def key_of(image_id: str) -> tuple[int, int] | None:
    """The key of one id (the scalar :func:`parse_ids`), None if it is not canonical."""
    if not 18 <= len(image_id) <= 23 or image_id[16] != "-" or not _HEX.issuperset(image_id[:16]):
        return None
    tail = image_id[17:]
    if not tail.isdigit() or not tail.isascii() or (tail[0] == "0" and len(tail) > 1):
        return None
    return int(image_id[:16], 16), int(tail)


def id_of(job: int, slot: int) -> str:
    return f"{job:016x}-{slot}"


def sort_keys(job: np.ndarray, slot: np.ndarray, *, unique: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``job``/``slot`` sorted by (job, slot), optionally without repeats. One slot value throughout
    (every job of n=1, or every file a .png of slot 0) sorts the job values alone: numpy's value sort
    is ~8x its argsort."""
    if len(job) == 0:
        return _EMPTY_U64, _EMPTY_U32
    if (slot == slot[0]).all():
        job = np.sort(job)
    else:
        order = np.lexsort((slot, job))
        job, slot = job[order], slot[order]
    return unique_sorted(job, slot) if unique else (job, slot)


def unique_sorted(job: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys without repeats (the first of each run of equal keys)."""
    if len(job) < 2:
        return job, slot
    keep = np.empty(len(job), bool)
    keep[0] = True
    np.not_equal(job[1:], job[:-1], out=keep[1:])
    keep[1:] |= slot[1:] != slot[:-1]
    return (job, slot) if keep.all() else (job[keep], slot[keep])


def lookup(jobs: np.ndarray, slots: np.ndarray, run: int, qjob: np.ndarray, qslot: np.ndarray) -> np.ndarray:
    """Positions in sorted (``jobs``, ``slots``) of each query key, -1 where absent. ``run`` is the
    most slots one job has (the binary search finds the job, then at most ``run`` slots are compared)."""
    found = np.full(len(qjob), -1, np.int64)
    if len(jobs) == 0 or len(qjob) == 0:
        return found
    order = np.argsort(qjob, kind="stable")  # sorted queries walk the table in order: cache-friendly
    qjob, qslot = qjob[order], qslot[order]
    pos = np.searchsorted(jobs, qjob, "left")
    last = len(jobs) - 1
    hits = np.full(len(qjob), -1, np.int64)
    for d in range(run):
        at = np.minimum(pos + d, last)
        hit = (hits < 0) & (pos + d <= last) & (jobs[at] == qjob) & (slots[at] == qslot)
        hits[hit] = at[hit]
    found[order] = hits
    return found


def longest_run(jobs: np.ndarray) -> int:
    """The most entries one job value has in sorted ``jobs``."""
    if len(jobs) == 0:
        return 0
    starts = np.flatnonzero(np.concatenate(([True], jobs[1:] != jobs[:-1], [True])))
    return int(np.diff(starts).max())


class IdSet(Set[str]):
    """A read-only set of image ids: canonical ids as sorted keys, any others as strings."""

    __slots__ = ("jobs", "other", "run", "slots")

    def __init__(self, jobs: np.ndarray = _EMPTY_U64, slots: np.ndarray = _EMPTY_U32,
                 other: Iterable[str] = (), *, sorted_unique: bool = False) -> None:
        if not sorted_unique:
            jobs, slots = sort_keys(np.asarray(jobs, np.uint64), np.asarray(slots, np.uint32))
        self.jobs = jobs
        self.slots = slots
        self.other = frozenset(other)
        self.run = longest_run(jobs)

    @classmethod
    def of(cls, ids: Iterable[str]) -> IdSet:
        """From strings (small sets, tests)."""
        arr = pa.array(list(ids), pa.string())
        job, slot, keyed = parse_ids(arr)
        return cls(job[keyed], slot[keyed], arr.filter(pa.array(~keyed)).to_pylist())

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> set[Any]:  # what Set's operators (|, &, -) build
        return set(it)

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str) or not (self.run or self.other):
            return False
        key = key_of(image_id)
        if key is None:
            return image_id in self.other
        if not self.run:
            return False
        job = np.uint64(key[0])
        i = int(np.searchsorted(self.jobs, job, "left"))
        for at in range(i, min(i + self.run, len(self.jobs))):
            if self.jobs[at] != job:
                return False
            if self.slots[at] == key[1]:
                return True
        return False

    def contains_keys(self, job: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Membership of many keys at once (a bool array)."""
        return lookup(self.jobs, self.slots, self.run, job, slot) >= 0

    def __len__(self) -> int:
        return len(self.jobs) + len(self.other)

    def __iter__(self) -> Iterator[str]:
        for job, slot in zip(self.jobs.tolist(), self.slots.tolist(), strict=True):
            yield id_of(job, slot)
        yield from self.other

    def __repr__(self) -> str:
        return f"IdSet({len(self)} ids)"

    @property
    def nbytes(self) -> int:
        return int(self.jobs.nbytes + self.slots.nbytes)
