"""Spec → Plan: the lazy, deterministic list of requests a spec asks for.

A job is identified by its request alone — ``job_id`` hashes (model, prompt, size, seed, n, params)
— so the same request in two specs, on two machines, in any key order, is the same job, and a
resumed run recognises work already done. Expansion order: prompt entries → var combinations
(cartesian in the order vars are written; zipped vars advance together) → sizes → seeds innermost.

Iteration keeps memory flat in the number of jobs: only the set of distinct rendered prompts is
kept, to yield a request that two entries render alike only once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from itertools import product

from wanbatch.errors import SpecError
from wanbatch.identity import JobIds, canonical_json, derived_seed, job_id
from wanbatch.spec import PromptSpec, Spec
from wanbatch.types import Job

__all__ = ["Plan", "canonical_json", "derived_seed", "job_id", "plan"]  # the ids live in wanbatch.identity


def _combinations(prompt: PromptSpec) -> Iterator[dict[str, str]]:
    """Var assignments of one template: one axis per var or zip group, in written order."""
    group_of = {name: tuple(g) for g in prompt.zip for name in g}
    axes: list[tuple[tuple[str, ...], list[tuple[str, ...]]]] = []
    placed: set[tuple[str, ...]] = set()
    for name in prompt.vars:
        names = group_of.get(name, (name,))
        if names in placed:
            continue
        placed.add(names)
        axes.append((names, list(zip(*(prompt.vars[v] for v in names), strict=True))))
    for combo in product(*(values for _, values in axes)):
        assignment: dict[str, str] = {}
        for (names, _), values in zip(axes, combo, strict=True):
            assignment.update(zip(names, values, strict=True))
        yield assignment


class Plan:
    """The jobs of a spec (optionally one shard of them), with counts for ``wanbatch plan``."""

    def __init__(self, spec: Spec, shard: tuple[int, int] | None = None) -> None:
        if shard is not None:
            i, count = shard
            if not (isinstance(i, int) and isinstance(count, int) and count >= 1 and 0 <= i < count):
                raise SpecError(f"shard {i}/{count} is invalid: need 0 ≤ i < N", field="shard",
                                hint="write --shard i/N with i counted from 0, e.g. 0/4 … 3/4")
        self.spec = spec
        self.shard = shard

    def __iter__(self) -> Iterator[Job]:
        return self.jobs()

    def prompts(self) -> Iterator[tuple[str, str, dict[str, str]]]:
        """Distinct rendered prompts in plan order, with the template and var values behind each."""
        seen: set[str] = set()
        for prompt in self.spec.prompts:
            template = prompt.template
            for assignment in _combinations(prompt):
                text = template.format_map(assignment)
                if text not in seen:
                    seen.add(text)
                    yield text, template, assignment

    def jobs(self) -> Iterator[Job]:
        """Every job, lazily, in plan order. ``params`` and ``vars`` dicts are shared: read only."""
        spec = self.spec
        model, n, name, params = spec.model, spec.n, spec.name, dict(spec.params)
        seeds = spec.seeds.values()
        keep_i, modulo = self.shard if self.shard else (0, 0)
        ids = JobIds(model, n, params)
        for text, template, assignment in self.prompts():
            prompt_ids = ids.for_prompt(text)
            for size in spec.sizes:
                job_seeds: Sequence[int] = (prompt_ids.derived_seed(size),) if seeds is None else seeds
                for seed in job_seeds:
                    jid = prompt_ids.job_id(size, seed)
                    if modulo and int(jid[:8], 16) % modulo != keep_i:
                        continue
                    yield Job(jid, model, text, size, seed, n, params, template, assignment, name)

    @cached_property
    def _prompt_count(self) -> int:
        return sum(1 for _ in self.prompts())

    @cached_property
    def _shard_counts(self) -> dict[str, int]:
        """Jobs per size within a shard (needs one pass over the plan)."""
        counts = dict.fromkeys(self.spec.sizes, 0)
        for job in self.jobs():
            counts[job.size] += 1
        return counts

    def _jobs_by_size(self) -> dict[str, int]:
        if self.shard is not None:
            return self._shard_counts
        per_size = self._prompt_count * self.spec.seeds.count()
        return dict.fromkeys(self.spec.sizes, per_size)

    @property
    def job_count(self) -> int:
        return sum(self._jobs_by_size().values())

    @property
    def image_count(self) -> int:
        return self.job_count * self.spec.n

    def by_size(self) -> dict[str, int]:
        """Images per normalised size, in the spec's size order."""
        return {size: jobs * self.spec.n for size, jobs in self._jobs_by_size().items()}

    def sample_prompts(self, k: int = 5) -> list[str]:
        """The first ``k`` distinct rendered prompts (of this shard, when sharded)."""
        out: list[str] = []
        source = (job.prompt for job in self.jobs()) if self.shard is not None else (
            text for text, _, _ in self.prompts())
        for text in source:
            if len(out) >= k:
                break
            if text not in out:
                out.append(text)
        return out

    @property
    def estimated_cost(self) -> float | None:
        price = self.spec.price_per_image
        return None if price is None else self.image_count * price


def plan(spec: Spec, shard: tuple[int, int] | None = None) -> Plan:
    """The plan of ``spec``; ``shard=(i, N)`` keeps the jobs with ``int(job_id[:8], 16) % N == i``."""
    return Plan(spec, shard)
