"""Export a wanbatch dataset to the formats people train and browse with.

Built-in formats (each one module, registered through :mod:`.registry` like a plugin's):

- ``hf``: Hugging Face ``datasets`` Parquet shards with an ``Image`` column (:mod:`.hf`)
- ``webdataset``: tar shards of ``<key>.png`` + ``<key>.txt`` + ``<key>.json`` (:mod:`.webdataset`)
- ``imagefolder``: image files plus ``metadata.jsonl`` (:mod:`.imagefolder`)

Rows are ordered by (prompt, seed, size, image_id), so an export does not depend on the order in
which a run happened to write its index parts.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Collection
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from wanbatch.dataset import DatasetView
from wanbatch.errors import DatasetError, UsageError
from wanbatch.export._common import (
    ExportReport,
    ImageOptions,
    Output,
    check_destination,
    commit,
    input_count,
    staging_dir,
    table_var_names,
)
from wanbatch.export.registry import ExportFormat, format_names, get_format, register_format

_ORDER = [("prompt", "ascending"), ("seed", "ascending"), ("size", "ascending"), ("image_id", "ascending")]


def export_dataset(
    root: str | Path | DatasetView,
    fmt: str,
    to: str | Path,
    *,
    include_failed: bool = False,
    shard_rows: int | None = None,
    overwrite: bool = False,
    only: Collection[str] | None = None,
    images: ImageOptions | None = None,
    split: dict[str, float] | None = None,
) -> ExportReport:
    """Export the dataset at ``root`` as ``fmt`` into the folder ``to``.

    Only ``ok`` rows unless ``include_failed`` (hf: ``image`` is null; webdataset: a ``.json`` without
    an image). ``shard_rows`` caps rows per shard (default: about 500 MB of images per shard).
    ``to`` must be empty or missing; ``overwrite`` replaces a previous wanbatch export there.
    ``root`` is a folder, an object-store URI (``s3://…``, images read through ``pyarrow.fs``) or a
    :class:`~wanbatch.dataset.DatasetView`. ``only``: keep only these image ids (what a spec plans,
    ``--spec``), so images of an earlier version of the spec stay out. ``images``: re-encode
    (longest side, format, quality). ``split``: fractions by name (``{"train": 0.9, "val": 0.1}``);
    each image goes to a split by a hash of its id, so the same image lands in the same split on
    every export, however the dataset grows.
    """
    images = images or ImageOptions()
    splits = check_split(split)
    to = Path(to)
    format_ = get_format(fmt)
    if shard_rows is not None and shard_rows < 1:
        raise UsageError(f"shard_rows must be a positive number of rows, got {shard_rows}")
    if not format_.sharded and shard_rows is not None:
        raise UsageError(f"{fmt} exports are not sharded; drop shard_rows or use a sharded format")
    if format_.images_only and include_failed:
        raise UsageError(
            f"a {fmt} export holds images only, so failed rows cannot be exported to it; "
            "use the hf or webdataset format to keep failures"
        )
    view = root if isinstance(root, DatasetView) else DatasetView.open(root)
    check_destination(to, overwrite=overwrite)
    table = _select(only_planned(_load_rows(view), only), include_failed=include_failed)
    staging = staging_dir(to)
    out = Output(staging)
    try:
        names = table_var_names(table)
        inputs, urls = input_count(table)
        counts: dict[str, int] = {}
        for name, part in split_rows(table, splits):
            part_out = Output(staging, images=images, split=name, var_names=names, inputs=inputs,
                              input_urls=urls,
                              prefix="" if split is None or format_.splits_in_names else f"{name}/")
            format_.write(view, part, part_out, shard_rows)
            out.files += part_out.files
            out.missing += part_out.missing
            out.rows += part_out.rows
            counts[name] = part_out.rows
        if format_.finish is not None:
            format_.finish(view, table, Output(staging, files=out.files, var_names=names, inputs=inputs,
                                              input_urls=urls), counts)
        if out.rows == 0:
            raise DatasetError(
                f"nothing exported from {view.location}: none of the {table.num_rows} selected rows has its "
                "image file"
            )
        source = view.location if view.is_remote else str(Path(view.location).resolve())
        commit(staging, to, {"format": fmt, "rows": out.rows, "source": source})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = tuple(to / rel for rel in out.files)
    return ExportReport(
        fmt=fmt, to=to, files=files, rows=out.rows, bytes=sum(f.stat().st_size for f in files),
        missing=tuple(out.missing),
    )


def _select(table: pa.Table, *, include_failed: bool) -> pa.Table:
    if not include_failed:
        ok = table.filter(pc.equal(table.column("status"), "ok"))
        if ok.num_rows == 0:
            failed = table.num_rows
            raise UsageError(
                f"nothing to export: the dataset has no ok images ({failed} failed rows; "
                "pass include_failed=True / --include-failed to export them)"
            )
        table = ok
    return table.sort_by(_ORDER)


def check_split(split: dict[str, float] | None) -> list[tuple[str, float]]:
    if split is None:
        return [("train", 1.0)]
    if not split or any(not (0 < f <= 1) for f in split.values()) or abs(sum(split.values()) - 1) > 1e-6:
        raise UsageError(f"split fractions must be > 0 and add up to 1, got "
                         f"{', '.join(f'{k}={v:g}' for k, v in split.items()) or 'nothing'}")
    bad = [k for k in split if not k.replace("_", "").replace("-", "").isalnum()]
    if bad:
        raise UsageError(f"split names are words such as train, val, test; got {bad[0]!r}")
    return list(split.items())


def split_of(image_id: str, splits: list[tuple[str, float]]) -> str:
    """The split of an image: a hash of its id placed on the cumulative fractions (deterministic)."""
    x = int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "big") / 2**64
    acc = 0.0
    for name, fraction in splits:
        acc += fraction
        if x < acc:
            return name
    return splits[-1][0]


def split_rows(table: pa.Table, splits: list[tuple[str, float]]) -> list[tuple[str, pa.Table]]:
    if len(splits) == 1:
        return [(splits[0][0], table)]
    names = pa.array([split_of(i, splits) for i in table["image_id"].to_pylist()], pa.string())
    return [(name, table.filter(pc.equal(names, name))) for name, _ in splits]


def only_planned(table: pa.Table, only: Collection[str] | None) -> pa.Table:
    """The rows whose image id is in ``only`` (all rows when None)."""
    if only is None:
        return table
    kept = table.filter(pc.is_in(table["image_id"], value_set=pa.array(sorted(only), pa.string())))
    if kept.num_rows == 0 and table.num_rows:
        raise UsageError(f"none of the {table.num_rows} rows of the dataset is planned by the spec given "
                         "with --spec: do the spec and the dataset belong together?")
    return kept


def _load_rows(view: DatasetView, columns: list[str] | None = None) -> pa.Table:
    """The index, one row per image_id (an ok row beats a failed one); all columns by default."""
    table = view.read_index(columns)
    if table.num_rows == 0:
        raise UsageError(f"{view.location}: the dataset's index has no rows yet (has a run written it?)")
    return table


__all__ = ["ExportFormat", "ExportReport", "ImageOptions", "export_dataset", "format_names", "get_format",
           "only_planned", "register_format", "split_of"]
