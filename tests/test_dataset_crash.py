"""SIGKILL at random moments, then recovery: nothing acknowledged is lost, nothing is half there."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wanbatch.dataset import DatasetWriter, compact, ok_row, read_index
from wanbatch.dataset.journal import read_lines, segments
from wanbatch.types import Job, StoredImage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHILD = textwrap.dedent("""
    import os, sys
    from wanbatch.dataset import DatasetWriter, failed_row, ok_row
    from wanbatch.types import Job, StoredImage
    sys.path.insert(0, os.path.dirname(__file__))
    from jobs import make_job

    root, run, log = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
    log.write("start\\n")
    ds = DatasetWriter.open(root)
    ds.recover()
    log.write("ready\\n")
    for i in range(100_000):
        job = make_job(run, i)
        if i % 5 == 0:  # an async task that never finishes while this process lives
            ds.journal_task(f"never{run:04x}{i:07x}", "gw", f"task-{run}-{i}")
            log.write(f"T never{run:04x}{i:07x}\\n")
        tmp = ds.tmp_path(".part")
        with open(tmp, "wb") as fh:  # a download in progress, in chunks
            for k in range(4):
                fh.write(bytes([i % 251]) * 256)
        size = tmp.stat().st_size
        rel = ds.place(tmp, f"{job.job_id}-0", "png")
        stored = StoredImage(rel, "png", 64, 64, size, "0" * 64)
        ds.append([ok_row(job, 0, stored, provider="gw", run_id=f"run{run}"),
                   failed_row(job, 1, kind="moderation", message="no", provider="gw", run_id=f"run{run}")])
        log.write(f"R {job.job_id}\\n")
        if i % 10 == 9:
            ds.flush()
""")

JOBS = textwrap.dedent("""
    from wanbatch.types import Job

    def make_job(run, i):
        return Job(job_id=f"{run:04x}{i:012x}", model="wan2.7-image", prompt=f"shop {run} {i}",
                   size="1K", seed=i, n=2, params={"watermark": False})
""")


def job_for(job_id: str) -> Job:
    run, i = int(job_id[:4], 16), int(job_id[4:], 16)
    return Job(job_id=job_id, model="wan2.7-image", prompt=f"shop {run} {i}", size="1K", seed=i, n=2,
               params={"watermark": False})


def adopt(ds: DatasetWriter, image_id: str) -> dict[str, object]:
    """What the runner does with an image file whose row was lost (killed between place and append)."""
    path = ds.existing_image(image_id)
    assert path is not None
    data = path.read_bytes()
    job_id, slot = image_id.rsplit("-", 1)
    stored = StoredImage(path.relative_to(ds.root).as_posix(), "png", 64, 64, len(data),
                         hashlib.sha256(data).hexdigest())
    return ok_row(job_for(job_id), int(slot), stored, provider="gw", run_id="adopt", attempts=0)


def run_and_kill(tmp_path: Path, root: Path, run: int, delay: float, after: str) -> list[str]:
    """Start a child writer, SIGKILL it ``delay`` seconds after it logs ``after`` ("start": into
    open/recover; "ready": into the work, however long a loaded machine takes to open)."""
    log = tmp_path / f"log-{run}.txt"
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(root), str(run), str(log)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and after in log.read_text().splitlines()):
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, f"child did not log {after!r}"
            time.sleep(0.01)
        time.sleep(delay)
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stderr:
            child.stderr.close()
    return log.read_text().splitlines()


def test_sigkill_at_random_moments_then_recover(tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "jobs.py").write_text(JOBS)
    root = tmp_path / "ds"
    rng = random.Random(1234)
    acknowledged: set[str] = set()
    tasks: set[str] = set()
    # two kills into open/recover, then three at random moments of the work
    delays = [(0.02, "start"), (0.15, "start")] + [(0.05 + rng.random() * 0.6, "ready") for _ in range(3)]
    for run, (delay, after) in enumerate(delays):
        for line in run_and_kill(tmp_path, root, run, delay, after):
            kind, _, ident = line.partition(" ")
            if kind == "R":
                acknowledged.add(ident)
            elif kind == "T":
                tasks.add(ident)
    assert len(acknowledged) > 20, "the children were killed before doing any work"

    with DatasetWriter.open(root) as ds:
        report = ds.recover()
        print(f"\n{len(acknowledged)} acknowledged jobs, {len(tasks)} tasks; final recovery: {report}")
        assert ds.recover().rows_recovered == 0  # idempotent
        ds.append([adopt(ds, image_id) for image_id in report.orphan_images])
        ds.flush()
        pending = set(ds.pending_tasks())
        assert tasks <= pending  # every acknowledged task id survived
        # and beyond them only a task journaled by a child killed before it could log it: one per
        # child at most (a CI run caught one such: the journal line was durable, the log line not)
        assert len(pending - tasks) <= len(delays), pending - tasks
        done = ds.triage().done
        failed = ds.triage().failed

    raw = read_index(root, dedupe=False)
    ids = raw["image_id"].to_pylist()
    assert len(ids) == len(set(ids)), "recovery indexed some rows twice"
    for job_id in acknowledged:  # acknowledged appends are indexed, both slots
        assert f"{job_id}-0" in done
        assert failed.get(f"{job_id}-1") == "moderation"
    on_disk = {p.relative_to(root).as_posix() for p in (root / "images").rglob("*") if p.is_file()}
    ok_paths = {r["path"] for r in raw.to_pylist() if r["status"] == "ok"}
    assert ok_paths == on_disk  # every ok row has its file, every file has its row
    assert not [p for p in (root / ".tmp").rglob("*") if p.is_file()], "temp files left behind"
    assert not [p for p in (root / "index").iterdir() if not p.name.endswith(".parquet")]
    for part in (root / "index").glob("*.parquet"):
        pq.read_metadata(part)  # every visible part is whole

    before = read_index(root)
    compact(root, target_rows=10_000)
    after = read_index(root)
    assert after.num_rows == before.num_rows == len(set(ids))
    assert len(list((root / "index").glob("*.parquet"))) == 1


def test_torn_journal_line_and_half_written_part_and_temp_rescue(tmp_path: Path) -> None:
    """The crash states a kill can leave, built exactly: recovery repairs each of them."""
    root = tmp_path / "ds"
    ds = DatasetWriter.open(root)
    job = job_for("0001000000000001")
    data = b"\x89PNG rescued image bytes"
    digest = hashlib.sha256(data).hexdigest()
    rel = ds.layout.image_rel(f"{job.job_id}-0", "png")
    # a row journaled for an image whose rename never happened; its complete temp file is there
    ds.append([ok_row(job, 0, StoredImage(rel, "png", 8, 8, len(data), digest), provider="gw", run_id="r")])
    ds.tmp_path(".part").write_bytes(b"half a download")
    ds.tmp_path(".part").write_bytes(data)
    # an ok row whose image is gone for good
    lost = job_for("0001000000000002")
    ds.append([ok_row(lost, 0, StoredImage(ds.layout.image_rel(f"{lost.job_id}-0", "png"), "png", 8, 8, 5,
                                           "f" * 64), provider="gw", run_id="r")])
    segment = segments(ds.journal.folder)[-1][1]
    with open(segment, "ab") as fh:
        fh.write(b'{"image_id":"00010000000000')  # a torn last line
    (root / "index" / ".part-0000000000123-wdead-000000.parquet.tmp").write_bytes(b"PAR1 half")
    ds.journal.close()
    os.close(ds.journal.lock_fd)  # the writer "dies"
    ds._closed = True

    with DatasetWriter.open(root) as again:
        report = again.recover()
        assert (report.rows_recovered, report.rows_dropped, report.images_rescued) == (1, 1, 1)
        assert report.torn_lines == 1 and report.partial_parts_removed == 1
        assert report.temp_files_removed == 1
        assert again.triage().done == {f"{job.job_id}-0"}
    assert (root / rel).read_bytes() == data
    assert not list((root / ".tmp").rglob("*.part"))
    assert not list((root / "index").glob(".*"))


def test_a_live_writer_is_left_alone(tmp_path: Path) -> None:
    """Two writers on one root (e.g. two shards): recovery never touches the other's journal."""
    root = tmp_path / "ds"
    first = DatasetWriter.open(root)
    job = job_for("0002000000000001")
    first.journal_task(job.job_id, "gw", "t-1")
    tmp = first.tmp_path(".part")
    tmp.write_bytes(b"downloading")
    second = DatasetWriter.open(root)
    report = second.recover()
    assert report.writers_alive == 1 and report.writers_recovered == 0
    assert tmp.exists() and segments(first.journal.folder)
    assert read_lines(first.journal.folder / "tasks.jsonl")[0][0]["task"] == "t-1"
    second.close()
    first.close()


KILLED_WHILE_PROBING = textwrap.dedent("""
    import os, signal, sys
    from wanbatch.dataset import DatasetWriter
    ds = DatasetWriter.open(sys.argv[1])
    # what a SIGKILL between the open's probe write and its unlink leaves: the probe, where it is written
    probes = [p for p in ds.layout.writer_tmp(ds.writer).iterdir()]
    (ds.layout.writer_tmp(ds.writer) / "probe-0badc0de").write_bytes(b"wanbatch")
    print(len(probes), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_kill_during_the_open_probe_leaves_nothing_recovery_does_not_sweep(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    DatasetWriter.open(root).close()
    legacy = root / ".tmp" / "probe-0bad0001"  # an older version probed in .tmp/ itself
    legacy.write_bytes(b"wanbatch")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    young = root / ".tmp" / "probe-0bad0002"  # an older version's opener may be between write and unlink
    young.write_bytes(b"wanbatch")
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_PROBING, str(root)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "0"  # the open's own probe was already unlinked
    with DatasetWriter.open(root) as ds:
        ds.recover()
        left = sorted(p.relative_to(root / ".tmp").as_posix() for p in (root / ".tmp").rglob("*"))
        assert left == [ds.writer, "probe-0bad0002"]
    assert not legacy.exists() and young.exists()
