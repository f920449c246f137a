"""Image links to link-local addresses (cloud metadata), to other non-public addresses beside a public
gateway, and to hosts outside ``limits.download_hosts`` are refused as ``forbidden_host`` before any
connection: an httpx transport (or a loopback server) records every request, and none may reach it;
every redirect hop is checked the same way. The run's client connects to the addresses the check saw.
No traffic leaves 127.0.0.1."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers.servers import serve_app
from wanbatch.errors import RefusedError, TransientError
from wanbatch.fetch import DownloadLimits, fetch_image
from wanbatch.hosts import check_download_host, pinned_resolver
from wanbatch.providers.gateway import open_client
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


# ------------------------------------------------------------------ private addresses (SSRF)
# A real image server on 127.0.0.1; the run's own client (aiohttp, pinned resolver). The "public"
# gateway is named under .invalid, which never resolves, so it is on no private address.

PUBLIC_GATEWAY = "https://gateway.invalid/v1"


@contextmanager
def image_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        hits.append(scope["path"])
        body = png()
        headers = [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with serve_app(app) as url:
        yield url, hits


def run_client() -> httpx.AsyncClient:
    return open_client(SimpleNamespace(), concurrency=2, timeout=10)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_private_hosts_are_refused_beside_a_public_gateway(host: str, tmp_path: Path) -> None:
    with image_server() as (url, hits):
        port = httpx.URL(url).port
        async with run_client() as client:
            with pytest.raises(RefusedError) as info:
                await fetch_image(client, DeliveredImage(index=0, url=f"http://{host}:{port}/x.png"),
                                  tmp_path / "x.part", timeout=5,
                                  limits=DownloadLimits(gateway=PUBLIC_GATEWAY))
    assert info.value.kind == "forbidden_host" and hits == []
    assert "loopback address and the gateway is not" in str(info.value)
    assert "limits.download_hosts" in str(info.value)


async def test_private_ranges_are_named(tmp_path: Path) -> None:
    client, seen = recording_client()
    async with client:
        for url, kind in (("http://10.1.2.3/x.png", "private"), ("http://100.64.0.9/x.png", "private"),
                          ("http://[fd00::1]/x.png", "private"), ("http://0.0.0.0/x.png", "reserved"),
                          ("http://224.0.0.1/x.png", "reserved")):
            with pytest.raises(RefusedError) as info:
                await fetch_image(client, DeliveredImage(index=0, url=url), tmp_path / "x.part", timeout=5,
                                  limits=DownloadLimits(gateway=PUBLIC_GATEWAY))
            assert info.value.kind == "forbidden_host" and f"a {kind} address" in str(info.value), url
    assert seen == []


async def test_a_private_gateway_or_the_allow_list_admits_private_hosts(tmp_path: Path) -> None:
    with image_server() as (url, hits):
        port = httpx.URL(url).port
        async with run_client() as client:
            for limits in (DownloadLimits(gateway=url + "/v1"),  # the gateway is on loopback too
                           DownloadLimits(gateway=PUBLIC_GATEWAY, hosts=("localhost",))):
                size, _ = await fetch_image(client, DeliveredImage(index=0, url=f"http://localhost:{port}/a.png"),
                                            tmp_path / "a.part", timeout=5, limits=limits)
                assert size == len(png())
            with pytest.raises(RefusedError):  # link-local stays refused beside a private gateway
                await fetch_image(client, DeliveredImage(index=0, url="http://169.254.169.254/a.png"),
                                  tmp_path / "b.part", timeout=5, limits=DownloadLimits(gateway=url))
    assert hits == ["/a.png", "/a.png"]


async def test_the_connection_goes_to_the_address_the_check_saw(tmp_path: Path) -> None:
    """DNS rebinding: the name is resolved once, by the check; the run's client connects there."""
    checked: list[str] = []

    async def dns(host: str, port: int | None) -> list[tuple[Any, ...]]:  # answers what no real DNS does
        checked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    with image_server() as (url, hits):
        link = f"http://images.rebind.invalid:{httpx.URL(url).port}/c.png"
        limits = DownloadLimits(gateway=url)
        await check_download_host(link, limits, lookup=dns)
        async with run_client() as client:  # a fresh lookup of *.invalid would fail: it must not happen
            size, _ = await fetch_image(client, DeliveredImage(index=0, url=link), tmp_path / "c.part",
                                        timeout=5, limits=limits)
    assert size == len(png()) and hits == ["/c.png"] and checked == ["images.rebind.invalid"]


async def test_the_pinned_resolver_answers_with_the_checked_addresses() -> None:
    async def dns(host: str, port: int | None) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 0))]

    await check_download_host("http://public.rebind.invalid/x.png", DownloadLimits(gateway=PUBLIC_GATEWAY),
                              lookup=dns)
    resolver = pinned_resolver()
    try:
        answers = await resolver.resolve("public.rebind.invalid", 443, 0)
    finally:
        await resolver.close()
    assert [(a["host"], a["port"]) for a in answers] == [("93.184.216.34", 443)]
