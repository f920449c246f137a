"""Serving the mock over a real socket: blocking (``serve``) or in a background thread for tests.

The socket is bound here, before uvicorn starts, so a busy port is an ``OSError`` the caller can
report cleanly (uvicorn itself would log and ``sys.exit``), and port 0 gives a free port.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from wanbatch.mock.app import create_app
from wanbatch.mock.config import MockConfig


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); raises ``OSError`` when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets that say they are TCP, and with Nagle
    # on, a response's body (written after its headers) waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(config: MockConfig, graceful: float | None) -> uvicorn.Server:
    app = create_app(config)
    seconds = None if graceful is None else max(1, round(graceful))  # uvicorn takes whole seconds
    # idle connections kept 75 s, as nginx does in front of most gateways (uvicorn's own 5 s races a
    # client that reuses a connection idle for just under its own 5 s)
    uv_config = uvicorn.Config(
        app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=seconds,
        timeout_keep_alive=75,
    )
    return uvicorn.Server(uv_config)


def serve(
    config: MockConfig,
    host: str = "127.0.0.1",
    port: int = 8765,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the mock until interrupted. ``on_ready(base_url)`` is called once the port is bound."""
    sock = bind(host, port)
    try:
        if on_ready is not None:
            on_ready(base_url(sock))
        _server(config, graceful=1.0).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def run_in_thread(config: MockConfig, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the mock on a real socket in a thread; yields ``"http://127.0.0.1:PORT"``."""
    sock = bind(host, port)
    server = _server(config, graceful=0.5)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="wanbatch-mock",
                              daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the mock gateway failed to start")
            thread.join(0.01)
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()
