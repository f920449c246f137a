"""Work earlier runs paid for and did not finish: async tasks still to poll, images still to download.

Both are journaled (:mod:`wanbatch.dataset.journal`) and both are tied to the **gateway** they came
from, not to the provider's name in the spec: :func:`gateway_of` normalises a base URL (scheme, host
lower-cased, port, path; ``127.0.0.1``, ``localhost`` and ``::1`` are one loopback host), so renaming
the provider or respelling its host still polls the same tasks. A run whose gateway differs cannot poll
them (the task ids mean nothing elsewhere) and must not submit them again (they are paid): it leaves
them and says so, unless told to forget them (``--abandon-tasks``).

Images delivered and not downloaded (an expired link, a reset, a 5xx from the CDN, too slow) keep their
links and the time they were received: a rerun within the link's life (``limits.link_life``, 24 h by
default: what the gateways' object stores give) downloads them instead of paying again; after it, the
job is generated again and its rows say why.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from ..dataset.journal import PaidLinks, TaskRef

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "localhost.localdomain", "ip6-localhost"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def gateway_of(base_url: str | None) -> str:
    """The identity of a gateway: ``scheme://host[:port]/path``, lower-cased host, default port left
    out, no trailing slash, every loopback spelling as ``127.0.0.1``; ``""`` without a base URL."""
    if not base_url:
        return ""
    try:
        url = httpx.URL(base_url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        return base_url.strip().rstrip("/")
    scheme = url.scheme.lower()
    host = url.host.lower().rstrip(".")
    if host in _LOOPBACK or host.startswith("127."):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    port = url.port if url.port is not None and url.port != _DEFAULT_PORTS.get(scheme) else None
    path = url.path.rstrip("/")
    return f"{scheme}://{host}{f':{port}' if port else ''}{path}"


def same_gateway(ref: TaskRef, gateway: str, provider: str) -> bool:
    """Whether this run (talking to ``gateway`` as ``provider``) can poll the journaled task ``ref``.
    Journals written before gateways were recorded name the provider only: the name decides then."""
    if ref.gateway and gateway:
        return ref.gateway == gateway
    return ref.provider == provider


@dataclass
class ForeignTasks:
    """Journaled tasks this run cannot poll (submitted to another gateway), by where they went."""

    jobs: set[str] = field(default_factory=set)
    where: Counter[str] = field(default_factory=Counter)

    def message(self, gateway: str) -> str:
        places = ", ".join(f"{count} to {place}" for place, count in self.where.most_common())
        total = len(self.jobs)
        return (f"{total} async task{'s' if total != 1 else ''} submitted earlier are pending ({places}); "
                f"this run talks to {gateway or 'another gateway'}: not resubmitting them (they were "
                "paid) — run with the first gateway to poll them, or with --abandon-tasks to forget "
                "them and submit again, knowing they were paid")


def split_tasks(pending: Mapping[str, TaskRef], gateway: str, provider: str) -> tuple[dict[str, TaskRef],
                                                                                        ForeignTasks]:
    """Tasks this run polls, and the ones it cannot."""
    ours: dict[str, TaskRef] = {}
    foreign = ForeignTasks()
    for job, ref in pending.items():
        if same_gateway(ref, gateway, provider):
            ours[job] = ref
        else:
            foreign.jobs.add(job)
            foreign.where[ref.gateway or f"provider {ref.provider!r}"] += 1
    return ours, foreign


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """What to do with a job's paid links in this run: slots to download, slots whose links expired."""

    download: dict[int, str]
    expired: list[int]
    received: float


def plan_links(paid: PaidLinks | None, need: list[int], life: float,
               now: float | None = None) -> LinkPlan | None:
    """The links of ``paid`` for the slots in ``need``: still alive (received less than ``life``
    seconds ago) → download, else expired. Links of another gateway are still plain URLs: they work
    wherever this run is (they are the object store's, not the gateway's)."""
    if paid is None:
        return None
    now = time.time() if now is None else now
    wanted = {k: url for k, url in paid.links.items() if k in need}
    if not wanted:
        return None
    if now - paid.at < life:
        return LinkPlan(wanted, [], paid.at)
    return LinkPlan({}, sorted(wanted), paid.at)


def age(seconds: float) -> str:
    """``3 h 12 min``-style, for notes."""
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{max(minutes, 0)} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"
