"""What every export format shares: the report, a staged destination, shard plans, row batches.

Exports read the index (small) in full but image bytes one batch at a time, so memory stays bounded
by a batch however large the dataset is. Output is written into a hidden staging directory next to
the destination and renamed into place at the end: a failed export leaves no half-written dataset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from wanbatch.dataset.layout import check_image_id
from wanbatch.dataset.view import DatasetView
from wanbatch.errors import DatasetError, UsageError

#: Written into every export so ``overwrite=True`` only ever deletes a previous wanbatch export.
MARKER = ".wanbatch-export.json"
#: Default shard size: large enough for few files, small enough to upload and stream comfortably.
TARGET_SHARD_BYTES = 500 * 1024 * 1024
#: Rows read (with their image bytes) at once; a Parquet row group in the hf export.
BATCH_ROWS = 64
BATCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote. ``missing`` lists ``ok`` rows skipped because their image file is gone."""

    fmt: str
    to: Path
    files: tuple[Path, ...]
    rows: int
    bytes: int
    missing: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json`` output): paths as strings, lists for the file and missing ids."""
        return {
            "format": self.fmt, "to": str(self.to), "rows": self.rows, "bytes": self.bytes,
            "files": [str(f) for f in self.files], "missing": list(self.missing),
        }


#: Image formats an export may convert to, with Pillow's name and the file extension.
IMAGE_FORMATS = {"png": ("PNG", "png"), "jpeg": ("JPEG", "jpg"), "webp": ("WEBP", "webp")}


@dataclass(frozen=True)
class ImageOptions:
    """How exported images are re-encoded: ``max_side`` (longest edge, aspect kept, Lanczos with a
    reducing gap: no aliasing), ``fmt`` (png, jpeg, webp) and ``quality`` (1–100, jpeg/webp only).
    The default leaves the delivered file untouched (streamed, byte for byte)."""

    max_side: int | None = None
    fmt: str | None = None
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.max_side is not None and self.max_side < 16:
            raise UsageError(f"max_side must be at least 16 pixels, got {self.max_side}")
        if self.fmt is not None and self.fmt not in IMAGE_FORMATS:
            raise UsageError(f"unknown image format {self.fmt!r}; choose one of: {', '.join(IMAGE_FORMATS)}")
        if self.quality is not None:
            if not 1 <= self.quality <= 100:
                raise UsageError(f"quality must be within 1–100, got {self.quality}")
            if self.fmt not in ("jpeg", "webp"):
                raise UsageError("quality applies to jpeg and webp: add --image-format jpeg or webp")

    @property
    def active(self) -> bool:
        return self.max_side is not None or self.fmt is not None

    def apply(self, source: Path | bytes, row: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        """The re-encoded image, its extension, and the row fields that change (width, height, …)."""
        import io

        from PIL import Image

        from wanbatch.images import safe_open_image

        try:
            with safe_open_image(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                img.load()
                pil_format = img.format or "PNG"
                if self.max_side is not None and max(img.size) > self.max_side:
                    img.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
                name, ext = IMAGE_FORMATS.get(self.fmt or "", (pil_format, pil_format.lower()))
                if name == "JPEG" and img.mode not in ("RGB", "L"):
                    img = img.convert("RGB")
                buf = io.BytesIO()
                options: dict[str, Any] = {}
                if name in ("JPEG", "WEBP"):
                    options["quality"] = self.quality or 90
                img.save(buf, format=name, **options)
                width, height = img.size
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot convert image {row.get('path')}: {exc}") from None
        data = buf.getvalue()
        ext = "jpg" if ext == "jpeg" else ext
        return data, ext, {"width": width, "height": height, "bytes": len(data), "format": name.lower(),
                           "sha256": None}


@dataclass
class Output:
    """Collects the files a writer produces, relative to the (staged) destination; ``prefix`` is the
    split's folder (``train/``) when the export is split, and ``images`` how images are re-encoded."""

    dir: Path
    files: list[str] = field(default_factory=list)
    rows: int = 0
    missing: list[str] = field(default_factory=list)
    images: ImageOptions = field(default_factory=ImageOptions)
    split: str = "train"
    prefix: str = ""
    var_names: list[str] = field(default_factory=list)  # hf: one column each, the same in every split
    inputs: int = 0  # the most input images a row has (0: a text-to-image export), the same in every split
    input_urls: bool = False  # some input is a URL (not stored): hf adds source_url columns

    def path(self, rel: str) -> Path:
        rel = self.prefix + rel
        target = self.dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(rel)
        return target


def exported_image(view: DatasetView, row: dict[str, Any],
                   images: ImageOptions) -> tuple[Path | bytes | None, str, dict[str, Any]]:
    """The image of a row as an export writes it: (file or bytes, extension, changed row fields).
    Unconverted, a local file is returned as a path for the caller to stream."""
    source = image_source(view, row)
    ext = Path(row.get("path") or "").suffix.lstrip(".").lower() or "png"
    if source is None or not images.active:
        return source, ext, {}
    return images.apply(source, row)


def input_count(table: pa.Table) -> tuple[int, bool]:
    """The most input images any row of ``table`` has (0 for text-to-image), and whether any input is a
    URL (sent as is, so not stored in the dataset)."""
    if "inputs" not in table.column_names:
        return 0, False
    most, urls = 0, False
    for value in table.column("inputs").to_pylist():
        if value:
            most = max(most, len(value))
            urls = urls or any(is_url(i.get("source")) for i in value)
    return most, urls


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: object) -> bool:
    """Whether an input's ``source`` is a URL (``https://…``) rather than a path or ``dataset:<id>``."""
    return isinstance(source, str) and _URL.match(source) is not None


def source_column(i: int, kind: str = "image") -> str:
    """The export column of input ``i`` (0-based): ``source_image``, ``source_image_2``, … (``kind``
    ``url``: ``source_url``, ``source_url_2``, …). The first input keeps the plain name, so the usual
    one-source pair reads the same whatever else a dataset holds."""
    return f"source_{kind}" if i == 0 else f"source_{kind}_{i + 1}"


#: The most input images one request may carry (Model Studio: 1–9).
MAX_INPUTS = 9
#: Columns an edit export adds; a var with one of these names is exported as ``var_<name>``.
EDIT_COLUMNS = frozenset(
    ["instruction", *(source_column(i, kind) for i in range(MAX_INPUTS) for kind in ("image", "url"))])


#: Extensions a stored input image may have, most common first.
INPUT_EXTENSIONS = ("png", "jpg", "webp", "bmp", "jpeg")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def input_rel(view: DatasetView, sha256: object) -> str | None:
    """Where the dataset stores the input image with content hash ``sha256``, relative to its root
    (``inputs/<sha[:2]>/<sha>.<ext>``); None when it is not stored (a URL input, or gone). A hash that
    is not 64 hex digits (a tampered index) names nothing; files are read through the view's checks
    (no symlinks, nothing outside the root)."""
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        return None
    names = [f"inputs/{sha256[:2]}/{sha256}.{ext}" for ext in INPUT_EXTENSIONS]
    if not view.is_remote:
        return next((rel for rel in names if view.local_path(rel) is not None), None)
    try:
        infos = view.fs.get_file_info([f"{view.base}/{rel}" for rel in names])
    except OSError as exc:
        raise DatasetError(f"cannot look up input image {sha256} in {view.location}: {exc}") from None
    return next((rel for rel, i in zip(names, infos, strict=True) if i.type == pafs.FileType.File), None)


def input_image(view: DatasetView, sha256: object,
                images: ImageOptions) -> tuple[Path | bytes | None, str, dict[str, Any]]:
    """A stored input image as an export writes it: (file or bytes, extension, changed fields), like
    :func:`exported_image`; None when the input is not stored (a URL input, or the file is gone)."""
    rel = input_rel(view, sha256)
    if rel is None:
        return None, "", {}
    ext = rel.rsplit(".", 1)[-1]
    source: Path | bytes | None = view.read_bytes(rel) if view.is_remote else view.local_path(rel)
    if source is None or not images.active:
        return source, ext, {}
    return images.apply(source, {"path": rel})


def check_destination(to: Path, *, overwrite: bool) -> None:
    """Refuse a destination we must not write into, before any work is done."""
    if to.exists() and not to.is_dir():
        raise UsageError(f"export destination {to} exists and is not a directory")
    if not to.is_dir() or not any(to.iterdir()):
        return
    if not overwrite:
        raise UsageError(
            f"export destination {to} is not empty; choose an empty folder or pass overwrite=True "
            "(--overwrite) to replace a previous export"
        )
    if not (to / MARKER).is_file():
        raise UsageError(
            f"export destination {to} is not empty and does not hold a wanbatch export; "
            "refusing to delete it — choose another folder or empty it yourself"
        )


def staging_dir(to: Path) -> Path:
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = to.parent / f".{to.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def commit(staging: Path, to: Path, marker: dict[str, Any]) -> None:
    """Move a finished export into place, replacing a previous export (already checked)."""
    (staging / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True), encoding="utf-8")
    if to.is_dir():
        if any(to.iterdir()):
            shutil.rmtree(to)
        else:
            to.rmdir()
    staging.rename(to)


def plan_shards(sizes: list[int], *, shard_rows: int | None, target_bytes: int) -> list[range]:
    """Split rows into contiguous shards by row count, or by cumulative image bytes.

    Planned up front (the index knows every image's size) so shard names can carry the total count.
    """
    if not sizes:
        return []
    if shard_rows is not None:
        return [range(i, min(i + shard_rows, len(sizes))) for i in range(0, len(sizes), shard_rows)]
    shards: list[range] = []
    start, acc = 0, 0
    for i, size in enumerate(sizes):
        if i > start and acc + size > target_bytes:
            shards.append(range(start, i))
            start, acc = i, 0
        acc += size
    shards.append(range(start, len(sizes)))
    return shards


def iter_batches(table: pa.Table, rows: range) -> Iterator[list[dict[str, Any]]]:
    """Yield the rows of ``rows`` as dicts, in batches bounded by row count and image bytes."""
    batch: list[dict[str, Any]] = []
    acc = 0
    for chunk_start in range(rows.start, rows.stop, BATCH_ROWS):
        chunk = table.slice(chunk_start, min(BATCH_ROWS, rows.stop - chunk_start)).to_pylist()
        for row in chunk:
            size = row.get("bytes") or 0
            if batch and (len(batch) >= BATCH_ROWS or acc + size > BATCH_BYTES):
                yield batch
                batch, acc = [], 0
            batch.append(row)
            acc += size
    if batch:
        yield batch


def image_source(view: DatasetView, row: dict[str, Any]) -> Path | bytes | None:
    """The image of an ``ok`` row: its local file (streamed by the caller), or its bytes when the
    dataset is in object storage; None when the row has no image or the file is gone."""
    rel = row.get("path")
    if row.get("status") != "ok" or not rel or not valid_image_id(row.get("image_id")):
        return None  # a tampered image_id would name output files outside the export: missing
    if view.is_remote:
        return view.read_bytes(rel)
    return view.local_path(rel)


def valid_image_id(image_id: object) -> bool:
    """An image id as wanbatch writes them (no separators, no leading dot): safe in output paths."""
    try:
        check_image_id(image_id)  # type: ignore[arg-type]
    except DatasetError:
        return False
    return True


def read_image(view: DatasetView, row: dict[str, Any]) -> bytes | None:
    source = image_source(view, row)
    if not isinstance(source, Path):
        return source
    try:
        return source.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read image {source}: {exc.strerror or exc}") from None


def dataset_name(view: DatasetView) -> str:
    """The last component of the dataset's folder or URI."""
    if not view.is_remote:
        return Path(view.location).resolve().name
    return view.location.rstrip("/").rsplit("/", 1)[-1] or view.location


def vars_json(value: Any) -> str:
    """The ``vars`` map as canonical JSON: the Hugging Face ``datasets`` library has no map type."""
    items = value.items() if isinstance(value, dict) else (value or [])
    return json.dumps(dict(items), ensure_ascii=False, sort_keys=True)


def table_var_names(table: pa.Table) -> list[str]:
    """Every var name in the index's ``vars`` column, in first-seen order."""
    names: list[str] = []
    for value in table.column("vars").to_pylist():
        for key, _ in value.items() if isinstance(value, dict) else (value or []):
            if key not in names:
                names.append(key)
    return names


def var_column(name: str) -> str:
    """The export column of var ``name``: its own name, or ``var_<name>`` where that is an index column
    (a var called ``size`` or ``seed``)."""
    from wanbatch.dataset.schema import INDEX_SCHEMA

    reserved = {*INDEX_SCHEMA.names, "image", "file_name", *EDIT_COLUMNS}
    return f"var_{name}" if name in reserved else name


def var_columns(value: Any, _record: Any = None) -> dict[str, str]:
    """One column per var (the hf and imagefolder exports: a column to filter and group by)."""
    items = value.items() if isinstance(value, dict) else (value or [])
    return {var_column(k): v for k, v in items}


def json_record(row: dict[str, Any], *, vars_as_object: bool) -> dict[str, Any]:
    """A row as plain JSON values: timestamps in ISO 8601, ``vars`` as an object or a JSON string."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "vars":
            out[key] = json.loads(vars_json(value)) if vars_as_object else vars_json(value)
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def sample_key(image_id: str) -> str:
    """A WebDataset key: no dots (they separate key from extension) and no path separators."""
    return image_id.replace(".", "_").replace("/", "_")
