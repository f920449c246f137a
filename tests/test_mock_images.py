"""Mock images: deterministic, distinct per key, at the requested size, and links that expire."""

from __future__ import annotations

import hashlib
import io
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers.mock_client import AUTH, FLAT, gateway as mock_gateway
from wanbatch.mock.images import ImageRef, PngRenderer, image_digest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]



def gateway(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return mock_gateway(**{"scale": 1.0, **overrides})  # these tests check real pixel sizes


async def image_bytes(client: httpx.AsyncClient, **body: Any) -> list[bytes]:
    request = {"model": "wan2.7-image-pro", "prompt": "a flower shop", "size": "1K", "n": 1, "seed": 1,
               **body}
    response = await client.post(FLAT, json=request, headers=AUTH)
    assert response.status_code == 200, response.text
    downloads = [await client.get(item["url"]) for item in response.json()["data"]]
    assert all(d.status_code == 200 for d in downloads)
    return [d.content for d in downloads]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_same_key_same_bytes_other_keys_other_bytes() -> None:
    async with gateway(scale=1 / 16) as client:
        first = await image_bytes(client)
        again = await image_bytes(client)
        other_seed = await image_bytes(client, seed=2)
        other_prompt = await image_bytes(client, prompt="a bakery")
        two = await image_bytes(client, n=2)
    assert first == again
    hashes = {sha(first[0]), sha(other_seed[0]), sha(other_prompt[0]), sha(two[1])}
    assert len(hashes) == 4
    assert two[0] == first[0]  # pictures depend on (prompt, seed, size, slot), not on n
    pixels = [Image.open(io.BytesIO(b)).convert("RGB").tobytes() for b in (first[0], other_seed[0])]
    assert pixels[0] != pixels[1]  # distinct content, not only distinct metadata


async def test_images_have_the_requested_pixel_size() -> None:
    async with gateway(scale=0.25, image_kb=8) as client:
        for size, expected in (("1K", (256, 256)), ("1920*1080", (480, 270)), ("768*1536", (192, 384))):
            [data] = await image_bytes(client, size=size)
            image = Image.open(io.BytesIO(data))
            image.load()
            assert (image.format, image.size) == ("PNG", expected)


async def test_4k_image_is_about_the_asked_size_and_decodes() -> None:
    async with gateway() as client:
        [data] = await image_bytes(client, size="4K")
    assert 0.9 * 25000 * 1024 <= len(data) <= 1.1 * 25000 * 1024
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == (4096, 4096)


async def test_image_kb_sets_the_payload_size() -> None:
    async with gateway(image_kb=300) as client:
        [data] = await image_bytes(client, size="1K")
    assert 250 * 1024 <= len(data) <= 350 * 1024
    assert Image.open(io.BytesIO(data)).size == (1024, 1024)


async def test_expired_link_answers_403_xml() -> None:
    async with gateway(url_ttl=0, scale=1 / 16) as client:
        response = await client.post(FLAT, json={"model": "wan2.7-image", "prompt": "x"}, headers=AUTH)
        download = await client.get(response.json()["data"][0]["url"])
    assert download.status_code == 403
    assert download.headers["content-type"].startswith("application/xml")
    assert "<Code>AccessDenied</Code>" in download.text and "expired" in download.text


async def test_bad_tokens_and_authorized_downloads_are_refused() -> None:
    async with gateway(scale=1 / 16) as client:
        response = await client.post(FLAT, json={"model": "wan2.7-image", "prompt": "x"}, headers=AUTH)
        url = response.json()["data"][0]["url"]
        with_key = await client.get(url, headers=AUTH)
        assert with_key.status_code == 400 and "InvalidArgument" in with_key.text
        tampered = url[:-6] + ("A" if url[-6] != "A" else "B") + url[-5:]
        assert (await client.get(tampered)).status_code == 404
        assert (await client.get("/files/garbage")).status_code == 404
        stats = (await client.get("/_mock/stats")).json()
        assert stats["download_auth_headers"] == 1


def test_tokens_round_trip() -> None:
    ref = ImageRef(640, 480, 12, image_digest("p", 3, "2K", 1), 1_900_000_000)
    assert ImageRef.from_token(ref.token()) == ref


def test_renderer_is_deterministic_across_instances_and_tiny_sizes() -> None:
    for width, height in ((1, 1), (3, 20), (40, 9)):
        ref = ImageRef(width, height, 1, image_digest("p", 1, "1K", 0), 0)
        data = PngRenderer().render(ref)
        assert data == PngRenderer().render(ref)
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.size == (width, height)
