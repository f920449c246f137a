"""The gallery of an edit dataset: source(s) → result pairs, sets as strips, nothing fetched, all escaped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from tests.helpers.gallery_page import parse_gallery
from tests.helpers.synthetic import URL_INPUT, SyntheticEditDataset, make_dataset, make_edit_dataset
from wanbatch.errors import WanbatchError
from wanbatch.gallery import build_gallery

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SyntheticEditDataset:
    return make_edit_dataset(tmp_path_factory.mktemp("edit") / "edit-pairs")


def test_edits_are_source_to_result_pairs(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    page = build_gallery(ds.root, tmp_path / "site" / "g.html", thumb=64)
    parsed = parse_gallery(page)
    pairs = [f for f in parsed.figures if "pair" in str(f["class"]).split()]
    strips = [f for f in parsed.figures if f["class"] == "strip"]
    assert len(pairs) == 8 and len(strips) == 1  # 6 edits (one failed) + fusion + URL edit; one set
    for link in parsed.links:
        assert not link.startswith(("http:", "https:", "/", "data:")), link  # nothing from the network
        assert (page.parent / unquote(link)).resolve().is_file(), link
    by_prompt = {str(f["title"]).split("\n")[0]: f for f in pairs if "failed" not in str(f["class"])}
    fusion = by_prompt["put the sun of image 1 into image 2"]
    # two input thumbnails and the result's, each linked to its full image
    assert len(fusion["srcs"]) == 3  # type: ignore[arg-type]
    targets = [(page.parent / unquote(h)).resolve() for h in fusion["hrefs"]]  # type: ignore[attr-defined]
    fused = next(r for r in ds.rows if r["prompt"].startswith("put the sun"))
    assert [t.name.split(".")[0] for t in targets[:2]] == [i["sha256"] for i in fused["inputs"]]
    assert targets[2] == (ds.root / fused["path"]).resolve()
    assert "input 2: dataset:" in str(fusion["title"])
    # a failed edit still shows what it was asked to edit
    failed = next(f for f in pairs if "failed" in str(f["class"]))
    assert len(failed["srcs"]) == 1 and "moderation" in " ".join(parsed.text)  # type: ignore[arg-type]
    # a URL input is named, never loaded
    url_card = by_prompt["give the cat a hat"]
    assert len(url_card["srcs"]) == 1 and "URL input (not stored)" in parsed.text  # type: ignore[arg-type]
    assert URL_INPUT in parsed.text
    # one thumbnail per stored input, however many rows use it
    thumbs = list((tmp_path / "site" / "g_thumbs").glob("input-*.webp"))
    assert len(thumbs) == len(ds.inputs) == 3 and max(Image.open(thumbs[0]).size) == 64


def test_a_sequential_set_is_one_strip_in_slot_order(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    parsed = parse_gallery(build_gallery(ds.root, tmp_path / "g.html", thumb=48))
    assert parsed.frames == ["0", "1", "2"]
    strip = next(f for f in parsed.figures if f["class"] == "strip")
    assert len(strip["srcs"]) == 4  # type: ignore[arg-type]  # its source, then the three images
    assert "set of 3" in " ".join(parsed.text)


def test_html_in_prompts_and_sources_is_escaped(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)> '
    ds = make_edit_dataset(tmp_path / "ds", bases=2, sequential=False, failed=False, prompt_prefix=hostile,
                           url_source='https://x.example/"><script>alert(2)</script>.png')
    page = build_gallery(ds.root, tmp_path / "g.html", thumb=48)
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html  # shown as text, in captions
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    parsed = parse_gallery(page)
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html  # the URL input's name, as text
    # only wanbatch's own tags: the results and the 6 stored-input thumbnails (4 edits, a fusion of 2)
    assert "script" not in parsed.tags and parsed.tags.count("img") == len(ds.ok) + 6


def test_text_to_image_gallery_has_no_pairs(tmp_path: Path) -> None:
    plain = make_dataset(tmp_path / "plain", prompts=4, seeds=1, failed=0)
    parsed = parse_gallery(build_gallery(plain.root, tmp_path / "g.html", thumb=48))
    assert [f["class"] for f in parsed.figures] == ["card"] * 4
    assert "source images" not in " ".join(parsed.text)


def test_named_axes_still_make_a_grid_of_pairs(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    html = build_gallery(ds.root, tmp_path / "g.html", rows="prompt", cols="size", thumb=48).read_text()
    assert 'class="grid"' in html and html.count('class="card pair"') == 7 + 3  # the set's 3 as pairs


@pytest.mark.slow  # a Python process and a Chromium: ~10 s on a loaded machine
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_screenshot_script_renders_the_edit_gallery(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "gallery_screenshot.py"
    out = tmp_path / "shot.png"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    command = [sys.executable, str(script), str(ds.root), str(out), "--size", "900x700", "--thumb", "96"]
    subprocess.run(command, check=True, capture_output=True, timeout=55, env=env)
    with Image.open(out) as img:
        assert img.size == (900, 700)
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # pictures and text drawn, not a blank page


def test_source_by_instruction_grid(ds: SyntheticEditDataset, tmp_path: Path) -> None:
    html = build_gallery(ds.root, tmp_path / "g.html", rows="source", cols="prompt", thumb=48).read_text()
    parsed = parse_gallery(tmp_path / "g.html")
    # 3 bases, the fusion of two of them, the URL: one row each; the 5 instructions as columns
    assert html.count("<tr data-row>") == 5 and html.count("<th scope=\"col\" data-col>") == 5
    heads = re.findall(r'<th scope="row" class="rowhead">(.*?)</th>', html)
    assert sum(h.count("<img") for h in heads) == 3 + 2  # each base's picture; the fusion's two
    assert "pair" not in " ".join(str(f["class"]) for f in parsed.figures)  # sources are in the heads
    plain = make_dataset(tmp_path / "plain", prompts=2, seeds=1, failed=0)
    with pytest.raises(WanbatchError, match="unknown gallery axis 'source'"):
        build_gallery(plain.root, tmp_path / "p.html", rows="source")
