"""Image links to link-local addresses (cloud metadata) and hosts outside ``limits.download_hosts``
are refused as ``forbidden_host`` before any connection: an httpx transport records every request,
and none may reach it; every redirect hop is checked the same way. No traffic leaves 127.0.0.1."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from wanbatch.errors import RefusedError, TransientError
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


def redirecting_client(chain: dict[str, str]) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """``chain``: URL → where it redirects (302); any other URL answers the image."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        target = chain.get(str(request.url))
        if target is not None:
            return httpx.Response(302, headers={"location": target})
        return httpx.Response(200, content=png(), headers={"content-type": "image/png"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


@pytest.mark.parametrize(("target", "hosts", "kind"), [
    ("http://169.254.169.254/latest/meta-data/", None, "forbidden_host"),  # link-local, even redirected
    ("http://elsewhere.example/a.png", ("cdn.example",), "forbidden_host"),  # not in download_hosts
    ("file:///etc/passwd", None, "bad_image"),  # not http(s)
])
async def test_each_redirect_hop_is_checked_before_connecting(target: str, hosts: tuple[str, ...] | None,
                                                              kind: str, tmp_path: Path) -> None:
    client, seen = redirecting_client({"http://cdn.example/a.png": target})
    async with client:
        with pytest.raises(RefusedError) as info:
            await fetch_image(client, DeliveredImage(index=0, url="http://cdn.example/a.png"),
                              tmp_path / "x.part", timeout=5, limits=DownloadLimits(hosts=hosts))
    assert info.value.kind == kind
    assert [str(r.url) for r in seen] == ["http://cdn.example/a.png"]  # the target never reached


async def test_relative_redirects_are_followed_up_to_three_hops(tmp_path: Path) -> None:
    chain = {"http://cdn.example/a.png": "/b.png?Signature=S",
             "http://cdn.example/b.png?Signature=S": "c.png",
             "http://cdn.example/c.png": "https://img.cdn.example/d.png"}
    client, seen = redirecting_client(chain)
    async with client:
        size, _ = await fetch_image(client, DeliveredImage(index=0, url="http://cdn.example/a.png"),
                                    tmp_path / "x.part", timeout=5,
                                    limits=DownloadLimits(hosts=("cdn.example",)))
    assert size == len(png()) and len(seen) == 4
    assert all("authorization" not in r.headers for r in seen)
    chain["https://img.cdn.example/d.png"] = "/e.png"  # a fourth hop
    client, seen = redirecting_client(chain)
    async with client:
        with pytest.raises(RefusedError) as info:
            await fetch_image(client, DeliveredImage(index=0, url="http://cdn.example/a.png"),
                              tmp_path / "x.part", timeout=5)
    assert info.value.kind == "too_many_redirects" and len(seen) == 4
    assert "cdn.example/a.png" in info.value.message and "Signature" not in info.value.message


async def test_a_network_error_quoting_the_link_keeps_its_signed_query_out_of_the_message(
    tmp_path: Path,
) -> None:
    url = "http://cdn.example/img/a.png?Expires=1&Signature=SECRETSIG"

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransientError) as info:
            await fetch_image(client, DeliveredImage(index=0, url=url), tmp_path / "x.part", timeout=5)
    assert info.value.kind == "download" and "cdn.example/img/a.png" in info.value.message
    assert "SECRETSIG" not in info.value.message
