"""Export formats, registered by name: the built-ins go through the same door as a plugin's.

A format is one module with a ``write(view, table, out, shard_rows)`` function (called once per split;
``out`` says the split, how images are re-encoded and the var names) and a ``register()``
that calls :func:`register_format`. Built-ins are listed in :data:`DEFAULT_FORMATS` and imported on
the first lookup, so the CLI starts without importing any exporter.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wanbatch.errors import UsageError
from wanbatch.registry import Registry

if TYPE_CHECKING:
    import pyarrow as pa

    from wanbatch.dataset.view import DatasetView
    from wanbatch.export._common import Output

Writer = Callable[["DatasetView", "pa.Table", "Output", "int | None"], None]
#: Called once after every split is written, with rows per split (e.g. to write a dataset card).
Finisher = Callable[["DatasetView", "pa.Table", "Output", "dict[str, int]"], None]

#: Modules whose ``register()`` adds the built-in formats.
DEFAULT_FORMATS: tuple[str, ...] = (
    "wanbatch.export.hf",
    "wanbatch.export.webdataset",
    "wanbatch.export.imagefolder",
)


@dataclass(frozen=True, slots=True)
class ExportFormat:
    """One export format: how to write it and what it can hold."""

    name: str
    write: Writer
    description: str = ""
    sharded: bool = True  # takes shard_rows
    images_only: bool = False  # cannot hold failed rows (no image to write)
    finish: Finisher | None = None
    splits_in_names: bool = False  # names its files by ``out.split`` itself; else a folder per split


_lock = threading.Lock()
_loaded = False


def _load() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        for module in DEFAULT_FORMATS:
            importlib.import_module(module).register()


_FORMATS: Registry[ExportFormat] = Registry(
    lambda name, known: UsageError(f"unknown export format {name!r}; choose one of: {known}"),
    what="export format", load=_load, replace=True, sort_names=True)


def register_format(fmt: ExportFormat) -> None:
    """Add (or replace) a format under ``fmt.name``."""
    if not fmt.name or not fmt.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"an export format needs a plain name, not {fmt.name!r}")
    _FORMATS.register(fmt.name, fmt)


def unregister_format(name: str) -> None:
    """Remove a format (for tests that register a toy one)."""
    _FORMATS.unregister(name)


def get_format(name: str) -> ExportFormat:
    """The format called ``name``; a UsageError (exit 2) lists the known ones."""
    return _FORMATS.get(name)


def format_names() -> list[str]:
    return _FORMATS.names()
