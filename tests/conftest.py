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


#: The files that take longest (``--durations``), longest first: under ``-n 4 --dist loadfile`` each
#: starts at once on a worker of its own instead of finishing the run alone after the quick files.
LONGEST_FILES = ("test_s3.py", "test_chaos.py", "test_gateways_e2e.py", "test_resume.py", "test_money.py",
                 "test_run_e2e.py", "test_signals.py", "test_lease.py")
#: Last, on the machine the others leave: a Ray cluster started beside three busy workers took over
#: four minutes for a test that takes 40 s alone (its workers start Python for every runtime_env).
LAST_FILES = ("test_ray.py",)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist re-sorts files by their number of tests (--loadscope-reorder, on by default), which
    # would undo the order below and start the long files last
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then the other files holding slow tests, then the rest, then Ray
    (order within a file kept)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name in LAST_FILES:
            return (2, LAST_FILES.index(name))
        return (0, LONGEST_FILES.index(name)) if name in LONGEST_FILES else (1, item.path not in slow_files)

    items.sort(key=rank)
