"""Exports people train on: captions in WebDataset, resized/re-encoded images, var columns, a card,
deterministic splits."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers.synthetic import SyntheticDataset, make_dataset
from wanbatch.errors import UsageError
from wanbatch.export import ImageOptions, export_dataset, split_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_dataset(tmp_path_factory.mktemp("ds") / "flower-shops", size=(96, 64))


def test_webdataset_samples_carry_the_prompt_and_the_row(ds: SyntheticDataset, tmp_path: Path) -> None:
    export_dataset(ds.root, "webdataset", tmp_path / "wds", images=ImageOptions(max_side=48, fmt="jpeg",
                                                                                 quality=80))
    members: dict[str, dict[str, bytes]] = {}
    for shard in sorted((tmp_path / "wds").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()  # type: ignore[union-attr]
    assert len(members) == len(ds.ok) and all(set(v) == {"jpg", "txt", "json"} for v in members.values())
    for sample in members.values():
        row = json.loads(sample["json"])
        assert sample["txt"].decode() == row["prompt"]
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert (image.format, image.size) == ("JPEG", (48, 32))  # aspect kept
        assert (row["width"], row["height"], row["format"]) == (48, 32, "jpeg")


def test_hf_has_var_columns_and_a_card_and_stable_splits(ds: SyntheticDataset, tmp_path: Path) -> None:
    split = {"train": 0.7, "val": 0.3}
    export_dataset(ds.root, "hf", tmp_path / "hf", split=split, images=ImageOptions(fmt="webp"))
    data = tmp_path / "hf" / "data"
    tables = {name: pq.read_table(sorted(data.glob(f"{name}-*.parquet"))) for name in split}
    assert sum(t.num_rows for t in tables.values()) == len(ds.ok)
    for name, table in tables.items():
        assert all(split_of(i, list(split.items())) == name for i in table["image_id"].to_pylist())
        assert "vars" not in table.column_names and "style" in table.column_names
    card = (tmp_path / "hf" / "README.md").read_text()
    assert card.splitlines()[0] == "---" and "# flower-shops" in card
    assert "split: train" in card and "split: val" in card and f"**images**: {len(ds.ok)} rows" in card
    assert "**model**" in card and "**cost**" in card
    # the same image goes to the same split on a second export
    export_dataset(ds.root, "imagefolder", tmp_path / "folder", split=split)
    again = {line["image_id"]: name for name in split
             for line in map(json.loads, (tmp_path / "folder" / name / "metadata.jsonl").open())}
    assert again == {i: n for n, t in tables.items() for i in t["image_id"].to_pylist()}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"images": ImageOptions}, ""),
    ({"split": {"train": 0.5, "val": 0.2}}, "add up to 1"),
])
def test_bad_export_options_are_usage_errors(ds: SyntheticDataset, tmp_path: Path, kwargs: dict,
                                             message: str) -> None:
    if message == "":
        with pytest.raises(UsageError, match="quality applies to jpeg and webp"):
            ImageOptions(quality=50)
        with pytest.raises(UsageError, match="at least 16"):
            ImageOptions(max_side=4)
        return
    with pytest.raises(UsageError, match=message):
        export_dataset(ds.root, "hf", tmp_path / "x", **kwargs)
