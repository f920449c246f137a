"""Resume: a rerun requests exactly what the dataset lacks, and leaves it whole when the disk says no.

Every test runs against a loopback mock gateway that counts what it billed and was asked, so "nothing
was requested" is the gateway's word, not the runner's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import wanbatch
from tests.helpers import cli_env
from tests.helpers.chaos import assert_consistent, mock_stats, settled_stats, sha256_of
from wanbatch.dataset import DatasetWriter, read_index, status
from wanbatch.dataset.journal import PaidLinks
from wanbatch.dataset.rows import failed_row
from wanbatch.errors import DatasetError
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.plan import plan
from wanbatch.runner import RunOptions, RunResult

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-resume-0b9c8d7e6f5a4132"
POSTS = "/v1/images/generations"
POLLS = "/v1/tasks/{task_id}"

SPEC = """\
name: resume
model: wan2.7-image-pro
provider: {provider}
prompt: "{{subject}}, watercolor"
vars:
  subject: [a flower shop, a bakery at dawn]
seeds: {seeds}
sizes: {sizes}
limits: {{concurrency: 4, retries: {retries}}}
output: {output}
"""


def provider_yaml(base: str, use_async: bool = False) -> str:
    if use_async:
        return (f"{{base_url: '{base}/v1', api_key_env: {KEY_ENV}, dialect: parameters, async: true, "
                f"poll_interval: 0.05}}")
    return f"{{base_url: '{base}/v1', api_key_env: {KEY_ENV}, dialect: flat}}"


def write(path: Path, base: str, output: Path, *, seeds: str = "{start: 0, count: 2}", sizes: str = "[1K]",
          retries: int = 2, use_async: bool = False) -> Path:
    path.write_text(SPEC.format(provider=provider_yaml(base, use_async), seeds=seeds, sizes=sizes,
                                retries=retries, output=output), encoding="utf-8")
    return path


def run(spec: Path, **options: Any) -> RunResult:
    return wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}, backoff_initial=0.01,
                                                             backoff_max=0.05, **options))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(**{KEY_ENV: KEY}))


def small(**config: Any) -> MockConfig:
    """64×64 images of ~2 KB: cheap to serve, store and hash."""
    config.setdefault("scale", 1 / 16)
    config.setdefault("image_kb", 2)
    return MockConfig(**config)


def asked(base: str) -> dict[str, int]:
    """What the gateway was asked, by route (its own stats route left out)."""
    return {k: v for k, v in mock_stats(base)["requests"].items() if not k.startswith("/_mock")}


def pending_now(root: Path) -> int:
    try:
        return status(root).pending_tasks
    except DatasetError:  # not created yet
        return 0


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------- what a rerun asks


def test_adding_seeds_then_sizes_requests_only_the_new_jobs(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with run_in_thread(small()) as base:
        spec = write(tmp_path / "s.yaml", base, out)
        assert run(spec).stats.done_images == 4
        assert mock_stats(base)["billed"] == 4

        write(spec, base, out, seeds="{start: 0, count: 3}")  # +1 seed × 2 prompts
        more = run(spec)
        assert (more.stats.skipped_images, more.stats.done_images) == (4, 2)
        assert mock_stats(base)["billed"] == 6

        write(spec, base, out, seeds="{start: 0, count: 3}", sizes="[1K, 1280*720]")  # +6 at a new size
        sized = run(spec)
        assert (sized.stats.skipped_images, sized.stats.done_images) == (6, 6)
        stats = mock_stats(base)
        assert stats["billed"] == 12 and set(stats["billed_by_key"].values()) == {1}
    assert len(assert_consistent(out)) == 12


def test_refused_slots_wait_for_retry_failed(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with run_in_thread(small(moderation_words=["bakery"])) as base:
        spec = write(tmp_path / "s.yaml", base, out)
        first = run(spec)
        assert (first.exit_code, first.stats.failed_images, first.stats.errors["moderation"]) == (1, 2, 2)
        posts = asked(base)[POSTS]
        assert posts == 4  # refusals are not retried within a run either

        plain = cli("run", str(spec), "--json")
        assert plain.returncode == 0, plain.stderr  # nothing to do is success
        assert json.loads(plain.stdout)["skipped_failed"] == 2
        assert asked(base)[POSTS] == posts

        again = cli("run", str(spec), "--json", "--retry-failed")
        assert again.returncode == 1, again.stderr  # asked again, refused again
        assert asked(base)[POSTS] == posts + 2
    rows = assert_consistent(out)
    assert len(rows) == 2


def test_slots_that_ran_out_of_retries_on_503_are_retried_by_a_plain_rerun(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with run_in_thread(small(fail_first={"503": 2})) as base:  # two 503s per job, then success
        spec = write(tmp_path / "s.yaml", base, out, retries=1)
        first = run(spec)
        assert first.exit_code == 1 and first.stats.failed_images == 4
        assert first.stats.errors["server_error"] == 4 and mock_stats(base)["billed"] == 0
        second = run(spec)
        assert second.exit_code == 0 and second.stats.done_images == 4
        assert mock_stats(base)["billed"] == 4
    rows = assert_consistent(out)
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) == 4


def test_images_whose_rows_were_lost_are_reindexed_without_a_request(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with run_in_thread(small()) as base:
        spec = write(tmp_path / "s.yaml", base, out, seeds="{start: 0, count: 3}")
        assert run(spec).exit_code == 0
        before = {i: r["sha256"] for i, r in assert_consistent(out).items()}
        before_rerun = asked(base)
        shutil.rmtree(out / "index")
        shutil.rmtree(out / "journal")
        again = run(spec)
        assert again.exit_code == 0 and again.stats.adopted_images == 6
        assert asked(base) == before_rerun  # not one generation, not one download
    after = assert_consistent(out)
    assert {i: r["sha256"] for i, r in after.items()} == before
    assert {r["attempts"] for r in after.values()} == {0}  # adopted, not generated


def test_temp_files_left_behind_are_cleaned_on_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with run_in_thread(small()) as base:
        spec = write(tmp_path / "s.yaml", base, out)
        assert run(spec).exit_code == 0
        debris = [
            out / ".tmp" / "deadbeef00000000" / "0-1a2b3c4d.part",  # a download of a writer now gone
            out / "index" / ".part-0000000000001-wdeadbeef-abcdef.parquet.tmp",  # a part half-written
            out / ".wanbatch.json.w-0badc0de.tmp",  # a manifest write cut short
        ]
        for path in debris:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG half")
        stray = out / ".tmp" / "stray.part"  # not named by wanbatch: not provably ours, so kept
        stray.write_bytes(b"someone's")
        assert run(spec).stats.submitted_images == 0
    assert [p for p in debris if p.exists()] == [] and stray.read_bytes() == b"someone's"
    stray.unlink()
    assert len(assert_consistent(out)) == 4


def test_status_lists_tasks_pending_after_a_kill_and_the_next_run_polls_them(tmp_path: Path) -> None:
    """Killed while polling 4 journaled tasks; one image had also been stored (its row not yet
    written). The next run adopts that image, polls the 3 other tasks, submits nothing and leaves no
    journal behind (a task answered by an adopted image is marked done)."""
    out = tmp_path / "ds"
    with run_in_thread(small(dialect="parameters", task_duration=0)) as ref_base:
        reference = run(write(tmp_path / "ref.yaml", ref_base, tmp_path / "ref", use_async=True))
        assert reference.exit_code == 0
    with run_in_thread(small(dialect="parameters", task_duration=1.5)) as base:
        spec = write(tmp_path / "s.yaml", base, out, use_async=True)
        proc = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--json"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=cli_env(**{KEY_ENV: KEY}))
        deadline = time.monotonic() + 30
        while pending_now(out) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)  # until every task id is journaled (the tasks take 1.5 s)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert asked(base)[POSTS] == 4

        status = cli("status", str(out), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pending_tasks"] == 4

        stored = sorted((tmp_path / "ref" / "images").rglob("*.png"))[0]  # as if downloaded before the kill
        (out / stored.relative_to(tmp_path / "ref")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(stored, out / stored.relative_to(tmp_path / "ref"))
        polls = asked(base)[POLLS]
        resumed = run(spec)
        assert resumed.exit_code == 0 and resumed.stats.done_images == 4
        assert (resumed.stats.adopted_images, resumed.stats.resumed_tasks) == (1, 3)
        stats = settled_stats(base)
        assert stats["requests"][POSTS] == 4 and stats["billed"] == 4  # polled, not paid again
        assert stats["requests"][POLLS] > polls
    assert json.loads(cli("status", str(out), "--json").stdout)["pending_tasks"] == 0
    assert len(assert_consistent(out)) == 4  # also: no journal left holding the adopted job's task


# ----------------------------------------------------------------------------------- the disk says no

NEEDS_MOUNTS = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private read-only bind mount or tmpfs",
)


def in_private_mount(mount: str, script: str, target: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) in a private mount namespace after ``mount`` on ``$T``; the loopback gateway
    in this process stays reachable (only mounts are private)."""
    done = subprocess.run(["unshare", "-m", "sh", "-c", f"set -u; {mount} && {script}"], capture_output=True,
                          text=True, timeout=90,
                          env=cli_env(**{KEY_ENV: KEY, "T": str(target), "PY": sys.executable}, **env))
    if done.returncode == 97:
        pytest.skip(f"cannot mount here: {done.stderr.strip()[-200:]}")
    return done


@NEEDS_MOUNTS
def test_read_only_output_is_a_clear_error_and_damages_nothing(tmp_path: Path) -> None:
    """Root ignores permission bits, so the honest read-only case is a read-only bind mount of the
    dataset itself (a private mount namespace: nothing outside the test sees it)."""
    out = tmp_path / "ds"
    with run_in_thread(small()) as base:
        spec = write(tmp_path / "s.yaml", base, out)
        assert run(spec).exit_code == 0
        before = snapshot(out)
        before_rerun = asked(base)
        write(spec, base, out, seeds="{start: 0, count: 4}")  # there is work to do
        done = in_private_mount('{ mount --bind -o ro "$T" "$T" || exit 97; }',
                                f'exec "$PY" -m wanbatch run {spec} --no-progress', out)
        assert asked(base) == before_rerun  # refused before any request
    assert done.returncode in (2, 3), done.stdout + done.stderr
    assert "read-only" in done.stderr and "choose an output folder" in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert snapshot(out) == before
    assert len(assert_consistent(out)) == 4


READ_COMMANDS_SCRIPT = textwrap.dedent("""\
    "$PY" -m wanbatch plan "$SPEC" --json > "$RES/plan.json"; echo "plan=$?"
    "$PY" -m wanbatch status "$T" --json > "$RES/status.json"; echo "status=$?"
    "$PY" -m wanbatch export "$T" --format imagefolder --to "$RES/export" --json > /dev/null; echo "export=$?"
    "$PY" -m wanbatch gallery "$T" --to "$RES/gallery.html" > /dev/null; echo "gallery=$?"
""")


@NEEDS_MOUNTS
def test_read_commands_work_on_a_read_only_dataset(tmp_path: Path) -> None:
    """plan, status, export and gallery only read: a read-only bind mount of the dataset is enough."""
    out, res = tmp_path / "ds", tmp_path / "res"
    res.mkdir()
    with run_in_thread(small()) as base:
        spec = write(tmp_path / "s.yaml", base, out)
        assert run(spec).exit_code == 0
        write(spec, base, out, seeds="{start: 0, count: 3}")  # one more seed: the plan has work to show
        before = snapshot(out)
        done = in_private_mount('{ mount --bind -o ro "$T" "$T" || exit 97; }', READ_COMMANDS_SCRIPT, out,
                                SPEC=str(spec), RES=str(res))
    codes = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert codes == {"plan": "0", "status": "0", "export": "0", "gallery": "0"}, done.stdout + done.stderr
    plan = json.loads((res / "plan.json").read_text())
    assert plan["existing"] == {"done": 4, "failed_skipped": 0, "in_doubt_skipped": 0}
    assert plan["todo_images"] == 2 and plan["paid_downloads"] is None
    assert json.loads((res / "status.json").read_text())["images_ok"] == 4
    assert len((res / "export" / "metadata.jsonl").read_text().splitlines()) == 4
    assert (res / "gallery.html").read_text().count("<img ") == 4
    assert snapshot(out) == before


DISK_FULL_SCRIPT = textwrap.dedent("""\
    "$PY" -m wanbatch run "$FIRST" --json > "$RES/first.json"; echo "first=$?"
    "$PY" -m wanbatch run "$BIG" --no-progress > /dev/null 2> "$RES/full.err"; echo "full=$?"
    "$PY" -c 'import sys; from wanbatch.dataset import read_index
    print("readable_ok=%d" % read_index(sys.argv[1]).column("status").to_pylist().count("ok"))' "$T/ds"
    mount -o remount,size=16m "$T"
    "$PY" -m wanbatch run "$BIG" --json > "$RES/after.json"; echo "after=$?"
    "$PY" -m wanbatch status "$T/ds" --json > "$RES/status.json"; echo "status=$?"
    cp -a "$T/ds" "$RES/copy"
""")


@NEEDS_MOUNTS
def test_full_disk_stops_the_run_with_a_clear_message_and_loses_nothing(tmp_path: Path) -> None:
    """A 2 MB tmpfs holds the dataset; ~100 KB images fill it mid-run. Then the tmpfs grows (as if
    space was freed) and a rerun finishes: nothing stored before the disk filled is lost."""
    mnt, res = tmp_path / "mnt", tmp_path / "res"
    mnt.mkdir()
    res.mkdir()
    with run_in_thread(MockConfig(scale=0.25, image_kb=100)) as base:
        first = write(tmp_path / "first.yaml", base, mnt / "ds")
        big = write(tmp_path / "big.yaml", base, mnt / "ds", seeds="{start: 0, count: 20}")
        done = in_private_mount('{ mount -t tmpfs -o size=2m tmpfs "$T" || exit 97; }', DISK_FULL_SCRIPT, mnt,
                                FIRST=str(first), BIG=str(big), RES=str(res))
        billed = mock_stats(base)["billed"]
    assert done.returncode == 0, done.stdout + done.stderr
    codes = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert codes["first"] == "0" and codes["after"] == "0", done.stdout + done.stderr
    assert codes["full"] in ("2", "3"), done.stdout
    full_err = (res / "full.err").read_text()
    assert "disk is full" in full_err or "No space left" in full_err, full_err
    assert "Traceback" not in full_err, full_err
    assert int(codes["readable_ok"]) >= 4  # the index stays readable while the disk is full
    summary = json.loads((res / "after.json").read_text())
    # Requests in flight when the disk filled were never answered to us: in doubt, left alone by the
    # rerun (limits.in_doubt: skip), so nothing is paid twice.
    doubt = summary["in_doubt_skipped"]
    assert summary["failed_images"] == 0
    assert summary["skipped_images"] + summary["done_images"] + doubt == 40
    ok = assert_consistent(res / "copy")
    assert len(ok) == 40 - doubt
    stored_while_filling = summary["skipped_images"] + summary["adopted_images"] - 4
    print(f"\n[disk full] billed={billed} for 40 images; stored by the run that hit the full disk: "
          f"{stored_while_filling}; in doubt: {doubt}")
    assert billed <= 40 + doubt  # the in-doubt slots were billed once and never asked again
    ledger = json.loads((res / "status.json").read_text())["ledger"]
    accounted = ledger["billed_images"] + ledger["in_doubt_images"]
    assert billed <= accounted <= billed + 4  # over by at most the 4 in flight


# A writer that dies after a request was answered (billed) and before the image's row was written: a
# full disk failing the download's temp file, or the run stopping mid-download. It settles one intent
# billed for a job whose slot never gets a row, and one for a job whose row it flushed into an index
# part (its journal segment dropped), then dies without closing.
DEAD_WRITER = textwrap.dedent("""\
    import hashlib, os, sys
    from PIL import Image
    import wanbatch
    from wanbatch.dataset import DatasetWriter
    from wanbatch.dataset.rows import ok_row
    from wanbatch.plan import plan
    from wanbatch.types import StoredImage
    done = set(sys.argv[3:])
    jobs = [j for j in plan(wanbatch.load_spec(sys.argv[2])).jobs() if j.job_id + "-0" not in done]
    lost, stored = jobs[0], jobs[1]
    writer = DatasetWriter.open(sys.argv[1])
    writer.begin_run("dead-run")
    for job in (lost, stored):
        writer.settle(writer.intend(job, [0], "127.0.0.1"), billed=1, in_doubt=0)
    tmp = writer.tmp_path(".png")
    Image.new("RGB", (64, 64), "teal").save(tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    rel = writer.place(tmp, stored.job_id + "-0", "png")
    image = StoredImage(rel, "png", 64, 64, os.path.getsize(writer.root / rel), digest)
    writer.append([ok_row(stored, 0, image, provider="127.0.0.1", run_id="dead-run")])
    writer.flush()  # the row is in an index part; the journal segment that held it is dropped
    print(lost.job_id, stored.job_id)
    os._exit(0)  # dies: no close, the journal (ledger included) stays for recovery
""")


def test_an_image_billed_and_never_stored_by_a_dead_writer_is_in_doubt_not_paid_again(tmp_path: Path) -> None:
    """The intent was settled billed, the image never got a row, a file or a kept link: recovery gives
    its slot an in_doubt row, so the rerun does not request it; a slot whose row reached the index
    before the writer died gets no in_doubt row."""
    out = tmp_path / "ds"
    with run_in_thread(small()) as base:
        assert run(write(tmp_path / "s.yaml", base, out)).exit_code == 0  # 4 of the 8 images below
        spec = write(tmp_path / "s.yaml", base, out, seeds="{start: 0, count: 4}")
        before = mock_stats(base)["billed"]
        done_ids = [r["image_id"] for r in assert_consistent(out).values()]
        dead = subprocess.run([sys.executable, "-c", DEAD_WRITER, str(out), str(spec), *done_ids],
                              capture_output=True, text=True, timeout=60, env=cli_env())
        assert dead.returncode == 0, dead.stderr
        lost, stored = dead.stdout.split()
        again = run(spec)
        billed = mock_stats(base)["billed"] - before
    assert again.exit_code == 0, again.notes
    assert billed == 2  # 8 planned: 4 done before, 1 stored by the dead writer, 1 in doubt
    assert again.summary.in_doubt_skipped == 1
    rows = read_index(out).to_pylist()
    kinds = {(r["image_id"], r["status"], r["error_kind"]) for r in rows}
    assert (f"{lost}-0", "failed", "in_doubt") in kinds
    assert {k for k in kinds if k[0] == f"{stored}-0"} == {(f"{stored}-0", "ok", None)}
    ledger = status(out).ledger
    assert ledger["billed_images"] == 4 + 2 + 2 and ledger["in_doubt_images"] == 0


def test_a_run_that_ends_with_billed_slots_unstored_records_them_in_doubt_or_keeps_its_journal(
        tmp_path: Path) -> None:
    """The run's own end (DatasetWriter.abandon_unstored): a slot billed with neither a row nor a kept
    link gets an in_doubt row; one with a row or a kept link gets none. A writer that could not write
    them keeps its journal on close, and the next writer's recovery writes the same row."""
    out = tmp_path / "ds"
    spec = wanbatch.load_spec(write(tmp_path / "s.yaml", "http://127.0.0.1:9", out,
                                    seeds="{start: 0, count: 2}"))
    lost, failed, linked, later = list(plan(spec).jobs())
    with DatasetWriter.open(out) as writer:
        writer.begin_run("r1")
        for job in (lost, failed, linked):
            writer.settle(writer.intend(job, [0], "gw"), billed=1, in_doubt=0)
        writer.append([failed_row(failed, 0, kind="download", message="cut", provider="gw", run_id="r1")])
        kept = PaidLinks("gw", "http://gw", {0: "http://img/0.png"}, time.time())
        writer.journal_links(linked.job_id, kept)
        assert writer.abandon_unstored(run_id="r1") == 1
        assert writer.abandon_unstored(run_id="r1") == 0  # recorded once
    kinds = {(r["image_id"], r["error_kind"]) for r in read_index(out).to_pylist()}
    assert kinds == {(f"{lost.job_id}-0", "in_doubt"), (f"{failed.job_id}-0", "download")}

    writer = DatasetWriter.open(out)  # this one never records it (as if the disk were still full)
    writer.begin_run("r2")
    writer.settle(writer.intend(later, [0], "gw"), billed=1, in_doubt=0)
    writer.close()
    assert (out / "journal" / writer.writer).is_dir()  # kept for recovery
    with DatasetWriter.open(out) as again:
        assert again.recover().images_unstored == 1
    rows = [r for r in read_index(out).to_pylist() if r["image_id"] == f"{later.job_id}-0"]
    assert [(r["status"], r["error_kind"], r["run_id"]) for r in rows] == [("failed", "in_doubt", "r2")]
