"""Datasets on object storage: runs against moto's S3 server on loopback, read back through pyarrow.

The bucket is reached exactly as in production: ``pyarrow.fs.FileSystem.from_uri`` with the endpoint
from ``AWS_ENDPOINT_URL`` and dummy credentials from the standard AWS variables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

import wanbatch
from tests.helpers import cli_env
from wanbatch.dataset import DatasetWriter, read_index
from wanbatch.errors import DatasetError
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.runner import RunOptions

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-test-s3-5d4c3b2a1"
SPEC = """
    name: s3-run
    provider: {{base_url: '{base}/v1', api_key_env: {key_env}, dialect: flat}}
    prompt: "{{subject}}, {{style}}"
    vars:
      subject: [a flower shop with a wooden door, a bakery at dawn]
      style: [watercolor, photorealistic]
    seeds: {{start: 0, count: 3}}
    sizes: [1K]
    limits: {{concurrency: {concurrency}, retries: 2, in_doubt: retry}}
    output: {output}
"""  # in_doubt: retry — a resume after kill -9 requests what was in flight (maybe billed) again
IMAGES = 12

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 and the AWS variables that point pyarrow at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def bucket(s3_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test (named after it)."""
    name = "wb-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:12]
    fs, _ = pafs.FileSystem.from_uri(f"s3://{name}?allow_bucket_creation=true")
    fs.create_dir(name)
    return name


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Point WANBATCH_STAGING at a new folder: a new folder is another machine."""

    def use(name: str) -> Path:
        folder = tmp_path / f"staging-{name}"
        monkeypatch.setenv("WANBATCH_STAGING", str(folder))
        return folder

    return use


@pytest.fixture
def gateway() -> Iterator[Callable[..., str]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield lambda **config: stack.enter_context(run_in_thread(MockConfig(**config)))  # type: ignore[arg-type]


def billed(base: str) -> int:
    return int(httpx.get(f"{base}/_mock/stats").json()["billed"])


def settled_billing(base: str) -> int:
    """Billed images once the requests cut off by a kill have finished at the gateway (they bill)."""
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/_mock/stats").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return billed(base)


def s3() -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri("s3://any")
    return fs


def objects(prefix: str) -> dict[str, int]:
    infos = s3().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return {i.path[len(prefix) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}


def assert_complete(bucket_name: str) -> list[dict]:
    """Every ok row's object is in the bucket with its sha256, no duplicates, no orphan objects."""
    prefix = f"{bucket_name}/ds"
    fs = s3()
    raw = pads.dataset(f"{prefix}/index", filesystem=fs, format="parquet").to_table().to_pylist()
    ok = [r for r in raw if r["status"] == "ok"]
    assert len(ok) == IMAGES and len({r["image_id"] for r in ok}) == IMAGES, "duplicate or missing rows"
    for row in ok:
        with fs.open_input_stream(f"{prefix}/{row['path']}") as fh:
            data = fh.read()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
    images = {k for k in objects(prefix) if k.startswith("images/")}
    assert images == {r["path"] for r in ok}, "objects in the bucket that no row claims (or the reverse)"
    return ok


def write_spec(tmp_path: Path, base: str, output: str, concurrency: int = 4) -> Path:
    import textwrap

    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(SPEC.format(base=base, key_env=KEY_ENV, concurrency=concurrency,
                                                output=output)).lstrip(), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- tests


def test_run_to_s3_then_another_machine_requests_nothing(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path
) -> None:
    base = gateway(latency=0.0)
    uri = f"s3://{bucket}/ds"
    spec = wanbatch.load_spec(write_spec(tmp_path, base, uri))
    first_stage = staging("one")
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert result.exit_code == 0 and result.error is None, result.summary
    assert result.stats.done_images == IMAGES and result.root == uri and result.summary.output == uri
    ok = assert_complete(bucket)
    keys = objects(f"{bucket}/ds")
    assert "wanbatch.json" in keys and f"runs/{result.run_id}.json" in keys
    assert open_manifest(bucket)["runs"][-1]["run_id"] == result.run_id
    # the readers go through pyarrow's S3 file system
    assert wanbatch.open_index(uri).count_rows() == IMAGES
    assert sorted(read_index(uri, ["image_id"])["image_id"].to_pylist()) == sorted(r["image_id"] for r in ok)
    # disk stays flat: uploaded images whose rows are in the bucket are not kept in the staging
    staged = [p for p in first_stage.rglob("images/*/*") if p.is_file()]
    assert staged == []

    assert billed(base) == IMAGES
    staging("two")  # a fresh staging: another machine
    again = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert again.exit_code == 0, again.summary
    assert again.stats.skipped_images == IMAGES and again.stats.submitted_images == 0
    assert billed(base) == IMAGES
    assert_complete(bucket)
    assert len(open_manifest(bucket)["runs"]) == 2


def open_manifest(bucket_name: str) -> dict:
    with s3().open_input_stream(f"{bucket_name}/ds/wanbatch.json") as fh:
        return json.loads(fh.read())


def test_a_format_1_dataset_in_the_bucket_is_migrated_from_every_part_by_a_new_machine(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path
) -> None:
    """A run lists the bucket's index once, under its lease; but a manifest the writer migrates when it
    opens (format 1: run entries without a ledger) needs the parts in the staging before that: the
    ledger migrated in a fresh staging counts the old run's ok rows."""
    base = gateway(latency=0.0)
    spec = wanbatch.load_spec(write_spec(tmp_path, base, f"s3://{bucket}/ds"))
    staging("one")
    first = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert first.exit_code == 0, first.summary
    old = open_manifest(bucket)
    old["format_version"] = 1
    for entry in old["runs"]:
        del entry["ledger"]
    with s3().open_output_stream(f"{bucket}/ds/wanbatch.json") as fh:
        fh.write(json.dumps(old).encode())
    with s3().open_output_stream(f"{bucket}/ds/runs/{first.run_id}.json") as fh:
        fh.write(b"{}")  # a summary without billed_images: the ok rows are the ledger
    staging("two")  # a run's writer opens without listing the index; this one migrates: it lists
    with DatasetWriter.open(f"s3://{bucket}/ds", create=False, listing=False) as writer:
        migrated = json.loads(writer.layout.manifest.read_text())
        assert len(writer.layout.parts()) >= 1
    assert migrated["format_version"] == 2
    (entry,) = [r for r in migrated["runs"] if r["run_id"] == first.run_id]
    assert entry["ledger"]["billed_images"] == IMAGES and entry["ledger"]["migrated_from_format"] == 1
    staging("three")
    again = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert again.exit_code == 0 and again.stats.submitted_images == 0, again.summary
    assert billed(base) == IMAGES


def test_sigkill_mid_run_then_resume_is_complete_without_duplicates(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path,
    s3_env: dict[str, str],
) -> None:
    base = gateway(latency=0.15)
    uri = f"s3://{bucket}/ds"
    spec = write_spec(tmp_path, base, uri, concurrency=2)
    folder = staging("killed")
    env = cli_env(**s3_env, **{KEY_ENV: KEY, "WANBATCH_STAGING": str(folder)})
    proc = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--json", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 40
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(k.startswith("images/") for k in objects(f"{bucket}/ds")) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    uploaded = {k for k in objects(f"{bucket}/ds") if k.startswith("images/")}
    assert 3 <= len(uploaded) < IMAGES
    paid = settled_billing(base)

    resumed = subprocess.run([sys.executable, "-m", "wanbatch", "run", str(spec), "--json", "--no-progress"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    ok = assert_complete(bucket)
    assert uploaded <= {r["path"] for r in ok}
    # what was in the bucket (or staged) before the kill is never requested again
    assert billed(base) - paid == summary["submitted_images"] <= IMAGES - len(uploaded)
    assert billed(base) <= IMAGES + 2  # at most the requests in flight at the kill are paid twice


def test_compaction_of_a_remote_dataset_replaces_the_parts(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path
) -> None:
    base = gateway(latency=0.0)
    uri = f"s3://{bucket}/ds"
    spec = wanbatch.load_spec(write_spec(tmp_path, base, uri))
    staging("a")
    for shard in ((0, 2), (1, 2)):  # two runs, two parts
        assert wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}, shard=shard)).exit_code == 0
    before = sorted(k for k in objects(f"{bucket}/ds") if k.startswith("index/"))
    assert len(before) == 2
    staging("b")  # compact from another machine: it hydrates the parts first
    with DatasetWriter.open(uri, create=False) as dataset:
        report = dataset.compact()
    after = sorted(k for k in objects(f"{bucket}/ds") if k.startswith("index/"))
    assert report.parts_before == 2 and len(after) == 1 and not set(after) & set(before)
    assert_complete(bucket)


def test_bad_remote_outputs_are_clear_errors(
    bucket: str, staging: Callable[[str], Path], tmp_path: Path
) -> None:
    staging("errors")
    fs = s3()
    with fs.open_output_stream(f"{bucket}/notes/todo.txt") as fh:
        fh.write(b"mine")
    with pytest.raises(DatasetError, match="not a wanbatch dataset"):
        DatasetWriter.open(f"s3://{bucket}/notes")
    with pytest.raises(DatasetError, match="no wanbatch dataset there"):
        DatasetWriter.open(f"s3://{bucket}/missing", create=False)
    with pytest.raises(DatasetError, match="not a wanbatch dataset"):
        read_index(f"s3://{bucket}/missing")
    with pytest.raises(DatasetError, match=f"s3://no-such-bucket-{bucket}/ds"):
        DatasetWriter.open(f"s3://no-such-bucket-{bucket}/ds")
    assert list((tmp_path / "staging-errors").glob("*/index/*")) == []


def test_an_object_without_a_row_is_adopted_not_requested(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path
) -> None:
    """Killed between the upload and the journal on one machine; resumed on another."""
    import io

    from PIL import Image

    from wanbatch.plan import plan

    base = gateway(latency=0.0)
    uri = f"s3://{bucket}/ds"
    spec = wanbatch.load_spec(write_spec(tmp_path, base, uri))
    job = next(iter(plan(spec).jobs()))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(buffer, format="PNG")
    with s3().open_output_stream(f"{bucket}/ds/images/{job.job_id[:2]}/{job.job_id}-0.png") as fh:
        fh.write(buffer.getvalue())
    with s3().open_output_stream(f"{bucket}/ds/wanbatch.json") as fh:
        fh.write(b'{"format_version": 1, "name": "s3-run", "runs": []}')
    staging("fresh")
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert result.exit_code == 0 and result.stats.adopted_images == 1, result.summary
    assert billed(base) == IMAGES - 1
    ok = {r["image_id"]: r for r in assert_complete(bucket)}
    adopted = ok[f"{job.job_id}-0"]
    assert (adopted["width"], adopted["height"]) == (64, 48)
    assert adopted["sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()


def test_status_of_a_remote_dataset(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path
) -> None:
    from wanbatch.dataset import status

    base = gateway(latency=0.0, moderation_words=["bakery"])
    uri = f"s3://{bucket}/ds"
    spec = wanbatch.load_spec(write_spec(tmp_path, base, uri))
    staging("status")
    assert wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY})).exit_code == 1
    report = status(uri)
    assert (report.images_ok, report.images_failed) == (IMAGES // 2, IMAGES // 2)
    assert report.name == "s3-run" and len(report.runs) == 1 and report.parts == 1


def test_read_commands_on_s3_read_the_bucket(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path
) -> None:
    """plan, status, export and gallery accept s3:// and read through pyarrow.fs (no staging)."""
    base = gateway(latency=0.0)
    uri = f"s3://{bucket}/ds"
    spec_path = write_spec(tmp_path, base, uri)
    staging("writer")
    assert wanbatch.run(wanbatch.load_spec(spec_path), RunOptions(env={KEY_ENV: KEY})).exit_code == 0
    readers = tmp_path / "staging-readers"  # the readers' machine: its staging must stay unused

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                              timeout=60, check=False, env=cli_env(WANBATCH_STAGING=str(readers)))

    plan = cli("plan", str(spec_path), "--json")
    assert plan.returncode == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert report["output"] == uri and report["existing"]["done"] == IMAGES and report["todo_images"] == 0
    status = cli("status", uri, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["images_ok"] == IMAGES and json.loads(status.stdout)["root"] == uri
    export = cli("export", uri, "--format", "webdataset", "--to", str(tmp_path / "wds"), "--json")
    assert export.returncode == 0, export.stderr
    exported = json.loads(export.stdout)
    assert exported["rows"] == IMAGES and exported["missing"] == []
    gallery = cli("gallery", uri, "--to", str(tmp_path / "g.html"))
    assert gallery.returncode == 0, gallery.stderr
    page = (tmp_path / "g.html").read_text()
    assert page.count("<img ") == IMAGES and "image file missing" not in page and uri in page
    assert not readers.exists()
    missing = cli("status", f"s3://{bucket}/nothing-here")
    assert missing.returncode == 2 and "not a wanbatch dataset" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_edit_dataset_on_s3_exports_and_shows_its_inputs(bucket: str, tmp_path: Path) -> None:
    """Stored inputs are read from the bucket too: the hf export's source_image and the gallery's
    input thumbnails."""
    import pyarrow.parquet as pq

    from tests.helpers.synthetic import make_edit_dataset
    from wanbatch.export import export_dataset
    from wanbatch.gallery import build_gallery

    local = make_edit_dataset(tmp_path / "local", url=False, sequential=False, failed=False)
    pafs.copy_files(str(local.root), f"{bucket}/ds", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3())
    uri = f"s3://{bucket}/ds"
    report = export_dataset(uri, "hf", tmp_path / "hf")
    rows = pq.read_table(report.files[0]).to_pylist()
    assert len(rows) == len(local.ok) == 7
    for row in rows:
        for i, item in enumerate(row["inputs"]):
            image = row["source_image" if i == 0 else f"source_image_{i + 1}"]
            assert hashlib.sha256(image["bytes"]).hexdigest() == item["sha256"]
    build_gallery(uri, tmp_path / "g.html", thumb=48)
    assert len(list((tmp_path / "g_thumbs").glob("input-*.webp"))) == len(local.inputs) == 3


def test_a_run_with_inputs_stores_them_in_the_bucket(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path
) -> None:
    """The writer's store_input goes through the Mirror like an image: a run on another machine finds
    each input in the bucket by its sha256 (DatasetView.input_path over pyarrow's S3)."""
    from PIL import Image

    from wanbatch.dataset.view import DatasetView

    base = gateway(latency=0.0, scale=0.125)
    Image.new("RGB", (320, 256), (10, 200, 30)).save(tmp_path / "a.png")
    sha = hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    uri = f"s3://{bucket}/edits"
    (tmp_path / "spec.yaml").write_text(
        f"provider: {{base_url: '{base}', api_key_env: {KEY_ENV}, dialect: dashscope}}\n"
        f"images: {{photo: a.png}}\ninputs: [photo]\nprompt: \"make image 1 {{m}}\"\n"
        f"vars: {{m: [red, blue]}}\nsizes: [1K]\noutput: {uri}\n")
    staging("one")
    result = wanbatch.run(wanbatch.load_spec(tmp_path / "spec.yaml"), RunOptions(env={KEY_ENV: KEY}))
    assert result.exit_code == 0, result.summary
    stored = {k for k in objects(f"{bucket}/edits") if k.startswith("inputs/")}
    assert stored == {f"inputs/{sha[:2]}/{sha}.png"}
    view = DatasetView.open(uri)
    rel = view.input_path(sha)
    assert rel is not None and view.read_bytes(rel) == (tmp_path / "a.png").read_bytes()
    assert {r["inputs"][0]["sha256"] for r in view.read_index(["inputs"]).to_pylist()} == {sha}


def test_two_runs_on_one_prefix_from_two_stagings_pay_each_image_once(
    bucket: str, staging: Callable[[str], Path], gateway: Callable[..., str], tmp_path: Path,
    s3_env: dict[str, str],
) -> None:
    """The lease lives in the bucket (``leases/``): a second machine (another staging folder) stops
    naming the first, or waits for it with ``wait`` and then requests nothing."""
    base = gateway(latency=1.0)
    uri = f"s3://{bucket}/ds"
    spec = write_spec(tmp_path, base, uri, concurrency=2)  # 12 images, ~6 s
    env = cli_env(**s3_env, **{KEY_ENV: KEY, "WANBATCH_STAGING": str(tmp_path / "staging-first")})
    first = subprocess.Popen([sys.executable, "-m", "wanbatch", "run", str(spec), "--json", "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/_mock/stats").json()["requests"].get("/v1/images/generations", 0) < 1:
            assert time.monotonic() < deadline and first.poll() is None, "the first run never started"
            time.sleep(0.05)
        assert any(k.startswith("leases/") for k in objects(f"{bucket}/ds"))
        staging("second")
        loaded = wanbatch.load_spec(spec)
        second = wanbatch.run(loaded, RunOptions(env={KEY_ENV: KEY}))
        assert first.poll() is None, "the first run ended before the second could overlap it"
        assert second.exit_code == 3 and second.stats.submitted_images == 0
        assert f"pid {first.pid}" in str(second.error), second.error
        staging("third")
        notes: list[str] = []
        third = wanbatch.run(loaded, RunOptions(env={KEY_ENV: KEY}, wait=True, on_note=notes.append))
        assert any(n.startswith("waiting for run") for n in notes), notes
        assert third.exit_code == 0 and third.stats.submitted_images == 0, third.summary
    finally:
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert json.loads(stdout)["run_id"] in str(second.error)
    assert billed(base) == IMAGES
    assert_complete(bucket)  # no duplicate rows
    assert not any(k.startswith("leases/") for k in objects(f"{bucket}/ds"))
