"""Exports, checked by their real consumers: ``datasets``, ``webdataset``, pyarrow."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers.synthetic import SyntheticDataset, make_dataset
from wanbatch.errors import WanbatchError
from wanbatch.export import ExportReport, export_dataset

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_dataset(tmp_path_factory.mktemp("ds") / "flower-shops")


def _load(kind: str, cache: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    import datasets

    return datasets.load_dataset(kind, split="train", cache_dir=str(cache), **kwargs)


def test_hf_export_loads_with_image_feature(ds: SyntheticDataset, tmp_path: Path) -> None:
    import datasets

    report = export_dataset(ds.root, "hf", tmp_path / "hf", shard_rows=4)
    assert isinstance(report, ExportReport) and report.rows == len(ds.ok) == 10
    shards = sorted(p.name for p in (tmp_path / "hf" / "data").iterdir())
    assert shards == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
                      "train-00002-of-00003.parquet"]
    assert report.bytes == sum(f.stat().st_size for f in report.files) > 0
    assert json.loads(json.dumps(report.to_dict()))["rows"] == 10

    files = sorted(str(p) for p in (tmp_path / "hf" / "data").iterdir())
    data = _load("parquet", tmp_path / "cache", data_files=files)
    assert isinstance(data.features["image"], datasets.Image)
    assert len(data) == 10 and set(data["status"]) == {"ok"}
    first = data[0]
    assert first["image"].size == ds.size  # decoded by datasets, real pixels
    assert first["style"] == "watercolor"  # one column per var
    assert first["image_id"] in {r["image_id"] for r in ds.ok}
    # Every index column travels with the image.
    assert set(pq.read_schema(report.files[0]).names) >= {"image", "seed", "prompt", "sha256", "created_at"}


def test_hf_include_failed_keeps_failures_without_image(ds: SyntheticDataset, tmp_path: Path) -> None:
    export_dataset(ds.root, "hf", tmp_path / "hf", include_failed=True)
    table = pq.read_table(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == 12
    failed = [r for r in table.to_pylist() if r["status"] == "failed"]
    assert {r["error_kind"] for r in failed} == {"moderation", "missing_image"}
    assert all(r["image"] is None for r in failed)


def test_imagefolder_export_loads_with_prompt(ds: SyntheticDataset, tmp_path: Path) -> None:
    report = export_dataset(ds.root, "imagefolder", tmp_path / "folder")
    assert report.rows == 10
    lines = [json.loads(x) for x in (tmp_path / "folder" / "metadata.jsonl").read_text().splitlines()]
    assert all((tmp_path / "folder" / x["file_name"]).is_file() for x in lines)
    assert all(x["file_name"].startswith("images/") for x in lines)

    data = _load("imagefolder", tmp_path / "cache", data_dir=str(tmp_path / "folder"))
    assert len(data) == 10
    assert sorted(data["prompt"]) == sorted(r["prompt"] for r in ds.ok)
    assert data[0]["image"].size == ds.size
    assert {"seed", "size", "image_id", "vars"} <= set(data.column_names)


def test_webdataset_export_iterates_every_sample(ds: SyntheticDataset, tmp_path: Path) -> None:
    import webdataset as wds

    report = export_dataset(ds.root, "webdataset", tmp_path / "wds", include_failed=True, shard_rows=5)
    tars = sorted(str(p) for p in (tmp_path / "wds").glob("shard-*.tar"))
    assert [Path(t).name for t in tars] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert report.rows == 12

    samples = list(wds.WebDataset(tars, shardshuffle=False))
    by_key = {s["__key__"]: s for s in samples}
    assert set(by_key) == {r["image_id"] for r in ds.rows}
    for row in ds.rows:
        sample = by_key[row["image_id"]]
        meta = json.loads(sample["json"])
        assert meta["image_id"] == row["image_id"] and meta["seed"] == row["seed"]
        assert meta["vars"] == dict(row["vars"])
        if row["status"] == "ok":
            assert Image.open(io.BytesIO(sample["png"])).size == ds.size
        else:
            assert "png" not in sample and meta["error_kind"] == row["error_kind"]


def test_webdataset_shards_are_reproducible(ds: SyntheticDataset, tmp_path: Path) -> None:
    export_dataset(ds.root, "webdataset", tmp_path / "a")
    export_dataset(ds.root, "webdataset", tmp_path / "b")
    a, b = (tmp_path / "a" / "shard-000000.tar"), (tmp_path / "b" / "shard-000000.tar")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        assert all("." not in Path(n).name.rsplit(".", 1)[0] for n in tar.getnames())


def test_refuses_non_empty_destination_and_overwrites_previous_export(
    ds: SyntheticDataset, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(WanbatchError, match="not empty"):
        export_dataset(ds.root, "hf", dest)
    with pytest.raises(WanbatchError, match="does not hold a wanbatch export"):
        export_dataset(ds.root, "hf", dest, overwrite=True)
    assert (dest / "notes.txt").read_text() == "mine"

    export_dataset(ds.root, "webdataset", tmp_path / "prev", shard_rows=2)
    assert len(list((tmp_path / "prev").glob("*.tar"))) == 5
    export_dataset(ds.root, "webdataset", tmp_path / "prev", overwrite=True)
    assert [p.name for p in (tmp_path / "prev").glob("*.tar")] == ["shard-000000.tar"]
    assert not list(tmp_path.glob(".prev.partial-*"))


def test_clear_errors_for_bad_input(ds: SyntheticDataset, tmp_path: Path) -> None:
    with pytest.raises(WanbatchError, match="no such dataset folder"):
        export_dataset(tmp_path / "nowhere", "hf", tmp_path / "x")
    with pytest.raises(WanbatchError, match="unknown export format"):
        export_dataset(ds.root, "zip", tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(WanbatchError, match="failed rows cannot be exported"):
        export_dataset(ds.root, "imagefolder", tmp_path / "x", include_failed=True)
    with pytest.raises(WanbatchError, match="shard_rows must be"):
        export_dataset(ds.root, "hf", tmp_path / "x", shard_rows=0)
    all_failed = make_dataset(tmp_path / "failed", prompts=1, seeds=2, failed=2)
    with pytest.raises(WanbatchError, match="no ok images"):
        export_dataset(all_failed.root, "hf", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_missing_image_files_are_reported_not_exported(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", prompts=1, seeds=3, failed=0)
    gone = ds.ok[0]
    (ds.root / gone["path"]).unlink()
    report = export_dataset(ds.root, "imagefolder", tmp_path / "folder")
    assert report.rows == 2 and report.missing == (gone["image_id"],)
    assert gone["image_id"] not in (tmp_path / "folder" / "metadata.jsonl").read_text()


def test_duplicate_index_rows_keep_the_ok_one(tmp_path: Path) -> None:
    """A resumed run writes an ok row after a failed one for the same image_id: export the ok one."""
    import pyarrow as pa

    from wanbatch.dataset.schema import INDEX_SCHEMA

    ds = make_dataset(tmp_path / "ds", prompts=1, seeds=2, failed=0)
    retried = {**ds.ok[0], "status": "failed", "error_kind": "transient", "path": None}
    retried["created_at"] = ds.ok[0]["created_at"].replace(year=2025)
    later = pa.Table.from_pylist([retried], schema=INDEX_SCHEMA)
    pq.write_table(later, ds.root / "index" / "part-00001.parquet")
    report = export_dataset(ds.root, "hf", tmp_path / "hf", include_failed=True)
    table = pq.read_table(report.files[0])
    assert report.rows == 2 and set(table.column("status").to_pylist()) == {"ok"}


def test_hf_export_streams_in_bounded_row_groups(tmp_path: Path) -> None:
    """Images are read and written a batch at a time: the Parquet shows it as bounded row groups."""
    from wanbatch.export._common import BATCH_ROWS

    ds = make_dataset(tmp_path / "ds", prompts=18, seeds=4, size=(24, 16), failed=0)
    report = export_dataset(ds.root, "hf", tmp_path / "hf")
    meta = pq.ParquetFile(report.files[0]).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(groups) == 72 and len(groups) >= 2 and max(groups) <= BATCH_ROWS
