"""Image links to link-local addresses (cloud metadata) and hosts outside ``limits.download_hosts``
are refused as ``forbidden_host`` before any connection: an httpx transport records every request,
and none may reach it. No traffic leaves 127.0.0.1."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from wanbatch.errors import RefusedError
from wanbatch.fetch import DownloadLimits, fetch_image
from wanbatch.types import DeliveredImage

pytestmark = pytest.mark.anyio


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    return buf.getvalue()


def recording_client() -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=png(), headers={"content-type": "image/png"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://169.254.0.1:8080/x.png", "http://[fe80::1]/x.png",
    "http://[::ffff:169.254.169.254]/x.png", "http://[fe80::1%25eth0]/x.png",
])
async def test_link_local_links_are_refused_before_connecting(url: str, tmp_path: Path) -> None:
    client, seen = recording_client()
    async with client:
        with pytest.raises(RefusedError) as info:
            await fetch_image(client, DeliveredImage(index=0, url=url), tmp_path / "x.part", timeout=5)
    assert info.value.kind == "forbidden_host" and seen == []
    assert not (tmp_path / "x.part").exists()


async def test_the_allow_list_admits_its_hosts_only(tmp_path: Path) -> None:
    client, seen = recording_client()
    limits = DownloadLimits(hosts=("localhost", "169.254.169.254"))
    async with client:
        for url in ("http://127.0.0.1/a.png", "http://evil-localhost/a.png", "ftp://localhost/a.png"):
            with pytest.raises(RefusedError) as info:
                await fetch_image(client, DeliveredImage(index=0, url=url), tmp_path / "x.part", timeout=5,
                                  limits=limits)
            assert info.value.kind in ("forbidden_host", "bad_image"), url
        assert seen == []
        for url in ("http://localhost/a.png", "http://img.localhost/a.png", "http://169.254.169.254/a.png"):
            size, _ = await fetch_image(client, DeliveredImage(index=0, url=url), tmp_path / "x.part",
                                        timeout=5, limits=limits)
            assert size == len(png())
    assert [r.url.host for r in seen] == ["localhost", "img.localhost", "169.254.169.254"]  # named: allowed


async def test_loopback_is_not_link_local(tmp_path: Path) -> None:
    client, seen = recording_client()
    async with client:
        await fetch_image(client, DeliveredImage(index=0, url="http://127.0.0.1:9/a.png"), tmp_path / "a",
                          timeout=5)
    assert len(seen) == 1
