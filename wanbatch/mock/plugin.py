"""The built-in mock as a plugin: the provider kind ``mock`` and the mock's handlers of the built-in
dialects, registered through the same doors as any plugin's (:mod:`wanbatch.registry`,
:mod:`wanbatch.mock.registry`).

The ``mock`` kind is a plain provider of the spec's dialect; only its client differs
(``httpx.ASGITransport`` to the mock app instead of a socket), so a run against ``provider: mock``
exercises the real request building, error classification and downloads.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

import httpx

from wanbatch.providers.base import Provider
from wanbatch.registry import ProviderKind, get_dialect, register_provider_kind

#: Where the in-process mock answers; image links it hands out point at the same host.
MOCK_BASE_URL = "http://mock.wanbatch.local"
MOCK_NAME = "mock"
#: The in-process mock wants a bearer token like any gateway, but checks no particular key.
MOCK_KEY = "wanbatch-mock"
#: Spec keys only the mock takes.
OPTIONS = frozenset({"latency", "scale", "faults"})


def open_client(config: Any, *, concurrency: int = 1, timeout: float) -> httpx.AsyncClient:
    """A client whose transport is the mock app, configured from a ProviderConfig's mock fields."""
    from wanbatch.mock.app import create_app  # Starlette: import it only when a mock is used
    from wanbatch.mock.config import MockConfig

    options: dict[str, Any] = {"dialect": config.dialect, "latency": getattr(config, "latency", 0.0) or 0.0,
                               "faults": dict(getattr(config, "faults", None) or {})}
    scale = getattr(config, "scale", None)
    if scale is not None:
        options["scale"] = scale
    app = create_app(MockConfig(**options))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=MOCK_BASE_URL,
                             timeout=timeout)


def make_provider(config: Any, client: httpx.AsyncClient, *, request_timeout: float,
                  env: Mapping[str, str] = os.environ) -> Provider:
    """The provider named "mock" that talks to :func:`open_client`'s app in the spec's dialect."""
    from wanbatch.mock.registry import get_mock_dialect

    dialect = get_dialect(config.dialect)
    return dialect.provider(
        base_url=MOCK_BASE_URL + get_mock_dialect(config.dialect).base_path, api_key=MOCK_KEY, client=client,
        name=MOCK_NAME, use_async=bool(getattr(config, "use_async", False)),
        response_format=getattr(config, "response_format", "url") or "url",
        poll_interval=config.poll_interval, request_timeout=request_timeout,
    )


def check_settings(config: Any, env: Mapping[str, str]) -> None:
    """The mock needs no key."""
    return None


def dialect_names() -> list[str]:
    """The dialects both a client and a mock handler exist for."""
    from wanbatch.mock.registry import mock_dialect_names
    from wanbatch.registry import dialect_names as client_dialects

    clients = set(client_dialects())
    return [name for name in mock_dialect_names() if name in clients]


def check_options(options: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str, str]]:
    """Fault names and rates of a spec's ``provider: {type: mock, faults: ...}``."""
    from wanbatch.mock.config import FAULTS

    faults: Mapping[str, float] = options.get("faults") or {}
    problems: list[tuple[tuple[str, ...], str, str]] = []
    if sum(faults.values()) > 1 + 1e-9:
        total = sum(faults.values())
        problems.append((("faults",), f"fault rates add up to {total:g}; at most 1 is possible",
                         "lower the rates"))
    for name in faults:
        if name not in FAULTS:
            close = difflib.get_close_matches(name, FAULTS, n=1, cutoff=0.6)
            guess = close[0] if close else None
            problems.append((("faults", name), f"unknown fault {name!r}; known: {', '.join(FAULTS)}",
                             f"did you mean {guess!r}?" if guess else "use one of the known faults"))
    return problems


KIND = ProviderKind(MOCK_NAME, open_client=open_client, make_provider=make_provider,
                    check_settings=check_settings,
                    dialect_names=dialect_names, needs_base_url=False, options=OPTIONS,
                    defaults={"poll_interval": 0.05, "latency": 0.05}, check_options=check_options)


def register() -> None:
    from wanbatch.mock import dashscope, flat, newapi, parameters

    for module in (flat, parameters, dashscope, newapi):
        module.register()
    register_provider_kind(KIND)
