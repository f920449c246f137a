"""Every error carries its exit code, and the CLI exits with it: bad input 2, aborted 3."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.synthetic import make_dataset
from wanbatch import errors
from wanbatch.cli import main

pytestmark = pytest.mark.timeout(60)


def test_the_tree_carries_the_documented_codes() -> None:
    assert errors.UsageError.exit_code == errors.SpecError.exit_code == errors.SpecErrors.exit_code == 2
    assert errors.NotADatasetError.exit_code == 2 and issubclass(errors.NotADatasetError, errors.DatasetError)
    assert errors.DatasetError.exit_code == errors.GatewayError.exit_code == errors.FatalError.exit_code == 3
    assert errors.WanbatchError("x").exit_code == 3
    documented = errors.__doc__ or ""
    for name in ("UsageError", "SpecError", "DatasetError", "NotADatasetError", "GatewayError", "FatalError"):
        assert name in documented


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", prompts=2, seeds=2, failed=1).root


def test_bad_export_options_exit_2(dataset: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    code, output = invoke("export", str(dataset), "--format", "hf", "--to", str(busy))
    assert code == 2 and "not empty" in output
    assert (busy / "mine.txt").read_text() == "keep me"
    code, output = invoke("export", str(dataset), "--format", "imagefolder", "--to", str(tmp_path / "if"),
                          "--include-failed")
    assert code == 2 and "failed rows cannot be exported" in output
    code, output = invoke("export", str(dataset), "--format", "webdataset", "--to", str(tmp_path / "w"),
                          "--shard-rows", "0")
    assert code == 2 and "shard_rows" in output


def test_bad_gallery_options_exit_2(dataset: Path, tmp_path: Path) -> None:
    code, output = invoke("gallery", str(dataset), "--to", str(tmp_path / "g.html"), "--rows", "mood")
    assert code == 2 and "unknown gallery axis 'mood'" in output
    code, output = invoke("gallery", str(dataset), "--to", str(tmp_path / "g.html"), "--thumb", "5")
    assert code == 2 and "thumb must be" in output
    assert not (tmp_path / "g.html").exists()


@pytest.mark.parametrize("command", ["status", "compact", "export", "gallery"])
def test_a_path_that_is_not_a_dataset_exits_2(command: str, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    extra = {"export": ["--format", "hf", "--to", str(tmp_path / "x")],
             "gallery": ["--to", str(tmp_path / "g")]}
    code, output = invoke(command, str(tmp_path / "notes"), *extra.get(command, []))
    assert code == 2 and "not a wanbatch dataset" in output


def test_a_dataset_that_cannot_be_read_exits_3(dataset: Path, tmp_path: Path) -> None:
    part = next((dataset / "index").glob("*.parquet"))
    part.write_bytes(b"PAR1 this is not parquet PAR1")
    code, output = invoke("export", str(dataset), "--format", "hf", "--to", str(tmp_path / "x"))
    assert code == 3 and "index" in output
    assert not (tmp_path / "x").exists()


def test_a_file_uri_output_is_bad_input(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nprompt: a cat\nseeds: 1\n", encoding="utf-8")
    code, output = invoke("run", str(spec), "--no-progress", "--output", f"file://{tmp_path}/out")
    assert code == 2 and "file://" in output
