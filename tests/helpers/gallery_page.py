"""What a gallery page shows, read back with the standard library's HTML parser: its links, the sweep
grid's shape, its cards (figures) and strips, and its text."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path


class GalleryPage(HTMLParser):
    """Every ``img`` src and ``a`` href (apart, and together in page order as ``links``), stylesheet or
    script files, the grid table's attributes and its row and column headers, each figure (its class and
    title, and as ``figures`` also the srcs and hrefs inside it), strip frames in order, tags, and text."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self.grid: dict[str, str] = {}
        self.rows = self.cols = 0
        self.cards: list[str] = []
        self.titles: list[str] = []
        self.figures: list[dict[str, object]] = []
        self.frames: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.in_figure = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self.in_figure = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "figure":
            self.cards.append(a.get("class", ""))
            self.titles.append(a.get("title", ""))
            self.figures.append({"class": a.get("class", ""), "title": a.get("title", ""), "srcs": [],
                                 "hrefs": []})
            self.in_figure = True
        if tag == "img":
            self.srcs.append(a["src"])
            self.links.append(a["src"])
            if self.in_figure:
                self.figures[-1]["srcs"].append(a["src"])  # type: ignore[attr-defined]
        if tag == "a":
            self.hrefs.append(a["href"])
            self.links.append(a["href"])
            if self.in_figure:
                self.figures[-1]["hrefs"].append(a["href"])  # type: ignore[attr-defined]
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.external.append(tag)
        if tag == "table" and "grid" in a.get("class", ""):
            self.grid = a
        if tag == "tr" and "data-row" in a:
            self.rows += 1
        if tag == "th" and "data-col" in a:
            self.cols += 1
        if tag == "div" and "frame" in a.get("class", "").split():
            self.frames.append(a.get("data-slot", ""))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_gallery(page: Path) -> GalleryPage:
    """The gallery page at ``page``, parsed."""
    parsed = GalleryPage()
    parsed.feed(page.read_text(encoding="utf-8"))
    return parsed
