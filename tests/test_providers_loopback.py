"""Socket-level behaviour over real loopback connections, with the aiohttp-backed client a run uses
(``open_client``) and with httpx's default transport: lost answers are ambiguous, refused connections
transient, timeouts honoured, downloads streamed and keyless."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.provider_settings import Settings
from wanbatch.errors import AmbiguousError, GatewayError, TransientError
from wanbatch.fetch import fetch_image, verify_image
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.providers import FlatProvider, make_provider, open_client
from wanbatch.providers.parameters import ParametersProvider
from wanbatch.types import DeliveredImage, Job

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

KEY = "sk-loop-SECRET-77777777"
Behaviour = Callable[[socket.socket, bytes, threading.Event], None]


def Gateway(**overrides: Any) -> Settings:  # reads like the settings it builds
    return Settings(**{"name": "loop", **overrides})


def job(n: int = 1) -> Job:
    return Job(job_id="00ff00ff00ff00ff", model="wan2.7-image-pro", prompt="a harbour", size="1K", seed=5,
               n=n,
               params={})


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head


@contextmanager
def raw_server(behaviour: Behaviour) -> Iterator[str]:
    """A loopback HTTP server whose every connection reads one request then runs ``behaviour``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        try:
            behaviour(conn, read_request(conn), stop)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def close_after_request(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
    conn.shutdown(socket.SHUT_RDWR)


def hang(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
    stop.wait(10)


def provider_for(client: httpx.AsyncClient, base: str, *, timeout: float = 5.0,
                 cls: type[FlatProvider] | type[ParametersProvider] = FlatProvider,
                 **kwargs: object) -> FlatProvider:
    return cls(base_url=f"{base}/v1", api_key=KEY, client=client, name="loop",  # type: ignore[return-value]
               request_timeout=timeout, **kwargs)


async def test_open_client_uses_the_aiohttp_transport() -> None:
    from httpx_aiohttp import AiohttpTransport

    async with open_client(Gateway(), concurrency=3, timeout=5) as client:
        assert isinstance(client._transport, AiohttpTransport)  # what the run gets: not a fallback
        assert "authorization" not in client.headers


async def test_answer_lost_after_sending_is_ambiguous_with_both_transports() -> None:
    """httpx_aiohttp reports this as ConnectTimeout; it must not read as 'nothing was sent'."""
    with raw_server(close_after_request) as base:
        for name, client in [("aiohttp", open_client(Gateway(), concurrency=2, timeout=5)),
                             ("httpx", httpx.AsyncClient())]:
            async with client:
                with pytest.raises(GatewayError) as info:
                    await provider_for(client, base).generate(job())
                assert (type(info.value), info.value.kind) == (AmbiguousError, "timeout"), name
                poller = provider_for(client, base, cls=ParametersProvider, use_async=True)
                with pytest.raises(TransientError):
                    await poller.poll("task_1")


async def test_refused_connection_is_transient_network() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    for client in (open_client(Gateway(), concurrency=2, timeout=5), httpx.AsyncClient()):
        async with client:
            with pytest.raises(TransientError) as info:
                await provider_for(client, f"http://127.0.0.1:{port}").generate(job())
            assert info.value.kind == "network"


async def test_a_silent_gateway_times_out_as_ambiguous_within_the_request_timeout() -> None:
    with raw_server(hang) as base:
        for client in (open_client(Gateway(), concurrency=2, timeout=5), httpx.AsyncClient()):
            async with client:
                started = time.monotonic()
                with pytest.raises(AmbiguousError) as info:
                    await provider_for(client, base, timeout=0.4).generate(job())
                assert info.value.kind == "timeout" and time.monotonic() - started < 3


async def test_aiohttp_transport_honours_its_own_read_timeout() -> None:
    """Without wanbatch's deadline on top: the transport maps the read timeout itself."""
    with raw_server(hang) as base:
        async with open_client(Gateway(), concurrency=2, timeout=5) as client:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await client.get(base, timeout=httpx.Timeout(5, read=0.3))
            assert time.monotonic() - started < 2


async def test_aiohttp_streams_a_large_download_with_bounded_memory(tmp_path: Path) -> None:
    block = bytes(range(256)) * 4096
    count = 24

    def stream(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        assert b"authorization" not in head.lower()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                     + f"Content-Length: {len(block) * count}\r\n\r\n".encode())
        for _ in range(count):
            conn.sendall(block)

    expected = hashlib.sha256(block * count).hexdigest()
    with raw_server(stream) as base:
        async with open_client(Gateway(), concurrency=2, timeout=5) as client:
            dest = tmp_path / "big.part"
            tracemalloc.start()
            try:
                image = DeliveredImage(0, url=f"{base}/big.png")
                nbytes, sha = await fetch_image(client, image, dest, timeout=20)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert (nbytes, sha) == (len(block) * count, expected)
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {count} MiB download"


async def test_a_download_cut_mid_body_is_transient_and_leaves_nothing(tmp_path: Path) -> None:
    def cut(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        conn.shutdown(socket.SHUT_RDWR)

    with raw_server(cut) as base:
        for client in (open_client(Gateway(), concurrency=2, timeout=5), httpx.AsyncClient()):
            async with client:
                dest = tmp_path / "cut.part"
                with pytest.raises(TransientError) as info:
                    await fetch_image(client, DeliveredImage(0, url=f"{base}/cut.png"), dest, timeout=5)
                assert info.value.kind == "download" and not dest.exists()


async def test_end_to_end_against_the_mock_server_over_loopback(tmp_path: Path) -> None:
    """The run's client and factory against the real mock server: the key reaches the gateway only."""
    with run_in_thread(MockConfig(api_key=KEY, dialect="parameters", scale=0.1)) as base:
        settings = Gateway(base_url=f"{base}/v1", dialect="parameters", use_async=True)
        async with open_client(settings, concurrency=2, timeout=10) as client:
            provider = make_provider(settings, client, request_timeout=10, env={"WAN_API_KEY": KEY})
            task_id = await provider.submit(job(n=2))
            state = await provider.poll(task_id)
            while state.generation is None:
                state = await provider.poll(task_id)
            for image in state.generation.images:
                dest = tmp_path / f"{image.index}.part"
                await fetch_image(client, image, dest, timeout=10)
                assert verify_image(dest) == ("png", 102, 102)
        stats = httpx.get(f"{base}/_mock/stats").json()
    assert stats["download_auth_headers"] == 0 and stats["billed"] == 2
    assert stats["bodies"][0]["body"] == {"model": "wan2.7-image-pro", "prompt": "a harbour",
                                          "size": "1024x1024",
                                          "n": 2, "response_format": "url", "async": True,
                                          "parameters": {"seed": 5}}


async def test_the_aiohttp_client_honours_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours HTTP(S)_PROXY; the run's aiohttp client must too (gateways are often behind one)."""
    seen: list[bytes] = []

    def proxy(conn: socket.socket, head: bytes, stop: threading.Event) -> None:
        seen.append(head.split(b"\r\n", 1)[0])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    with raw_server(proxy) as base:
        monkeypatch.setenv("HTTP_PROXY", base)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with open_client(Gateway(), concurrency=1, timeout=5) as client:
            response = await client.get("http://gateway.invalid/v1/tasks/x")
    assert response.json() == {} and seen == [b"GET http://gateway.invalid/v1/tasks/x HTTP/1.1"]
