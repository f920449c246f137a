"""wanbatch: reproducible, resumable batches of Wan 2.7 image generations as a Parquet-indexed dataset.

    spec = wanbatch.load_spec("pipelines/quickstart.yaml")
    print(wanbatch.plan(spec).job_count)
    result = wanbatch.run(spec)              # or: await wanbatch.run_async(spec)
    table = wanbatch.open_index(result.root).to_table()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "RunOptions",
    "RunResult",
    "__version__",
    "load_spec",
    "open_index",
    "plan",
    "read_index",
    "run",
    "run_async",
]

# Bound eagerly: the submodule `wanbatch.plan` would otherwise shadow the function of the same name.
from .plan import plan  # noqa: E402
from .spec import load_spec  # noqa: E402

if TYPE_CHECKING:
    from .dataset import open_index, read_index
    from .runner import RunOptions, RunResult, run, run_async

_LAZY = {
    "run": "runner",
    "run_async": "runner",
    "RunOptions": "runner",
    "RunResult": "runner",
    "open_index": "dataset",
    "read_index": "dataset",
}


def __getattr__(name: str) -> Any:
    """Import the public API lazily, so `import wanbatch` (and the CLI's start) stays fast."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'wanbatch' has no attribute {name!r}")
