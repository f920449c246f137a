"""The mock gateway: every dialect of docs/protocol.md on loopback or in-process, with faults and billing.

    from wanbatch.mock import MockConfig, create_app, run_in_thread
    app = create_app(MockConfig(faults={"429": 0.1}))            # httpx.ASGITransport(app=app)
    with run_in_thread(MockConfig()) as base:                    # "http://127.0.0.1:PORT"
        ...                                                      # base + "/v1", base + "/api/v1/..."

Routes, billing and the mock-only ``/_mock/stats``, ``/_mock/reset`` and ``/_mock/quota`` are
described in :mod:`wanbatch.mock.app`; hidden quotas in :mod:`wanbatch.mock.quota`; images in
:mod:`wanbatch.mock.images`.
"""

from typing import TYPE_CHECKING, Any

from wanbatch.mock.config import FAULTS, Latency, MockConfig

if TYPE_CHECKING:
    from wanbatch.mock.app import create_app
    from wanbatch.mock.dialects import billing_key
    from wanbatch.mock.parameters import PARAMETERS_SIZES
    from wanbatch.mock.server import run_in_thread, serve

# The app and server pull in Starlette and uvicorn: import them only when used, so validating a
# spec (which checks fault names against FAULTS) stays fast.
_LAZY = {
    "create_app": "app",
    "PARAMETERS_SIZES": "parameters",
    "billing_key": "dialects",
    "run_in_thread": "server",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"wanbatch.mock.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'wanbatch.mock' has no attribute {name!r}")

__all__ = [
    "FAULTS",
    "PARAMETERS_SIZES",
    "Latency",
    "MockConfig",
    "billing_key",
    "create_app",
    "run_in_thread",
    "serve",
]
