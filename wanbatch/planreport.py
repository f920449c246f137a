"""`wanbatch plan`: what a spec expands to and what a run of it would still request. Read-only."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .dataset.journal import PaidLinks
from .plan import plan as make_plan
from .resume import IN_DOUBT_KINDS, SlotTriage, triage_stream
from .spec import Spec, load_spec
from .types import Job

#: Beyond this many jobs `plan` does not compare the plan with the dataset (one pass costs a few µs
#: per job: 10⁹ jobs would take an hour); the report then says so under ``existing_not_compared``.
MAX_COMPARED_JOBS = 50_000_000


def plan_report(
    spec_path: str, *, shard: tuple[int, int] | None = None, output: str | None = None,
    samples: int = 5, retry_failed: bool = False, config: str | None = None, upstream: Sequence[str] = (),
) -> dict[str, Any]:
    # plan sends nothing: ${VAR} only warns; ``upstream``: outputs of earlier stages not run yet
    spec = load_spec(spec_path, config=config, require_env=False, upstream=upstream)
    the_plan = make_plan(spec, shard=shard)
    target = output or spec.output
    price = spec.price_per_image
    report: dict[str, Any] = {
        "spec": spec_path,
        "warnings": list(spec.warnings),
        "name": spec.name,
        "model": spec.model,
        "provider": spec.provider.name,
        "provider_defined_in": spec.provider.defined_in,  # the wanbatch.yaml it came from, or None
        "n": spec.n,
        "jobs": the_plan.job_count,
        "images": the_plan.image_count,
        "by_size": the_plan.by_size(),
        "samples": the_plan.sample_prompts(samples),
        "price_per_image": price,
        "estimated_cost": the_plan.estimated_cost,
        "output": target if "://" in target else str(Path(target)),  # Path() would turn s3:// into s3:/
        "shard": list(shard) if shard else None,
        "existing": None,
        "todo_jobs": the_plan.job_count,
        "todo_images": the_plan.image_count,
        "todo_cost": the_plan.estimated_cost,
        "existing_not_compared": None,
        "ledger": None,
        "output_state": "new",  # new | empty | dataset: what the output folder holds now
        "output_resolved": target if "://" in target else str(Path(target).expanduser().resolve()),
        "not_in_spec": None,
        # slots a run would only download from links an earlier run paid for (no request, cost 0), and
        # slots whose kept links have expired (generated and paid again: in todo_images)
        "paid_downloads": None,
    }
    from .dataset import DatasetView

    view = DatasetView.find(target)
    if view is None:
        report["warnings"] += cap_warnings(spec, report["todo_images"], 0)
        # a relative output is relative to the current directory: from another directory a resume
        # would start from nothing and pay again, so say plainly that nothing is there
        if "://" not in target and Path(report["output_resolved"]).is_dir():
            report["output_state"] = "empty"
        return report
    report["output_state"] = "dataset"
    ledger = view.ledger()
    report["ledger"] = {**ledger.to_dict(), "max_images": spec.limits.max_images,
                        "max_cost": spec.limits.max_cost if price is not None else None,
                        "spent": None if price is None else round(ledger.images * price, 6)}
    if the_plan.job_count > MAX_COMPARED_JOBS:
        report["existing_not_compared"] = (
            f"the plan has {the_plan.job_count:,} jobs, too many to compare with the dataset (limit "
            f"{MAX_COMPARED_JOBS:,}); the counts above include work already done")
        return report
    state = view.triage(shard)
    failed = state.failed
    unindexed = state.unindexed
    links = view.paid_links()
    now = time.time()
    todo_jobs = todo_images = n_done = n_refused = n_doubt = 0
    paid_images = paid_jobs = paid_expired = 0
    planned_done = 0  # ok images of the dataset this plan asks for (each image once: jobs are distinct)
    for job, slots in triage_stream(the_plan.jobs(), state.done, failed, retry_failed=retry_failed,
                                    retry_in_doubt=spec.limits.in_doubt == "retry"):
        planned_done += slots.done
        paid = links.get(job.job_id)
        download: list[int] = []
        if paid is not None:  # as a run does (runner.engine._produce, runner.job.JobRunner.run)
            slots, download, expired = _paid_slots(job, slots, paid, state.done, failed,
                                                   now - paid.at < spec.limits.link_life)
            paid_expired += expired
        if unindexed and (slots.need or download):
            # Image files whose rows a crash lost count as done: a run re-indexes them, never asks again.
            adopted = {k for k in slots.need + download if f"{job.job_id}-{k}" in unindexed}
            if adopted:
                download = [k for k in download if k not in adopted]
                slots = SlotTriage([k for k in slots.need if k not in adopted], slots.done + len(adopted),
                                   slots.refused, slots.in_doubt, slots.in_doubt_retried)
        n_done += slots.done
        n_refused += slots.refused
        n_doubt += slots.in_doubt
        if download:
            paid_jobs += 1
            paid_images += len(download)
        if slots.need:
            todo_jobs += 1
            todo_images += job.n  # a job is requested whole, even for one missing slot
    # ok images the spec no longer plans (an edited template, a removed var), counted without a set
    # of the plan's ids: only whole-spec plans can say so, a shard plans a slice by design
    not_in_spec = None if shard else max(len(state.done) - planned_done, 0)
    report.update(
        not_in_spec=not_in_spec,
        existing={"done": n_done, "failed_skipped": n_refused, "in_doubt_skipped": n_doubt},
        paid_downloads={"images": paid_images, "jobs": paid_jobs, "cost": 0.0 if price is not None else None,
                         "expired": paid_expired} if links else None,
        todo_jobs=todo_jobs,
        todo_images=todo_images,
        todo_cost=None if price is None else round(todo_images * price, 6),
    )
    report["warnings"] += cap_warnings(spec, todo_images, ledger.images)
    return report


def _paid_slots(job: Job, slots: SlotTriage, paid: PaidLinks, done: Any, failed: Mapping[str, str],
                alive: bool) -> tuple[SlotTriage, list[int], int]:
    """A job's slots once its kept links are counted: (slots a run generates, slots it only downloads,
    slots whose links expired and are generated again). Within the links' life a run downloads every
    linked slot not done, whatever its row's kind (a download costs nothing); after it, a linked slot is
    generated again only if the triage asks for it anyway."""
    need = list(slots.need)
    refused, in_doubt = slots.refused, slots.in_doubt
    if not alive:
        return slots, [], sum(k in paid.links for k in need)
    for k in paid.links:
        if k in need or not 0 <= k < job.n or f"{job.job_id}-{k}" in done:
            continue
        need.append(k)  # left alone by the triage (refused, or in doubt): downloaded all the same
        if failed.get(f"{job.job_id}-{k}") in IN_DOUBT_KINDS:
            in_doubt -= 1
        else:
            refused -= 1
    download = sorted(k for k in need if k in paid.links)
    rest = sorted(k for k in need if k not in paid.links)
    return SlotTriage(rest, slots.done, refused, in_doubt, slots.in_doubt_retried), download, 0


def cap_warnings(spec: Spec, todo_images: int, spent_images: int) -> list[str]:
    """What the caps (which hold for the dataset: billed + in doubt, all runs) leave of the plan."""
    warnings = []
    limits, price = spec.limits, spec.price_per_image
    if limits.max_images is not None and spent_images + todo_images > limits.max_images:
        left = max(limits.max_images - spent_images, 0)
        warnings.append(f"the plan needs {todo_images:,} images but limits.max_images "
                        f"({limits.max_images:,}) leaves {left:,} (the dataset has used {spent_images:,}): "
                        "a run stops at the cap")
    if limits.max_cost is not None and price is not None \
            and (spent_images + todo_images) * price > limits.max_cost + 1e-9:
        left_cost = max(limits.max_cost - spent_images * price, 0.0)
        warnings.append(f"the plan costs {todo_images * price:,.2f} but limits.max_cost "
                        f"({limits.max_cost:g}) leaves {left_cost:,.2f} (the dataset has spent "
                        f"{spent_images * price:,.2f}): a run stops at the cap")
    return warnings
