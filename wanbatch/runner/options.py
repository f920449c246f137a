"""What a run is told besides its spec (:class:`RunOptions`), and what it hands back (:class:`RunResult`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError, WanbatchError
from ..spec import Spec
from ..stats import RunStats
from .summary import RunSummary


@dataclass
class RunOptions:
    """How to run a spec (what the spec itself does not say)."""

    retry_failed: bool | Collection[str] = False  # True: all; or kinds / kind classes (resume.retried)
    shard: tuple[int, int] | None = None
    output: str | None = None  # overrides spec.output
    handle_signals: bool = False  # SIGINT/SIGTERM: stop submitting, finish in-flight work, exit 3
    grace_period: float = 30.0  # seconds in-flight work may take after the first signal
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    env: Mapping[str, str] | None = None  # where API keys are read from (default: os.environ)
    on_start: Callable[[RunStats], None] | None = None  # e.g. to attach a progress display
    max_images_this_run: int | None = None  # a cap for this run alone (limits.* cap the dataset)
    max_cost_this_run: float | None = None
    on_note: Callable[[str], None] | None = None  # told each note when it happens (recovery, a signal)
    #: Forget journaled async tasks of another gateway (they were paid) and submit their jobs again.
    abandon_tasks: bool = False
    #: Appended to the run id (``<time>-<random>-<label>``), so a caller finds its runs again in the
    #: manifest and ``runs/`` (``ray-run``: which ray-run and which unit); letters, digits, ``-``.
    run_label: str | None = None
    wait: bool = False  # another run holds an overlapping slice: wait for it instead of stopping (exit 3)


class Notes(list[str]):
    """The run's notes (also in :attr:`RunResult.notes`), each passed on to ``on_note`` as it is added,
    so a user reads "recovered 84 rows" or "stopping: …" when it happens, not after the run."""

    def __init__(self, on_note: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.on_note = on_note

    def append(self, note: str) -> None:
        super().append(note)
        if self.on_note is not None:
            self.on_note(note)


@dataclass
class RunResult:
    run_id: str
    root: Path | str  # a local folder, or the object-store URI (``s3://…``) of a remote output
    stats: RunStats
    summary: RunSummary
    exit_code: int
    error: WanbatchError | None = None
    notes: list[str] = field(default_factory=list)


def resolve_output(spec: Spec, options: RunOptions) -> Path | str:
    """The output folder (absolute), or an object-store URI as is (a staging folder mirrors it)."""
    out = options.output or spec.output
    if "://" in out:
        from ..dataset.remote import is_remote

        if is_remote(out):
            return out
        raise UsageError(f"output {out!r}: use a plain folder path instead of a file:// URI")
    return Path(out).expanduser().resolve()
