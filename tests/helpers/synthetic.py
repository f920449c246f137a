"""Build small, realistic wanbatch datasets on disk without running a gateway.

Exports and the gallery read only what is on disk (``images/`` and ``index/``), so tests build that
directly: real PNG files made with Pillow and one Parquet index part that follows
:data:`wanbatch.dataset.schema.INDEX_SCHEMA` exactly, including failed rows.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from wanbatch.dataset.layout import FORMAT_VERSION
from wanbatch.dataset.schema import INDEX_SCHEMA

MODEL = "wan2.7-image-pro"
TEMPLATE = "{subject}, {style}"
SUBJECTS = ["a flower shop with a wooden door", "a bakery at dawn", "a lighthouse in fog", "a quiet harbour"]
STYLES = ["watercolor", "photorealistic", "ink sketch", "pastel"]
PARAMS = json.dumps({"thinking_mode": True, "watermark": False}, sort_keys=True, separators=(",", ":"))


@dataclass
class SyntheticDataset:
    """What was written, so tests can assert against it."""

    root: Path
    rows: list[dict[str, Any]]
    prompts: list[str]
    seeds: list[int]
    size: tuple[int, int]

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]


def _job_id(prompt: str, size: str, seed: int) -> str:
    canonical = json.dumps([MODEL, prompt, size, seed, 1, PARAMS], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def draw_image(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """A deterministic picture for (prompt, seed): a gradient sky, hills and a sun, cheap to draw."""
    rng = random.Random(f"{prompt}|{seed}")
    hue = (int(hashlib.md5(prompt.encode()).hexdigest()[:4], 16) % 360) / 360.0
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    top = colorsys.hsv_to_rgb(hue, 0.35, 0.98)
    bottom = colorsys.hsv_to_rgb((hue + 0.08) % 1.0, 0.6, 0.75)
    for y in range(height):
        t = y / max(1, height - 1)
        rgb = tuple(int(255 * (a + (b - a) * t)) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=rgb)
    sun_r = int(min(width, height) * rng.uniform(0.08, 0.16))
    sx, sy = int(width * rng.uniform(0.15, 0.85)), int(height * rng.uniform(0.12, 0.4))
    draw.ellipse([sx - sun_r, sy - sun_r, sx + sun_r, sy + sun_r], fill=(255, 236, 170))
    for layer in range(3):
        shade = colorsys.hsv_to_rgb((hue + 0.3 + 0.05 * layer) % 1.0, 0.45, 0.55 - 0.12 * layer)
        base = height * (0.55 + 0.13 * layer)
        points: list[tuple[float, float]] = [(0, height)]
        for i in range(9):
            x = width * i / 8
            points.append((x, base - rng.uniform(0, height * 0.18)))
        points.append((width, height))
        draw.polygon(points, fill=tuple(int(255 * c) for c in shade))
    return img


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in INDEX_SCHEMA.names}
    row.update(overrides)
    return row


def make_dataset(
    root: Path,
    *,
    prompts: int = 3,
    seeds: int = 4,
    size: tuple[int, int] = (96, 64),
    failed: int = 2,
    name: str = "flower-shops",
) -> SyntheticDataset:
    """Write a seed sweep of ``prompts`` × ``seeds`` images; the last ``failed`` slots are failures.

    With ``seeds=1`` and many prompts it is a plain (non-sweep) dataset. Failures alternate between a
    moderation refusal and a missing image, as a gateway would produce them.
    """
    root.mkdir(parents=True, exist_ok=True)
    width, height = size
    size_str = f"{width}*{height}"
    seed_values = [7 + 11 * k for k in range(seeds)]
    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    prompt_texts: list[str] = []
    slots = [(p, s) for p in range(prompts) for s in seed_values]
    fail_from = len(slots) - failed
    for i, (p, seed) in enumerate(slots):
        variables = {"subject": SUBJECTS[p % len(SUBJECTS)], "style": STYLES[(p // len(SUBJECTS)) % 4]}
        if p >= len(SUBJECTS) * len(STYLES):
            variables["subject"] += f" #{p}"
        prompt = TEMPLATE.format(**variables)
        if prompt not in prompt_texts:
            prompt_texts.append(prompt)
        job_id = _job_id(prompt, size_str, seed)
        image_id = f"{job_id}-0"
        common = dict(
            image_id=image_id, job_id=job_id, pipeline="text2image", model=MODEL, provider="mock",
            prompt=prompt, template=TEMPLATE, vars=list(variables.items()), seed=seed, size=size_str,
            n=1, slot=0, params=PARAMS, attempts=1, latency_ms=900 + 37 * i,
            created_at=start + timedelta(seconds=i), run_id="run-0001",
        )
        if i >= fail_from:
            moderated = (i - fail_from) % 2 == 0
            rows.append(_row(
                **common, status="failed",
                error_kind="moderation" if moderated else "missing_image",
                error_message=("The prompt was rejected by content moderation."
                               if moderated else "The gateway returned 0 of 1 images."),
            ))
            continue
        rel = f"images/{image_id[:2]}/{image_id}.png"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_image(prompt, seed, width, height).save(path, format="PNG")
        data = path.read_bytes()
        rows.append(_row(
            **common, status="ok", width=width, height=height, revised_prompt=prompt + ", detailed",
            path=rel, format="png", bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        ))
    (root / "index").mkdir(exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    pq.write_table(table, root / "index" / "part-00000.parquet")
    manifest = {"format_version": FORMAT_VERSION, "name": name, "spec": None, "runs": []}
    (root / "wanbatch.json").write_text(json.dumps(manifest, indent=2))
    return SyntheticDataset(root=root, rows=rows, prompts=prompt_texts, seeds=seed_values, size=size)


# -- edit datasets -----------------------------------------------------------------------------------

INSTRUCTIONS = ["make it snowy", "turn it into a night scene"]
#: An input given as a URL: wanbatch sends it as is and stores nothing (its sha256 is of the bytes
#: the gateway was pointed at, recorded when the spec was validated).
URL_INPUT = "https://images.example.com/cat.png"


@dataclass
class SyntheticEditDataset:
    """An edit dataset as the runner writes it: result images, rows with ``inputs``, and every local
    input stored once under ``inputs/<sha[:2]>/<sha>.<ext>``."""

    root: Path
    rows: list[dict[str, Any]]
    inputs: dict[str, tuple[int, int]]  # stored input sha256 -> (width, height)
    size: tuple[int, int]  # of the results

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]


def make_edit_dataset(root: Path, *, bases: int = 3, size: tuple[int, int] = (96, 64),
                      source_size: tuple[int, int] = (80, 60), multi: bool = True, url: bool = True,
                      sequential: bool = True, failed: bool = True,
                      prompt_prefix: str = "", url_source: str = URL_INPUT) -> SyntheticEditDataset:
    """Write an edit dataset through :class:`~wanbatch.dataset.writer.DatasetWriter`.

    ``bases`` source images (png, jpg and webp in turn, ``source_size``) each edited with every one of
    :data:`INSTRUCTIONS` (one input, ``source`` = ``dataset:<image_id>`` of an earlier stage); with
    ``multi`` one fusion of the first two bases (two inputs); with ``url`` one edit of the URL input
    ``url_source`` (not stored); with ``sequential`` a set of three from the last base
    (``enable_sequential``, slots 0–2); with ``failed`` one refused edit. Results are ``size``.
    """
    from wanbatch.dataset.writer import DatasetWriter

    width, height = size
    size_str = f"{width}*{height}"
    start = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    stored: dict[str, tuple[int, int]] = {}
    sources: list[tuple[str, str]] = []  # (sha256, source) per base
    formats = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")]
    writer = DatasetWriter.open(root, create=True)  # first: it refuses a folder that is not empty
    for b in range(bases):
        pil, ext = formats[b % len(formats)]
        buf = io.BytesIO()
        draw_image(f"base {b}", b, *source_size).save(buf, format=pil)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        path = root / "inputs" / sha[:2] / f"{sha}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stored[sha] = source_size
        base_id = hashlib.sha256(f"base{b}".encode()).hexdigest()[:16] + "-0"
        sources.append((sha, f"dataset:{base_id}"))

    requests: list[tuple[str, list[tuple[str, str]], dict[str, Any], int]] = []  # prompt, inputs, params, n
    for sha_source in sources:
        for instruction in INSTRUCTIONS:
            requests.append((prompt_prefix + instruction, [sha_source], {}, 1))
    if multi and len(sources) >= 2:
        requests.append((prompt_prefix + "put the sun of image 1 into image 2", sources[:2], {}, 1))
    if url:
        url_sha = hashlib.sha256(url_source.encode()).hexdigest()
        requests.append((prompt_prefix + "give the cat a hat", [(url_sha, url_source)], {}, 1))
    if sequential:
        requests.append((prompt_prefix + "the same street through the seasons", sources[-1:],
                         {"enable_sequential": True}, 3))
    rows: list[dict[str, Any]] = []
    try:
        for i, (prompt, inputs, extra, n) in enumerate(requests):
            params = json.dumps({"watermark": False, **extra}, sort_keys=True, separators=(",", ":"))
            job_id = hashlib.sha256(json.dumps([prompt, inputs, params]).encode()).hexdigest()[:16]
            for slot in range(n):
                image_id = f"{job_id}-{slot}"
                common = dict(
                    image_id=image_id, job_id=job_id, pipeline="image2image", model=MODEL, provider="mock",
                    prompt=prompt, template=prompt, vars=[], seed=1000 + i, size=size_str, n=n, slot=slot,
                    params=params, attempts=1, latency_ms=1200, run_id="run-edit",
                    created_at=start + timedelta(seconds=len(rows)),
                    inputs=[{"sha256": sha, "source": source} for sha, source in inputs],
                )
                if failed and i == 0 and slot == 0:  # the first edit of the first base was refused
                    rows.append(_row(**common, status="failed", error_kind="moderation",
                                     error_message="The input image was rejected by content moderation."))
                    continue
                tmp = writer.tmp_path(".png")
                tmp.parent.mkdir(parents=True, exist_ok=True)
                draw_image(f"{prompt}|{slot}", i, width, height).save(tmp, format="PNG")
                data = tmp.read_bytes()
                rel = writer.place(tmp, image_id, "png")
                rows.append(_row(**common, status="ok", width=width, height=height, path=rel, format="png",
                                 bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
        writer.append(rows)
    finally:
        writer.close()
    return SyntheticEditDataset(root=root, rows=rows, inputs=stored, size=size)
