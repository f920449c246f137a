"""Image ids as fixed-size keys: exact for canonical ids, strings for the rest, and a triage that
reads a shard's slice only."""

from __future__ import annotations

import random
import re

import pyarrow as pa

from wanbatch.dataset import DatasetView, DatasetWriter
from wanbatch.dataset.folds import rel_keys
from wanbatch.dataset.idkeys import EXTS, IdSet, key_of, parse_ids
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


_REL = re.compile(r"^images/(?P<pre>[^/]{2})/(?P<stem>[^/]+)\.(?P<ext>[A-Za-z0-9]{1,8})$")


def _rel_key(rel: str | None) -> tuple[int, int] | None:
    """The reference for ``rel_keys``: one path at a time, by regex."""
    found = _REL.match(rel) if rel is not None else None
    if not found or found["ext"] not in EXTS or found["pre"] != found["stem"][:2]:
        return None
    key = key_of(found["stem"])
    return None if key is None else (key[0], key[1] << 4 | EXTS.index(found["ext"]))


def _mangled(rng: random.Random, text: str, alphabet: str = "0123456789abcdefAF-./:`xgé\n") -> str:
    chars = list(text)
    chars[rng.randrange(len(chars))] = rng.choice(alphabet)
    return "".join(chars)


def test_the_vectorised_parse_of_ids_and_paths_agrees_with_the_scalar_one() -> None:
    """Byte-level numpy parse (strided when a batch's strings share one length) = key_of / a regex."""
    rng = random.Random(16)
    ids: list[str | None] = [None, "", "é" * 9, "0" * 16 + "-00", "0" * 16 + "-0", "f" * 16 + "-999999"]
    for width in range(1, 8):  # uniform batches: one byte length each, some ids mangled in place (ASCII)
        low = 10 ** (width - 1) if width > 1 else 0
        batch = [f"{rng.getrandbits(64):016x}-{rng.randrange(low, 10 ** width)}" for _ in range(200)]
        ids += [_mangled(rng, x, "0123456789abcdefAF-./:`xg") if rng.random() < 0.2 else x for x in batch]
    mixed = ids + [_mangled(rng, f"{rng.getrandbits(64):016x}-{rng.randrange(1000)}") for _ in range(500)]
    for arr in (pa.array(ids[6:206]), pa.array(ids[6:206]).slice(3), pa.array(mixed),
                pa.chunked_array([pa.array(mixed[:7]), pa.array(mixed[7:])])):
        job, slot, keyed = parse_ids(arr)
        got = [(int(j), int(s)) if k else None for j, s, k in zip(job, slot, keyed, strict=True)]
        assert got == [key_of(x) if isinstance(x, str) else None for x in arr.to_pylist()]
    rels: list[str | None] = [None, "", "images/"]
    for x in ids[6:]:
        assert x is not None
        pre = x[:2] if rng.random() < 0.9 else rng.choice(["AB", "é", x[1:3]])
        ext = rng.choice([*EXTS, "PNG", "png.png", "", "txt"])
        rel = f"images/{pre}/{x}.{ext}"
        rels.append(_mangled(rng, rel) if rng.random() < 0.1 else rel)
    uniform = [f"images/{x[:2]}/{x}.png" for x in ids[6:206] if x is not None]
    for arr in (pa.array(rels), pa.array(uniform), pa.array(uniform).slice(5)):
        job, sub, keyed = rel_keys(arr)
        got = [(int(j), int(s)) if k else None for j, s, k in zip(job, sub, keyed, strict=True)]
        assert got == [_rel_key(r) for r in arr.to_pylist()]
        assert any(got)


def _status_reference(rows: list[dict]) -> tuple[int, int, int, dict[str | None, int]]:
    """``StatusFold.result``'s counts, one row at a time: an image's bytes and run are its first ok row's."""
    first_ok: dict[str, dict] = {}
    for row in rows:
        if row["status"] == "ok":
            first_ok.setdefault(row["image_id"], row)
    by_run: dict[str | None, int] = {}
    for row in first_ok.values():
        by_run[row["run_id"]] = by_run.get(row["run_id"], 0) + 1
    distinct = len({r["image_id"] for r in rows})
    return distinct, len(first_ok), sum(r["bytes"] for r in first_ok.values()), by_run


def test_status_counts_agree_with_a_row_by_row_reference_with_and_without_repeated_ok_rows() -> None:
    from datetime import UTC, datetime

    from wanbatch.dataset.folds import StatusFold
    from wanbatch.dataset.schema import INDEX_SCHEMA

    rng = random.Random(7)
    jobs = [f"{rng.getrandbits(64):016x}" for _ in range(300)]
    when = datetime(2026, 12, 1, tzinfo=UTC)
    for repeats in (False, True):
        pool = [f"{j}-{k}" for j in jobs for k in range(rng.choice([1, 1, 3]))] + ["odd-id", "x-1"]
        rows = []
        for n, image_id in enumerate(pool):
            statuses = rng.choice([["ok"], ["failed"], ["failed", "ok"], ["ok", "ok"] if repeats else ["ok"]])
            rows += [{"image_id": image_id, "status": s, "bytes": n * 10 + i, "created_at": when,
                      "run_id": rng.choice(["r1", "r2", None]),
                      "error_kind": None if s == "ok" else "moderation"} for i, s in enumerate(statuses)]
        rng.shuffle(rows)
        fold = StatusFold()
        columns = ["image_id", "status", "error_kind", "created_at", "bytes", "run_id"]
        schema = pa.schema([INDEX_SCHEMA.field(c) for c in columns])
        for at in range(0, len(rows), 250):
            fold.add(pa.RecordBatch.from_pylist(rows[at: at + 250], schema=schema))
        distinct, images_ok, image_bytes, failed, by_run = fold.result()
        assert (distinct, images_ok, image_bytes, by_run) == _status_reference(rows)
        ok_ids = {r["image_id"] for r in rows if r["status"] == "ok"}
        assert set(failed) == {r["image_id"] for r in rows} - ok_ids
