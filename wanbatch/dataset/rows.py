"""Index rows as plain dicts with the columns of :mod:`wanbatch.dataset.schema`.

A failed slot is data, not an exception: it gets a row with ``status="failed"`` and its error kind.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..identity import canonical_json
from ..redact import redact, redact_short
from ..types import Job, StoredImage


def _common(job: Job, slot: int, *, provider: str, run_id: str, attempts: int, latency_ms: int | None,
            task_id: str | None) -> dict[str, Any]:
    return {
        "image_id": f"{job.job_id}-{slot}",
        "job_id": job.job_id,
        "pipeline": job.pipeline or None,
        "model": job.model,
        "provider": provider,
        "prompt": job.prompt,
        "template": job.template or None,
        "vars": {str(k): str(v) for k, v in job.vars.items()},
        "seed": job.seed,
        "size": job.size,
        "n": job.n,
        "slot": slot,
        "params": canonical_json(job.wire_params),  # what was sent; the job id rests on job.params
        "task_id": task_id,
        "attempts": attempts,
        "latency_ms": latency_ms,
        "created_at": datetime.now(UTC),
        "run_id": run_id,
        # the inputs' content and where each came from; never the bytes sent (no data URI)
        "inputs": [{"sha256": i.sha256, "source": i.source} for i in job.inputs] or None,
    }


def ok_row(
    job: Job, slot: int, stored: StoredImage, *, provider: str, run_id: str, revised_prompt: str = "",
    task_id: str | None = None, attempts: int = 1, latency_ms: int | None = None, note: str = "",
) -> dict[str, Any]:
    """The row of an image that is verified and in place; ``note`` (what the gateway said beside the
    image) goes to ``error_message`` while ``error_kind`` stays empty. Gateway text is masked
    (:mod:`wanbatch.redact`)."""
    row = _common(job, slot, provider=provider, run_id=run_id, attempts=attempts, latency_ms=latency_ms,
                  task_id=task_id)
    row.update(
        status="ok", error_kind=None, error_message=redact(note) or None, width=stored.width,
        height=stored.height, revised_prompt=redact(revised_prompt) or None, path=stored.path,
        format=stored.format, bytes=stored.bytes, sha256=stored.sha256,
    )
    return row


def failed_row(
    job: Job, slot: int, *, kind: str, message: str, provider: str, run_id: str, attempts: int = 1,
    latency_ms: int | None = None, task_id: str | None = None,
) -> dict[str, Any]:
    """The row of a slot that produced no image (refused, missing, bad image, gave up retrying).

    ``message`` is masked, then cut (wanbatch.redact): whatever built it, no key reaches the index.
    """
    row = _common(job, slot, provider=provider, run_id=run_id, attempts=attempts, latency_ms=latency_ms,
                  task_id=task_id)
    row.update(status="failed", error_kind=kind, error_message=redact_short(message))
    return row
