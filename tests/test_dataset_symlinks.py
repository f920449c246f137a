"""A dataset whose own folders are symlinks is refused before anything is written or deleted:
recovery once deleted a symlinked ``.tmp``'s target files, and a symlinked ``images/xx`` received
images outside the dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wanbatch.dataset import DatasetWriter
from wanbatch.errors import DatasetError


@pytest.mark.parametrize("inside", [".tmp", "journal", "index", "images", "images/ab", ".tmp/deadwriter"])
def test_symlinked_structure_is_refused_and_the_target_untouched(inside: str, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with DatasetWriter.open(root):
        pass
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.tmp").write_text("mine")
    (victim / ".hidden.tmp").write_text("mine too")
    link = root / inside
    if link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(victim, target_is_directory=True)
    with pytest.raises(DatasetError, match="symlink"):
        DatasetWriter.open(root)
    assert sorted(p.name for p in victim.iterdir()) == [".hidden.tmp", "precious.tmp"]
    assert link.is_symlink()
