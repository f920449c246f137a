"""Opening image files that came from elsewhere without letting them exhaust memory.

A few kilobytes of WebP, JPEG or PNG can claim 13000×13000 pixels and take gigabytes to decode;
Pillow's own guard (``Image.MAX_IMAGE_PIXELS``) is process-wide and only warns below 179 MP. So every
image wanbatch did not make itself is opened here: only the formats a gateway may deliver are tried
(never EPS, which would run Ghostscript), and the dimensions in the header are checked against an
explicit pixel limit *before* anything is decoded (``Image.open`` reads the header only).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from wanbatch.types import MAX_IMAGE_PIXELS

#: Formats a gateway may deliver (and an export or gallery may meet); Pillow tries no others.
SAFE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

__all__ = ["MAX_IMAGE_PIXELS", "SAFE_FORMATS", "ImageTooLarge", "safe_open_image"]


class ImageTooLarge(ValueError):
    """The header claims more pixels than allowed; nothing was decoded."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(f"{width}×{height} = {width * height / 1e6:.1f} MP is more than the "
                         f"{max_pixels / 1e6:.1f} MP an image may have")
        self.width, self.height, self.max_pixels = width, height, max_pixels


def _formats() -> list[str]:
    Image.init()
    return [f for f in SAFE_FORMATS if f in Image.OPEN]


@contextmanager
def safe_open_image(path: Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator[Image.Image]:
    """``Image.open`` limited to :data:`SAFE_FORMATS`, raising :class:`ImageTooLarge` when the
    header's width × height exceeds ``max_pixels``; Pillow's own errors (``UnidentifiedImageError``,
    ``OSError``…) pass through. Decode (``load``, ``thumbnail``…) inside the ``with`` block."""
    with Image.open(path, formats=_formats()) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(width, height, max_pixels)
        yield img


#: Longest side, and most bytes, an input image may have (Model Studio's editing limits; see
#: :mod:`wanbatch.models`, which holds the same facts for validation).
_FIT_SIDE = 8000
_FIT_BYTES = 20 * 1024 * 1024


def fit_input(path: Path, max_pixels: int = MAX_IMAGE_PIXELS * 4) -> tuple[bytes, int, int]:
    """An input image the user allowed wanbatch to change (``fit_inputs: true``), as the PNG that is
    sent: re-encoded losslessly, and downscaled (Lanczos, aspect kept) only as far as needed for a
    side of at most 8000 px and a file of at most 20 MB. Deterministic for a given file and Pillow,
    so the plan (which hashes it) and the request (which sends it) agree; returns (png, width, height).
    """
    import io

    with safe_open_image(path, max_pixels) as img:
        img.load()
        frame = img.convert("RGBA" if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
                            else "RGB")
    scale = min(1.0, _FIT_SIDE / max(frame.size))
    while True:
        size = (max(1, int(frame.width * scale)), max(1, int(frame.height * scale)))
        shown = frame if size == frame.size else frame.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        shown.save(out, "PNG", compress_level=6)
        data = out.getvalue()
        if len(data) <= _FIT_BYTES or min(size) <= 240:
            return data, size[0], size[1]
        scale *= 0.8
