"""Image ids as fixed-size keys: exact for canonical ids, strings for the rest, and a triage that
reads a shard's slice only."""

from __future__ import annotations

import pyarrow as pa

from wanbatch.dataset import DatasetView, DatasetWriter
from wanbatch.dataset.idkeys import IdSet, key_of, parse_ids
from wanbatch.resume import triage, triage_many
from wanbatch.types import Job

CANONICAL = ["3fa9c2e1d04b7a55-0", "3fa9c2e1d04b7a55-12", "0000000000000000-0", "ffffffffffffffff-999999"]
OTHER = ["3FA9C2E1D04B7A55-0", "3fa9c2e1d04b7a55-01", "a-0", "3fa9c2e1d04b7a55-1000000", "3fa9c2e1d04b7a5-0"]


def test_only_canonical_ids_become_keys_and_the_two_spaces_never_meet() -> None:
    job, slot, keyed = parse_ids(pa.array(CANONICAL + OTHER + [None]))
    assert keyed.tolist() == [True] * 4 + [False] * 6
    assert [f"{j:016x}-{s}" for j, s in zip(job[:4].tolist(), slot[:4].tolist(), strict=True)] == CANONICAL
    assert [key_of(i) is not None for i in CANONICAL + OTHER] == [True] * 4 + [False] * 5
    ids = IdSet.of(CANONICAL + OTHER)
    assert len(ids) == 9 and set(ids) == set(CANONICAL + OTHER)
    assert all(i in ids for i in CANONICAL + OTHER)
    assert "3fa9c2e1d04b7a55-1" not in ids and "3fa9c2e1d04b7a55-00" not in ids and "b-0" not in ids
    assert IdSet.of(CANONICAL[:2]) == set(CANONICAL[:2])


def test_triage_many_agrees_with_triage_one_job_at_a_time() -> None:
    jobs = [Job(job_id=f"{i * 7919:016x}", model="m", prompt="p", size="1K", seed=i, n=1 + i % 3, params={})
            for i in range(300)]
    done = IdSet.of(f"{j.job_id}-{k}" for j in jobs[::2] for k in range(j.n) if k != 1)
    failed = {f"{jobs[3].job_id}-0": "moderation", f"{jobs[5].job_id}-1": "server_error"}
    for retry in (False, True):
        one = [triage(j, done, failed, retry_failed=retry) for j in jobs]
        assert triage_many(jobs, done, failed, retry_failed=retry) == one
    assert sum(t.done for t in one) == len(done)


def test_a_shard_triage_holds_only_its_slice(tmp_path) -> None:
    ids = [f"{i * 0x9E3779B97F4A7C15 % 2**64:016x}-0" for i in range(1, 401)]
    with DatasetWriter.open(tmp_path / "ds") as ds:
        for image_id in ids:
            tmp = ds.tmp_path(".png")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(b"x")
            rel = ds.place(tmp, image_id, "png")
            ds.append([{"image_id": image_id, "job_id": image_id[:16], "status": "ok", "path": rel}])
    view = DatasetView.open(tmp_path / "ds")
    assert set(view.triage().done) == set(ids)
    slices = [view.triage((i, 4)).done for i in range(4)]
    for i, got in enumerate(slices):
        assert set(got) == {x for x in ids if int(x[:8], 16) % 4 == i}
    assert sum(len(s) for s in slices) == len(ids)
