"""The mock gateway in-process, through httpx's ASGI transport: shared by the mock's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from wanbatch.mock import MockConfig, create_app

AUTH = {"Authorization": "Bearer test-key"}
FLAT = "/v1/images/generations"
PARAMS = "/parameters/v1/images/generations"
DS_SYNC = "/api/v1/services/aigc/multimodal-generation/generation"
DS_ASYNC = "/api/v1/services/aigc/image-generation/generation"


@asynccontextmanager
async def gateway(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose transport is a fresh mock app; images are shrunk 64× unless ``scale`` is given."""
    config = MockConfig(**{"scale": 1 / 64, **overrides})
    transport = httpx.ASGITransport(app=create_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://mock.test") as client:
        yield client
