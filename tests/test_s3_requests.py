"""How many requests a run makes of object storage, counted by a logging moto S3 on loopback:
the bucket's images are never listed by a run (only once by a machine new to the dataset), the index
prefix once, and a small image is one PUT (not a 3-request multipart upload)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.fs as pafs
import pytest

import wanbatch
from tests.helpers.s3 import RequestLog, counting_s3
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.runner import RunOptions

KEY_ENV = "WANBATCH_S3_COUNT_KEY"
KEY = "sk-s3-count-8d1f0c2b7a"
IMAGES = 12


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[RequestLog]:
    with counting_s3() as (env, log):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        fs, _ = pafs.FileSystem.from_uri("s3://counted?allow_bucket_creation=true")
        fs.create_dir("counted")
        yield log


def counted_spec(tmp_path: Path, base: str, output: str, **fields: object) -> wanbatch.Spec:
    """IMAGES one-image jobs against the mock gateway at ``base``, stored in ``output`` (an s3:// URI),
    with ``fields`` as more top-level spec fields."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(textwrap.dedent(f"""
        provider: {{base_url: '{base}/v1', api_key_env: {KEY_ENV}, dialect: flat}}
        prompt: "a {{thing}}"
        vars: {{thing: [{", ".join(f"t{i}" for i in range(IMAGES))}]}}
        sizes: [1K]
        output: {output}
    """).lstrip() + "".join(f"{name}: {value}\n" for name, value in fields.items()), encoding="utf-8")
    return wanbatch.load_spec(spec_path)


def test_a_run_never_lists_images_and_puts_each_image_once(
    s3: RequestLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_in_thread(MockConfig(api_key=KEY, latency=0.0, image_kb=2)) as base:
        spec = counted_spec(tmp_path, base, "s3://counted/ds")

        def run(staging: str) -> wanbatch.RunResult:
            monkeypatch.setenv("WANBATCH_STAGING", str(tmp_path / staging))
            s3.clear()
            result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
            assert result.exit_code == 0, result.summary
            return result

        first = run("machine-a")
        assert first.summary.done_images == IMAGES
        assert s3.count("LIST", "ds/images") == 0
        assert s3.count("PUT", "ds/images/") == IMAGES  # one PUT per image ...
        assert s3.count("MULTIPART") == 0  # ... and no multipart upload of any small object
        # the manifest's and the prefix's existence, the lease (×3), index/ once
        assert s3.count("LIST") <= 7, [(r.kind, r.prefix) for r in s3.of(["LIST"])]
        assert s3.count("LIST", "ds/index") == 1

        again = run("machine-a")  # the same machine resumes: everything is done
        assert again.summary.skipped_images == IMAGES and again.summary.submitted_images == 0
        # index/ once, after the run holds its lease (a listing taken when it opened the bucket could
        # miss the parts of a run that held the slice meanwhile); its triage reads that listing
        assert s3.count("LIST", "ds/images") == 0 and s3.count("LIST", "ds/index") == 1
        assert s3.count("PUT", "ds/images/") == 0 and s3.count("GET", "ds/images/") == 0

        other = run("machine-b")  # a machine new to the dataset lists its images once ...
        assert other.summary.submitted_images == 0
        assert s3.count("LIST", "ds/images") == 1 and s3.count("LIST", "ds/index") == 1
        run("machine-b")  # ... and never again
        assert s3.count("LIST", "ds/images") == 0 and s3.count("LIST", "ds/index") == 1
        assert httpx.get(f"{base}/_mock/stats").json()["billed"] == IMAGES


def test_ray_runs_final_task_compacts_an_s3_dataset_and_finds_every_attempt(
    s3: RequestLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `ray-run`'s last task does (here without Ray): recover and compact an s3:// output once,
    then read back every attempt of the ray-run by the tag in its run ids (summaries and ledgers)."""
    from wanbatch.distribute.ray_runner import _finish

    monkeypatch.setenv("WANBATCH_STAGING", str(tmp_path / "staging"))
    with run_in_thread(MockConfig(api_key=KEY, latency=0.0, image_kb=2)) as base:
        spec = counted_spec(tmp_path, base, "s3://counted/units", price_per_image=0.5)
        for unit in range(2):
            result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}, shard=(unit, 2),
                                                   run_label=f"rrtest-u{unit}"))
            assert result.exit_code == 0 and result.run_id.endswith(f"-rrtest-u{unit}")
    finished = _finish("s3://counted/units", "rrtest")
    assert finished["compaction_error"] is None and finished["compaction"]["rows_after"] == IMAGES
    fs, _ = pafs.FileSystem.from_uri("s3://counted/units")
    parts = fs.get_file_info(pafs.FileSelector("counted/units/index"))
    assert len(parts) == finished["compaction"]["parts_after"] == 1
    attempts = finished["attempts"]
    assert sorted(a["unit"] for a in attempts) == [0, 1]
    assert sum(a["ledger"]["billed_images"] for a in attempts) == IMAGES
    assert all(a["summary"] is not None for a in attempts)
