"""One writer per slice of work: runs against a loopback gateway that counts what it bills.

Two runs of one spec at once pay each image once (the second stops naming the first, or waits); four
``--shard i/4`` runs work side by side and share ``limits.max_images`` live; a SIGKILLed run's lease is
taken over at once by the next run; several processes racing for one stale lease: one wins.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import mock_stats, posts_reached
from tests.helpers.specs import gateway_spec
from wanbatch.dataset import read_index, status
from wanbatch.dataset.lease import (
    Entry,
    Holder,
    LeaseHeld,
    LocalLeases,
    Slice,
    alive,
    new_holder,
    try_acquire,
)
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.runner import RunOptions

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-lease-0a1b2c3d4e5f6789"

write_spec = functools.partial(gateway_spec, label="lease", key_env=KEY_ENV, concurrency=2)


def small(**config: Any) -> MockConfig:
    return MockConfig(**{"scale": 1 / 16, "image_kb": 2, **config})


@contextmanager
def gateway(tmp_path: Path, latency: str, **spec: Any) -> Iterator[tuple[str, Path, Path]]:
    """A loopback mock gateway answering after ``latency`` seconds, and a spec against it:
    (its base URL, the spec's path, its output folder)."""
    with run_in_thread(small(latency=latency)) as base:
        yield (base, *write_spec(tmp_path, base, **spec))


def start(spec: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(**{KEY_ENV: KEY}))


def run_cli(spec: Path) -> subprocess.CompletedProcess[str]:
    """``wanbatch run spec`` to its end (a minute at most)."""
    return subprocess.run([sys.executable, "-m", "wanbatch", "run", str(spec), "--no-progress"],
                          capture_output=True, text=True, timeout=60, env=cli_env(**{KEY_ENV: KEY}),
                          check=False)


def first_run(spec: Path, base: str, posts: int, *args: str) -> subprocess.Popen[str]:
    """A CLI run of ``spec`` (``start``), returned once it has sent ``posts`` image requests to ``base``."""
    first = start(spec, *args)
    assert posts_reached(base, posts, 60), "the first run never reached the gateway"
    return first


def raw_ids(out: Path) -> list[str]:
    ids: list[str] = read_index(out, ["image_id"], dedupe=False).column("image_id").to_pylist()
    return ids


# ----------------------------------------------------------------------------------- the rules


def test_overlap_rules() -> None:
    whole, a, b, other_n = Slice(None), Slice((0, 4)), Slice((1, 4)), Slice((0, 3))
    assert whole.overlaps(a) and a.overlaps(whole) and whole.overlaps(whole)
    assert a.overlaps(a) and not a.overlaps(b) and not b.overlaps(a)
    assert a.overlaps(other_n) and b.overlaps(other_n)  # coprime counts: every pair shares jobs
    assert not Slice((0, 2)).overlaps(Slice((1, 4))) and Slice((0, 2)).overlaps(Slice((2, 4)))


def test_the_overlap_rule_matches_the_plans_shards() -> None:
    """Shards of different counts share jobs exactly when the rule says so (ids of 2 000 jobs)."""
    ids = [int(hashlib.sha256(str(k).encode()).hexdigest()[:8], 16) for k in range(2000)]
    for n, m in [(2, 4), (3, 6), (4, 6), (3, 4), (1, 5)]:
        for i in range(n):
            for j in range(m):
                shared = any(x % n == i and x % m == j for x in ids)
                assert Slice((i, n)).overlaps(Slice((j, m))) == shared, (i, n, j, m)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lease_is_stale_when_its_pid_is_dead_or_reused_or_silent_on_another_host() -> None:
    mine = new_holder("r1", None)
    assert alive(Entry("all", mine, time.time()), expiry=30)
    dead = Holder(token="t", run_id="r0", slice=Slice(None), pid=dead_pid())
    assert not alive(Entry("all", dead, time.time()), expiry=30)  # same host, pid gone: at once
    reused = Holder(token="t", run_id="r0", slice=Slice(None), pid=os.getpid(),
                    pid_start=(mine.pid_start or 0) + 1)
    assert not alive(Entry("all", reused, time.time()), expiry=30)
    away = Holder(token="t", run_id="r0", slice=Slice(None), host="elsewhere", pid=1)
    assert alive(Entry("all", away, time.time() - 10), expiry=30)
    assert not alive(Entry("all", away, time.time() - 31), expiry=30)


RACER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from wanbatch.dataset.lease import LeaseHeld, LocalLeases, new_holder, try_acquire
    folder, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    (go.parent / f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.001)
    try:
        lease = try_acquire(LocalLeases(folder), new_holder(name, None), "ds")
    except LeaseHeld as exc:
        print("held", exc.holder.run_id if exc.holder else None, flush=True)
        sys.exit(0)
    began = time.time()
    time.sleep(2)
    print("won", began, time.time(), flush=True)
    lease.release()
""")


@pytest.mark.slow
def test_several_processes_racing_for_a_stale_lease_one_wins(tmp_path: Path) -> None:
    folder = tmp_path / "leases"
    stale = LocalLeases(folder)
    handle = stale.create(Holder(token="deadbeef", run_id="killed", slice=Slice(None), pid=dead_pid()))
    assert handle is not None
    os.close(handle.fd)  # the holder was SIGKILLed: its file stays, its pid is gone
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(go), f"racer-{i}"],
                               stdout=subprocess.PIPE, text=True, env=cli_env()) for i in range(6)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(racers):  # all imported, polling for the signal
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    said = [p.communicate(timeout=60)[0].split() for p in racers]
    # One holder at any instant: whoever won held the lease alone (a racer slowed down by the machine
    # may win after the first winner released, never while it held).
    spans = sorted((float(s[1]), float(s[2])) for s in said if s and s[0] == "won")
    assert spans, said
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), said
    assert all(s[0] in ("won", "held") for s in said), said
    assert LocalLeases(folder).entries() == []  # released
    assert [n for n in os.listdir(folder) if n.startswith((".claim", ".new-"))] == []


def test_a_live_lease_is_refused_and_a_shard_of_another_n_overlaps(tmp_path: Path) -> None:
    store = LocalLeases(tmp_path / "leases")
    first = try_acquire(store, new_holder("first", (0, 4)), "ds")
    try:
        second = try_acquire(store, new_holder("second", (1, 4)), "ds")  # disjoint: side by side
        with pytest.raises(LeaseHeld, match=r"run first \(host .*, pid \d+, since .*, shard 0/4\).*"
                                            r"--wait.*--shard j/4 with j ≠ 0"):
            try_acquire(store, new_holder("third", (0, 3)), "ds")
        with pytest.raises(LeaseHeld, match="--wait"):
            try_acquire(store, new_holder("fourth", None), "ds")
        second.release()
    finally:
        first.release()
    assert store.entries() == []


# ----------------------------------------------------------------------------------- runs


def run_here(spec: Path, **options: Any) -> wanbatch.RunResult:
    """A run in this process (no interpreter start-up: it begins while the CLI run is mid-way)."""
    return wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, **options))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_runs_of_one_spec_at_once_pay_each_image_once(tmp_path: Path) -> None:
    with gateway(tmp_path, "1.0", seeds=6) as (base, spec, out):  # 12 images, ~6 s
        first = first_run(spec, base, 1, "--json")
        second = run_here(spec)
        holders = status(out).leases  # read while the first still runs
        assert first.poll() is None, "the second run must stop at once, while the first is mid-run"
        assert second.exit_code == 3 and second.stats.submitted_images == 0
        message = str(second.error)
        assert f"pid {first.pid}" in message and "--wait" in message and "the whole plan" in message
        stdout, stderr = first.communicate(timeout=60)
        assert first.returncode == 0, stderr
        run_id = json.loads(stdout)["run_id"]
        assert f"run {run_id}" in message
        assert [(h["run_id"], h["live"]) for h in holders] == [(run_id, True)]
        assert mock_stats(base)["billed"] == 12
        # The CLI says the same, and exits 3: a run holding the lease, then a CLI run against it.
        store = LocalLeases(out / "leases")
        lease = try_acquire(store, new_holder("holder-run", None), str(out))
        try:
            cli = run_cli(spec)
        finally:
            lease.release()
        assert cli.returncode == 3 and "run holder-run" in cli.stderr and "--wait" in cli.stderr, cli.stderr
    ids = raw_ids(out)
    assert len(ids) == len(set(ids)) == 12
    assert not list((out / "leases").glob("*.json"))
    assert len(list((out / "runs").iterdir())) == 1  # the refused runs recorded nothing


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_wait_waits_for_the_holder_then_requests_nothing(tmp_path: Path) -> None:
    with gateway(tmp_path, "0.6", seeds=4) as (base, spec, out):
        first = first_run(spec, base, 1)
        notes: list[str] = []
        second = run_here(spec, wait=True, on_note=notes.append)
        _, stderr = first.communicate(timeout=60)  # (it gave its lease back just before exiting)
        assert first.returncode == 0, stderr
        assert second.exit_code == 0 and second.stats.submitted_images == 0
        assert any(n.startswith("waiting for run") and f"pid {first.pid}" in n for n in notes), notes
        assert mock_stats(base)["billed"] == 8
    ids = raw_ids(out)
    assert len(ids) == len(set(ids)) == 8


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_four_shards_at_once_all_succeed(tmp_path: Path) -> None:
    with gateway(tmp_path, "0.1", seeds=10) as (base, spec, out):  # 20 images
        shards = [start(spec, "--shard", f"{i}/4", "--json") for i in range(4)]
        results = [p.communicate(timeout=90) for p in shards]
        assert [p.returncode for p in shards] == [0, 0, 0, 0], [r[1] for r in results]
        assert mock_stats(base)["billed"] == 20
    ids = raw_ids(out)
    assert len(ids) == len(set(ids)) == 20


@pytest.mark.timeout(120)
def test_max_images_holds_across_four_concurrent_shards(tmp_path: Path) -> None:
    with gateway(tmp_path, "0.05", seeds=20, limits="max_images: 10") as (base, spec, out):  # 40 planned
        results: list[wanbatch.RunResult] = []
        threads = [threading.Thread(target=lambda i=i: results.append(run_here(spec, shard=(i, 4))))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert len(results) == 4 and all(r.error is None for r in results), [r.error for r in results]
        assert sum(r.stats.submitted_images for r in results) == 10
        assert mock_stats(base)["billed"] == 10  # exact: reservations are serialised through the leases
        assert any((r.stats.stop_reason or "").startswith("cap reached") for r in results)
    ids = raw_ids(out)
    assert len(ids) == len(set(ids)) == 10


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_sigkilled_run_leaves_a_lease_the_next_run_takes_over_at_once(tmp_path: Path) -> None:
    with gateway(tmp_path, "0.3", seeds=4) as (base, spec, out):
        first = first_run(spec, base, 2)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        left = [e.holder for e in LocalLeases(out / "leases").entries()]
        assert [h.pid for h in left if h] == [first.pid]
        began = time.monotonic()
        rerun = run_cli(spec)
        assert rerun.returncode == 0, rerun.stderr
        assert "took over the lease" in rerun.stderr and f"pid {first.pid}" in rerun.stderr
        assert time.monotonic() - began < 30  # not after an expiry: the pid is dead
    assert not list((out / "leases").glob("*.json"))


def test_prune_refuses_while_a_run_holds_work_and_a_run_waits_for_prune(tmp_path: Path) -> None:
    from wanbatch.errors import DatasetError
    from wanbatch.prune import prune

    spec_path = tmp_path / "a.yaml"
    out = tmp_path / "out"
    spec_path.write_text(f"name: a\nprovider: {{type: mock, latency: 0}}\nprompt: 'a {{thing}}'\n"
                         f"vars:\n  thing: [fox, lamp]\nsizes: [1K]\noutput: {out}\n", encoding="utf-8")
    assert wanbatch.run(wanbatch.load_spec(spec_path), RunOptions()).exit_code == 0
    spec_path.write_text(spec_path.read_text().replace("'a {thing}'", "'a small {thing}'"))
    spec = wanbatch.load_spec(spec_path)
    store = LocalLeases(out / "leases")
    lease = try_acquire(store, new_holder("busy-run", (1, 3)), str(out))
    try:
        with pytest.raises(DatasetError, match=r"run busy-run .* is writing the dataset; prune once"):
            prune(spec, yes=True)
    finally:
        lease.release()
    assert prune(spec, yes=True).deleted and store.entries() == []


def test_a_holder_whose_lease_was_taken_over_reserves_nothing_more(tmp_path: Path) -> None:
    """A holder judged dead (no heartbeat for 30 s on another host, say) while it was only stalled:
    its next heartbeat sees the lease is not its own any more, and its budget refuses every job."""
    from wanbatch.dataset.lease import SharedCaps
    from wanbatch.runner.budget import Budget
    from wanbatch.stats import RunStats

    store = LocalLeases(tmp_path / "leases")
    stalled = try_acquire(store, new_holder("stalled", None), "ds")
    try:
        stats = RunStats(run_id="stalled", price_per_image=None)
        budget = Budget(stats, max_images=100, max_cost=None, price_per_image=None,
                        shared=SharedCaps(stalled, [], folded=lambda run_id: None))
        assert budget.reserve(2) is None and stats.submitted_images == 2
        (entry,) = store.entries()
        assert entry.holder is not None and entry.holder.reserved == 2  # published in the lease
        assert store.claim(entry)  # what a taker does once it judged the holder dead
        taker = store.create(new_holder("taker", None))
        assert taker is not None
        os.close(taker.fd)
        stalled.beat()
        assert stalled.lost is not None and "taken over" in stalled.lost
        assert budget.reserve(1) == stalled.lost and stats.submitted_images == 2
        assert [e.holder.run_id for e in store.entries() if e.holder] == ["taker"]
    finally:
        stalled.release()
    assert [e.holder.run_id for e in store.entries() if e.holder] == ["taker"]  # not removed by the loser
