"""Build the provider and the HTTP client a run uses, from a spec's provider config.

The client carries no credentials (the key goes per request to the gateway only) and is shared by
gateway calls and image downloads, with connections sized to the run's concurrency.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from typing import Protocol

import httpx

from wanbatch.errors import FatalError
from wanbatch.providers.base import Provider
from wanbatch.providers.dashscope import DashScopeProvider
from wanbatch.providers.flat import FlatProvider
from wanbatch.providers.mock import mock_provider, open_mock_client
from wanbatch.providers.parameters import ParametersProvider

#: One class per dialect: adding a dialect is adding a module and a line here.
DIALECTS: dict[str, type[Provider]] = {
    "flat": FlatProvider,
    "parameters": ParametersProvider,
    "dashscope": DashScopeProvider,
}


class ProviderSettings(Protocol):
    """The fields of ``wanbatch.spec.ProviderConfig`` this module reads (read-only, so the spec's
    frozen model with its Literal types satisfies it)."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def api_key_env(self) -> str: ...
    @property
    def dialect(self) -> str: ...
    @property
    def use_async(self) -> bool: ...
    @property
    def response_format(self) -> str: ...
    @property
    def poll_interval(self) -> float: ...


def make_provider(
    config: ProviderSettings,
    client: httpx.AsyncClient,
    *,
    request_timeout: float,
    env: Mapping[str, str] = os.environ,
) -> Provider:
    """The provider for ``config``; a missing key or unknown dialect is a FatalError before any request."""
    if config.kind == "mock":
        return mock_provider(client, request_timeout=request_timeout, poll_interval=config.poll_interval,
                             config=config)
    key = check_settings(config, env)
    if key is None or config.base_url is None:  # check_settings returns a key for every gateway
        raise FatalError(f"provider {config.name!r} needs a base_url and an API key", kind="not_found")
    return DIALECTS[config.dialect](
        base_url=config.base_url, api_key=key, client=client, name=config.name, use_async=config.use_async,
        response_format=config.response_format, poll_interval=config.poll_interval,
        request_timeout=request_timeout, key_env=config.api_key_env,
    )


def check_settings(config: ProviderSettings, env: Mapping[str, str] = os.environ) -> str | None:
    """Everything a provider needs that can be checked without a request: the dialect, the base URL
    and the key (returned; None for the mock). A FatalError names what to fix."""
    if config.kind == "mock":
        return None
    if config.dialect not in DIALECTS:
        raise FatalError(f"unknown dialect {config.dialect!r}; use one of {', '.join(DIALECTS)}",
                         kind="unsupported")
    if not config.base_url:
        raise FatalError(f"provider {config.name!r} has no base_url", kind="not_found")
    key = env.get(config.api_key_env, "").strip()
    if not key:
        raise FatalError(
            f"no API key: set the environment variable {config.api_key_env} to the key for "
            f"{config.name!r}", kind="auth",
        )
    return key


def open_client(config: ProviderSettings, *, concurrency: int, timeout: float) -> httpx.AsyncClient:
    """The run's client: the in-process mock, or aiohttp-backed httpx for a real gateway.

    Connections: one per worker for gateway calls plus as many for downloads running beside them.
    """
    if config.kind == "mock":
        return open_mock_client(config, timeout=timeout)
    limits = httpx.Limits(max_connections=max(2, 2 * concurrency),
                          max_keepalive_connections=max(1, concurrency))
    http_timeout = httpx.Timeout(timeout, connect=min(timeout, 30.0))
    try:
        import aiohttp
        from httpx_aiohttp import AiohttpTransport
    except ImportError:  # pragma: no cover - httpx-aiohttp is a dependency; keep working without it
        return httpx.AsyncClient(limits=limits, timeout=http_timeout)
    transport = AiohttpTransport(limits=limits)

    def session() -> aiohttp.ClientSession:
        # httpx_aiohttp's own session ignores HTTP(S)_PROXY/NO_PROXY; httpx honours them, so do we.
        connector = aiohttp.TCPConnector(limit=limits.max_connections or 0,
                                         keepalive_timeout=limits.keepalive_expiry, ssl=transport.ssl_context)
        return aiohttp.ClientSession(connector=connector, trust_env=_environment_matters())

    transport.client = session
    return httpx.AsyncClient(transport=transport, timeout=http_timeout)


def _environment_matters() -> bool:
    """Whether aiohttp's ``trust_env`` can change a request: a proxy variable or a netrc file exists.

    With ``trust_env`` aiohttp looks up the netrc and the proxy variables in a worker thread for every
    request: two thread hops per request, the largest client cost at high request rates (see
    benchmarks/RESULTS.md). When there is nothing to find, leaving it off behaves the same, only faster.
    """
    if urllib.request.getproxies():
        return True
    netrc = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    return os.path.exists(netrc) or os.path.exists(os.path.join(os.path.expanduser("~"), "_netrc"))
