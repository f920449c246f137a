"""What a rerun still has to do for a job, given what the dataset already holds."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from itertools import islice

import numpy as np

from .dataset.idkeys import IdSet
from .errors import KIND_CLASSES, kind_class
from .types import Job

#: Jobs triaged together: one vectorised lookup of their image ids in the done set.
BATCH = 8192
_HEX = frozenset("0123456789abcdef")

#: Failed slots of these kinds are requested again by a plain rerun: nothing was generated, or the
#: failure was the network's. Refusals (moderation, bad values, failed tasks, missing images) and
#: ambiguous outcomes (which may already be billed) are requested again only with ``--retry-failed``.
RETRY_ON_RESUME = frozenset(KIND_CLASSES["transient"])
#: Slots whose request may have been billed without an image coming back (the "ambiguous" class): an
#: ambiguous answer (timeout, 524, a 200 that cannot be read) or a request the run never saw answered.
#: A rerun requests them again only under ``limits.in_doubt: retry`` (or ``--retry-failed`` naming
#: them): that may pay twice.
IN_DOUBT_KINDS = frozenset(KIND_CLASSES["ambiguous"])

#: What ``--retry-failed`` may name: a kind class or one kind.
RETRY_CHOICES = (*KIND_CLASSES,
                 *(k for kinds in KIND_CLASSES.values() for k in kinds if k not in KIND_CLASSES))

RetryFailed = bool | Collection[str]
"""``True``: every failed slot; a collection: slots whose kind, or kind class, it names."""


def retried(kind: str, retry_failed: RetryFailed) -> bool:
    """Whether ``--retry-failed`` (or a plain rerun, for transient kinds) requests a slot again."""
    if kind in RETRY_ON_RESUME or retry_failed is True:
        return True
    if retry_failed is False:
        return False
    return kind in retry_failed or kind_class(kind) in retry_failed


@dataclass(frozen=True, slots=True)
class SlotTriage:
    need: list[int]  # slots to request
    done: int  # slots already in the dataset
    refused: int  # slots that failed for good earlier and are left alone
    in_doubt: int = 0  # slots in doubt (maybe billed) from earlier runs: left alone unless retried
    in_doubt_retried: int = 0  # ... requested again (limits.in_doubt: retry or --retry-failed)


def triage(job: Job, done: Set[str], failed: Mapping[str, str], *, retry_failed: RetryFailed,
           retry_in_doubt: bool = False) -> SlotTriage:
    return _triage(job, [image_id in done for image_id in job.image_ids()], failed,
                   retry_failed=retry_failed, retry_in_doubt=retry_in_doubt)


def _triage(job: Job, held: Sequence[bool], failed: Mapping[str, str], *, retry_failed: RetryFailed,
            retry_in_doubt: bool) -> SlotTriage:
    need: list[int] = []
    n_done = n_refused = n_doubt = n_doubt_retried = 0
    for k, image_id in enumerate(job.image_ids()):
        kind = failed.get(image_id) if failed else None
        if held[k]:
            n_done += 1
        elif kind in IN_DOUBT_KINDS:
            if retry_in_doubt or retried(kind, retry_failed):
                n_doubt_retried += 1
                need.append(k)
            else:
                n_doubt += 1
        elif kind is not None and not retried(kind, retry_failed):
            n_refused += 1
        else:
            need.append(k)
    return SlotTriage(need, n_done, n_refused, n_doubt, n_doubt_retried)


def triage_many(jobs: Sequence[Job], done: Set[str], failed: Mapping[str, str], *, retry_failed: RetryFailed,
                retry_in_doubt: bool = False) -> list[SlotTriage]:
    """:func:`triage` of many jobs; with ``done`` an :class:`~wanbatch.dataset.idkeys.IdSet` (what a
    dataset's triage holds), one vectorised lookup instead of a binary search per image."""
    if not done and not failed:  # nothing held yet: every slot is needed
        return [SlotTriage(list(range(job.n)), 0, 0) for job in jobs]
    if not isinstance(done, IdSet) or not done.run or not jobs \
            or any(len(job.job_id) != 16 or not _HEX.issuperset(job.job_id) for job in jobs):
        return [triage(job, done, failed, retry_failed=retry_failed, retry_in_doubt=retry_in_doubt)
                for job in jobs]
    counts = np.fromiter((job.n for job in jobs), np.int64, len(jobs))
    heads = np.fromiter((int(job.job_id, 16) for job in jobs), np.uint64, len(jobs))
    qjob = np.repeat(heads, counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    qslot = (np.arange(len(qjob)) - starts).astype(np.uint32)
    hit = done.contains_keys(qjob, qslot).tolist()
    out: list[SlotTriage] = []
    at = 0
    for job in jobs:
        out.append(_triage(job, hit[at: at + job.n], failed, retry_failed=retry_failed,
                           retry_in_doubt=retry_in_doubt))
        at += job.n
    return out


def triage_stream(jobs: Iterable[Job], done: Set[str], failed: Mapping[str, str], *,
                  retry_failed: RetryFailed, retry_in_doubt: bool = False,
                  batch: int = BATCH) -> Iterator[tuple[Job, SlotTriage]]:
    """Each job of ``jobs`` with its :class:`SlotTriage`, looked up :data:`BATCH` jobs at a time."""
    it = iter(jobs)
    while chunk := list(islice(it, batch)):
        yield from zip(chunk, triage_many(chunk, done, failed, retry_failed=retry_failed,
                                          retry_in_doubt=retry_in_doubt), strict=True)
