"""Any ASGI app (a hostile gateway, the mock behind a middleware) served on loopback in a thread, the
body of a request such an app reads, and the mock gateway under a profile."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from typing import Any

import uvicorn

from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.mock.server import base_url, bind


async def read_body(receive: Callable[[], Awaitable[MutableMapping[str, Any]]]) -> bytes:
    """The whole body of an ASGI HTTP request, however many messages it comes in."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                           timeout_graceful_shutdown=0.5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the loopback server failed to start"
            thread.join(0.01)
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


@contextmanager
def profile_servers(**defaults: Any) -> Iterator[Callable[..., str]]:
    """``start(profile, **overrides)`` serves the mock gateway imitating ``profile`` (``MockConfig``
    fields from ``defaults``, then ``overrides``) on loopback until the block ends; returns its base URL."""
    with ExitStack() as stack:

        def start(profile: str, **overrides: Any) -> str:
            config = MockConfig.from_profile(profile, **{**defaults, **overrides})
            return stack.enter_context(run_in_thread(config))

        yield start
