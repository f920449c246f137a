"""Shared fixtures: the anyio backend, an isolated environment, a spec writer."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _offline_hf(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hugging Face libraries must never reach for the hub in tests."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a YAML spec (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding slow tests first (order within a file kept): under ``-n N --dist loadfile`` they
    start at once, side by side, instead of finishing the run alone after the quick files."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
