"""plan(): expansion order, job identity, derived seeds, shards, counts."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from wanbatch.errors import SpecError
from wanbatch.identity import canonical_json, derived_seed, job_id
from wanbatch.plan import plan
from wanbatch.spec import Spec, load_spec

DATA = Path(__file__).parent / "data" / "specs"

BASIC = """
name: basic
prompt: "{subject}, {style}"
vars:
  subject: [a fox, a lighthouse]
  style: [ink, oil]
seeds: [1, 2, 3]
sizes: [2K, 1920*1080]
price_per_image: 0.25
"""


def spec_of(text: str, name: str = "s.yaml") -> Spec:
    return load_spec(name, text=text)


def test_two_subjects_two_styles_three_seeds_two_sizes_is_24_jobs() -> None:
    p = plan(spec_of(BASIC))
    jobs = list(p.jobs())
    assert len(jobs) == p.job_count == p.image_count == 24
    assert len({j.job_id for j in jobs}) == 24
    assert p.by_size() == {"2K": 12, "1920*1080": 12}
    assert p.estimated_cost == 6.0
    # order: vars (cartesian, written order) → sizes → seeds innermost
    assert [(j.prompt, j.size, j.seed) for j in jobs[:7]] == [
        ("a fox, ink", "2K", 1), ("a fox, ink", "2K", 2), ("a fox, ink", "2K", 3),
        ("a fox, ink", "1920*1080", 1), ("a fox, ink", "1920*1080", 2), ("a fox, ink", "1920*1080", 3),
        ("a fox, oil", "2K", 1),
    ]
    first = jobs[0]
    assert (first.model, first.n, first.params, first.pipeline) == ("wan2.7-image-pro", 1, {}, "basic")
    assert (first.template, first.vars) == ("{subject}, {style}", {"subject": "a fox", "style": "ink"})
    assert p.sample_prompts(3) == ["a fox, ink", "a fox, oil", "a lighthouse, ink"]


def test_job_id_is_the_documented_digest() -> None:
    request = {"model": "wan2.7-image-pro", "prompt": "a fox, ink", "size": "2K", "seed": 1, "n": 1,
               "params": {}}
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert job_id(**request) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert plan(spec_of(BASIC)).jobs().__next__().job_id == job_id(**request)


def test_known_ids_never_change() -> None:
    """Ids computed by the code before wanbatch.identity existed: a change here orphans every dataset."""
    assert job_id("wan2.7-image-pro", "a flower shop with a wooden door, watercolor", "2K", 42, 1,
                  {"watermark": False, "thinking_mode": True}) == "2029a8348405e336"
    assert job_id("wan2.7-image", "café «été» 東京", "1920*1080", 0, 4, {}) == "b26be1602c298b16"
    assert derived_seed("wan2.7-image-pro", "a bakery at dawn", "1K", 2, {"watermark": False}) == 1235549311
    jobs = list(plan(load_spec(DATA / "flower-shops.yaml")).jobs())
    assert len(jobs) == 192
    assert [(j.job_id, j.seed) for j in jobs[:3]] == [
        ("0a78ffd6cdee8f49", 0), ("fe3b5c250a4262e0", 1), ("cbb7db27e8b9abcf", 2)]
    assert jobs[-1].job_id == "44a9a307d1aace90"
    text = 'prompt: "{x} at dawn"\nvars: {x: [a bakery, "un café"]}\nmodel: wan2.7-image\nsizes: [1K]\nn: 2\n'
    assert [(j.job_id, j.seed) for j in plan(spec_of(text)).jobs()] == [
        ("bea5fc7ce336e9f4", 1081841845), ("93932ffa5dd7084c", 1181424085)]


def test_the_params_column_uses_the_identity_json() -> None:
    from wanbatch.dataset.rows import failed_row

    text = ('prompt: x\nprovider: {base_url: "https://gw.example/v1", dialect: parameters}\nseeds: 1\n'
            "params: {watermark: true, thinking_mode: false}\n")
    job = next(plan(spec_of(text)).jobs())
    row = failed_row(job, 0, kind="refused", message="no", provider="p", run_id="r")
    assert row["params"] == canonical_json(job.params) == '{"thinking_mode":false,"watermark":true}'


def test_plan_ids_match_job_id_for_unicode_params_and_n() -> None:
    text = ('prompt: "café {x} — 東京"\nvars: {x: ["\\"quoted\\"", "back\\\\slash"]}\nn: 3\n'
            'provider: {base_url: "https://gw.example/v1", dialect: parameters}\n'
            "params: {watermark: true, color_palette: warm, thinking_mode: false}\nsizes: [1K]\nseeds: 5\n")
    jobs = list(plan(spec_of(text)).jobs())
    assert len(jobs) == 2
    for j in jobs:
        assert j.job_id == job_id(j.model, j.prompt, j.size, j.seed, j.n, j.params)
        assert j.image_ids() == [f"{j.job_id}-{k}" for k in range(3)]


def test_ids_ignore_ordering_and_files(tmp_path: Path) -> None:
    reordered = """
sizes: [1920x1080, 2k]
price_per_image: 0.25
seeds: [3, 1, 2]
vars:
  style: [oil, ink]
  subject: [a lighthouse, a fox]
prompt: "{subject}, {style}"
name: other-name
provider: {type: mock, latency: 0}
"""
    a = tmp_path / "a" / "one.yaml"
    b = tmp_path / "b" / "two.yaml"
    for path, text in ((a, BASIC), (b, reordered)):
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8")
    ids_a = {j.job_id for j in plan(load_spec(a)).jobs()}
    ids_b = {j.job_id for j in plan(load_spec(b)).jobs()}
    assert len(ids_a) == 24 and ids_a == ids_b


def test_params_key_order_does_not_matter() -> None:
    base = 'prompt: x\nprovider: {base_url: "https://gw.example/v1", dialect: dashscope}\nseeds: 1\n'
    one = spec_of(base + "params: {watermark: true, thinking_mode: false}\n")
    two = spec_of(base + "params:\n  thinking_mode: false\n  watermark: true\n  color_palette: null\n")
    assert [j.job_id for j in plan(one).jobs()] == [j.job_id for j in plan(two).jobs()]


@pytest.mark.parametrize(
    "change",
    [{"model": "wan2.7-image"}, {"prompt": "a fox, oil"}, {"size": "1K"}, {"seed": 2}, {"n": 2},
     {"params": {"watermark": True}}],
)
def test_id_changes_with_every_field(change: dict[str, object]) -> None:
    request: dict[str, object] = {"model": "wan2.7-image-pro", "prompt": "a fox, ink", "size": "2K",
                                  "seed": 1, "n": 1, "params": {}}
    before = job_id(**request)  # type: ignore[arg-type]
    assert job_id(**{**request, **change}) != before  # type: ignore[arg-type]


def test_derived_seeds_are_stable_distinct_and_in_range() -> None:
    text = "prompt: '{s}'\nvars: {s: [a, b, c, d]}\nsizes: [1K, 2K]\n"
    jobs = list(plan(spec_of(text)).jobs())
    again = list(plan(spec_of(text)).jobs())
    assert [j.seed for j in jobs] == [j.seed for j in again]
    assert len(jobs) == 8 and len({j.seed for j in jobs}) == 8
    assert all(0 <= j.seed <= 0x7FFFFFFF for j in jobs)
    first = jobs[0]
    assert first.seed == derived_seed(first.model, first.prompt, first.size, first.n, first.params)
    canonical = json.dumps({"model": first.model, "n": 1, "params": {}, "prompt": "a", "size": "1K"},
                           sort_keys=True, separators=(",", ":"))
    expected = int(hashlib.sha256(b"wanbatch-seed\0" + canonical.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
    assert first.seed == expected


def test_shards_partition_the_plan_exactly() -> None:
    text = "prompt: '{s}'\nvars: {s: [a, b, c, d, e]}\nseeds: {start: 0, count: 20}\nsizes: [1K, 2K]\n"
    spec = spec_of(text)
    everything = [j.job_id for j in plan(spec).jobs()]
    shards = [plan(spec, shard=(i, 3)) for i in range(3)]
    parts = [[j.job_id for j in s.jobs()] for s in shards]
    assert sorted(j for part in parts for j in part) == sorted(everything) and len(everything) == 200
    for i, part in enumerate(parts):
        assert part and all(int(jid[:8], 16) % 3 == i for jid in part)
    assert sum(s.job_count for s in shards) == 200
    assert [s.job_count for s in shards] == [len(p) for p in parts]
    assert sum(sum(s.by_size().values()) for s in shards) == 200
    assert shards[0].sample_prompts(2) == list(dict.fromkeys(
        j.prompt for j in plan(spec, shard=(0, 3)).jobs()))[:2]


@pytest.mark.parametrize("shard", [(3, 3), (-1, 2), (0, 0)])
def test_bad_shard_is_a_clear_error(shard: tuple[int, int]) -> None:
    with pytest.raises(SpecError, match="shard") as info:
        plan(spec_of(BASIC), shard=shard)
    assert info.value.field == "shard"


def test_zip_advances_together() -> None:
    spec = load_spec(DATA / "captions.yaml")
    jobs = list(plan(spec).jobs())
    pairs = {(j.vars["subject"], j.vars["caption"]) for j in jobs}
    assert pairs == {("a red fox", "fox"), ("an old lighthouse", "lighthouse"), ("a cafe, at night", "cafe")}
    p = plan(spec)
    assert len(jobs) == p.job_count == 3 * 2 * 2 * 2  # 3 zipped rows × 2 styles × 2 seeds × 2 sizes
    assert jobs[0].prompt == "a red fox — fox, ink" and jobs[0].params == {"color_palette": "muted",
                                                                            "thinking_mode": False}


def test_entry_vars_override_and_duplicates_are_yielded_once() -> None:
    text = """
prompts:
  - "{subject} at {time}"
  - template: "{subject} at {time}"
    vars: {time: [noon, dusk]}
vars:
  subject: [a fox]
  time: [dawn, noon]
seeds: 1
n: 2
"""
    p = plan(spec_of(text))
    prompts = [j.prompt for j in p.jobs()]
    assert prompts == ["a fox at dawn", "a fox at noon", "a fox at dusk"]
    assert (p.job_count, p.image_count) == (3, 6)
    assert p.by_size() == {"2K": 6}
    assert p.estimated_cost is None


def test_counts_agree_with_iteration_for_the_file_example() -> None:
    p = plan(load_spec(DATA / "flower-shops.yaml"))
    jobs = list(p.jobs())
    assert p.job_count == len(jobs) == 2 * 2 * 3 * 8 * 2
    assert p.image_count == len(jobs) and p.estimated_cost == pytest.approx(0.2 * len(jobs))
    assert p.by_size() == {"2K": 96, "1920*1080": 96}


def test_huge_plans_stay_lazy() -> None:
    spec = spec_of('prompt: "{s}"\nvars: {s: [a, b]}\nseeds: "0..2147483647"\nsizes: [1K, 2K]\n')
    started = time.perf_counter()
    p = plan(spec)
    assert p.job_count == 2 * 2 * 2**31
    first = next(iter(p))
    assert (first.prompt, first.size, first.seed) == ("a", "1K", 0)
    assert time.perf_counter() - started < 1.0


def test_expansion_is_fast() -> None:
    subjects = ", ".join(f'"subject {i}"' for i in range(100))
    spec = spec_of(f"prompt: '{{s}}'\nvars: {{s: [{subjects}]}}\nseeds: {{start: 0, count: 100}}\n"
                   "sizes: [1K, 2K, 4K, 1920*1080, 1080*1920, 1024*768, 768*1024, 2048*1152, 1152*2048, "
                   "1536*1536]\n")
    started = time.perf_counter()
    count = sum(1 for _ in plan(spec).jobs())
    elapsed = time.perf_counter() - started
    assert count == 100_000
    assert elapsed < 3.0, f"100k jobs took {elapsed:.2f}s"  # ~0.2 s when the machine is idle
