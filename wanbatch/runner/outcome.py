"""What a worker hands the writer task: one job's slots, each fetched, adopted or failed.

Workers never touch the dataset; these plain values are the whole interface between the two sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..types import Job, StoredImage


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded and verified image, still in a temp file the writer will rename into place."""

    slot: int
    tmp: Path
    format: str
    width: int
    height: int
    bytes: int
    sha256: str
    revised_prompt: str = ""
    #: What the gateway said beside this image (an error in the same answer, a size it claimed but
    #: did not deliver): the ok row's ``error_message``.
    note: str = ""


@dataclass(frozen=True, slots=True)
class Adopted:
    """An image that was already on disk without its row (a crash came between file and row)."""

    slot: int
    stored: StoredImage


@dataclass(frozen=True, slots=True)
class SlotFailed:
    """A slot that produced no image; ``kind`` is the index's ``error_kind``."""

    slot: int
    kind: str
    message: str


Slot = Fetched | Adopted | SlotFailed


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """Everything one job produced in this run.

    ``finishes_task``: the job's journaled async task is settled by these rows (never poll it again).
    ``links``: links of images delivered (paid) and not downloaded, received at ``links_at`` (epoch
    s), journaled before the rows; ``drops_links``: the job's journaled links are used up.
    """

    job: Job
    slots: list[Slot] = field(default_factory=list)
    attempts: int = 1
    latency_ms: int | None = None
    task_id: str | None = None
    finishes_task: bool = False
    links: dict[int, str] = field(default_factory=dict)
    links_at: float = 0.0
    drops_links: bool = False
    provider: str | None = None  # the pool member that served the job (None: the run's provider)
    #: Who received ``links``: (member name, its gateway per ``runner.paid.gateway_of``); a rerun
    #: downloads them under that member's rules (None: the run's provider and gateway).
    links_by: tuple[str, str] | None = None
