"""Only wanbatch's own folders are datasets, and recovery removes only what wanbatch provably made.

A folder is a dataset when it holds wanbatch's manifest; a folder of someone's hidden files, or one
that merely has an ``index/``, is not, and nothing is written or deleted in it. Inside a dataset,
recovery sweeps dead writers' temp folders and files named by wanbatch's own temp patterns; a user's
stray files in the same places are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import wanbatch
from wanbatch.dataset import DatasetView, DatasetWriter
from wanbatch.dataset.fsutil import temp_name
from wanbatch.dataset.parts import TMP_SUFFIX, part_name
from wanbatch.errors import NotADatasetError

SPEC = """\
name: safety
provider: mock
prompt: "a {thing}"
vars: {thing: [lamp, chair]}
seeds: [1, 2]
sizes: [1K]
output: OUT
"""


def run_into(tmp_path: Path, out: Path) -> wanbatch.RunResult:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("OUT", str(out)), encoding="utf-8")
    return wanbatch.run(wanbatch.load_spec(spec))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", [
    {".tmp/notes.txt": b"mine", ".config": b"x=1"},  # hidden entries only
    {"index/part-0.parquet": b"not wanbatch's", "journal/readme": b"hi"},  # an index/ without manifest
])
def test_a_folder_without_the_manifest_is_not_a_dataset_and_is_left_untouched(
    layout: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "theirs"
    for rel, data in layout.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    before = snapshot(out)
    result = run_into(tmp_path, out)
    assert result.exit_code == 2 and isinstance(result.error, NotADatasetError), result.error
    assert "not a wanbatch dataset" in str(result.error)
    with pytest.raises(NotADatasetError):
        DatasetView.open(out)
    assert snapshot(out) == before and sorted(os.listdir(out)) == sorted({r.split("/")[0] for r in layout})


def test_a_crash_before_the_manifest_landed_leaves_a_folder_that_can_still_become_the_dataset(
    tmp_path: Path
) -> None:
    out = tmp_path / "new"
    out.mkdir()
    (out / ".lock").write_bytes(b"")
    temp_name(out / "wanbatch.json", "w").write_bytes(b'{"half')
    result = run_into(tmp_path, out)
    assert result.exit_code == 0 and result.stats.done_images == 4


def test_recovery_removes_wanbatchs_debris_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert run_into(tmp_path, out).exit_code == 0
    dead = "1f2e3d4c5b6a"  # a writer id nobody holds
    ours = [
        out / ".tmp" / dead / "0-abcd1234.part",
        out / "index" / f".{part_name('w', dead)[:-len('.parquet')]}{TMP_SUFFIX}",
        temp_name(out / "runs" / "20261201T000000Z-abcdef.json", "w"),
        temp_name(out / "wanbatch.json", "w"),
    ]
    theirs = [
        out / ".tmp" / "notes.txt",
        out / ".tmp" / "my-folder" / "keep.txt",
        out / "index" / ".mydata.tmp",
        out / "runs" / ".draft.tmp",
        out / ".backup.tmp",
    ]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    with DatasetWriter.open(out, create=False) as writer:
        report = writer.recover()
    assert [p for p in ours if p.exists()] == []
    assert [p for p in theirs if not p.exists()] == []
    assert report.temp_files_removed >= 3 and report.partial_parts_removed == 1
    assert run_into(tmp_path, out).stats.skipped_images == 4  # the dataset itself is intact
