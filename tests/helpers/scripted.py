"""A scripted gateway behind ``httpx.MockTransport`` and a provider built on it (no socket)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from wanbatch.providers.base import Provider
from wanbatch.providers.dashscope import DashScopeProvider

Handler = Callable[[httpx.Request], httpx.Response]
BASE = "https://gateway.example/v1"
DS_BASE = "https://dashscope-intl.aliyuncs.com"


class Gateway:
    """A scripted gateway: answers come from ``respond``; every request is kept."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def scripted_provider(cls: type[Provider], respond: Handler, *, api_key: str,
                      **kwargs: Any) -> tuple[Provider, Gateway]:
    """``cls`` talking to a :class:`Gateway` that answers with ``respond`` (DashScope at its own host)."""
    gateway = Gateway(respond)
    client = httpx.AsyncClient(transport=httpx.MockTransport(gateway))
    base = DS_BASE if cls is DashScopeProvider else BASE
    options: dict[str, Any] = {"base_url": base, "api_key": api_key, "client": client, "name": "gw",
                               "key_env": "WAN_API_KEY", "poll_interval": 0.01, **kwargs}
    return cls(**options), gateway
