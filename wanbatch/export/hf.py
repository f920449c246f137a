"""Hugging Face ``datasets`` Parquet: ``data/train-XXXXX-of-NNNNN.parquet`` with an ``Image`` column.

The ``huggingface`` schema metadata declares the features, so ``load_dataset("parquet", ...)`` (and
the Hub viewer) decode ``image`` as ``Image()`` without ``datasets`` being needed to write it. Each var
is a column of its own (``datasets`` has no map type); a card (README.md) says what the set is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wanbatch.dataset.schema import INDEX_SCHEMA
from wanbatch.dataset.view import DatasetView
from wanbatch.export._common import (
    TARGET_SHARD_BYTES,
    Output,
    dataset_name,
    exported_image,
    input_image,
    is_url,
    iter_batches,
    plan_shards,
    source_column,
    var_column,
    var_columns,
)

IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

def card(name: str, splits: dict[str, int], manifest: dict[str, Any], cost: float | None,
         failed: int, var_names: list[str], inputs: int = 0) -> str:
    """The dataset card (README.md): the spec's name as the title; spec, model, counts and cost."""
    spec = manifest.get("spec") or {}
    runs = [r for r in manifest.get("runs") or [] if isinstance(r, dict)]
    sources = [p for p in dict.fromkeys(str((r.get("spec") or {}).get("path") or "") for r in runs) if p]
    configs = "\n".join(f"  - split: {split}\n    path: data/{split}-*.parquet" for split in splits)
    total = sum(splits.values())
    lines = [
        "---", "configs:", "- config_name: default", "  data_files:", configs, "---",
        f"# {spec.get('name') or name}", "",
        f"Images generated with [wanbatch](https://pypi.org/project/wanbatch/) from the spec "
        f"`{spec.get('name') or name}`.", "",
        f"- **model**: {spec.get('model') or 'unknown'}",
        f"- **spec**: {', '.join(f'`{p}`' for p in sources) or spec.get('source') or 'unknown'}",
        f"- **images**: {total:,} rows" + (f" ({failed:,} failed slots, image null)" if failed else ""),
        "- **splits**: " + ", ".join(f"{k} {v:,}" for k, v in splits.items()),
        f"- **cost**: {cost:,.2f} (estimated from the runs' price per image)" if cost is not None
        else "- **cost**: not recorded (the spec has no price_per_image)",
        f"- **runs**: {len(runs)}",
        "", "Load with:", "", "```python", "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_dir="data")', "```", "",
        "Columns: `image`, `prompt`, `seed`, `size`, `width`, `height` (as delivered), one column per "
        "template var" + (f" ({', '.join(f'`{v}`' for v in var_names)})" if var_names else "")
        + ", and the rest of the wanbatch index (`params` is the request's parameters as JSON).", "",
    ]
    if inputs:
        columns = ", ".join(f"`{source_column(i)}`" for i in range(inputs))
        lines += [
            f"An image-editing set (InstructPix2Pix-style): the input image(s) {columns} (in request order), "
            "the `instruction` and the result `image`. `inputs` lists every input's sha256 and source; "
            "an input sent as a URL was not stored, so its image column is null and `source_url` holds "
            "the URL.", "",
        ]
    return "\n".join(lines)


def export_schema(var_names: list[str] | None = None, inputs: int = 0, urls: bool = False) -> pa.Schema:
    """The index columns, one string column per var instead of the ``vars`` map, after an ``image``
    column, with HF features.

    An edit export (``inputs`` > 0: the most input images a row has) adds, after ``image`` (the
    result), one ``Image`` column per input (``source_image``, ``source_image_2``, …) and
    ``instruction`` (the prompt): the InstructPix2Pix shape. With ``urls``, ``source_url`` (…) hold
    the URL of an input that was sent as a URL (its image column is null: wanbatch never stored it).
    """
    fields = [pa.field("image", IMAGE_TYPE)]
    images = ["image"]
    if inputs:
        images += [source_column(i) for i in range(inputs)]
        fields += [pa.field(name, IMAGE_TYPE) for name in images[1:]]
        fields.append(pa.field("instruction", pa.string()))
        if urls:
            fields += [pa.field(source_column(i, "url"), pa.string()) for i in range(inputs)]
    for f in INDEX_SCHEMA:
        if f.name != "vars":
            fields.append(f.with_nullable(True))
    fields += [pa.field(var_column(v), pa.string()) for v in var_names or []]
    features: dict[str, Any] = {}
    for f in fields:
        features[f.name] = {"_type": "Image"} if f.name in images else _feature(f.type)
    meta = {"info": {"features": features}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(meta)})


def _feature(t: pa.DataType) -> Any:
    """An Arrow type as a ``datasets`` feature: a list of structs is ``[{name: feature}]``."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_feature(t.value_type)]
    if pa.types.is_struct(t):
        return {t.field(i).name: _feature(t.field(i).type) for i in range(t.num_fields)}
    return {"dtype": _dtype(t), "_type": "Value"}


def _dtype(t: pa.DataType) -> str:
    # datasets spells Arrow primitive types as Arrow prints them ("int64", "timestamp[ms, tz=UTC]").
    return "string" if pa.types.is_string(t) or pa.types.is_large_string(t) else str(t)


def write(view: DatasetView, table: pa.Table, out: Output, shard_rows: int | None) -> None:
    schema = export_schema(out.var_names, out.inputs, out.input_urls)
    sizes = [b or 0 for b in table.column("bytes").to_pylist()]
    shards = plan_shards(sizes, shard_rows=shard_rows, target_bytes=TARGET_SHARD_BYTES)
    for i, rows in enumerate(shards):
        target = out.path(f"data/{out.split}-{i:05d}-of-{len(shards):05d}.parquet")
        with pq.ParquetWriter(target, schema, compression="zstd") as writer:
            for batch in iter_batches(table, rows):
                records = []
                for row in batch:
                    source, ext, changed = exported_image(view, row, out.images)
                    data = source.read_bytes() if isinstance(source, Path) else source
                    if row["status"] == "ok" and data is None:
                        out.missing.append(row["image_id"])
                        continue
                    image = None if data is None else {"bytes": data, "path": f"{row['image_id']}.{ext}"}
                    record = {**row, **changed, "image": image, **var_columns(row["vars"])}
                    record.pop("vars")
                    if out.inputs:
                        record.update(_sources(view, row, out))
                    records.append(record)
                if records:
                    writer.write_table(pa.Table.from_pylist(records, schema=schema))
                    out.rows += len(records)


def _sources(view: DatasetView, row: dict[str, Any], out: Output) -> dict[str, Any]:
    """The edit columns of a row: each stored input as an image (re-encoded like the result), the
    URL of each URL input, and the instruction."""
    record: dict[str, Any] = {"instruction": row.get("prompt")}
    for i, item in enumerate(row.get("inputs") or []):
        sha, source = item.get("sha256"), item.get("source")
        data, ext, _ = input_image(view, sha, out.images)
        if isinstance(data, Path):
            data = data.read_bytes()
        record[source_column(i)] = None if data is None else {"bytes": data, "path": f"{sha}.{ext}"}
        if out.input_urls and is_url(source):
            record[source_column(i, "url")] = source
    return record


def finish(view: DatasetView, table: pa.Table, out: Output, counts: dict[str, int]) -> None:
    """The dataset card, once every split is written."""
    failed = int(pc.sum(pc.equal(table["status"], "failed")).as_py() or 0)
    out.path("README.md").write_text(
        card(dataset_name(view), counts, view.manifest(), spent(view), failed, out.var_names, out.inputs),
        encoding="utf-8")


def spent(view: DatasetView) -> float | None:
    """What the runs that wrote the dataset spent (estimated), from ``runs/<id>.json``."""
    total, known = 0.0, False
    for run in view.manifest().get("runs") or []:
        run_id = run.get("run_id") if isinstance(run, dict) else None
        raw = view.read_bytes(f"runs/{run_id}.json") if isinstance(run_id, str) else None
        try:
            cost = json.loads(raw).get("cost") if raw else None
        except ValueError:
            cost = None
        if isinstance(cost, int | float):
            total, known = total + cost, True
    return round(total, 6) if known else None


def register() -> None:
    from wanbatch.export.registry import ExportFormat, register_format

    register_format(ExportFormat("hf", write, "Hugging Face datasets Parquet shards with an Image column",
                                 sharded=True, images_only=False, finish=finish, splits_in_names=True))
