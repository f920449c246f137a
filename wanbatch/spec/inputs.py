"""Image vars: values that are input images (editing, references, image sets).

An image var ranges over images the way a text var ranges over strings, and a prompt's ``inputs``
names which image vars each request carries, in order. Values come from

- a glob or one path/URL (``photo: "photos/*.jpg"``), or an inline list of paths and URLs;
- a file of paths/URLs (``{file: refs.txt}``: one a line; ``.csv``/``.jsonl`` with ``column``);
- a column of ``rows:`` (named in ``inputs`` like an image var);
- another wanbatch dataset: its ok images, optionally filtered by index columns
  (``{dataset: ../datasets/base, where: {size: 1K}}``); ``dataset`` may also name the spec that
  writes it (``{dataset: 01-base.yaml}``: that spec's ``output``), which is how stages chain.

Every local image is checked here, before anything is spent: inside the spec's folder or the
current directory (:func:`wanbatch.spec.paths.confined`), format detected from the content
(JPEG/PNG/WEBP/BMP), sides 240–8000 px, aspect 1:8–8:1, at most 20 MB; and hashed, since its sha256 —
not its path — is what identifies the job. A URL is only checked for its scheme (wanbatch never
fetches it; the gateway does). A value's ``source`` is how the index names it: the path as written
(relative to the spec), the URL, or ``dataset:<image_id>``.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from wanbatch.dataset.schema import COLUMNS
from wanbatch.errors import SpecError, WanbatchError
from wanbatch.images import ImageTooLarge, fit_input, safe_open_image
from wanbatch.models import INPUT_FORMATS, MAX_INPUT_BYTES, MAX_INPUT_SIDE, input_problem
from wanbatch.spec.issues import Issues
from wanbatch.spec.model import ImageDataset, ImageFile, ImageGlob, VarFile
from wanbatch.spec.paths import confined
from wanbatch.spec.values import VarFileError, read_var_file
from wanbatch.spec.yaml_nodes import Path, compose
from wanbatch.types import InputImage

#: Largest source image ``fit_inputs`` opens (a 12000×12000 scan is fine; a decompression bomb is not).
FIT_MAX_PIXELS = 150_000_000

#: Prefix of the ``source`` of an image taken from another wanbatch dataset.
DATASET_PREFIX = "dataset:"
_GLOB_CHARS = set("*?[")


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


@dataclass(slots=True)
class InputTable:
    """Every input image a spec uses, by ``source`` (each checked and hashed once)."""

    images: dict[str, InputImage] = field(default_factory=dict)
    #: ``fit_inputs: true``: an input over the size or byte limits, or in another format Pillow reads,
    #: is re-encoded as PNG and downscaled as far as needed (:func:`wanbatch.images.fit_input`).
    fit: bool = False
    _by_path: dict[str, InputImage] = field(default_factory=dict)

    def local(self, source: str, spec_dir: FsPath, where: str) -> InputImage:
        """The checked local file ``source`` (relative to ``spec_dir``); raises :class:`SpecError`."""
        if source in self.images:
            return self.images[source]
        path = confined(FsPath(source), spec_dir, where)
        key = str(path)
        if key not in self._by_path:
            self._by_path[key] = _check_file(path, source, self.fit)
        found = self._by_path[key]
        image = InputImage(source=source, sha256=found.sha256, format=found.format, path=found.path,
                           fitted=found.fitted)
        self.images[source] = image
        return image

    def url(self, source: str) -> InputImage:
        image = self.images.setdefault(source, InputImage(source=source))
        return image

    def value(self, text: str, spec_dir: FsPath, where: str) -> InputImage:
        """A path or URL written in a spec, a file or a rows cell."""
        if is_url(text):
            return self.url(text)
        if "://" in text or text.startswith("data:"):
            raise SpecError(f"{text[:60]!r}: an input is a local path or an http(s) URL",
                            field=where, hint="write a file path (relative to the spec) or https://…")
        return self.local(text, spec_dir, where)


def _check_file(path: FsPath, source: str, fit: bool = False) -> InputImage:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise SpecError(f"{source}: not a file", hint="give an image file")
    except FileNotFoundError:
        raise SpecError(f"{source}: file not found (looked in {path.parent})",
                        hint="paths are relative to the spec's folder") from None
    except OSError as exc:
        raise SpecError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    if size > MAX_INPUT_BYTES and not fit:
        raise SpecError(f"{source}: {input_problem('png', 240, 240, size)}",
                        hint="shrink or re-encode the image (e.g. as JPEG), or set fit_inputs: true")
    try:
        with safe_open_image(path, FIT_MAX_PIXELS if fit else MAX_INPUT_SIDE * MAX_INPUT_SIDE) as img:
            fmt = (img.format or "").lower()
            width, height = img.size
    except ImageTooLarge as exc:
        raise SpecError(f"{source}: {exc}", hint="inputs may have at most 8000 px a side") from None
    except (OSError, ValueError, SyntaxError):
        formats = "/".join(f.upper() for f in INPUT_FORMATS)
        raise SpecError(f"{source}: not an image wanbatch can read; inputs must be {formats}",
                        hint="convert it to PNG or JPEG") from None
    if (problem := input_problem(fmt, width, height, size)) is not None and fit:
        try:
            data, width, height = fit_input(path, FIT_MAX_PIXELS)
        except (OSError, ValueError) as exc:
            raise SpecError(f"{source}: {problem}; it could not be re-encoded ({exc})") from None
        if (still := input_problem("png", width, height, len(data))) is not None:
            raise SpecError(f"{source}: {still} (even re-encoded)",
                            hint="crop or pad the image, or leave it out")
        return InputImage(source=source, sha256=hashlib.sha256(data).hexdigest(), format="png",
                          path=str(path), fitted=True)
    if problem is not None:
        raise SpecError(f"{source}: {problem}",
                        hint="resize or convert the image, set fit_inputs: true, or leave it out")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return InputImage(source=source, sha256=digest.hexdigest(), format=fmt, path=str(path))


def resolve_image_var(name: str, value: Any, path: Path, issues: Issues, spec_dir: FsPath,
                      table: InputTable, *, upstream: frozenset[str] = frozenset()) -> list[str] | None:
    """The sources of image var ``name`` written at ``path``; None (with an issue added) when unusable.

    ``upstream``: outputs (absolute paths) of earlier stages of the same chain that have not run yet; a
    ``dataset:`` naming one of them yields no images yet (a warning), not an error.
    """
    try:
        if isinstance(value, ImageDataset):
            return _from_dataset(value, path, issues, spec_dir, table, upstream)
        if isinstance(value, ImageFile):
            texts = read_var_file(spec_dir, VarFile(file=value.file, column=value.column), name)
            where = (*path, "file")
        elif isinstance(value, ImageGlob):
            return _glob(value.glob, spec_dir, table, name, strict=True)
        elif isinstance(value, str):
            if _GLOB_CHARS & set(value) and not is_url(value):
                return _glob(value, spec_dir, table, name, strict=True)
            texts, where = [value], path
        else:
            texts, where = list(value), path
        sources = []
        for i, text in enumerate(texts):
            text = text.strip()
            at = (*where, i) if where == path and not isinstance(value, str) else where
            try:
                sources.append(table.value(text, spec_dir, f"images.{name}").source)
            except SpecError as exc:
                issues.add(at, exc.message, exc.hint)
        return sources
    except VarFileError as exc:
        issues.add((*path, "file"), exc.message, exc.hint)
    except SpecError as exc:
        issues.add(path, exc.message, exc.hint)
    return None


def _glob(pattern: str, spec_dir: FsPath, table: InputTable, name: str, *, strict: bool) -> list[str]:
    base = str(spec_dir)
    matches = sorted(globlib.glob(pattern, root_dir=base, recursive=True))
    files = [m for m in matches if os.path.isfile(os.path.join(base, m))]
    if not files and strict:
        raise SpecError(f"{pattern!r} matches no file (looked in {spec_dir})",
                        hint="globs are relative to the spec's folder, e.g. inputs/*.png")
    return [table.local(FsPath(m).as_posix(), spec_dir, f"images.{name}").source for m in files]


def dataset_root(ref: str, spec_dir: FsPath) -> FsPath:
    """The folder a ``dataset:`` value names: a folder (relative to the spec), or the ``output`` of
    the spec file it names (``01-base.yaml``), as ``wanbatch run`` writes it."""
    if ref.endswith((".yaml", ".yml")):
        return FsPath(spec_output(confined(FsPath(ref), spec_dir, "images.dataset"))).expanduser().resolve()
    return confined(FsPath(ref), spec_dir, "images.dataset")


def spec_output(spec_file: FsPath) -> str:
    """The ``output`` of a spec file as a run resolves it (only ``name`` and ``output`` are read, so
    a chain of stages never loads one another's images, let alone in a cycle)."""
    try:
        text = spec_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{spec_file}: cannot read the spec ({exc.strerror or exc})",
                        hint="name the spec file of an earlier stage, or a dataset folder") from None
    data = compose(text, str(spec_file)).data
    data = data if isinstance(data, dict) else {}
    name, output = data.get("name"), data.get("output")
    name = name if isinstance(name, str) else default_name(str(spec_file))
    output = output if isinstance(output, str) else "datasets/{name}"
    return output.replace("{name}", name)


def _from_dataset(ref: ImageDataset, path: Path, issues: Issues, spec_dir: FsPath, table: InputTable,
                  upstream: frozenset[str]) -> list[str] | None:
    from wanbatch.dataset.view import DatasetView

    where = (*path, "dataset")
    try:
        root = dataset_root(ref.dataset, spec_dir)
    except SpecError as exc:
        issues.add(where, exc.message, exc.hint)
        return None
    try:
        view = DatasetView.find(root)
    except WanbatchError as exc:
        issues.add(where, str(exc), "name a wanbatch dataset folder or the spec that writes it")
        return None
    if view is None:
        if str(root) in upstream:
            issues.warn(where, f"{ref.dataset}: not written yet; an earlier stage of this chain writes it",
                        "this stage plans its jobs once that stage has run")
            return []
        issues.add(where, f"{ref.dataset}: no wanbatch dataset at {root}",
                   "run the stage that writes it first (wanbatch run a.yaml b.yaml runs them in order)")
        return None
    columns = ["image_id", "status", "path", "format", "width", "height", "bytes", "sha256"]
    filters = dict(ref.where)
    known = set(COLUMNS) - {"vars", "inputs", "params"}
    for key in filters:
        if key not in known:
            issues.add((*path, "where", key), f"the index has no column {key!r}",
                       f"filter on one of: {', '.join(sorted(known))}", at_key=True)
            return None
    table_ = view.read_index(columns=columns + [k for k in filters if k not in columns])
    sources: list[str] = []
    for row in sorted(table_.to_pylist(), key=lambda r: r["image_id"]):
        if row["status"] != "ok" or not all(_matches(row.get(k), v) for k, v in filters.items()):
            continue
        local = view.local_path(row["path"] or "")
        if local is None:
            issues.add(where, f"{ref.dataset}: image {row['image_id']} is indexed but its file is missing",
                       "inputs from a dataset must be on this machine (not s3://)")
            return None
        source = f"{DATASET_PREFIX}{row['image_id']}"
        fmt = str(row["format"] or "").lower()
        problem = input_problem(fmt, int(row["width"] or 0), int(row["height"] or 0), int(row["bytes"] or 0))
        if problem is not None:
            issues.add(where, f"{source} ({row['path']}): {problem}", "filter it out with where:")
            return None
        table.images[source] = InputImage(source=source, sha256=row["sha256"], format=fmt, path=str(local))
        sources.append(source)
    if not sources:
        issues.warn(where, f"{ref.dataset}: no ok image matches" + (f" where {filters}" if filters else ""),
                    "this stage plans no jobs until it has some")
    return sources


def default_name(file: str) -> str:
    """A spec's default ``name``: the file stem, lower-cased, anything outside ``[a-z0-9_-]`` turned
    into ``-`` (the loader's rule, here so that a stage can find an earlier stage's output)."""
    stem = FsPath(file).stem.lower()
    return re.sub(r"[^a-z0-9_-]", "-", stem) or "spec"


def _matches(value: Any, wanted: str | list[str]) -> bool:
    text = "" if value is None else str(value)
    return text in wanted if isinstance(wanted, list) else text == wanted
