"""The dataset writer and readers: rows round-trip, errors are clear, tasks and manifest persist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wanbatch.dataset import (
    INDEX_SCHEMA,
    DatasetWriter,
    failed_row,
    ok_row,
    open_index,
    read_index,
    status,
)
from wanbatch.dataset.layout import FORMAT_VERSION
from wanbatch.errors import DatasetError
from wanbatch.types import Job, StoredImage

pytestmark = pytest.mark.timeout(60)


def make_job(i: int, n: int = 2) -> Job:
    return Job(
        job_id=f"{i:016x}", model="wan2.7-image-pro", prompt=f"a bakery at dawn #{i}", size="2K",
        seed=i, n=n, params={"watermark": False, "thinking_mode": True}, template="{subject} #{i}",
        vars={"subject": "a bakery at dawn", "i": str(i)}, pipeline="bakeries",
    )


def store_image(ds: DatasetWriter, job: Job, slot: int, data: bytes = b"\x89PNG fake") -> StoredImage:
    tmp = ds.tmp_path(".part")
    tmp.write_bytes(data)
    rel = ds.place(tmp, f"{job.job_id}-{slot}", "png")
    return StoredImage(path=rel, format="png", width=2048, height=2048, bytes=len(data), sha256="0" * 64)


def test_append_flush_reopen_reads_the_same_rows(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    written = []
    with DatasetWriter.open(root) as ds:
        for i in range(3):
            job = make_job(i)
            written.append(ok_row(job, 0, store_image(ds, job, 0), provider="mock", run_id="r1",
                                  revised_prompt="better", task_id="t1", attempts=2, latency_ms=1234))
            written.append(failed_row(job, 1, kind="moderation", message="refused by the gateway",
                                      provider="mock", run_id="r1"))
        ds.append(written)
        ds.flush()
        assert len(list((root / "index").glob("*.parquet"))) == 1
        assert next((root / "journal" / ds.writer).glob("rows-*.jsonl")).stat().st_size == 0

    table = read_index(root)
    assert table.schema.equals(INDEX_SCHEMA)
    back = {r["image_id"]: r for r in table.to_pylist()}
    assert set(back) == {r["image_id"] for r in written}
    for row in written:
        got = back[row["image_id"]]
        for key, value in row.items():
            if key == "vars":
                assert dict(got[key]) == value
            elif key == "created_at":
                assert abs(got[key] - value) < timedelta(milliseconds=1)
            else:
                assert got[key] == value, key
    assert json.loads(back[written[0]["image_id"]]["params"]) == {"thinking_mode": True, "watermark": False}
    assert (root / "wanbatch.json").is_file()
    assert not (root / "journal").exists() or not any((root / "journal").iterdir())


def test_rows_left_in_the_journal_are_indexed_by_the_next_open(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = DatasetWriter.open(root)
    job = make_job(7)
    ds.append([ok_row(job, 0, store_image(ds, job, 0), provider="mock", run_id="r1")])
    abandon(ds)  # as if killed: no flush, lock released by the kernel

    with DatasetWriter.open(root) as again:
        report = again.recover()
        assert report.rows_recovered == 1 and report.writers_recovered == 1
        assert again.triage().done == {f"{job.job_id}-0"}
        assert again.recover().rows_recovered == 0  # idempotent
    assert read_index(root, dedupe=False).num_rows == 1


def abandon(ds: DatasetWriter) -> None:
    """Drop a writer the way a crash does: buffered rows lost, journal and temp files left behind."""
    ds.journal.close()
    os.close(ds.journal.lock_fd)
    ds._closed = True  # keep the test's own object from flushing later


def test_done_and_failed_ids(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetWriter.open(root) as ds:
        a, b, c = make_job(1), make_job(2), make_job(3)
        old = datetime.now(UTC) - timedelta(hours=1)
        rows = [
            ok_row(a, 0, store_image(ds, a, 0), provider="p", run_id="r"),
            failed_row(a, 0, kind="timeout", message="late", provider="p", run_id="r"),  # ok beats it
            ok_row(a, 1, store_image(ds, a, 1), provider="p", run_id="r"),
            failed_row(b, 0, kind="moderation", message="x", provider="p", run_id="r") | {"created_at": old},
            failed_row(b, 0, kind="rate_limited", message="x", provider="p", run_id="r"),  # latest wins
            failed_row(c, 1, kind="bad_image", message="x", provider="p", run_id="r"),
        ]
        ds.append(rows[:3])
        ds.flush()
        ds.append(rows[3:])  # still buffered: must count too
        (root / "images" / a.job_id[:2] / f"{a.job_id}-1.png").unlink()  # a file lost by the user
        assert ds.triage().done == {f"{a.job_id}-0"}
        assert ds.triage().failed == {f"{b.job_id}-0": "rate_limited", f"{c.job_id}-1": "bad_image"}
        # an image on disk without a row is found for adoption
        orphan = store_image(ds, c, 0)
        assert ds.existing_image(f"{c.job_id}-0") == root / orphan.path
        assert ds.existing_image(f"{c.job_id}-1") is None
        assert ds.existing_image(f"{a.job_id}-1") is None
    dedup = {r["image_id"]: r for r in read_index(root).to_pylist()}
    assert dedup[f"{a.job_id}-0"]["status"] == "ok"
    assert dedup[f"{b.job_id}-0"]["error_kind"] == "rate_limited"
    assert read_index(root, dedupe=False).num_rows == 6


def test_pending_tasks_survive_and_clear(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = DatasetWriter.open(root)
    j1, j2, j3 = make_job(1, n=1), make_job(2, n=1), make_job(3, n=1)
    ds.journal_task(j1.job_id, "gw-a", "task-1")
    ds.journal_task(j2.job_id, "gw-a", "task-2")
    ds.journal_task(j3.job_id, "gw-b", "task-3")
    ds.append([failed_row(j2, 0, kind="task_failed", message="x", provider="gw-a", run_id="r")])
    ds.finish_task(j3.job_id)
    assert ds.pending_tasks() == {j1.job_id: ("gw-a", "task-1", "")}
    abandon(ds)

    with DatasetWriter.open(root) as again:
        report = again.recover()
        assert report.tasks_adopted == 2  # j1 and j2 (j2's row is recovered alongside)
        assert again.pending_tasks() == {j1.job_id: ("gw-a", "task-1", "")}
    # a clean close with a pending task keeps it for the next run
    with DatasetWriter.open(root) as third:
        third.recover()
        assert third.pending_tasks() == {j1.job_id: ("gw-a", "task-1", "")}
        third.finish_task(j1.job_id)
    with DatasetWriter.open(root) as fourth:
        fourth.recover()
        assert fourth.pending_tasks() == {}
    assert status(root).pending_tasks == 0


def test_bad_rows_are_refused_before_anything_is_journaled(tmp_path: Path) -> None:
    with DatasetWriter.open(tmp_path / "ds") as ds:
        good = failed_row(make_job(1), 0, kind="x", message="y", provider="p", run_id="r")
        with pytest.raises(DatasetError, match="unknown index column"):
            ds.append([good, {**good, "colour": "red"}])
        with pytest.raises(DatasetError, match="status"):
            ds.append([{**good, "status": "maybe"}])
        with pytest.raises(DatasetError, match="path"):
            ds.append([{**good, "status": "ok"}])
        assert ds.journal.folder.joinpath(f"rows-{ds.journal.seq:08d}.jsonl").stat().st_size == 0
        assert not ds.should_flush() and ds._buffer == []
        with pytest.raises(DatasetError, match="image id"):
            ds.place(ds.tmp_path(), "../../etc/passwd", "png")
        with pytest.raises(DatasetError, match="extension"):
            ds.image_path("abcdef-0", "p/g")


def test_a_bad_row_that_reaches_flush_does_not_damage_the_index(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetWriter.open(root) as ds:
        good = failed_row(make_job(1), 0, kind="x", message="y", provider="p", run_id="r")
        ds.append([good])
        ds.flush()
        ds.append([{**failed_row(make_job(2), 0, kind="x", message="y", provider="p", run_id="r"),
                    "seed": "NaN?"}])
        with pytest.raises(DatasetError, match="does not fit the index schema"):
            ds.flush()
        assert read_index(root, dedupe=False).num_rows == 1
        ds._buffer.clear()  # drop the poisoned row so close() succeeds


def test_open_refuses_what_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and is not a wanbatch dataset"):
        DatasetWriter.open(tmp_path / "notes")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        DatasetWriter.open(tmp_path / "afile")
    with pytest.raises(DatasetError, match="not a wanbatch dataset"):
        DatasetWriter.open(tmp_path / "missing", create=False)
    with pytest.raises(DatasetError, match="Unrecognized filesystem"):
        DatasetWriter.open("ftp://host/ds")  # s3:// errors are tested against a real server in test_s3.py
    with pytest.raises(DatasetError, match="not a wanbatch dataset"):
        read_index(tmp_path / "notes")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "wanbatch.json").write_text("{oops")
    with pytest.raises(DatasetError, match="not valid JSON"):
        DatasetWriter.open(tmp_path / "bad")


READONLY_CHILD = textwrap.dedent("""
    import sys
    from wanbatch.dataset import DatasetWriter
    from wanbatch.errors import DatasetError
    try:
        DatasetWriter.open(sys.argv[1])
    except DatasetError as exc:
        print("DatasetError:", exc)
    else:
        print("opened")
""")


def test_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o500)
        try:
            with pytest.raises(DatasetError, match="permission denied"):
                DatasetWriter.open(target / "ds")
        finally:
            target.chmod(0o700)
        return
    # root ignores permission bits: make a real read-only mount in a private mount namespace
    unshare = shutil.which("unshare")
    if unshare is not None:
        script = tmp_path / "child.py"
        script.write_text(READONLY_CHILD)
        cmd = [unshare, "-m", "sh", "-c",
               'mount --bind -o ro "$0" "$0" && exec "$1" "$2" "$0/ds"', str(target), sys.executable,
               str(script)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            assert done.stdout.startswith("DatasetError:"), done.stdout + done.stderr
            assert "read-only" in done.stdout and "choose an output folder" in done.stdout
            assert "Traceback" not in done.stdout + done.stderr
            return
    with pytest.raises(DatasetError, match="cannot create the dataset"):  # sysfs refuses mkdir
        DatasetWriter.open("/sys/kernel/wanbatch-ds")


ENOSPC_CHILD = textwrap.dedent("""
    import json, os, sys
    from wanbatch.dataset import DatasetWriter, failed_row, read_index
    from wanbatch.errors import DatasetError
    from wanbatch.types import Job
    root = sys.argv[1]
    out = {}
    job = lambda i: Job(job_id=f"{i:016x}", model="m", prompt="p" * 200, size="2K", seed=i, n=1, params={})
    rows = lambda a, b: [failed_row(job(i), 0, kind="x", message="m" * 100, provider="p", run_id="r")
                         for i in range(a, b)]
    ds = DatasetWriter.open(root + "/ds")
    ds.append(rows(0, 100)); ds.flush()
    ds.append(rows(100, 150))  # journaled, not yet indexed
    filler = open(root + "/filler", "wb")
    try:
        while True:
            filler.write(b"\\0" * 65536); filler.flush()
    except OSError:
        pass
    for name, call in (("append", lambda: ds.append(rows(150, 5000))), ("flush", ds.flush)):
        try:
            call(); out[name] = "ok"
        except DatasetError as exc:
            out[name] = str(exc)
    out["indexed_while_full"] = read_index(root + "/ds", dedupe=False).num_rows
    filler.close(); os.unlink(root + "/filler")
    from wanbatch.dataset.journal import read_lines, segments
    lines = [read_lines(p) for _, p in segments(ds.journal.folder)]
    out["journal_rows"], out["torn"] = sum(len(r) for r, _ in lines), sum(t for _, t in lines)
    ds.flush()
    out["indexed_after"] = read_index(root + "/ds", dedupe=False).num_rows
    ds.close()
    print(json.dumps(out))
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs a private tmpfs")
def test_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    target = tmp_path / "small"
    target.mkdir()
    script = tmp_path / "child.py"
    script.write_text(ENOSPC_CHILD)
    cmd = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=3m tmpfs "$0" && exec "$1" "$2" "$0"',
           str(target), sys.executable, str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "disk is full" in out["append"] and "free some space" in out["append"]
    assert "disk is full" in out["flush"]
    assert out["indexed_while_full"] == 100  # the first part is untouched
    assert (out["journal_rows"], out["torn"]) == (50, 0)  # the refused append left no torn line
    assert out["indexed_after"] == 150  # rows appended before the failed flush are not lost


def test_manifest_and_run_summaries(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    spec = {"name": "flower-shops", "model": "wan2.7-image-pro",
            "provider": {"base_url": "https://gw", "api_key_env": "WAN_API_KEY", "api_key": "sk-secret"}}
    with DatasetWriter.open(root) as ds:
        path = ds.write_run_summary("run-1", {"done": 3, "errors": {"timeout": 1}})
        ds.update_manifest(spec, {"run_id": "run-1", "started_at": 1.0, "finished_at": 2.0, "status": "done"})
        ds.update_manifest(spec, {"run_id": "run-2", "started_at": 3.0, "finished_at": 4.0,
                                  "status": "aborted"})
        ds.update_manifest(spec, {"run_id": "run-2", "started_at": 3.0, "finished_at": 5.0, "status": "done"})
        with pytest.raises(DatasetError, match="run id"):
            ds.write_run_summary("../escape", {})
    assert json.loads(path.read_text()) == {"done": 3, "errors": {"timeout": 1}}
    assert path == root / "runs" / "run-1.json"
    manifest = json.loads((root / "wanbatch.json").read_text())
    assert manifest["name"] == "flower-shops" and manifest["format_version"] == FORMAT_VERSION == 2
    assert [r["run_id"] for r in manifest["runs"]] == ["run-1", "run-2"]
    assert manifest["runs"][1]["finished_at"] == 5.0
    assert manifest["spec"]["provider"]["api_key_env"] == "WAN_API_KEY"
    assert "sk-secret" not in (root / "wanbatch.json").read_text()
    report = status(root)
    assert [r["run_id"] for r in report.runs] == ["run-1", "run-2"]


def test_duckdb_polars_pandas_read_the_index_as_is(tmp_path: Path) -> None:
    import duckdb
    import pandas as pd
    import polars as pl

    root = tmp_path / "ds"
    with DatasetWriter.open(root) as ds:
        for chunk in range(3):
            jobs = [make_job(chunk * 10 + i) for i in range(4)]
            ds.append([ok_row(j, 0, store_image(ds, j, 0), provider="p", run_id="r") for j in jobs])
            ds.flush()
    glob = str(root / "index" / "*.parquet")
    con = duckdb.connect()
    count, ok, sized = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE status = 'ok'), count(DISTINCT size) FROM '{glob}'"
    ).fetchone()
    assert (count, ok, sized) == (12, 12, 1)
    subject = con.execute(f"SELECT vars['subject'] FROM '{glob}' LIMIT 1").fetchone()[0]
    assert subject in ("a bakery at dawn", ["a bakery at dawn"])  # duckdb map access form differs by version
    frame = pl.read_parquet(glob)
    assert frame.height == 12 and frame["created_at"].dtype == pl.Datetime("ms", "UTC")
    pdf = pd.concat(pd.read_parquet(p) for p in sorted((root / "index").glob("*.parquet")))
    assert len(pdf) == 12 and set(pdf["status"]) == {"ok"}
    assert open_index(root).count_rows() == 12


def test_should_flush_and_status(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetWriter.open(root) as ds:
        assert not ds.should_flush()
        job = make_job(1, n=1)
        ds.append([failed_row(job, 0, kind="timeout", message="x", provider="p", run_id="r")])
        assert not ds.should_flush()
        ds._last_flush = time.monotonic() - 11  # the clock is the only input here
        assert ds.should_flush()
        ds.flush()
        assert not ds.should_flush()
        ds.append([ok_row(job, 0, store_image(ds, job, 0, b"12345"), provider="p", run_id="r")])
    report = status(root).to_dict()
    assert report["images_ok"] == 1 and report["images_failed"] == 0
    assert report["parts"] == 2 and report["rows"] == 2 and report["duplicate_rows"] == 1
    assert report["image_bytes"] == 5 and report["index_bytes"] > 0


def test_triage_on_a_synthetic_200k_index(tmp_path: Path) -> None:
    """Timing only (see the report); asserts the answer, not the clock."""
    root = tmp_path / "ds"
    DatasetWriter.open(root).close()
    n, on_disk = 200_000, 2_000
    ids = [f"{(i * 2654435761) % (1 << 64):016x}-0" for i in range(n)]
    paths = [f"images/{i[:2]}/{i}.png" for i in ids]
    now = datetime.now(UTC)
    table = pa.table({
        "image_id": ids, "job_id": [i[:16] for i in ids], "status": ["ok"] * n, "path": paths,
        "created_at": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
    })
    table = pa.Table.from_arrays(
        [table[c] if c in table.column_names else pa.nulls(n, f.type) for c, f in
         zip(INDEX_SCHEMA.names, INDEX_SCHEMA, strict=True)], schema=INDEX_SCHEMA)
    for k in range(4):
        pq.write_table(table.slice(k * n // 4, n // 4), root / "index" / f"part-{k}.parquet")
    for prefix in {i[:2] for i in ids[:on_disk]}:
        os.mkdir(root / "images" / prefix)
    base = f"{root}/"
    for p in paths[:on_disk]:
        os.close(os.open(base + p, os.O_CREAT | os.O_WRONLY))
    with DatasetWriter.open(root) as ds:
        started = time.perf_counter()
        done = ds.triage().done
        elapsed = time.perf_counter() - started
    print(f"\ntriage over {n} rows / {on_disk} files: {elapsed:.3f}s")
    assert done == set(ids[:on_disk])


def test_task_journal_shrinks_without_losing_pending_tasks(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ds = DatasetWriter.open(root)
    for i in range(300):
        ds.journal_task(f"job{i:04d}", "gw", f"task-{i}")
    for i in range(299):
        ds.finish_task(f"job{i:04d}")
    ds.flush()
    lines = (ds.journal.folder / "tasks.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["task"] == "task-299"
    ds.journal_task("job-late", "gw", "task-late")  # appended to the rewritten file
    abandon(ds)
    with DatasetWriter.open(root) as again:
        assert again.recover().tasks_adopted == 2
        assert again.pending_tasks() == {"job0299": ("gw", "task-299", ""),
                                         "job-late": ("gw", "task-late", "")}
