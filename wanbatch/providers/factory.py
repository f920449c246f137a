"""Build the provider and the HTTP client a run uses, from a spec's provider config.

No kind is special: the provider kind named by ``config.kind`` (``gateway``, ``mock`` or a plugin's)
is looked up in :mod:`wanbatch.registry` and builds both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

import httpx

from wanbatch.errors import FatalError
from wanbatch.providers.base import Provider
from wanbatch.registry import ProviderKind, get_provider_kind


class ProviderSettings(Protocol):
    """The fields of ``wanbatch.spec.ProviderConfig`` this module reads (read-only, so the spec's
    frozen model satisfies it)."""

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


def _kind(config: ProviderSettings) -> ProviderKind:
    try:
        return get_provider_kind(config.kind)
    except KeyError as exc:
        raise FatalError(str(exc.args[0]), kind="unsupported") from None


def make_provider(
    config: ProviderSettings,
    client: httpx.AsyncClient,
    *,
    request_timeout: float,
    env: Mapping[str, str] = os.environ,
) -> Provider:
    """The provider for ``config``; a missing key or unknown dialect is a FatalError before any request."""
    return _kind(config).make_provider(config, client, request_timeout=request_timeout, env=env)


def check_settings(config: ProviderSettings, env: Mapping[str, str] = os.environ) -> str | None:
    """Everything a provider needs that can be checked without a request: the dialect, the base URL
    and the key (returned; None for kinds that need none). A FatalError names what to fix."""
    return _kind(config).check_settings(config, env)


def load_client_modules(config: ProviderSettings) -> None:
    """Import what :func:`open_client` will need for ``config`` (an unknown kind is reported later)."""
    try:
        load = _kind(config).load_modules
    except FatalError:
        return
    if load is not None:
        load()


def open_client(config: ProviderSettings, *, concurrency: int, timeout: float) -> httpx.AsyncClient:
    """The run's client, as the provider kind builds it (a socket pool, or a transport to an app)."""
    return _kind(config).open_client(config, concurrency=concurrency, timeout=timeout)
