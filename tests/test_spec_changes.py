"""Specs change: plan counts what the spec no longer plans, export/gallery --spec leave it out, prune
removes it, never touching what another spec in the same folder still plans."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import wanbatch
from tests.helpers import cli_env
from wanbatch.errors import UsageError
from wanbatch.export import export_dataset
from wanbatch.gallery import build_gallery
from wanbatch.runner import RunOptions

SPEC = """
    name: {name}
    provider: {{type: mock, latency: 0}}
    prompt: "{template}"
    vars:
      thing: [fox, lamp]
    sizes: [1K]
    output: {output}
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=60, env=cli_env(), cwd=cwd, check=False)


def files(out: Path) -> set[str]:
    return {p.name for p in (out / "images").rglob("*.png")}


def test_an_edited_spec_plan_export_gallery_and_prune(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = write_spec(SPEC.format(name="a", template="a {thing}", output=out), "a.yaml")
    b = write_spec(SPEC.format(name="b", template="a {thing} at night", output=out), "b.yaml")
    for spec in (a, b):
        assert wanbatch.run(wanbatch.load_spec(spec), RunOptions()).exit_code == 0
    old = files(out)
    a.write_text(a.read_text().replace('"a {thing}"', '"a small {thing}"'))  # edit the template

    report = json.loads(cli("plan", str(a), "--json", cwd=tmp_path).stdout)
    assert (report["not_in_spec"], report["todo_images"], report["output_state"]) == (4, 2, "dataset")
    assert wanbatch.run(wanbatch.load_spec(a), RunOptions()).exit_code == 0  # 6 images now

    exported = export_dataset(out, "imagefolder", tmp_path / "x", only=planned(a))
    prompts = [json.loads(line)["prompt"] for line in (tmp_path / "x" / "metadata.jsonl").open()]
    assert exported.rows == 2 and sorted(prompts) == ["a small fox", "a small lamp"]
    page = build_gallery(out, tmp_path / "g.html", only=planned(a)).read_text()
    assert "a small fox" in page and "a fox at night" not in page

    dry = cli("prune", str(a), "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["images"] == 2 and files(out) >= old  # a dry run deletes nothing
    b.rename(tmp_path / "b-moved.yaml")  # a spec that ran here is gone: prune cannot know what it needs
    refused = cli("prune", str(a), "--yes", cwd=tmp_path)
    assert refused.returncode == 2 and "b.yaml" in refused.stderr and "--forget" in refused.stderr
    (tmp_path / "b-moved.yaml").rename(b)
    done = cli("prune", str(a), "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "removed 2 image(s)" in done.stdout
    rows = pq.read_table(out / "index").to_pylist()
    assert sorted(r["prompt"] for r in rows) == [
        "a fox at night", "a lamp at night", "a small fox", "a small lamp"]
    assert len(files(out)) == 4 and {r["path"].rsplit("/", 1)[1] for r in rows} == files(out)


def test_prune_refuses_when_runs_predate_spec_records(
        write_spec: Callable[..., Path], tmp_path: Path) -> None:
    from wanbatch.prune import prune

    out = tmp_path / "out"
    spec_path = write_spec(SPEC.format(name="a", template="a {thing}", output=out))
    assert wanbatch.run(wanbatch.load_spec(spec_path), RunOptions()).exit_code == 0
    manifest = json.loads((out / "wanbatch.json").read_text())
    for run in manifest["runs"]:
        run.pop("spec")  # as a dataset of an earlier release has it
    (out / "wanbatch.json").write_text(json.dumps(manifest))
    text = SPEC.format(name="a", template="an {thing}", output=out)
    edited = wanbatch.load_spec(write_spec(text, "b.yaml"))
    assert prune(edited).images == 2  # a dry run still says what would go
    with pytest.raises(UsageError, match="--forget unrecorded"):
        prune(edited, yes=True)
    assert prune(edited, yes=True, forget=["unrecorded"]).deleted
    assert not list((out / "images").rglob("*.png"))


def planned(spec: Path) -> dict[str, int]:
    return wanbatch.plan(wanbatch.load_spec(spec)).image_ids()


def test_plan_says_when_the_output_is_new(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(SPEC.format(name="n", template="a {thing}", output="rel/out"))
    proc = cli("plan", str(spec), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path / 'rel' / 'out'} does not exist yet: a run starts from nothing" in proc.stdout
