"""A fourth export format, added from this one module: registered, then used like the built-ins.

Nothing in ``wanbatch/`` knows the name "captions"; ``export_dataset`` finds it in the registry,
applies its declared capabilities (images only, not sharded) and writes through it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from tests.helpers.synthetic import SyntheticDataset, make_dataset
from wanbatch.dataset.view import DatasetView
from wanbatch.errors import UsageError
from wanbatch.export import export_dataset, format_names
from wanbatch.export._common import Output, image_source
from wanbatch.export.registry import ExportFormat, register_format, unregister_format


def write_captions(view: DatasetView, table: pa.Table, out: Output, shard_rows: int | None) -> None:
    """``captions.csv`` (image file, prompt) beside a copy of each image: a BLIP-style caption set."""
    with out.path("captions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "caption"])
        for row in table.to_pylist():
            source = image_source(view, row)
            if source is None:
                out.missing.append(row["image_id"])
                continue
            name = f"{row['image_id']}.{row['format'] or 'png'}".lower()
            out.path(name).write_bytes(source.read_bytes() if isinstance(source, Path) else source)
            writer.writerow([name, row["prompt"]])
            out.rows += 1


@pytest.fixture
def captions() -> Iterator[None]:
    register_format(ExportFormat("captions", write_captions, "a caption CSV", sharded=False,
                                 images_only=True))
    yield
    unregister_format("captions")


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_dataset(tmp_path_factory.mktemp("ds") / "toy")


def test_a_registered_format_is_listed_and_written(
    captions: None, ds: SyntheticDataset, tmp_path: Path
) -> None:
    assert "captions" in format_names() and {"hf", "webdataset", "imagefolder"} <= set(format_names())
    report = export_dataset(ds.root, "captions", tmp_path / "out")
    with (tmp_path / "out" / "captions.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report.rows == len(ds.ok)
    assert {r["caption"] for r in rows} == {r["prompt"] for r in ds.ok}
    assert all((tmp_path / "out" / r["file_name"]).stat().st_size > 0 for r in rows)


def test_its_declared_limits_are_enforced(captions: None, ds: SyntheticDataset, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds images only"):
        export_dataset(ds.root, "captions", tmp_path / "a", include_failed=True)
    with pytest.raises(UsageError, match="not sharded"):
        export_dataset(ds.root, "captions", tmp_path / "b", shard_rows=2)


def test_an_unregistered_format_is_a_usage_error_naming_the_known_ones(
    ds: SyntheticDataset, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="choose one of: hf, imagefolder, webdataset") as info:
        export_dataset(ds.root, "captions", tmp_path / "c")
    assert info.value.exit_code == 2
