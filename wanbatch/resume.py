"""What a rerun still has to do for a job, given what the dataset already holds."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from .types import Job

#: Failed slots of these kinds are requested again by a plain rerun: nothing was generated, or the
#: failure was the network's. Refusals (moderation, bad values, failed tasks, missing images) and
#: ambiguous outcomes (which may already be billed) are requested again only with ``--retry-failed``.
RETRY_ON_RESUME = frozenset(
    {"rate_limited", "server_error", "network", "download", "bad_response", "transient"}
)


@dataclass(frozen=True, slots=True)
class SlotTriage:
    need: list[int]  # slots to request
    done: int  # slots already in the dataset
    refused: int  # slots that failed for good earlier and are left alone


def triage(job: Job, done: Set[str], failed: Mapping[str, str], *, retry_failed: bool) -> SlotTriage:
    need: list[int] = []
    n_done = n_refused = 0
    for k, image_id in enumerate(job.image_ids()):
        if image_id in done:
            n_done += 1
        elif (kind := failed.get(image_id)) is not None and not (retry_failed or kind in RETRY_ON_RESUME):
            n_refused += 1
        else:
            need.append(k)
    return SlotTriage(need, n_done, n_refused)
