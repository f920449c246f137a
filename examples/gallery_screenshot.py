"""Render a dataset's gallery and screenshot it with headless Chromium, in one command.

    python examples/gallery_screenshot.py datasets/edit-pairs-2 docs/gallery-edit.png
    python examples/gallery_screenshot.py DATASET OUT.png --size 1400x1000 --thumb 160

The page is built in a temporary folder next to nothing of yours (thumbnails included) and loaded
from file:// with networking off: what the PNG shows is what a user opening the page sees.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from wanbatch.gallery import build_gallery


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a wanbatch dataset folder (or s3://…)")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--size", default="1400x1000", help="window WIDTHxHEIGHT (default 1400x1000)")
    parser.add_argument("--thumb", type=int, default=160, help="thumbnail size in pixels (default 160)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
                        or "chromium", help="the Chromium binary")
    args = parser.parse_args()
    width, _, height = args.size.partition("x")
    if not (width.isdigit() and height.isdigit()):
        parser.error(f"--size must look like 1400x1000, not {args.size!r}")
    with tempfile.TemporaryDirectory() as tmp:
        page = build_gallery(args.dataset, Path(tmp) / "gallery.html", thumb=args.thumb)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={Path(tmp) / 'profile'}",
             f"--screenshot={args.out.resolve()}", f"--window-size={width},{height}",
             page.resolve().as_uri()],
            check=True, capture_output=True, timeout=60,
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
