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
#: Slots whose request may have been billed without an image coming back: an ambiguous answer
#: (timeout, 524, a 200 that cannot be read) or a request the run never saw answered. A rerun requests
#: them again only under ``limits.in_doubt: retry`` (or ``--retry-failed``): that may pay twice.
IN_DOUBT_KINDS = frozenset({"in_doubt", "ambiguous", "timeout"})


@dataclass(frozen=True, slots=True)
class SlotTriage:
    need: list[int]  # slots to request
    done: int  # slots already in the dataset
    refused: int  # slots that failed for good earlier and are left alone
    in_doubt: int = 0  # slots in doubt (maybe billed) from earlier runs: left alone unless retried
    in_doubt_retried: int = 0  # ... requested again (limits.in_doubt: retry or --retry-failed)


def triage(job: Job, done: Set[str], failed: Mapping[str, str], *, retry_failed: bool,
           retry_in_doubt: bool = False) -> SlotTriage:
    need: list[int] = []
    n_done = n_refused = n_doubt = n_doubt_retried = 0
    for k, image_id in enumerate(job.image_ids()):
        kind = failed.get(image_id)
        if image_id in done:
            n_done += 1
        elif kind in IN_DOUBT_KINDS:
            if retry_failed or retry_in_doubt:
                n_doubt_retried += 1
                need.append(k)
            else:
                n_doubt += 1
        elif kind is not None and not (retry_failed or kind in RETRY_ON_RESUME):
            n_refused += 1
        else:
            need.append(k)
    return SlotTriage(need, n_done, n_refused, n_doubt, n_doubt_retried)
