"""The provider kind ``gateway``: a real gateway over the network, in any registered dialect.

The client carries no credentials (the key goes per request to the gateway only) and is shared by
gateway calls and image downloads, with connections sized to the run's concurrency.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import httpx

from wanbatch.errors import FatalError
from wanbatch.hosts import pinned_resolver
from wanbatch.providers.base import Provider
from wanbatch.redact import check_key, register_secret
from wanbatch.registry import ProviderKind, dialect_names, get_dialect, register_provider_kind


def check_settings(config: Any, env: Mapping[str, str] = os.environ) -> str:
    """The dialect, the base URL and the key (returned); a FatalError names what to fix."""
    if config.dialect not in dialect_names():
        raise FatalError(f"unknown dialect {config.dialect!r}; use one of {', '.join(dialect_names())}",
                         kind="unsupported")
    if not config.base_url:
        raise FatalError(f"provider {config.name!r} has no base_url", kind="not_found")
    key: str = env.get(config.api_key_env, "").strip()
    if not key:
        raise FatalError(
            f"no API key: set the environment variable {config.api_key_env} to the key for "
            f"{config.name!r}", kind="auth",
        )
    if (problem := check_key(config.api_key_env, key)) is not None:
        raise FatalError(problem, kind="auth")
    register_secret(key)  # from here on, every message, row and printed line masks it
    if key_in_url(config.base_url, key):
        raise FatalError(f"base_url of provider {config.name!r} contains the API key from "
                         f"${config.api_key_env}; remove it (the key is sent in a header)", kind="auth")
    return key


def key_in_url(url: str, key: str) -> bool:
    """Whether ``key`` appears anywhere in ``url``, percent-encoded or not."""
    return bool(key) and (key in url or key in unquote(url))


def make_provider(config: Any, client: httpx.AsyncClient, *, request_timeout: float,
                  env: Mapping[str, str] = os.environ) -> Provider:
    key = check_settings(config, env)
    return get_dialect(config.dialect).provider(
        base_url=config.base_url, api_key=key, client=client, name=config.name, use_async=config.use_async,
        response_format=config.response_format, poll_interval=config.poll_interval,
        request_timeout=request_timeout, key_env=config.api_key_env,
    )


#: Seconds an idle connection is kept for reuse (see :func:`open_client`).
KEEPALIVE_S = 4.0


def open_client(config: Any, *, concurrency: int, timeout: float) -> httpx.AsyncClient:
    """aiohttp-backed httpx. Connections: one per worker for gateway calls plus as many for downloads."""
    # An idle connection is dropped after 4 s, before a server's own idle timeout closes it: uvicorn
    # (LiteLLM's proxy, the mock) closes at 5 s, httpx's default, and a generation sent on a connection
    # the server is closing that moment fails as "Server disconnected", in doubt (a CI run lost an
    # image so). nginx and cloud load balancers keep idle connections 60-75 s.
    limits = httpx.Limits(max_connections=max(2, 2 * concurrency),
                          max_keepalive_connections=max(1, concurrency), keepalive_expiry=KEEPALIVE_S)
    http_timeout = httpx.Timeout(timeout, connect=min(timeout, 30.0))
    try:
        import aiohttp
        from httpx_aiohttp import AiohttpTransport
    except ImportError:  # pragma: no cover - httpx-aiohttp is a dependency; keep working without it
        return httpx.AsyncClient(limits=limits, timeout=http_timeout)
    transport = AiohttpTransport(limits=limits)

    def session() -> aiohttp.ClientSession:
        # httpx_aiohttp's own session ignores HTTP(S)_PROXY/NO_PROXY; httpx honours them, so do we.
        # image hosts connect to the addresses their check saw (wanbatch.hosts: no DNS rebinding)
        connector = aiohttp.TCPConnector(limit=limits.max_connections or 0, resolver=pinned_resolver(),
                                         keepalive_timeout=limits.keepalive_expiry, ssl=transport.ssl_context)
        return aiohttp.ClientSession(connector=connector, trust_env=_environment_matters())

    transport.client = session
    return httpx.AsyncClient(transport=transport, timeout=http_timeout)


def load_modules() -> None:
    """Import the HTTP stack :func:`open_client` uses (aiohttp: 0.3 s), ahead of the run."""
    try:
        import aiohttp  # noqa: F401
        import httpx_aiohttp  # noqa: F401
    except ImportError:  # pragma: no cover - see open_client
        pass


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


KIND = ProviderKind("gateway", open_client=open_client, make_provider=make_provider,
                    check_settings=check_settings, dialect_names=dialect_names,
                    defaults={"poll_interval": 5.0}, load_modules=load_modules)


def register() -> None:
    register_provider_kind(KIND)
