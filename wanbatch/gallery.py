"""A static HTML gallery of a dataset: one self-contained page that opens from ``file://``.

Thumbnails are made once with Pillow next to the page (``<stem>_thumbs/``), named after the image's
sha256 so a replaced image gets a new thumbnail; full images are linked relatively, so the page, its
thumbnails and the dataset can be moved together (a dataset in object storage is read through
``pyarrow.fs``: its thumbnails are shown without a link to the full image). A seed sweep is laid out
as a grid (rows: prompts, columns: seeds, or any two axes the user names); anything else as a wall of
cards. Failed slots stay
visible as red cells: a gallery that hides failures misleads.

An edit row (one with ``inputs``) is a pair: its source image(s) → the result, captioned with the
instruction; an ``enable_sequential`` set is one horizontal strip of its images in slot order. Inputs
are shown from the dataset's own copies (``inputs/``); an input sent as a URL is named, never fetched:
the page loads nothing from the network.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, UnidentifiedImageError

from wanbatch.dataset.view import DatasetView
from wanbatch.errors import UsageError, WanbatchError
from wanbatch.export import _load_rows, only_planned
from wanbatch.export._common import dataset_name, input_rel, is_url, valid_image_id
from wanbatch.images import safe_open_image
from wanbatch.models import TIER_PIXELS

#: Slots shown when no ``limit`` is given: the page stays light enough for any browser.
DEFAULT_LIMIT = 2000
BUILTIN_AXES = ("prompt", "seed", "size", "model")
#: The axis of an edit dataset's input image(s): ``--rows source --cols prompt`` is a source ×
#: instruction grid (a style-transfer grid), the source's picture heading its row.
SOURCE_AXIS = "source"
_COLUMNS = [
    "image_id", "status", "error_kind", "error_message", "prompt", "vars", "seed", "size", "model",
    "width", "height", "path", "sha256", "created_at", "job_id", "n", "slot", "params", "inputs",
]
_ORDER = [("prompt", "ascending"), ("seed", "ascending"), ("size", "ascending"), ("image_id", "ascending")]


@dataclass
class _Source:
    """One input image of an edit row, shown from the dataset's stored copy."""

    sha256: str
    source: str
    image: Path | None = None  # the stored input to link to (local datasets)
    thumb: Path | None = None
    thumb_size: tuple[int, int] | None = None


@dataclass
class _Slot:
    row: dict[str, Any]
    vars: dict[str, str]
    found: bool = False  # the row is ok and its image exists
    image: Path | None = None  # the full image to link to (local datasets)
    thumb: Path | None = None
    thumb_size: tuple[int, int] | None = None
    sources: list[_Source] = field(default_factory=list)  # an edit row's inputs, in request order

    @property
    def sequential(self) -> bool:
        """Whether the row is one image of an ``enable_sequential`` set."""
        try:
            params = json.loads(self.row.get("params") or "{}")
        except ValueError:
            return False
        return isinstance(params, dict) and params.get("enable_sequential") is True


def build_gallery(
    root: str | Path | DatasetView,
    to: str | Path,
    *,
    rows: str | None = None,
    cols: str | None = None,
    thumb: int = 256,
    limit: int | None = None,
    only: Collection[str] | None = None,
    order: Mapping[str, int] | None = None,
) -> Path:
    """Write the gallery page for the dataset at ``root`` to ``to`` and return the page's path.

    ``rows``/``cols`` name the grid axes (``prompt``, ``seed``, ``size``, ``model`` or a var name);
    naming either forces the grid layout. ``limit`` bounds the slots shown (default
    :data:`DEFAULT_LIMIT`); the page says when it shows fewer than the dataset holds.
    """
    view = root if isinstance(root, DatasetView) else DatasetView.open(root)
    page = Path(to)
    if page.is_dir():
        page = page / "gallery.html"
    if not 32 <= thumb <= 1024:
        raise UsageError(f"thumb must be between 32 and 1024 pixels, got {thumb}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive number of images, got {limit}")
    order = order if order is not None else only if isinstance(only, Mapping) else None
    table = _in_spec_order(only_planned(_load_rows(view, _COLUMNS), only), order)
    cap = limit if limit is not None else DEFAULT_LIMIT
    totals = _totals(table)
    slots = [_Slot(row=r, vars=dict(r["vars"] or []), sources=_sources(r))
             for r in table.slice(0, cap).to_pylist()]
    edits = any(s.sources or s.sequential for s in slots)
    axes = _axes(slots, rows, cols, edits=edits)

    thumbs_dir = page.parent / f"{page.stem}_thumbs"
    try:
        thumbs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the gallery next to {page}: {exc.strerror or exc}") from None
    _make_thumbs(view, slots, thumbs_dir, thumb)
    _make_input_thumbs(view, slots, thumbs_dir, thumb)

    if axes:
        body = _grid(slots, *axes, page.parent)
    elif edits:
        body = _edit_wall(slots, page.parent)
    else:
        body = _wall(slots, page.parent)
    title = _dataset_name(view)
    html = _PAGE.format(
        title=escape(title), css=_CSS.replace("THUMB", str(thumb)),
        header=_header(title, view.location, totals, len(slots), table.num_rows, axes, edits=edits),
        body=body,
    )
    tmp = page.with_name(page.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(page)
    return page


# -- layout ------------------------------------------------------------------------------------------

def _in_spec_order(table: pa.Table, only: Mapping[str, int] | None) -> pa.Table:
    """Slots in the order the spec plans them: by plan position when ``only`` maps image ids to it
    (``--spec``, or the spec the dataset last ran), else by when they were made; ties by id."""
    if only is not None:
        position = pa.array([only.get(i, len(only)) for i in table["image_id"].to_pylist()], pa.int64())
        return table.append_column("_position", position).sort_by(
            [("_position", "ascending"), ("image_id", "ascending")]).drop_columns(["_position"])
    return table.sort_by([("created_at", "ascending"), *_ORDER])


def _sources(row: dict[str, Any]) -> list[_Source]:
    return [_Source(sha256=str(i.get("sha256") or ""), source=str(i.get("source") or ""))
            for i in row.get("inputs") or [] if isinstance(i, dict)]


def _axes(slots: list[_Slot], rows: str | None, cols: str | None, *,
          edits: bool = False) -> tuple[str, str] | None:
    """The grid axes, or None for a wall. Default grid: a seed sweep (several seeds for a prompt);
    never for edits (one instruction over many sources is no seed sweep: they are shown as pairs)."""
    var_names = sorted({k for s in slots for k in s.vars})
    known = [*BUILTIN_AXES, *([SOURCE_AXIS] if edits else []), *var_names]
    for name in (rows, cols):
        if name is not None and name not in known:
            allowed = ", ".join(known)
            raise UsageError(f"unknown gallery axis {name!r}; choose one of: {allowed}")
    if rows is None and cols is None:
        if edits:
            return None
        seeds: dict[str, set[Any]] = {}
        for s in slots:
            seeds.setdefault(s.row["prompt"], set()).add(s.row["seed"])
        if not any(len(v) > 1 for v in seeds.values()):
            return None
    r = rows or ("prompt" if cols != "prompt" else "seed")
    c = cols or ("seed" if r != "seed" else "prompt")
    if r == c:
        raise UsageError(f"gallery rows and columns must be different axes, both are {r!r}")
    return r, c


def _value(slot: _Slot, axis: str) -> str | None:
    if axis == SOURCE_AXIS:
        return " + ".join(src.source or src.sha256 for src in slot.sources) or None
    if axis in BUILTIN_AXES:
        v = slot.row.get(axis)
        return None if v is None else str(v)
    return slot.vars.get(axis)


def _sort_key(axis: str) -> Callable[[str | None], tuple[Any, ...]]:
    def key(v: str | None) -> tuple[Any, ...]:
        if v is None:
            return (1, 0, "")
        if axis == "seed":
            return (0, int(v), "")
        if axis == "size" and "*" in v:
            w, _, h = v.partition("*")
            return (0, int(w) * int(h) if w.isdigit() and h.isdigit() else 0, v)
        return (0, 0, v.casefold())

    return key


def _grid(slots: list[_Slot], rows: str, cols: str, base: Path) -> str:
    cells: dict[tuple[str | None, str | None], list[_Slot]] = {}
    for s in slots:
        cells.setdefault((_value(s, rows), _value(s, cols)), []).append(s)
    with_prompt = "prompt" not in (rows, cols)  # otherwise a header already says it
    by_source = SOURCE_AXIS in (rows, cols)  # the header shows the source(s): cells only the result
    heads = {_value(s, SOURCE_AXIS): s.sources for s in slots if s.sources} if by_source else {}
    # rows in spec order (first appearance; the slots come in plan order), numbers by value
    row_keys = list(dict.fromkeys(k[0] for k in cells))
    if rows in ("seed", "size"):
        row_keys.sort(key=_sort_key(rows))
    col_keys = sorted({k[1] for k in cells}, key=_sort_key(cols))
    head = "".join(f'<th scope="col" data-col>{_axis_label(cols, c, heads, base)}</th>' for c in col_keys)
    out = [
        f'<table class="grid" data-rows="{len(row_keys)}" data-cols="{len(col_keys)}">',
        f'<thead><tr><th class="corner">{escape(rows)} <span>╲</span> {escape(cols)}</th>{head}</tr>',
        "</thead><tbody>",
    ]
    for r in row_keys:
        out.append(f'<tr data-row><th scope="row" class="rowhead">{_axis_label(rows, r, heads, base)}</th>')
        for c in col_keys:
            found = cells.get((r, c), [])
            inner = "".join(_card(s, base, with_prompt=with_prompt, with_sources=not by_source)
                            for s in found) or _EMPTY
            out.append(f"<td>{inner}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


_EMPTY = '<div class="empty">—</div>'


def _axis_label(axis: str, value: str | None, heads: Mapping[str | None, list[_Source]] | None = None,
                base: Path | None = None) -> str:
    if value is None:
        return '<span class="muted">(none)</span>'
    if axis == SOURCE_AXIS and heads and value in heads and base is not None:
        return f'{_source_tiles(heads[value], base)}<span class="srcname">{escape(value)}</span>'
    if axis == "seed":
        return f'<span class="muted">seed</span> {escape(value)}'
    if axis == "size":
        return escape(value.replace("*", "×"))
    return escape(value)


def _wall(slots: list[_Slot], base: Path) -> str:
    return '<div class="wall">' + "".join(_card(s, base, with_prompt=True) for s in slots) + "</div>"


def _card(slot: _Slot, base: Path, *, with_prompt: bool, with_sources: bool = True) -> str:
    r = slot.row
    size = _size_label(r)
    facts = [f"seed {r['seed']}" if r["seed"] is not None else "", size, r["image_id"]]
    inputs = [f"input {i}: {src.source}" for i, src in enumerate(slot.sources, 1)]
    title = escape("\n".join([r["prompt"] or "", " · ".join(f for f in facts if f), *inputs]), quote=True)
    caption = (
        f'<span class="facts">seed {escape(str(r["seed"]))} · {escape(size)}</span>'
        f'<code>{escape(r["image_id"])}</code>'
    )
    if with_prompt:
        caption = f'<span class="prompt">{escape(r["prompt"] or "")}</span>' + caption
    if r["status"] != "ok":
        kind = escape(r["error_kind"] or "failed")
        message = escape(r["error_message"] or "no message recorded")
        visual = f'<div class="fail"{_ratio(r)}><strong>✕ {kind}</strong><span>{message}</span></div>'
        cls = "card failed"
    elif not slot.found or slot.thumb is None or slot.thumb_size is None:
        why = "image file missing" if not slot.found else "image unreadable"
        where = escape(r["path"] or "")
        visual = f'<div class="fail missing"{_ratio(r)}><strong>{why}</strong><span>{where}</span></div>'
        cls = "card missing"
    else:
        visual, cls = _picture(slot, base), "card"
    if slot.sources and with_sources:  # an edit: its source(s) → the result (or why there is none)
        return _figure(f"{cls} pair", title, _pair(slot, visual, base), caption)
    return _figure(cls, title, visual, caption)


def _picture(slot: _Slot, base: Path) -> str:
    """The thumbnail of an ok slot whose thumbnail exists, linked to the full image when local."""
    assert slot.thumb is not None and slot.thumb_size is not None
    w, h = slot.thumb_size
    visual = (
        f'<img src="{_href(slot.thumb, base)}" width="{w}" height="{h}" '
        f'loading="lazy" alt="{escape(slot.row["prompt"] or "", quote=True)}">'
    )
    if slot.image is not None:
        visual = f'<a href="{_href(slot.image, base)}">{visual}</a>'
    return visual


def _pair(slot: _Slot, result: str, base: Path) -> str:
    """Source(s) → result, side by side."""
    return (f'<div class="pairrow">{_source_tiles(slot.sources, base, _ratio(slot.row))}'
            f'{_ARROW}<div class="result">{result}</div></div>')


_ARROW = '<div class="arrow" aria-hidden="true">→</div>'


def _source_tiles(sources: list[_Source], base: Path, ratio: str = "") -> str:
    """The input images of a request, numbered when there are several (as the prompt names them)."""
    tiles = []
    for i, src in enumerate(sources, 1):
        badge = f'<span class="badge">{i}</span>' if len(sources) > 1 else ""
        name = escape(src.source, quote=True)
        if src.thumb is not None and src.thumb_size is not None:
            w, h = src.thumb_size
            tile = (f'<img src="{_href(src.thumb, base)}" width="{w}" height="{h}" loading="lazy" '
                    f'alt="input {i}: {name}">')
            if src.image is not None:
                tile = f'<a href="{_href(src.image, base)}">{tile}</a>'
        else:
            why = "URL input (not stored)" if is_url(src.source) else "input not stored"
            tile = f'<div class="nosrc"{ratio}><strong>{why}</strong><span>{escape(src.source)}</span></div>'
        tiles.append(f'<div class="src" title="input {i}: {name}">{badge}{tile}</div>')
    columns = 1 if len(sources) == 1 else 2 if len(sources) <= 4 else 3
    return f'<div class="sources" style="--cols: {columns}">{"".join(tiles)}</div>'


def _edit_wall(slots: list[_Slot], base: Path) -> str:
    """A wall of pairs (source → result) and cards; each ``enable_sequential`` set one strip, where its
    first image stands, in slot order."""
    sets: dict[str, list[_Slot]] = {}
    for s in slots:
        if s.sequential:
            sets.setdefault(s.row["job_id"], []).append(s)
    out, shown = [], set()
    for s in slots:
        if not s.sequential:
            out.append(_card(s, base, with_prompt=True))
        elif s.row["job_id"] not in shown:
            shown.add(s.row["job_id"])
            out.append(_strip(sorted(sets[s.row["job_id"]], key=lambda x: x.row["slot"] or 0), base))
    return '<div class="wall edits">' + "".join(out) + "</div>"


def _strip(members: list[_Slot], base: Path) -> str:
    """One set: its inputs (if any) →, then every image in slot order, each numbered."""
    first = members[0].row
    frames = []
    for s in members:
        r = s.row
        label = f'<span class="badge">{(r["slot"] or 0) + 1}</span>'
        if r["status"] != "ok":
            kind = escape(r["error_kind"] or "failed")
            message = escape(r["error_message"] or "")
            visual = f'<div class="fail"{_ratio(r)}><strong>✕ {kind}</strong><span>{message}</span></div>'
        elif s.thumb is None:
            visual = f'<div class="fail missing"{_ratio(r)}><strong>image file missing</strong></div>'
        else:
            visual = _picture(s, base)
        frames.append(f'<div class="frame" data-slot="{escape(str(r["slot"]))}" '
                      f'title="{escape(r["image_id"], quote=True)}">{label}{visual}</div>')
    lead = ""
    if members[0].sources:
        lead = _source_tiles(members[0].sources, base, _ratio(first)) + _ARROW
    n = first["n"] or len(members)
    caption = (f'<span class="prompt">{escape(first["prompt"] or "")}</span>'
               f'<span class="facts">set of {escape(str(n))} · seed {escape(str(first["seed"]))} · '
               f'{escape(_size_label(first))}</span><code>{escape(first["job_id"] or "")}</code>')
    title = escape("\n".join([first["prompt"] or "", f"set {first['job_id']}"]), quote=True)
    return (f'<figure class="strip" title="{title}"><div class="striprow">{lead}{"".join(frames)}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def _figure(cls: str, title: str, visual: str, caption: str) -> str:
    return f'<figure class="{cls}" title="{title}">{visual}<figcaption>{caption}</figcaption></figure>'


def _size_label(row: dict[str, Any]) -> str:
    """The delivered pixels (``1024×1024``); the request only where it differs (``1K``, or a size the
    gateway did not honour), and as "asked" for a slot without an image."""
    size = (row.get("size") or "").replace("*", "×")
    w, h = row.get("width"), row.get("height")
    if not (w and h):
        return f"asked {size}" if size else ""
    delivered = f"{w}×{h}"
    return delivered if size == delivered else f"{delivered} (asked {size})"


def _ratio(row: dict[str, Any]) -> str:
    """An aspect-ratio style for a slot without a picture, so it lines up with its neighbours."""
    w, _, h = (row.get("size") or "").partition("*")
    if w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
        return f' style="aspect-ratio: {int(w)} / {int(h)}"'
    return ' style="aspect-ratio: 1 / 1"' if row.get("size") in TIER_PIXELS else ""


def _href(path: Path, base: Path) -> str:
    rel = os.path.relpath(path.resolve(), base.resolve())
    return quote(Path(rel).as_posix())


# -- thumbnails --------------------------------------------------------------------------------------

def _make_thumbs(view: DatasetView, slots: Iterable[_Slot], thumbs_dir: Path, size: int) -> None:
    todo: list[tuple[_Slot, Callable[[], Path | bytes | None], Path]] = []
    stored = set(view.image_files()) if view.is_remote else set()
    for s in slots:
        rel = s.row["path"]
        if s.row["status"] != "ok" or not rel or not valid_image_id(s.row["image_id"]):
            continue  # a tampered image_id would name a thumbnail outside the gallery
        if view.is_remote:
            if rel not in stored:
                continue
            source: Callable[[], Path | bytes | None] = partial(view.read_bytes, rel)
        else:
            image = view.local_path(rel)
            if image is None:
                continue
            s.image = image
            source = partial(_same, image)
        s.found = True
        tag = (s.row["sha256"] or "nohash")[:10]
        todo.append((s, source, thumbs_dir / f"{s.row['image_id']}-{tag}-{size}.webp"))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        made = pool.map(lambda job: _thumbnail(job[1], job[2], size), todo)
        for (s, _, thumb), dims in zip(todo, made, strict=True):
            if dims is not None:
                s.thumb, s.thumb_size = thumb, dims


def _make_input_thumbs(view: DatasetView, slots: Iterable[_Slot], thumbs_dir: Path, size: int) -> None:
    """Thumbnails of the stored inputs, one per sha256 however many rows use it."""
    by_sha: dict[str, list[_Source]] = {}
    for s in slots:
        for src in s.sources:
            by_sha.setdefault(src.sha256, []).append(src)
    todo: list[tuple[str, Callable[[], Path | bytes | None], Path, Path | None]] = []
    for sha in by_sha:
        rel = input_rel(view, sha)  # None for a URL input, a missing file, or a tampered hash
        if rel is None:
            continue
        local = view.local_path(rel)
        source: Callable[[], Path | bytes | None] = (
            partial(view.read_bytes, rel) if view.is_remote else partial(_same, local) if local else _none)
        todo.append((sha, source, thumbs_dir / f"input-{sha[:16]}-{size}.webp", local))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        made = pool.map(lambda job: _thumbnail(job[1], job[2], size), todo)
        for (sha, _, thumb, local), dims in zip(todo, made, strict=True):
            if dims is None:
                continue
            for src in by_sha[sha]:
                src.thumb, src.thumb_size, src.image = thumb, dims, local


def _none() -> None:
    return None


def _same(path: Path) -> Path:
    return path


def _thumbnail(load: Callable[[], Path | bytes | None], dst: Path, size: int) -> tuple[int, int] | None:
    """Make ``dst`` from the image ``load()`` gives (a local file, or the bytes of one in object storage)
    unless it exists; return its pixel size, None if unreadable.

    Images are opened through :func:`safe_open_image`: one whose header claims more pixels than a
    model can deliver (a decompression bomb) gets no thumbnail instead of gigabytes of memory.
    ``draft`` lets JPEG decode at a reduced scale and ``thumbnail`` reduces before resampling.
    """
    try:
        if dst.is_file():
            with safe_open_image(dst) as done:
                return done.size
        src = load()
        if src is None:
            return None
        with safe_open_image(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            im.draft("RGB", (size, size))  # JPEG sources decode at reduced scale: much faster
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            rgb = im.convert("RGB")
        tmp = dst.with_name(dst.name + ".tmp")
        rgb.save(tmp, format="WEBP", quality=82, method=4)
        tmp.replace(dst)
        return rgb.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


# -- page --------------------------------------------------------------------------------------------

def _totals(table: pa.Table) -> dict[str, int]:
    """Counts over the whole dataset, not just the slots shown (computed in Arrow: cheap at any size)."""
    ok = pc.sum(pc.equal(table["status"], "ok")).as_py() or 0
    return {
        "slots": table.num_rows,
        "ok": ok,
        "failed": table.num_rows - ok,
        **{key: pc.count_distinct(table[col]).as_py() for key, col in
           (("prompts", "prompt"), ("seeds", "seed"), ("sizes", "size"))},
        "sources": _distinct_inputs(table),
    }


def _distinct_inputs(table: pa.Table) -> int:
    """How many distinct input images (by sha256) the rows use: 0 for text-to-image."""
    if "inputs" not in table.column_names or table.num_rows == 0:
        return 0
    flat = pc.list_flatten(table["inputs"])
    if len(flat) == 0:
        return 0
    return int(pc.count_distinct(pc.struct_field(flat, "sha256")).as_py() or 0)


def _dataset_name(view: DatasetView) -> str:
    try:
        manifest = view.manifest()
    except WanbatchError:
        manifest = {}
    name = manifest.get("name")
    if not name and isinstance(manifest.get("spec"), dict):
        name = manifest["spec"].get("name")
    return str(name or dataset_name(view))


def _header(
    title: str, root: str, totals: dict[str, int], shown: int, total: int, axes: tuple[str, str] | None,
    *, edits: bool = False,
) -> str:
    def stat(n: int, label: str, cls: str = "") -> str:
        return f'<div class="stat {cls}"><b>{n:,}</b><span>{label}</span></div>'

    stats = "".join([
        stat(totals["ok"], "images", "ok"),
        stat(totals["failed"], "failed", "bad" if totals["failed"] else ""),
        stat(totals["prompts"], "prompts"),
        stat(totals["seeds"], "seeds"),
        stat(totals["sizes"], "sizes"),
        stat(totals["sources"], "source images") if totals["sources"] else "",
    ])
    layout = (f"grid: rows = {escape(axes[0])}, columns = {escape(axes[1])}" if axes
              else "source → result, sets as strips" if edits else "wall of cards")
    note = ""
    if shown < total:
        note = (
            f'<p class="note">Showing the first {shown:,} of {total:,} slots (ordered by prompt and seed) to '
            f"keep this page light. Rebuild with a larger <code>limit</code> to see more.</p>"
        )
    return (
        f'<header><div><h1>{escape(title)}</h1><p class="sub">{escape(root)} · {layout} · '
        f"hover a card for its full caption, click for the full image</p></div>"
        f'<div class="stats">{stats}</div></header>{note}'
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="wanbatch">
<title>{title} · wanbatch gallery</title>
<style>{css}</style>
</head>
<body>
{header}
<main>{body}</main>
</body>
</html>
"""

_CSS = """
:root { --thumb: THUMBpx; --bg: #f6f7f9; --panel: #fff; --ink: #1d2433; --muted: #6b7385;
  --line: #e3e6ec; --bad: #c62828; --bad-bg: #fdecec; --accent: #2f6fed; color-scheme: light dark; }
@media (prefers-color-scheme: dark) { :root { --bg: #14171c; --panel: #1d2128; --ink: #e8ebf0;
  --muted: #98a1b3; --line: #2c313a; --bad: #ff6b6b; --bad-bg: #3a1f22; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
header { display: flex; flex-wrap: wrap; gap: 16px 32px; align-items: center; justify-content: space-between;
  padding: 20px 28px; background: var(--panel); border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 22px; letter-spacing: -0.01em; }
.sub { margin: 4px 0 0; color: var(--muted); font-size: 13px; }
.stats { display: flex; gap: 10px; flex-wrap: wrap; }
.stat { min-width: 78px; padding: 8px 12px; border: 1px solid var(--line); border-radius: 10px;
  text-align: center; }
.stat b { display: block; font-size: 18px; font-variant-numeric: tabular-nums; }
.stat span { color: var(--muted); font-size: 12px; }
.stat.ok b { color: #1b873f; } .stat.bad b { color: var(--bad); }
.note { margin: 0; padding: 10px 28px; background: #fff8e1; color: #6d5200;
  border-bottom: 1px solid #f3e3a6; }
main { padding: 24px 28px 40px; }
code { font: 11px/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: var(--muted); }
table.grid { border-collapse: separate; border-spacing: 10px 12px; margin: -12px -10px; }
.grid th { font-weight: 600; text-align: left; vertical-align: bottom; padding: 0 4px 2px; }
.grid thead th { position: sticky; top: 0; background: var(--bg); z-index: 1; white-space: nowrap; }
.grid .corner { color: var(--muted); font-weight: 500; font-size: 12px; }
.grid .corner span { opacity: .6; }
.grid .rowhead { vertical-align: middle; width: 230px; min-width: 180px; max-width: 260px; font-weight: 500;
  position: sticky; left: 0; background: var(--bg); z-index: 1; }
.grid td { vertical-align: top; padding: 0; }
.grid tbody tr + tr > * { border-top: 2px solid var(--muted); padding-top: 12px; }
.grid td > .card + .card { margin-top: 10px; }
.muted { color: var(--muted); font-weight: 400; }
.wall { display: grid; gap: 16px;
  grid-template-columns: repeat(auto-fill, minmax(min(var(--thumb), 100%), 1fr)); }
.card { margin: 0; width: var(--thumb); max-width: 100%; background: var(--panel);
  border: 1px solid var(--line); border-radius: 10px; overflow: hidden;
  box-shadow: 0 1px 2px rgba(16, 24, 40, .05); }
.wall .card { width: auto; }
.card a { display: block;
  background: repeating-conic-gradient(#0000000a 0 25%, transparent 0 50%) 0 0 / 16px 16px; }
.card img { display: block; width: 100%; height: auto; aspect-ratio: attr(width) / attr(height); }
.card a:hover img { opacity: .92; }
figcaption { display: flex; flex-wrap: wrap; justify-content: space-between; gap: 2px 8px;
  padding: 7px 10px 8px; font-size: 12px; color: var(--muted); }
figcaption .prompt { flex-basis: 100%; color: var(--ink); font-size: 13px; display: -webkit-box;
  -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
.fail { display: flex; flex-direction: column; justify-content: center; gap: 6px; aspect-ratio: 3 / 2;
  padding: 14px 16px; background: var(--bad-bg); color: var(--bad); border-bottom: 1px solid var(--line); }
.fail strong { font-size: 13px; letter-spacing: .02em; }
.fail span { font-size: 12px; color: var(--ink); opacity: .8; overflow: hidden; }
.card.failed { border-color: color-mix(in srgb, var(--bad) 45%, var(--line)); }
.fail.missing { background: var(--bg); color: var(--muted); }
.wall.edits { align-items: start;
  grid-template-columns: repeat(auto-fill, minmax(min(calc(var(--thumb) * 2 + 56px), 100%), 1fr)); }
.pairrow .fail { border-radius: 6px; border-bottom: 0; padding: 8px 10px; }
.pairrow { display: grid; grid-template-columns: 1fr auto 1fr; align-items: center; gap: 8px;
  padding: 10px 10px 0; }
.pairrow img, .striprow img { display: block; width: 100%; height: auto; border-radius: 6px; }
.pairrow a, .striprow a { display: block; background: none; }
.sources { display: grid; grid-template-columns: repeat(var(--cols), 1fr); gap: 4px; }
.src, .frame { position: relative; }
.badge { position: absolute; top: 4px; left: 4px; z-index: 1; min-width: 18px; padding: 0 5px;
  border-radius: 9px; background: rgba(0, 0, 0, .62); color: #fff; font-size: 11px; line-height: 18px;
  text-align: center; }
.arrow { font-size: 24px; color: var(--muted); padding: 0 2px; }
.nosrc { display: flex; flex-direction: column; gap: 4px; justify-content: center; aspect-ratio: 1 / 1;
  padding: 8px; border: 1px dashed var(--line); border-radius: 6px; color: var(--muted); font-size: 11px;
  overflow: hidden; overflow-wrap: anywhere; }
.nosrc strong { color: var(--ink); font-weight: 600; }
.card.pair figcaption .prompt::before, .strip figcaption .prompt::before { content: "“"; }
.card.pair figcaption .prompt::after, .strip figcaption .prompt::after { content: "”"; }
.strip { grid-column: 1 / -1; margin: 0; background: var(--panel); border: 1px solid var(--line);
  border-radius: 10px; box-shadow: 0 1px 2px rgba(16, 24, 40, .05); }
.striprow { display: flex; align-items: center; gap: 8px; padding: 10px 10px 0; overflow-x: auto; }
.striprow .sources { flex: 0 0 calc(var(--thumb) * .75); }
.striprow .frame { flex: 0 0 var(--thumb); }
.striprow .fail { border-radius: 6px; }
.rowhead .sources { width: 100%; max-width: 200px; }
.rowhead img { display: block; width: 100%; height: auto; border-radius: 6px; }
.srcname { display: block; margin-top: 4px; color: var(--muted); font: 11px/1.3 ui-monospace, monospace;
  overflow-wrap: anywhere; }
.empty { width: var(--thumb); aspect-ratio: 3 / 2; display: grid; place-items: center; color: var(--muted);
  border: 1px dashed var(--line); border-radius: 10px; }
"""
