"""The mock gateway's dialect handlers, registered by name; the app routes from this registry.

A handler turns a request body into a :class:`GenRequest` (refusing what its dialect does not allow)
and builds the dialect's answers: images, task submissions, polls and refusals. The mock's shared
machinery — auth, moderation, faults, billing, latency, tasks, image links — lives in
:mod:`wanbatch.mock.app` and is the same for every dialect. Built-in handlers register from
:mod:`wanbatch.mock.plugin`, through :func:`register_mock_dialect` like any plugin's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from wanbatch.mock.dialects import BadRequest, GenRequest
from wanbatch.registry import Registry, load_plugins

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from wanbatch.mock.answers import Family
    from wanbatch.mock.app import MockGateway
    from wanbatch.mock.config import MockConfig
    from wanbatch.mock.tasks import Task

Action = Literal["generate", "submit", "poll"]


@dataclass(frozen=True)
class MockRoute:
    """``method path`` serves ``action``; ``path`` is relative to the server root (or a dialect prefix)."""

    method: str
    path: str
    action: Action


class MockDialect(ABC):
    """One dialect as the mock gateway speaks it."""

    #: The dialect's name, as in :func:`wanbatch.registry.get_dialect`.
    name: str = ""
    #: The shape of errors and request ids: ``openai`` (``{"error": {...}}``) or ``dashscope``.
    family: Family = "openai"
    #: Where a client's ``base_url`` points, relative to the server root (``/v1``, or ``""``).
    base_path: str = "/v1"
    #: Also serve the routes at the server root (not only under ``/{name}``) whatever the default.
    always_at_root: bool = False
    routes: tuple[MockRoute, ...] = ()

    @abstractmethod
    def parse(self, body: dict[str, Any]) -> GenRequest:
        """The request a body asks for; :class:`BadRequest` when the dialect does not allow it."""

    def before_submit(self, request: Request, rid: str) -> Response | None:
        """A refusal of an async submission before its body is read, or None."""
        return None

    @abstractmethod
    def refuse(self, exc: BadRequest, config: MockConfig, rid: str) -> Response: ...

    @abstractmethod
    async def answer(self, gw: MockGateway, request: Request, req: GenRequest, count: int, expires: int,
                     rid: str) -> Response:
        """The synchronous success answer holding ``count`` images."""

    def new_task_id(self) -> str:  # pragma: no cover - only async dialects override
        raise NotImplementedError

    def submitted(self, task_id: str, rid: str) -> Response:  # pragma: no cover
        raise NotImplementedError

    async def poll(self, gw: MockGateway, request: Request, task_id: str, task: Task | None, now: float,
                   rid: str) -> Response:  # pragma: no cover
        """The answer to a poll of ``task_id`` (``task`` is None when unknown to this dialect)."""
        raise NotImplementedError


_handlers: Registry[MockDialect] = Registry(
    lambda name, known: KeyError(f"the mock gateway does not speak {name!r}; it speaks {known}"),
    what="mock handler for dialect", load=load_plugins)  # built-ins register from a plugin


def register_mock_dialect(handler: MockDialect) -> None:
    """Add a handler; a different one under a taken name is an error."""
    _handlers.register(handler.name, handler)


def unregister_mock_dialect(name: str) -> None:
    _handlers.unregister(name)


def get_mock_dialect(name: str) -> MockDialect:
    return _handlers.get(name)


def mock_dialect_names() -> list[str]:
    return _handlers.names()
