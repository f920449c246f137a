"""Exports of an edit dataset (rows with ``inputs``), read back by their real consumers."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers.synthetic import URL_INPUT, SyntheticEditDataset, make_dataset, make_edit_dataset
from wanbatch.dataset.view import DatasetView
from wanbatch.export import ImageOptions, export_dataset
from wanbatch.export._common import input_rel

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SyntheticEditDataset:
    return make_edit_dataset(tmp_path_factory.mktemp("edit") / "edit-pairs")


def test_stored_inputs_are_found_by_hash_and_nothing_else(ds: SyntheticEditDataset) -> None:
    view = DatasetView.open(ds.root)
    for sha in ds.inputs:
        rel = input_rel(view, sha)
        assert rel is not None and rel.startswith(f"inputs/{sha[:2]}/{sha}.")
        assert hashlib.sha256((ds.root / rel).read_bytes()).hexdigest() == sha
    url_sha = hashlib.sha256(URL_INPUT.encode()).hexdigest()
    assert input_rel(view, url_sha) is None  # a URL input is never stored
    assert input_rel(view, "../../etc/passwd") is None and input_rel(view, "AB" * 32) is None


def test_hf_edit_export_loads_source_and_result_images(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    import datasets

    report = export_dataset(ds.root, "hf", tmp_path / "hf")
    files = [str(f) for f in report.files if f.suffix == ".parquet"]
    data = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "cache"))
    for column in ("image", "source_image", "source_image_2"):
        assert isinstance(data.features[column], datasets.Image), column
    assert len(data) == len(ds.ok) == 10
    raw = {r["image_id"]: r for r in pq.read_table(files).to_pylist()}  # the bytes datasets decodes
    by_id = {r["image_id"]: r for r in ds.ok}
    sources = 0
    for row in data:
        want, stored = by_id[row["image_id"]], raw[row["image_id"]]
        assert row["instruction"] == want["prompt"]
        assert row["image"].size == ds.size  # the result, decoded as PIL
        assert hashlib.sha256(stored["image"]["bytes"]).hexdigest() == want["sha256"]
        for i, item in enumerate(want["inputs"]):
            column = "source_image" if i == 0 else f"source_image_{i + 1}"
            if item["source"] == URL_INPUT:
                assert row[column] is None and row["source_url"] == URL_INPUT
                continue
            assert row[column].size == (80, 60)  # the source, decoded as PIL
            assert hashlib.sha256(stored[column]["bytes"]).hexdigest() == item["sha256"]
            sources += 1
        if len(want["inputs"]) < 2:
            assert row["source_image_2"] is None
    assert sources == 10  # 5 one-source edits + a set of 3 from one source + the fusion's 2
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "`source_image`, `source_image_2`" in card and "`instruction`" in card


def test_hf_edit_export_reencodes_inputs_with_the_result(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    report = export_dataset(ds.root, "hf", tmp_path / "hf", images=ImageOptions(max_side=40, fmt="jpeg"))
    table = pq.read_table(report.files[0])
    sources = [v for v in table.column("source_image").to_pylist() if v]
    assert sources and all(v["path"].endswith(".jpg") for v in sources)
    assert {Image.open(io.BytesIO(v["bytes"])).size for v in sources} == {(40, 30)}


def test_text_to_image_export_has_no_edit_columns(tmp_path: Path) -> None:
    plain = make_dataset(tmp_path / "plain", prompts=1, seeds=2, failed=0)
    report = export_dataset(plain.root, "hf", tmp_path / "hf")
    names = pq.read_schema(report.files[0]).names
    assert names[0] == "image" and not [n for n in names if n.startswith("source_") or n == "instruction"]


def test_webdataset_carries_the_inputs(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    import webdataset as wds

    report = export_dataset(ds.root, "webdataset", tmp_path / "wds")
    samples = {s["__key__"]: s for s in wds.WebDataset([str(f) for f in report.files], shardshuffle=False)}
    assert set(samples) == {r["image_id"] for r in ds.ok}
    stored = 0
    for row in ds.ok:
        sample = samples[row["image_id"]]
        meta = json.loads(sample["json"])
        assert [(i["sha256"], i["source"]) for i in meta["inputs"]] == [
            (i["sha256"], i["source"]) for i in row["inputs"]]
        for i, item in enumerate(meta["inputs"]):
            if item["source"] == URL_INPUT:
                assert item["file"] is None and not [k for k in sample if k.startswith("input_")]
                continue
            ext = item["file"].rsplit(".", 1)[-1]
            assert item["file"] == f"{row['image_id']}.input_{i}.{ext}"
            assert hashlib.sha256(sample[f"input_{i}.{ext}"]).hexdigest() == item["sha256"]
            stored += 1
        assert Image.open(io.BytesIO(sample["png"])).size == ds.size
    assert stored == 10


def test_imagefolder_names_the_copied_inputs(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    import datasets

    export_dataset(ds.root, "imagefolder", tmp_path / "folder")
    lines = [json.loads(x) for x in (tmp_path / "folder" / "metadata.jsonl").read_text().splitlines()]
    copied = sorted(p.relative_to(tmp_path / "folder").as_posix()
                    for p in (tmp_path / "folder" / "inputs").rglob("*.*"))
    assert len(copied) == len(ds.inputs) == 3  # each input once, however many edits use it
    for line in lines:
        for i, item in enumerate(line["inputs"]):
            key = ("source_image" if i == 0 else f"source_image_{i + 1}") + "_file_name"
            if item["source"] == URL_INPUT:
                assert key not in line and line["source_url"] == URL_INPUT
            else:
                rel = line[key]
                assert rel in copied
                assert hashlib.sha256((tmp_path / "folder" / rel).read_bytes()).hexdigest() == item["sha256"]

    data = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "folder"), split="train",
                                 cache_dir=str(tmp_path / "cache"))
    assert isinstance(data.features["source_image"], datasets.Image) and len(data) == len(ds.ok)
    fusion = next(r for r in data if r["instruction"].startswith("put the sun"))
    assert fusion["image"].size == ds.size
    assert fusion["source_image"].size == fusion["source_image_2"].size == (80, 60)


def test_failed_edits_keep_their_sources_and_a_symlinked_input_is_not_read(tmp_path: Path) -> None:
    ds = make_edit_dataset(tmp_path / "ds", bases=2, multi=False, url=False, sequential=False)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (80, 60), "red").save(outside)
    view = DatasetView.open(ds.root)
    second = ds.rows[-1]["inputs"][0]["sha256"]  # the second base: its input becomes a symlink
    stored = ds.root / str(input_rel(view, second))
    stored.unlink()
    stored.symlink_to(outside)
    report = export_dataset(ds.root, "hf", tmp_path / "hf", include_failed=True)
    rows = {r["image_id"]: r for r in pq.read_table(report.files[0]).to_pylist()}
    failed = rows[ds.rows[0]["image_id"]]
    assert failed["status"] == "failed" and failed["image"] is None
    assert hashlib.sha256(failed["source_image"]["bytes"]).hexdigest() == ds.rows[0]["inputs"][0]["sha256"]
    assert rows[ds.rows[-1]["image_id"]]["source_image"] is None  # never the file outside the dataset
