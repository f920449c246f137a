"""Image downloads and checks: streamed to disk with a bounded footprint, hashed, verified, cleaned up."""

from __future__ import annotations

import base64
import hashlib
import io
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from wanbatch.errors import GatewayError, RefusedError, TransientError
from wanbatch.fetch import ext_for, fetch_image, verify_image
from wanbatch.types import DeliveredImage

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

URL = "https://oss.example/bucket/img.png?Expires=1&Signature=abc"


def png_bytes(width: int = 64, height: int = 48, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_url_download_writes_hashes_and_verifies(tmp_path: Path) -> None:
    data = png_bytes()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=data, headers={"content-type": "image/png"})

    dest = tmp_path / "a.part"
    async with client_for(handler) as client:
        nbytes, sha = await fetch_image(client, DeliveredImage(0, url=URL), dest, timeout=5)
    assert (nbytes, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data
    assert verify_image(dest) == ("png", 64, 48)
    assert str(seen[0].url) == URL and "authorization" not in seen[0].headers


async def test_fifty_megabytes_stream_with_bounded_memory(tmp_path: Path) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB, sent 50 times: the handler itself holds one block
    count = 50

    async def body() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield block

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(), headers={"content-length": str(len(block) * count)})

    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(block)
    dest = tmp_path / "big.part"
    async with client_for(handler) as client:
        tracemalloc.start()
        try:
            nbytes, sha = await fetch_image(client, DeliveredImage(0, url=URL), dest, timeout=20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert nbytes == len(block) * count == dest.stat().st_size
    assert sha == expected.hexdigest()
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming 50 MiB"


@pytest.mark.parametrize(("status", "cls", "kind"), [
    (403, RefusedError, "url_expired"), (404, RefusedError, "url_expired"),
    (410, RefusedError, "url_expired"),
    (500, TransientError, "download"), (502, TransientError, "download"), (503, TransientError, "download"),
    (429, TransientError, "download"),
])
async def test_object_store_statuses(tmp_path: Path, status: int, cls: type[GatewayError], kind: str) -> None:
    expired = (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
               b"<Message>Request has expired.</Message></Error>")
    dest = tmp_path / "x.part"
    async with client_for(lambda r: httpx.Response(status, content=expired)) as client:
        with pytest.raises(GatewayError) as info:
            await fetch_image(client, DeliveredImage(0, url=URL), dest, timeout=5)
    assert (type(info.value), info.value.kind) == (cls, kind)
    assert "Signature" not in info.value.message  # signed query strings stay out of messages
    assert not dest.exists()


async def test_network_error_and_cut_stream_leave_no_partial_file(tmp_path: Path) -> None:
    async def cut() -> AsyncIterator[bytes]:
        yield b"\x89PNG" + b"x" * 100_000
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("refused"):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=cut())

    async with client_for(handler) as client:
        for url in ("https://oss.example/cut.png", "https://oss.example/refused"):
            dest = tmp_path / "p.part"
            with pytest.raises(TransientError) as info:
                await fetch_image(client, DeliveredImage(0, url=url), dest, timeout=5)
            assert info.value.kind == "download" and not dest.exists()


async def test_empty_body_is_a_bad_image(tmp_path: Path) -> None:
    dest = tmp_path / "e.part"
    async with client_for(lambda r: httpx.Response(200, content=b"")) as client:
        with pytest.raises(RefusedError) as info:
            await fetch_image(client, DeliveredImage(0, url=URL), dest, timeout=5)
    assert info.value.kind == "bad_image" and not dest.exists()


async def test_b64_is_decoded_hashed_and_verifies(tmp_path: Path) -> None:
    data = png_bytes(40, 30)
    dest = tmp_path / "b.part"
    async with client_for(lambda r: pytest.fail("b64 needs no request")) as client:
        nbytes, sha = await fetch_image(client, DeliveredImage(0, b64_json=base64.b64encode(data).decode()),
                                        dest, timeout=5)
        assert (nbytes, sha) == (len(data), hashlib.sha256(data).hexdigest())
        assert verify_image(dest) == ("png", 40, 30)
        with pytest.raises(RefusedError) as info:
            bad = DeliveredImage(1, b64_json="!!!not base64!!!")
            await fetch_image(client, bad, tmp_path / "c.part", timeout=5)
        assert info.value.kind == "bad_image" and not (tmp_path / "c.part").exists()
        with pytest.raises(RefusedError):
            await fetch_image(client, DeliveredImage(2), tmp_path / "d.part", timeout=5)


def test_verify_rejects_truncated_and_garbage_files(tmp_path: Path) -> None:
    data = png_bytes(256, 256)
    truncated = tmp_path / "t.png"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    garbage = tmp_path / "g.png"
    garbage.write_bytes(b"<html>not an image</html>")
    for path in (truncated, garbage):
        with pytest.raises(RefusedError) as info:
            verify_image(path)
        assert info.value.kind == "bad_image"


def test_verify_reads_real_size_and_format_of_jpeg_and_rejects_a_truncated_one(tmp_path: Path) -> None:
    jpeg = png_bytes(120, 80, fmt="JPEG")
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg)
    assert verify_image(path) == ("jpeg", 120, 80)
    path.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(RefusedError):
        verify_image(path)


def test_ext_for() -> None:
    formats = ("png", "PNG", "jpeg", "webp", "TIFF")
    assert [ext_for(f) for f in formats] == ["png", "png", "jpg", "webp", "tif"]
