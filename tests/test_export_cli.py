"""``wanbatch export`` and ``wanbatch gallery`` drive this package end to end, errors included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers.synthetic import make_dataset
from wanbatch.cli import main

pytestmark = pytest.mark.timeout(60)


def test_cli_export_json_report_and_refusal(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", prompts=2, seeds=2, failed=1)
    runner = CliRunner()
    args = ["export", str(ds.root), "--format", "webdataset", "--to", str(tmp_path / "wds"), "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows"] == 3 and report["format"] == "webdataset"
    assert [Path(f).name for f in report["files"]] == ["shard-000000.tar"]

    again = runner.invoke(main, args[:-1])
    assert again.exit_code != 0
    assert "not empty" in again.output and "Traceback" not in again.output


def test_cli_gallery_writes_page(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", prompts=2, seeds=3, failed=0)
    result = CliRunner().invoke(main, ["gallery", str(ds.root), "--to", str(tmp_path / "g.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "g.html").read_text()
    assert 'data-rows="2" data-cols="3"' in html
