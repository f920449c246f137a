"""Spec → Plan: the lazy, deterministic list of requests a spec asks for.

A job is identified by its request alone — ``job_id`` hashes (model, prompt, size, seed, n, params)
— so the same request in two specs, on two machines, in any key order, is the same job, and a
resumed run recognises work already done. Expansion order: prompt entries → var combinations
(cartesian in the order vars are written; zipped vars advance together) → sizes → seeds innermost.

Nothing is materialised: jobs are yielded one at a time and counted arithmetically, so a spec of
10⁹ jobs validates, plans and runs (under ``max_images``) in constant memory. Requests that render
alike are yielded once: duplicate values of a var and identical prompt entries are dropped up front;
beyond that, while a spec has at most :data:`EXACT_DEDUP_LIMIT` var combinations, a set of 16-byte
digests of the rendered prompts catches the rest (``{a}{b}`` with ``a=x, b=yz`` and ``a=xy, b=z``),
and the counts come from one pass over the prompts. Above the limit that set would grow with the plan,
so such accidental collisions are not merged: they would share a job id, and the count is the
product of the axes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from functools import cached_property
from itertools import product

from wanbatch.errors import SpecError
from wanbatch.identity import JobIds, canonical_json, derived_seed, job_id
from wanbatch.spec import PromptSpec, Spec
from wanbatch.types import InputImage, Job

#: Most var combinations (summed over prompt entries) whose rendered prompts are de-duplicated
#: exactly; the digest set then costs at most ~50 MB.
EXACT_DEDUP_LIMIT = 500_000

# canonical_json, derived_seed and job_id live in wanbatch.identity; re-exported for callers.
__all__ = ["EXACT_DEDUP_LIMIT", "Plan", "canonical_json", "derived_seed", "job_id", "plan"]


def _axes(prompt: PromptSpec) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    """One axis per var or zip group, in written order, each with its distinct rows.

    Dropping a repeated row changes nothing but the work: its prompts were repeats too, and the
    first occurrence of every combination keeps its place in the product's order.
    """
    group_of = {name: tuple(g) for g in prompt.zip for name in g}
    axes: list[tuple[tuple[str, ...], list[tuple[str, ...]]]] = []
    placed: set[tuple[str, ...]] = set()
    for name in prompt.vars:
        names = group_of.get(name, (name,))
        if names in placed:
            continue
        placed.add(names)
        rows = zip(*(prompt.vars[v] for v in names), strict=True)
        axes.append((names, list(dict.fromkeys(rows))))
    return axes


def _combination_count(prompt: PromptSpec) -> int:
    return math.prod(len(rows) for _, rows in _axes(prompt))


def _combinations(prompt: PromptSpec) -> Iterator[dict[str, str]]:
    """Var assignments of one template: one axis per var or zip group, in written order."""
    axes = _axes(prompt)
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

    @cached_property
    def _entries(self) -> list[PromptSpec]:
        """The prompt entries, each distinct one once (two identical entries render the same prompts)."""
        return list({p.model_dump_json(): p for p in self.spec.prompts}.values())

    @cached_property
    def combinations(self) -> int:
        """Var combinations over all prompt entries: an upper bound of the distinct prompts."""
        return sum(_combination_count(p) for p in self._entries)

    @property
    def exact(self) -> bool:
        """Whether prompts that render alike from different values are merged (see the module doc)."""
        return self.combinations <= EXACT_DEDUP_LIMIT

    def prompts(self) -> Iterator[tuple[str, str, dict[str, str], tuple[InputImage, ...]]]:
        """Distinct requests (rendered prompt and input images) in plan order, with the template and
        var values behind each."""
        seen: set[bytes] | None = set() if self.exact else None
        digest = hashlib.blake2b
        images = self.spec.input_images
        for prompt in self._entries:
            template, names = prompt.template, prompt.inputs
            for assignment in _combinations(prompt):
                text = template.format_map(assignment)
                inputs = tuple(images[assignment[name]] for name in names) if names else ()
                if seen is not None:
                    material = text if not inputs else "\0".join([text, *(i.identity for i in inputs)])
                    key = digest(material.encode(), digest_size=16).digest()
                    if key in seen:
                        continue
                    seen.add(key)
                yield text, template, assignment, inputs

    def jobs(self) -> Iterator[Job]:
        """Every job, lazily, in plan order. ``params`` and ``vars`` dicts are shared: read only."""
        spec = self.spec
        model, n, name, params = spec.model, spec.n, spec.name, dict(spec.params)
        sent = dict(spec.sent_params) if spec.sent_params != spec.params else None
        seeds = spec.seeds.values()
        keep_i, modulo = self.shard if self.shard else (0, 0)
        plain = JobIds(model, n, params)
        for text, template, assignment, inputs in self.prompts():
            ids = JobIds(model, n, params, [i.identity for i in inputs]) if inputs else plain
            prompt_ids = ids.for_prompt(text)
            for size in spec.sizes:
                job_seeds: Sequence[int] = (prompt_ids.derived_seed(size),) if seeds is None else seeds
                for seed in job_seeds:
                    jid = prompt_ids.job_id(size, seed)
                    if modulo and int(jid[:8], 16) % modulo != keep_i:
                        continue
                    yield Job(jid, model, text, size, seed, n, params, template, assignment, name, sent,
                              inputs)

    def image_ids(self) -> dict[str, int]:
        """Every image id the plan asks for, mapped to its position in plan order (one pass; what
        `prune` and `export`/`gallery --spec` keep, the gallery in this order)."""
        ids: dict[str, int] = {}
        for job in self.jobs():
            for image_id in job.image_ids():
                ids.setdefault(image_id, len(ids))
        return ids

    @cached_property
    def _prompt_count(self) -> int:
        return sum(1 for _ in self.prompts()) if self.exact else self.combinations

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
            text for text, _, _, _ in self.prompts())
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
