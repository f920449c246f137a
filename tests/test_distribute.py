"""ray-run without Ray: what travels to the workers, and how the totals add up what every attempt of
every unit persisted (a retried unit's killed first attempt included). The Ray runs are in test_ray."""

from __future__ import annotations

from wanbatch.distribute import aggregate
from wanbatch.distribute.ray_runner import ShardOutcome, forwarded_env, unit_of
from wanbatch.plan import plan
from wanbatch.runner.summary import RunSummary
from wanbatch.spec import load_spec

SPEC = "provider: {base_url: '${GW_HOST}/v1', api_key_env: MY_KEY}\nprompt: x\n"


def test_the_environment_a_worker_needs_is_forwarded_and_nothing_else() -> None:
    environ = {"AWS_ACCESS_KEY_ID": "id", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "WANBATCH_STAGING": "/s",
               "GW_HOST": "http://gw", "MY_KEY": "sk-secret", "EXTRA": "e", "HOME": "/home/x",
               "OTHER_TOKEN": "t", "PATH": "/bin"}
    env = forwarded_env(SPEC, "MY_KEY", ["EXTRA", "ABSENT"], environ)
    assert env == {"AWS_ACCESS_KEY_ID": "id", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                   "WANBATCH_STAGING": "/s", "GW_HOST": "http://gw", "MY_KEY": "sk-secret", "EXTRA": "e"}
    assert "MY_KEY" not in forwarded_env(SPEC, None, (), environ)  # --no-forward-key


def test_units_are_the_shards_of_the_plan(write_spec) -> None:  # type: ignore[no-untyped-def]
    spec = load_spec(write_spec("prompt: 'a {x}'\nvars: {x: [a, b, c, d, e, f, g]}\nseeds: [1, 2, 3]\n"))
    for i in range(5):
        ids = {job.job_id for job in plan(spec, shard=(i, 5)).jobs()}
        assert ids == {job.job_id for job in plan(spec).jobs() if unit_of(job.job_id, 5) == i}


def _summary(unit: int, started: float, **counts: int) -> dict[str, object]:
    return {"run_id": f"r{started}", "shard": [unit, 4], "started_at": started, **counts}


def test_totals_count_every_attempt_and_the_ledgers_of_killed_ones() -> None:
    """Unit 1's first attempt was killed after 5 images were billed and 2 were on the wire; its retry
    billed 3 more. The report must say 10 + 2 in doubt, not the 3 of the last attempt."""
    attempts = [
        {"run_id": "a-u0", "unit": 0, "summary": _summary(0, 1.0, planned_images=4, todo_images=4,
                                                          done_images=4, submitted_images=4),
         "ledger": {"billed_images": 4, "in_doubt_images": 0, "resolved_images": 0}},
        {"run_id": "a-u1", "unit": 1, "summary": None,  # killed: recovery folded its ledger
         "ledger": {"billed_images": 5, "in_doubt_images": 2, "resolved_images": 0}},
        {"run_id": "b-u1", "unit": 1, "summary": _summary(1, 9.0, planned_images=8, todo_images=3,
                                                          skipped_images=5, done_images=3,
                                                          submitted_images=3, retries=1),
         "ledger": {"billed_images": 3, "in_doubt_images": 1, "resolved_images": 1}},
    ]
    state = {0: {"planned_jobs": 4, "planned_images": 4, "todo_images": 4, "todo_jobs": 4},
             1: {"planned_jobs": 8, "planned_images": 8, "todo_images": 8, "todo_jobs": 8},
             2: {"planned_jobs": 2, "planned_images": 2, "skipped_images": 2}}  # done before: not scheduled
    last = [ShardOutcome(0, 0, RunSummary.from_dict(attempts[0]["summary"])),  # type: ignore[arg-type]
            ShardOutcome(1, 0, RunSummary.from_dict(attempts[2]["summary"]))]  # type: ignore[arg-type]
    totals = aggregate(last, attempts, state=state, done_by_run={"a-u1": 5}, price_per_image=0.5)
    assert (totals["billed_images"], totals["in_doubt_images"]) == (12, 2)
    assert totals["cost"] == 7.0  # (billed + in doubt) × price: never below the gateway's bill
    assert (totals["attempts"], totals["killed_attempts"]) == (3, 1)
    assert totals["done_images"] == 4 + 5 + 3  # the killed attempt's images came from the index
    assert totals["submitted_images"] == 7 and totals["retries"] == 1
    assert (totals["planned_images"], totals["todo_images"], totals["skipped_images"]) == (14, 12, 2)

    no_triage = aggregate(last, attempts, price_per_image=None)  # state from each unit's first attempt
    assert (no_triage["planned_images"], no_triage["skipped_images"], no_triage["cost"]) == (12, 5, None)
    assert no_triage["done_images"] == 7  # without the index, a killed attempt adds no done images


def test_an_attempt_whose_manifest_entry_was_lost_counts_its_summary_ledger() -> None:
    """On s3:// two runs ending at once can lose one manifest entry; the summary in runs/ remains."""
    attempts = [{"run_id": "x-u0", "unit": 0, "ledger": None,
                 "summary": _summary(0, 1.0, done_images=3, billed_images=3, in_doubt_images=1)}]
    totals = aggregate([], attempts, price_per_image=1.0)
    assert (totals["billed_images"], totals["in_doubt_images"], totals["cost"]) == (3, 1, 4.0)
