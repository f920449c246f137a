"""Deterministic PNGs, cheap enough for thousands of downloads a second and 4K images of ~25 MB.

Design. A PNG's pixel data is one zlib stream split over any number of IDAT chunks, and raw deflate
segments that end in a full flush can be concatenated. So an image is assembled from:

- a *stripe* of the top rows that is unique to the image: a block in a colour taken from the image's
  digest followed by the digest bytes tiled across the row (distinct keys give distinct pixels, hence a
  distinct sha256). It is a few rows, compressed on every request (tens of microseconds);
- a *base* shared by every image of the same (width, height, size target), built once and cached:
  a smooth gradient (first row unfiltered, the others PNG "Up"-filtered constants, so it costs almost
  nothing to build and compresses to nearly nothing) and a band of seeded noise stored uncompressed,
  whose height sets the file size to about ``image_kb``. It is kept as ready-made IDAT chunks of
  1 MiB with their CRCs, so serving it copies nothing;
- a last IDAT holding the empty final deflate block and the Adler-32 of the whole stream, obtained by
  combining the stripe's and the base's checksums arithmetically.

A ``tEXt`` chunk also carries the digest. Big bodies are streamed chunk by chunk.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STRIPE_ROWS = 8
_CHUNK = 1 << 20
_ADLER_BASE = 65521
_TOKEN_KEY = b"wanbatch-mock-oss"
#: Default size target: about 25000 KB for a 4096×4096 image, proportional to the pixel count.
_DEFAULT_BYTES_PER_PIXEL = 25000 * 1024 / (4096 * 4096)


def image_digest(prompt: str, seed: int | None, size: str, slot: int, inputs: tuple[str, ...] = ()) -> bytes:
    """16 bytes identifying one image: same (prompt, seed, size, slot, input images) → same image."""
    material = "\x1f".join([prompt, "" if seed is None else str(seed), size, str(slot), *inputs])
    return hashlib.blake2b(material.encode("utf-8"), digest_size=16).digest()


def default_kb(width: int, height: int) -> int:
    return max(1, round(width * height * _DEFAULT_BYTES_PER_PIXEL / 1024))


@dataclass(frozen=True, slots=True)
class ImageRef:
    """What a download URL encodes: the picture to render and until when the link is valid."""

    width: int
    height: int
    kb: int
    digest: bytes
    expires: int

    _LAYOUT = struct.Struct(">IIIQ16s")

    def token(self) -> str:
        payload = self._LAYOUT.pack(self.width, self.height, self.kb, self.expires, self.digest)
        mac = hmac.new(_TOKEN_KEY, payload, hashlib.sha256).digest()[:8]
        return base64.urlsafe_b64encode(payload + mac).decode("ascii").rstrip("=") + ".png"

    @classmethod
    def from_token(cls, token: str) -> ImageRef | None:
        """Decode a token; ``None`` when it is not one this mock issued."""
        stem = token.removesuffix(".png")
        try:
            raw = base64.urlsafe_b64decode(stem + "=" * (-len(stem) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != cls._LAYOUT.size + 8:
            return None
        payload, mac = raw[:-8], raw[-8:]
        if not hmac.compare_digest(mac, hmac.new(_TOKEN_KEY, payload, hashlib.sha256).digest()[:8]):
            return None
        width, height, kb, expires, digest = cls._LAYOUT.unpack(payload)
        return cls(width, height, kb, digest, expires)


@dataclass(frozen=True, slots=True)
class _Base:
    chunks: tuple[bytes, ...]  # complete IDAT chunks (length, type, data, crc)
    adler: int  # Adler-32 of the base's raw (filtered) bytes
    raw_len: int
    size: int  # total bytes of ``chunks``


class PngRenderer:
    """Renders PNGs for :class:`ImageRef`; caches a few bases (thread-safe)."""

    def __init__(self, max_bases: int = 24) -> None:
        self._bases: OrderedDict[tuple[int, int, int, int], _Base] = OrderedDict()
        self._max = max_bases
        self._lock = threading.Lock()

    def parts(self, ref: ImageRef) -> tuple[list[bytes], int]:
        """The PNG as a list of byte strings to send in order, and its total length."""
        base = self._base(ref.width, ref.height, ref.kb, _palette(ref))
        stripe_rows = min(_STRIPE_ROWS, ref.height)
        raw = _stripe(ref.width, stripe_rows, ref.digest)
        deflated = zlib.compressobj(1, zlib.DEFLATED, -15)
        stripe = b"\x78\x01" + deflated.compress(raw) + deflated.flush(zlib.Z_FULL_FLUSH)
        adler = _adler_combine(zlib.adler32(raw), base.adler, base.raw_len)
        head = b"".join(
            [
                _PNG_SIGNATURE,
                _chunk(b"IHDR", struct.pack(">IIBBBBB", ref.width, ref.height, 8, 2, 0, 0, 0)),
                _chunk(b"tEXt", b"Comment\x00wanbatch-mock " + ref.digest.hex().encode("ascii")),
                _chunk(b"IDAT", stripe),
            ]
        )
        tail = _chunk(b"IDAT", b"\x03\x00" + struct.pack(">I", adler)) + _chunk(b"IEND", b"")
        parts = [head, *base.chunks, tail]
        return parts, len(head) + base.size + len(tail)

    def has_base(self, ref: ImageRef) -> bool:
        return (ref.width, ref.height, ref.kb, _palette(ref)) in self._bases

    def render(self, ref: ImageRef) -> bytes:
        return b"".join(self.parts(ref)[0])

    def _base(self, width: int, height: int, kb: int, palette: int) -> _Base:
        key = (width, height, kb, palette)
        with self._lock:
            base = self._bases.get(key)
            if base is None:
                base = _build_base(width, height - min(_STRIPE_ROWS, height), kb * 1024, palette)
                self._bases[key] = base
                while len(self._bases) > self._max:
                    self._bases.popitem(last=False)
            else:
                self._bases.move_to_end(key)
            return base


#: Images up to this many pixels get one of ``_PALETTES`` gradients (picked by their digest), so a
#: gallery of mock images is not one picture repeated; bigger ones share one base to bound memory.
_PALETTES = 6
_PALETTE_MAX_PIXELS = 2048 * 2048


def _palette(ref: ImageRef) -> int:
    return ref.digest[3] % _PALETTES if ref.width * ref.height <= _PALETTE_MAX_PIXELS else 0


def iter_parts(parts: list[bytes]) -> Iterator[bytes]:
    yield from parts


def _stripe(width: int, rows: int, digest: bytes) -> bytes:
    row_len = width * 3
    colour = digest[:3]
    block = colour * min(width, max(8, width // 4))
    pattern = digest * (row_len // len(digest) + 1)
    row = (block + pattern)[:row_len]
    return (b"\x00" + row) * rows


def _build_base(width: int, rows: int, target: int, palette: int = 0) -> _Base:
    row_len = width * 3
    if rows == 0:
        return _Base((), 1, 0, 0)
    noise_rows = min(rows - 1, max(0, target // (row_len + 1)))
    gradient_rows = rows - noise_rows
    ramp = [(x * 256 // width, 40 + 40 * palette, 255 - x * 256 // width) for x in range(width)]
    order = ((0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2))[palette % 6]
    first = bytes(v for pixel in ramp for v in (pixel[order[0]], pixel[order[1]], pixel[order[2]]))
    step = max(1, gradient_rows // 128)
    still, darker = b"\x02" + bytes(row_len), b"\x02" + b"\x01" * row_len
    gradient = b"".join(
        [b"\x00" + first, *(darker if r % step == 0 else still for r in range(1, gradient_rows))]
    )
    noise_bytes = random.Random(width * 1_000_003 + rows).randbytes(noise_rows * row_len)
    noise = b"".join(
        b"\x00" + noise_bytes[r * row_len : (r + 1) * row_len] for r in range(noise_rows)
    )
    packed = zlib.compressobj(6, zlib.DEFLATED, -15)
    stored = zlib.compressobj(0, zlib.DEFLATED, -15)
    stream = b"".join(
        [
            packed.compress(gradient),
            packed.flush(zlib.Z_FULL_FLUSH),
            stored.compress(noise),
            stored.flush(zlib.Z_FULL_FLUSH),
        ]
    )
    adler = zlib.adler32(noise, zlib.adler32(gradient))
    chunks = tuple(_chunk(b"IDAT", stream[i : i + _CHUNK]) for i in range(0, len(stream), _CHUNK))
    return _Base(chunks, adler, len(gradient) + len(noise), sum(len(c) for c in chunks))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _adler_combine(first: int, second: int, second_len: int) -> int:
    """Adler-32 of A+B from adler(A), adler(B) and len(B) (zlib's adler32_combine)."""
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % _ADLER_BASE
    b = (b1 + b2 + second_len * (a1 - 1)) % _ADLER_BASE
    return (b << 16) | a
