"""Dialects and provider kinds, registered by name: built-ins go through the same door as plugins.

llm's plugin shape: a plugin is a module with a ``register()`` function that calls
:func:`register_dialect` and/or :func:`register_provider_kind`. The built-ins are listed in
:data:`DEFAULT_PLUGINS`; third parties add theirs under the ``wanbatch`` entry-point group (or call the
``register_*`` functions themselves). Plugins are loaded on the first lookup, so importing this module
is free and stays a leaf: the spec asks it what a dialect can send, the factory asks it for the
provider class and the client, and neither needs to know which dialects exist.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import httpx

    from wanbatch.providers.base import Provider

#: Modules whose ``register()`` adds the built-in dialects and provider kinds.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "wanbatch.providers.flat",
    "wanbatch.providers.parameters",
    "wanbatch.providers.dashscope",
    "wanbatch.providers.newapi",
    "wanbatch.providers.gateway",
    "wanbatch.mock.plugin",
)
ENTRY_POINT_GROUP = "wanbatch"
T = TypeVar("T")

#: (message, hint) of a spec rule that failed.
Problem = tuple[str, str]


def _no_size_rule(size: str, model: str) -> Problem | None:
    return None


def _no_value_rule(key: str, value: Any) -> Problem | None:
    return None


@dataclass(frozen=True)
class Dialect:
    """One wire dialect: the provider class that speaks it and the spec rules it implies.

    ``params`` are the request parameters (see :data:`wanbatch.models.PARAM_KEYS`) it can send with a
    non-default value; ``size_rule(size, model)`` says why a normalised size cannot travel over it
    (beyond the model's own rules); ``value_rule(key, value)`` why a param's value cannot travel over it
    (a theme-string ``color_palette`` where only a list of colours is documented); ``response_format``
    says whether it lets the client choose between URLs and base64.
    """

    name: str
    provider: type[Provider]
    params: frozenset[str]
    size_rule: Callable[[str, str], Problem | None] = _no_size_rule
    value_rule: Callable[[str, Any], Problem | None] = _no_value_rule
    response_format: bool = False
    summary: str = ""
    #: Whether it can send input images (editing, references): a spec with ``inputs`` over a dialect
    #: that cannot is refused before anything is sent.
    edits: bool = False

    @property
    def has_async(self) -> bool:
        return self.provider.supports_async

    def param_problem(self, key: str) -> Problem | None:
        """Why a spec cannot set ``key`` (to a non-default value) over this dialect, or None."""
        if key in self.params:
            return None
        can = [d.name for d in dialects() if key in d.params]
        accepts = ", ".join(sorted(self.params)) or "none of the params"
        hint = (f"use a provider with dialect: {' or '.join(can)}, or remove it" if can
                else "remove it")
        return f"{key} cannot be sent by the {self.name} dialect (it accepts only {accepts})", hint

    def size_problem(self, size: str, model: str) -> Problem | None:
        return self.size_rule(size, model)

    def value_problem(self, key: str, value: Any) -> Problem | None:
        return self.value_rule(key, value)


@dataclass(frozen=True)
class ProviderKind:
    """Where requests go: a real gateway, the in-process mock, or a plugin's own.

    ``open_client(config, *, concurrency, timeout)`` builds the run's ``httpx.AsyncClient``;
    ``make_provider(config, client, *, request_timeout, env)`` the provider; ``check_settings(config,
    env)`` checks what it can without a request and returns the API key (None when it needs none).
    ``options`` are the spec keys only this kind takes, ``defaults`` its defaults for ``poll_interval``
    and ``latency``; ``check_options(options) -> [(key path, message, hint)]`` checks them.
    ``dialect_names()`` lists the dialects it can speak; ``needs_base_url`` whether a spec must give one.
    ``load_modules()``, when given, imports what ``open_client`` will need, so a run can load it before
    its clock starts (an import is not the run's work; aiohttp alone takes 0.3 s).
    """

    name: str
    open_client: Callable[..., httpx.AsyncClient]
    make_provider: Callable[..., Provider]
    check_settings: Callable[[Any, Mapping[str, str]], str | None]
    dialect_names: Callable[[], Sequence[str]]
    needs_base_url: bool = True
    options: frozenset[str] = frozenset()
    defaults: Mapping[str, float] = field(default_factory=dict)
    check_options: Callable[[Mapping[str, Any]], list[tuple[tuple[str, ...], str, str]]] | None = None
    load_modules: Callable[[], None] | None = None


class Registry(Generic[T]):
    """Things of one sort by name, loaded on the first lookup: dialects, provider kinds, mock handlers,
    export formats.

    ``load`` runs before every lookup (it must be cheap once done: it imports the built-ins the first
    time); registering does not load. Registering a different thing under a taken name is an error
    unless ``replace``; ``missing(name, known)`` builds the exception a lookup of an unknown name raises
    (``known`` in registration order, or sorted when ``sort_names``).
    """

    def __init__(self, missing: Callable[[str, str], Exception], *, what: str,
                 load: Callable[[], None] | None = None, replace: bool = False,
                 sort_names: bool = False) -> None:
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()
        self._missing = missing
        self._what = what
        self._load = load
        self._replace = replace
        self._sort = sort_names

    def register(self, name: str, item: T) -> None:
        with self._lock:
            known = self._items.get(name)
            if not self._replace and known is not None and known != item:
                raise ValueError(f"a {self._what} named {name!r} is already registered")
            self._items[name] = item

    def unregister(self, name: str) -> None:
        with self._lock:
            self._items.pop(name, None)

    def get(self, name: str) -> T:
        self._loaded()
        try:
            return self._items[name]
        except KeyError:
            raise self._missing(name, ", ".join(self.names())) from None

    def names(self) -> list[str]:
        self._loaded()
        return sorted(self._items) if self._sort else list(self._items)

    def values(self) -> list[T]:
        self._loaded()
        return list(self._items.values())

    def _loaded(self) -> None:
        if self._load is not None:
            self._load()


_loaded = False
_lock = threading.RLock()


def load_plugins() -> None:
    """Import the built-in plugins and the ``wanbatch`` entry points once, calling their ``register()``."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        _loaded = True  # set first: a plugin's register() may itself look names up
        for name in DEFAULT_PLUGINS:
            _register(importlib.import_module(name))
        for point in entry_points(group=ENTRY_POINT_GROUP):
            _register(point.load())


def _register(plugin: Any) -> None:
    hook = getattr(plugin, "register", None)
    if callable(hook):
        hook()


_dialects: Registry[Dialect] = Registry(
    lambda name, known: KeyError(f"unknown dialect {name!r}; use one of {known}"), what="dialect",
    load=load_plugins)
_kinds: Registry[ProviderKind] = Registry(
    lambda name, known: KeyError(f"unknown provider type {name!r}; use one of {known}"),
    what="provider kind", load=load_plugins)


def register_dialect(dialect: Dialect) -> None:
    """Add a dialect; registering a different one under a taken name is an error."""
    _dialects.register(dialect.name, dialect)


def register_provider_kind(kind: ProviderKind) -> None:
    """Add a provider kind; registering a different one under a taken name is an error."""
    _kinds.register(kind.name, kind)


def unregister_dialect(name: str) -> None:
    """Remove a dialect (for tests that register a toy one)."""
    _dialects.unregister(name)


def get_dialect(name: str) -> Dialect:
    """The dialect called ``name``; ``KeyError`` with the known names when there is none."""
    return _dialects.get(name)


def dialect_names() -> list[str]:
    return _dialects.names()


def dialects() -> list[Dialect]:
    return _dialects.values()


def get_provider_kind(name: str) -> ProviderKind:
    return _kinds.get(name)


def provider_kind_names() -> list[str]:
    return _kinds.names()


def provider_kinds() -> list[ProviderKind]:
    return _kinds.values()
