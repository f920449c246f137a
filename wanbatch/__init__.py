"""wanbatch: reproducible, resumable batches of Wan 2.7 image generations as a Parquet-indexed dataset.

    spec = wanbatch.load_spec("pipelines/quickstart.yaml")
    print(wanbatch.plan(spec).job_count)
    result = wanbatch.run(spec)              # or: await wanbatch.run_async(spec)
    table = wanbatch.open_index(result.root).to_table()

The names in ``__all__`` are the public API (typed: the package ships ``py.typed``), together with
the modules ``wanbatch.errors``, ``wanbatch.types`` and ``wanbatch.identity``. Every other module is
internal and may change between releases. Modules inside the package never import this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AmbiguousError,
    DatasetError,
    FatalError,
    GatewayError,
    NotADatasetError,
    RefusedError,
    SpecError,
    SpecErrors,
    TransientError,
    UsageError,
    WanbatchError,
)
from .identity import job_id

# Bound eagerly: the submodule `wanbatch.plan` would otherwise shadow the function of the same name.
from .plan import Plan, plan
from .spec import Spec, load_spec
from .types import Job, StoredImage

if TYPE_CHECKING:
    from .dataset import open_index, read_index
    from .runner import RunOptions, RunResult, RunSummary, run, run_async

__all__ = [
    "AmbiguousError",
    "DatasetError",
    "FatalError",
    "GatewayError",
    "Job",
    "NotADatasetError",
    "Plan",
    "RefusedError",
    "RunOptions",
    "RunResult",
    "RunSummary",
    "Spec",
    "SpecError",
    "SpecErrors",
    "StoredImage",
    "TransientError",
    "UsageError",
    "WanbatchError",
    "__version__",
    "job_id",
    "load_spec",
    "open_index",
    "plan",
    "read_index",
    "run",
    "run_async",
]

_LAZY = {
    "run": "runner",
    "run_async": "runner",
    "RunOptions": "runner",
    "RunResult": "runner",
    "RunSummary": "runner",
    "open_index": "dataset",
    "read_index": "dataset",
}


def __getattr__(name: str) -> Any:
    """Import the run and the dataset lazily, so `import wanbatch` (and the CLI's start) stays fast."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'wanbatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
