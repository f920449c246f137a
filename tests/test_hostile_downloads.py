"""Hostile image servers on 127.0.0.1: every download fails its slot with the right kind, quickly,
in bounded memory, leaving nothing on disk.

The server is a raw asyncio server started by each test, so it can send what no well-behaved server
would: an endless body, a gzip bomb, a decompression-bomb image, a one-byte-at-a-time drip, silence.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from tests.helpers.synthetic import make_dataset
from wanbatch.errors import RefusedError, TransientError
from wanbatch.fetch import DownloadLimits, fetch_image, fetch_verified, verify_image
from wanbatch.gallery import build_gallery
from wanbatch.images import ImageTooLarge, safe_open_image
from wanbatch.types import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, DeliveredImage

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]

MB = 1 << 20
RSS_BUDGET = 300 * MB
Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def _head(extra: str = "", length: int | None = None) -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n{size}{extra}Connection: close\r\n\r\n".encode()


@asynccontextmanager
async def serve(respond: Writer) -> AsyncIterator[str]:
    """A loopback server answering every GET with ``respond``; yields its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/img.png"
    finally:
        server.close()


async def _clients() -> list[httpx.AsyncClient]:
    from httpx_aiohttp import AiohttpTransport

    return [httpx.AsyncClient(), httpx.AsyncClient(transport=AiohttpTransport())]


async def _fails(url: str, tmp_path: Path, kind: str, *, within: float, limits: DownloadLimits,
                 timeout: float = 30.0, error: type[Exception] = RefusedError) -> None:
    """Fetch through both transports (httpcore and aiohttp); each must fail as ``kind``."""
    process = psutil.Process()
    for client in await _clients():
        dest = tmp_path / "slot.part"
        before = process.memory_info().rss
        started = time.monotonic()
        async with client:
            with pytest.raises(error) as info:
                await fetch_verified(client, DeliveredImage(0, url=url), dest, timeout=timeout, limits=limits)
        assert info.value.kind == kind, info.value.message
        assert time.monotonic() - started < within
        assert process.memory_info().rss - before < RSS_BUDGET
        assert list(tmp_path.iterdir()) == []  # no partial file left


# ---------------------------------------------------------------------------------------- size


async def test_an_endless_body_stops_at_the_default_cap(tmp_path: Path) -> None:
    block = b"\x89PNG" + bytes(MB - 4)

    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(_head())
        while True:
            writer.write(block)
            await writer.drain()

    async with serve(endless) as url:
        await _fails(url, tmp_path, "too_large", within=20, limits=DownloadLimits())
    assert DownloadLimits().max_bytes == MAX_IMAGE_BYTES == 64 * MB


async def test_an_announced_oversize_body_is_refused_before_reading(tmp_path: Path) -> None:
    sent: list[int] = []

    async def huge(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(length=10 * 1024 * MB))
        for _ in range(64):
            writer.write(bytes(MB))
            await writer.drain()
            sent.append(1)

    async with serve(huge) as url:
        await _fails(url, tmp_path, "too_large", within=10, limits=DownloadLimits(max_bytes=4 * MB))


async def test_a_gzip_bomb_is_capped_on_its_decoded_size(tmp_path: Path) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing: 256 MiB of zeros in ~250 KB
    zeros = bytes(MB)
    bomb = b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()
    assert len(bomb) < MB

    async def gzipped(writer: asyncio.StreamWriter) -> None:
        writer.write(_head("Content-Encoding: gzip\r\n", length=len(bomb)))
        writer.write(bomb)
        await writer.drain()

    async with serve(gzipped) as url:
        await _fails(url, tmp_path, "too_large", within=10, limits=DownloadLimits(max_bytes=8 * MB))


async def test_a_b64_image_over_the_cap_is_refused_without_decoding(tmp_path: Path) -> None:
    data = base64.b64encode(bytes(3 * MB)).decode()
    dest = tmp_path / "slot.part"
    async with httpx.AsyncClient() as client:
        with pytest.raises(RefusedError) as info:
            await fetch_image(client, DeliveredImage(0, b64_json=data), dest, timeout=5,
                              limits=DownloadLimits(max_bytes=2 * MB))
    assert info.value.kind == "too_large" and not dest.exists()


# ---------------------------------------------------------------------------------------- pixels


def webp_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """A solid lossless WebP claiming ``width``×``height`` in a few dozen bytes.

    Pillow would need ~700 MB to encode a real 13000² image, so a 16×16 one is encoded and its
    VP8L header (14 bits each for width-1 and height-1) rewritten: to a decoder it is the same bomb.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="WEBP", lossless=True)
    data = bytearray(buffer.getvalue())
    at = data.index(b"VP8L") + 8
    assert data[at] == 0x2F
    (bits,) = struct.unpack_from("<I", data, at + 1)
    bits = (bits & ~0xFFFFFFF) | (width - 1) | ((height - 1) << 14)
    struct.pack_into("<I", data, at + 1, bits)
    return bytes(data)


def test_the_webp_bomb_claims_what_it_should() -> None:
    with Image.open(io.BytesIO(webp_bomb())) as img:
        assert (img.format, img.size) == ("WEBP", (13000, 13000))
    assert 13000 * 13000 > MAX_IMAGE_PIXELS >= 4096 * 4096


async def test_a_webp_decompression_bomb_fails_its_slot_before_decoding(tmp_path: Path) -> None:
    bomb = webp_bomb()

    async def serve_bomb(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(length=len(bomb)) + bomb)
        await writer.drain()

    async with serve(serve_bomb) as url:
        await _fails(url, tmp_path, "too_large", within=5, limits=DownloadLimits())


def test_a_real_oversized_image_is_refused_by_the_pixel_limit_in_every_format(tmp_path: Path) -> None:
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        path = tmp_path / f"big.{fmt.lower()}"
        Image.new("RGB", (1200, 1000), (1, 2, 3)).save(path, format=fmt)
        with pytest.raises(RefusedError) as info:
            verify_image(path, max_pixels=1_000_000)
        assert info.value.kind == "too_large" and "1200×1000" in info.value.message
        assert verify_image(path, max_pixels=1_200_000)[1:] == (1200, 1000)


def test_formats_outside_the_safe_list_are_not_even_tried(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    Image.new("RGB", (8, 8)).save(path, format="PPM")  # a format Pillow reads but no gateway sends
    with pytest.raises(RefusedError) as info:
        verify_image(path)
    assert info.value.kind == "bad_image"


def test_the_gallery_skips_a_bomb_instead_of_decoding_it(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", prompts=2, seeds=2, failed=0)
    victim = ds.root / ds.rows[0]["path"]
    victim.write_bytes(webp_bomb())
    process = psutil.Process()
    before = process.memory_info().rss
    page = build_gallery(ds.root, tmp_path / "gallery.html")
    assert process.memory_info().rss - before < RSS_BUDGET
    thumbs = sorted(p.name for p in (tmp_path / "gallery_thumbs").iterdir())
    assert len(thumbs) == 3 and not any(ds.rows[0]["image_id"] in name for name in thumbs)
    assert page.is_file()
    with pytest.raises(ImageTooLarge), safe_open_image(victim):
        pass


# ---------------------------------------------------------------------------------------- time


async def test_a_slow_drip_is_cut_by_the_minimum_rate(tmp_path: Path) -> None:
    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(length=10 * MB))
        while True:
            writer.write(b"\0")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with serve(drip) as url:
        # download_timeout stays 30 s: the rate rule, not the deadline, ends it after the 1 s grace
        await _fails(url, tmp_path, "too_slow", within=5,
                     limits=DownloadLimits(min_rate=1000, grace=1.0))


async def test_a_body_that_stalls_is_cut_by_the_minimum_rate(tmp_path: Path) -> None:
    async def stall(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(length=MB) + b"\x89PNG")
        await writer.drain()
        await asyncio.sleep(3600)

    async with serve(stall) as url:
        await _fails(url, tmp_path, "too_slow", within=5, limits=DownloadLimits(min_rate=1000, grace=1.0))


async def test_a_body_still_arriving_at_the_deadline_is_too_slow_not_retried(tmp_path: Path) -> None:
    async def steady(writer: asyncio.StreamWriter) -> None:  # fast enough for min_rate, never done
        writer.write(_head(length=32 * MB))
        while True:
            writer.write(bytes(4096))
            await writer.drain()
            await asyncio.sleep(0.05)

    async with serve(steady) as url:
        await _fails(url, tmp_path, "too_slow", within=6, timeout=2.0,
                     limits=DownloadLimits(min_rate=1000, grace=1.0))


async def test_a_server_that_never_answers_is_a_retryable_network_failure(tmp_path: Path) -> None:
    async def silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async with serve(silent) as url:
        await _fails(url, tmp_path, "download", within=6, timeout=2.0, error=TransientError,
                     limits=DownloadLimits(min_rate=1000, grace=1.0))
