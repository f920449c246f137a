"""The money ledger: a write-ahead *intent* for every paid request, and what each one cost.

Gateways bill per image, also for answers that never reach us. So before a request that may be billed
leaves (a synchronous generation, an async submission), the writer journals an intent in
``journal/<writer>/ledger.jsonl`` and the worker waits until it is written (it survives SIGKILL, like
the rows); after the answer comes, the writer journals its outcome::

    {"op":"run","run":R}                                      the run this writer serves (first line)
    {"op":"intent","id":I,"job":{…Job…},"slots":[0,1],"images":N,"provider":P}   before it leaves
    {"op":"outcome","id":I,"billed":K,"in_doubt":M}           after: K images billed, M maybe billed
    {"op":"resolve","job":J,"images":N,"billed":K}            an in-doubt async task settled by a poll

An intent without an outcome (killed, or abandoned by a second Ctrl-C, the end of ``--grace``, a fatal
error) is **in doubt**: the gateway may have billed it. So is an ambiguous answer (timeout, 524, a 200
that cannot be read) and an async task that was submitted and not yet polled to its end (a poll
``resolve`` s it later, maybe in another run). The ledger of a run is ``billed`` + ``in_doubt``
(− ``resolved``): never less than what the gateway billed, and more only by requests that were in
doubt and in fact not billed.

When a run ends (or recovery finds its writer dead), its counts are folded into its entry in
``wanbatch.json`` (``runs[].ledger``) and in-doubt intents become index rows with
``error_kind: "in_doubt"`` (a rerun re-requests them only under ``limits.in_doubt: retry``). The
dataset's ledger is the sum over run entries, plus the ledgers still in journals (runs in progress or
not recovered yet). Datasets written before ledgers existed (format 1) count their ``ok`` rows and the
``billed_images`` of their run summaries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..types import InputImage, Job
from .fsutil import disk_errors
from .journal import read_lines

LEDGER = "ledger.jsonl"
#: ``error_kind`` of the rows of slots whose request is in doubt (maybe billed, never answered).
IN_DOUBT = "in_doubt"


def intent_line(intent: int, job: Job, slots: list[int], provider: str = "") -> dict[str, Any]:
    """``provider`` is the provider's name (never a key): what recovery's in-doubt rows record."""
    return {"op": "intent", "id": intent, "job": asdict(job), "slots": list(slots), "images": job.n,
            "provider": provider}


def job_of(data: Any) -> Job | None:
    """The :class:`Job` an intent line carries, or None if it is damaged."""
    if not isinstance(data, dict):
        return None
    try:
        inputs = tuple(InputImage(**i) for i in data.get("inputs") or ())
        return Job(**{**data, "inputs": inputs})
    except (TypeError, AttributeError):
        return None


@dataclass(slots=True)
class Intent:
    job: Job
    slots: list[int]
    images: int
    provider: str = ""  # journals before it was recorded: ""


@dataclass(slots=True)
class RunLedger:
    """What one writer's requests cost: images billed, in doubt (settled as such or still open) and
    in-doubt images of earlier runs settled by this one."""

    run_id: str | None = None
    billed: int = 0
    in_doubt: int = 0
    resolved: int = 0
    open: dict[int, Intent] = field(default_factory=dict)

    @property
    def in_doubt_total(self) -> int:
        """Settled in doubt plus open intents (which are in doubt until an outcome comes)."""
        return self.in_doubt + sum(i.images for i in self.open.values())

    @property
    def empty(self) -> bool:
        return not (self.billed or self.in_doubt or self.resolved or self.open)

    def apply(self, item: Mapping[str, Any]) -> None:
        op = item.get("op")
        if op == "run" and isinstance(item.get("run"), str):
            self.run_id = item["run"]
        elif op == "intent" and isinstance(item.get("id"), int):
            job = job_of(item.get("job"))
            images = _count(item.get("images"))
            if job is not None:
                slots = [s for s in item.get("slots") or [] if isinstance(s, int)]
                provider = item.get("provider")
                self.open[item["id"]] = Intent(job, slots or list(range(job.n)), images,
                                               provider if isinstance(provider, str) else "")
            else:  # unreadable job: still in doubt, but no row can name it
                self.in_doubt += images
        elif op == "outcome" and isinstance(item.get("id"), int):
            if self.open.pop(item["id"], None) is not None:
                self.billed += _count(item.get("billed"))
                self.in_doubt += _count(item.get("in_doubt"))
        elif op == "resolve":
            self.resolved += _count(item.get("images"))
            self.billed += _count(item.get("billed"))

    def entry(self) -> dict[str, int]:
        """The ``ledger`` of this run's manifest entry (open intents counted in doubt)."""
        return {"billed_images": self.billed, "in_doubt_images": self.in_doubt_total,
                "resolved_images": self.resolved}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def read_ledger(path: Path) -> RunLedger:
    """The ledger of one writer's ``ledger.jsonl`` (a torn last line is skipped)."""
    ledger = RunLedger()
    if not path.exists():
        return ledger
    items, _ = read_lines(path)
    for item in items:
        ledger.apply(item)
    return ledger


def billed_intents(path: Path) -> Iterator[Intent]:
    """The intents of one writer's ``ledger.jsonl`` settled with images billed, in order, streamed line
    by line: only intents still waiting for their outcome are held (a 1M-request ledger is never read
    whole). Recovery checks that each of their slots got a row (see :mod:`.recovery`)."""
    if not path.exists():
        return
    ledger = RunLedger()
    with disk_errors(f"read the journal {path.name}"), path.open("rb") as fh:
        for line in fh:
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if not isinstance(item, dict):
                continue
            intent = ledger.open.get(item["id"]) if item.get("op") == "outcome" \
                and isinstance(item.get("id"), int) else None
            ledger.apply(item)
            if intent is not None and _count(item.get("billed")):
                yield intent


@dataclass(frozen=True, slots=True)
class DatasetLedger:
    """What a dataset has cost so far, over every run: ``wanbatch status`` ``ledger``."""

    billed_images: int = 0
    in_doubt_images: int = 0
    price_per_image: float | None = None
    max_images: int | None = None
    max_cost: float | None = None

    @property
    def images(self) -> int:
        """Billed plus in doubt: what caps count against."""
        return self.billed_images + self.in_doubt_images

    @property
    def spent(self) -> float | None:
        if self.price_per_image is None:
            return None
        return round(self.images * self.price_per_image, 6)

    def to_dict(self) -> dict[str, Any]:
        return {"billed_images": self.billed_images, "in_doubt_images": self.in_doubt_images,
                "spent": self.spent, "max_images": self.max_images, "max_cost": self.max_cost}


def ok_images_by_run(table: pa.Table) -> dict[str | None, int]:
    """run_id → ok images (each image once, by its first ok row) of rows with ``image_id``, ``status``
    and ``run_id``."""
    ok = table.filter(pc.equal(table["status"], "ok")).select(["image_id", "run_id"])
    if not ok.num_rows:
        return {}
    first = ok.group_by("image_id", use_threads=False).aggregate([("run_id", "first")])
    counts = first.group_by("run_id_first").aggregate([("image_id", "count")])
    return dict(zip(counts["run_id_first"].to_pylist(), counts["image_id_count"].to_pylist(), strict=True))


def run_ids_with_ledger(manifest: Mapping[str, Any]) -> set[str]:
    return {str(r.get("run_id")) for r in _runs(manifest) if isinstance(r.get("ledger"), dict)}


def _runs(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in manifest.get("runs") or [] if isinstance(r, dict)]


def legacy_billed(manifest: Mapping[str, Any], ok_by_run: Mapping[str | None, int],
                  summary_billed: Callable[[str], int | None]) -> dict[str, int]:
    """run_id → billed images of runs a format-1 release wrote (no ``ledger`` in their entry): the
    larger of its summary's ``billed_images`` (which counted ambiguous outcomes too) and its ok rows."""
    out: dict[str, int] = {}
    for run in _runs(manifest):
        run_id = str(run.get("run_id"))
        if isinstance(run.get("ledger"), dict):
            continue
        out[run_id] = max(summary_billed(run_id) or 0, ok_by_run.get(run_id, 0))
    return out


def dataset_ledger(manifest: Mapping[str, Any], ok_by_run: Mapping[str | None, int],
                   summary_billed: Callable[[str], int | None],
                   journals: Iterable[RunLedger], exclude_runs: Collection[str] = ()) -> DatasetLedger:
    """The dataset's ledger: run entries' ledgers, legacy runs (see :func:`legacy_billed`), ok rows of
    runs the manifest does not know, and journal ledgers of runs not folded into the manifest yet.

    ``exclude_runs``: runs in progress counted elsewhere (their leases, see :mod:`.lease`): their
    journals and ok rows are left out unless the manifest already holds their entry."""
    billed = in_doubt = 0
    known: set[str] = set()
    for run in _runs(manifest):
        run_id = str(run.get("run_id"))
        known.add(run_id)
        entry = run.get("ledger")
        if isinstance(entry, dict):
            billed += _count(entry.get("billed_images"))
            in_doubt += _count(entry.get("in_doubt_images")) - _count(entry.get("resolved_images"))
    billed += sum(legacy_billed(manifest, ok_by_run, summary_billed).values())
    known |= set(exclude_runs)
    for journal in journals:
        if journal.run_id is not None and journal.run_id in known:
            continue  # folded already (the writer ended or was recovered, its folder not yet removed)
        if journal.run_id is not None:
            known.add(journal.run_id)
        billed += journal.billed
        in_doubt += journal.in_doubt_total - journal.resolved
    billed += sum(count for run_id, count in ok_by_run.items() if run_id is None or run_id not in known)
    limits = (manifest.get("spec") or {}).get("limits") if isinstance(manifest.get("spec"), dict) else None
    limits = limits if isinstance(limits, dict) else {}
    price = (manifest.get("spec") or {}).get("price_per_image") if isinstance(manifest.get("spec"), dict) \
        else None
    return DatasetLedger(
        billed_images=billed, in_doubt_images=max(in_doubt, 0),
        price_per_image=float(price) if isinstance(price, (int, float)) else None,
        max_images=limits.get("max_images") if isinstance(limits.get("max_images"), int) else None,
        max_cost=float(limits["max_cost"]) if isinstance(limits.get("max_cost"), (int, float)) else None,
    )


def summary_billed_reader(read: Callable[[str], bytes | None]) -> Callable[[str], int | None]:
    """``billed_images`` of ``runs/<run_id>.json`` through ``read(rel)`` (None if absent/damaged)."""

    def billed(run_id: str) -> int | None:
        raw = read(f"runs/{run_id}.json")
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        value = data.get("billed_images") if isinstance(data, dict) else None
        return value if isinstance(value, int) else None

    return billed
