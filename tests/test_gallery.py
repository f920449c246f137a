"""The gallery page: every link resolves, the sweep grid has the right shape, Chromium renders it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from tests.helpers.gallery_page import parse_gallery
from tests.helpers.synthetic import SyntheticDataset, make_dataset
from wanbatch.errors import WanbatchError
from wanbatch.gallery import build_gallery

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_dataset(tmp_path_factory.mktemp("sweep") / "flower-shops", size=(120, 90))


def test_every_src_and_href_resolves_to_a_file(sweep: SyntheticDataset, tmp_path: Path) -> None:
    page = build_gallery(sweep.root, tmp_path / "site" / "gallery.html", thumb=64)
    parsed = parse_gallery(page)
    assert len(parsed.srcs) == len(sweep.ok) and len(parsed.hrefs) == len(sweep.ok)
    for link in parsed.srcs + parsed.hrefs:
        assert not link.startswith(("http:", "https:", "/")), link
        assert (page.parent / unquote(link)).resolve().is_file(), link
    thumbs = sorted((tmp_path / "site" / "gallery_thumbs").iterdir())
    assert len(thumbs) == len(sweep.ok)
    assert max(Image.open(thumbs[0]).size) == 64
    targets = {(page.parent / unquote(h)).resolve() for h in parsed.hrefs}
    assert targets == {(sweep.root / r["path"]).resolve() for r in sweep.ok}
    assert parsed.external == []  # self-contained: no stylesheet or script files


def test_seed_sweep_grid_has_prompt_rows_and_seed_columns(sweep: SyntheticDataset, tmp_path: Path) -> None:
    parsed = parse_gallery(build_gallery(sweep.root, tmp_path / "g.html", thumb=64))
    assert (parsed.rows, parsed.cols) == (3, 4)
    assert parsed.grid["data-rows"] == "3" and parsed.grid["data-cols"] == "4"
    failed = [c for c in parsed.cards if "failed" in c]
    assert len(failed) == len(sweep.failed) == 2
    text = " ".join(parsed.text)
    assert "moderation" in text and "rejected by content moderation" in text
    # Captions on hover carry prompt, seed, size and id.
    ok = sweep.ok[0]
    assert any(ok["prompt"] in t and f"seed {ok['seed']}" in t and ok["image_id"] in t for t in parsed.titles)


def test_axes_can_be_chosen_by_name(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", prompts=6, seeds=2, failed=0)  # subjects × 2 styles
    parsed = parse_gallery(build_gallery(ds.root, tmp_path / "g.html", rows="subject", cols="style",
                                         thumb=48))
    assert (parsed.rows, parsed.cols) == (4, 2)  # 4 subjects; styles watercolor, photorealistic
    assert set(ds.prompts) <= set(parsed.text)  # no axis names the prompt: the cards show it
    parsed = parse_gallery(build_gallery(ds.root, tmp_path / "g.html", rows="seed", cols="prompt", thumb=48))
    assert (parsed.rows, parsed.cols) == (2, 6)
    with pytest.raises(WanbatchError, match=r"unknown gallery axis 'mood'.*subject"):
        build_gallery(ds.root, tmp_path / "g.html", rows="mood")


def test_plain_dataset_is_a_wall_and_limit_is_announced(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", prompts=8, seeds=1, failed=1)
    page = build_gallery(ds.root, tmp_path / "wall.html", thumb=48, limit=5)
    parsed = parse_gallery(page)
    assert parsed.grid == {} and len(parsed.cards) == 5
    assert "Showing the first 5 of 8 slots" in " ".join(parsed.text)


def test_thumbnails_are_made_once(sweep: SyntheticDataset, tmp_path: Path) -> None:
    page = build_gallery(sweep.root, tmp_path / "g.html", thumb=64)
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "g_thumbs").iterdir()}
    build_gallery(sweep.root, page, thumb=64)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "g_thumbs").iterdir()} == first
    build_gallery(sweep.root, page, thumb=80)  # another size is another thumbnail
    assert len(list((tmp_path / "g_thumbs").iterdir())) == 2 * len(first)


def test_missing_image_file_shows_as_such(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", prompts=1, seeds=2, failed=0)
    (ds.root / ds.ok[0]["path"]).unlink()
    page = build_gallery(ds.root, tmp_path / "g.html", thumb=48)
    parsed = parse_gallery(page)
    assert "image file missing" in " ".join(parsed.text)
    assert all((page.parent / unquote(s)).is_file() for s in parsed.srcs + parsed.hrefs)


def test_bad_options_are_clear_errors(sweep: SyntheticDataset, tmp_path: Path) -> None:
    with pytest.raises(WanbatchError, match="thumb must be"):
        build_gallery(sweep.root, tmp_path / "g.html", thumb=5)
    with pytest.raises(WanbatchError, match="limit must be"):
        build_gallery(sweep.root, tmp_path / "g.html", limit=0)
    with pytest.raises(WanbatchError, match="no such dataset folder"):
        build_gallery(tmp_path / "nothing", tmp_path / "g.html")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_chromium_renders_the_page(sweep: SyntheticDataset, tmp_path: Path) -> None:
    page = build_gallery(sweep.root, tmp_path / "gallery.html", thumb=96)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1000,700",
             page.resolve().as_uri()],
            check=True, capture_output=True, timeout=45,
        )
    with Image.open(shot) as img:
        assert img.size == (1000, 700)
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # thumbnails and text drawn, not a blank page
