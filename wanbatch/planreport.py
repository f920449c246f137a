"""`wanbatch plan`: what a spec expands to and what a run of it would still request. Read-only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plan import plan as make_plan
from .resume import SlotTriage, triage_stream
from .spec import Spec, load_spec

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
    todo_jobs = todo_images = n_done = n_refused = 0
    planned_done = 0  # ok images of the dataset this plan asks for (each image once: jobs are distinct)
    for job, slots in triage_stream(the_plan.jobs(), state.done, failed, retry_failed=retry_failed):
        planned_done += slots.done
        if unindexed and slots.need:
            # Image files whose rows a crash lost count as done: a run re-indexes them, never asks again.
            adopted = [k for k in slots.need if f"{job.job_id}-{k}" in unindexed]
            if adopted:
                slots = SlotTriage([k for k in slots.need if k not in adopted], slots.done + len(adopted),
                                   slots.refused)
        n_done += slots.done
        n_refused += slots.refused
        if slots.need:
            todo_jobs += 1
            todo_images += job.n  # a job is requested whole, even for one missing slot
    # ok images the spec no longer plans (an edited template, a removed var), counted without a set
    # of the plan's ids: only whole-spec plans can say so, a shard plans a slice by design
    not_in_spec = None if shard else max(len(state.done) - planned_done, 0)
    report.update(
        not_in_spec=not_in_spec,
        existing={"done": n_done, "failed_skipped": n_refused},
        todo_jobs=todo_jobs,
        todo_images=todo_images,
        todo_cost=None if price is None else round(todo_images * price, 6),
    )
    report["warnings"] += cap_warnings(spec, todo_images, ledger.images)
    return report


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
