"""The built-in offline gateway: the mock app in-process, spoken to over the same HTTP code path.

The provider is a plain flat-dialect provider; only its client differs (``httpx.ASGITransport`` to
the mock app instead of a socket), so a run against ``provider: mock`` exercises the real request
building, error classification and downloads.
"""

from __future__ import annotations

from typing import Any

import httpx

from wanbatch.providers.base import Provider
from wanbatch.providers.flat import FlatProvider
from wanbatch.providers.parameters import ParametersProvider

#: Where the in-process mock answers; image links it hands out point at the same host.
MOCK_BASE_URL = "http://mock.wanbatch.local"
MOCK_NAME = "mock"
#: The in-process mock wants a bearer token like any gateway, but checks no particular key.
MOCK_KEY = "wanbatch-mock"


def open_mock_client(config: Any, *, timeout: float) -> httpx.AsyncClient:
    """A client whose transport is the mock app, configured from a ProviderConfig's mock fields."""
    from wanbatch.mock import MockConfig, create_app  # the mock is heavy: import it only when used

    options: dict[str, Any] = {"dialect": _dialect(config), "latency": getattr(config, "latency", 0.0) or 0.0,
                               "faults": dict(getattr(config, "faults", None) or {})}
    scale = getattr(config, "scale", None)
    if scale is not None:
        options["scale"] = scale
    app = create_app(MockConfig(**options))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=MOCK_BASE_URL,
                             timeout=timeout)


def _dialect(config: Any) -> str:
    return "parameters" if getattr(config, "dialect", "flat") == "parameters" else "flat"


def mock_provider(
    client: httpx.AsyncClient, *, request_timeout: float, poll_interval: float = 5.0, config: Any = None
) -> Provider:
    """The provider named "mock" that talks to :func:`open_mock_client`'s app, in the dialect the
    spec gave the mock (flat by default; parameters with optional async tasks)."""
    if config is not None and _dialect(config) == "parameters":
        return ParametersProvider(
            base_url=f"{MOCK_BASE_URL}/v1", api_key=MOCK_KEY, client=client, name=MOCK_NAME,
            use_async=bool(getattr(config, "use_async", False)),
            response_format=getattr(config, "response_format", "url") or "url",
            poll_interval=poll_interval, request_timeout=request_timeout,
        )
    return FlatProvider(base_url=f"{MOCK_BASE_URL}/v1", api_key=MOCK_KEY, client=client, name=MOCK_NAME,
                        use_async=False, poll_interval=poll_interval, request_timeout=request_timeout)
