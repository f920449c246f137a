"""``wanbatch.json`` (what the dataset is and which runs wrote it) and ``runs/<run_id>.json``.

Both are replaced atomically; the manifest's read-modify-write holds ``ROOT/.lock`` so two writers
(shards) never lose each other's run entries.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .fsutil import atomic_write, disk_errors
from .layout import FORMAT_VERSION, Layout, check_run_id

_SECRET_WORDS = ("api_key", "apikey", "authorization", "password", "secret", "token")


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("wanbatch")
    except Exception:  # running from a source tree
        from .._version import __version__

        return __version__


def scrub(value: Any) -> Any:
    """Drop anything that looks like a credential (``api_key_env`` names a variable: it stays)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            lowered = str(key).lower()
            if any(w in lowered for w in _SECRET_WORDS) and not lowered.endswith("_env"):
                continue
            out[str(key)] = scrub(item)
        return out
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False, default=str, ensure_ascii=False) + "\n").encode()


@contextmanager
def root_lock(layout: Layout) -> Iterator[None]:
    """Exclusive inter-process lock on ``ROOT/.lock`` (blocking)."""
    with disk_errors("lock the dataset"):
        fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_manifest(layout: Layout) -> dict[str, Any]:
    path = layout.manifest
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise DatasetError(f"{path}: the manifest is not valid JSON ({exc}); restore or delete it") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the manifest is not a JSON object; restore or delete it")
    return data


def ensure_manifest(layout: Layout) -> None:
    """Create the manifest of a new dataset (a folder with it is recognised as a dataset)."""
    if layout.manifest.exists():
        read_manifest(layout)  # fail early on a damaged one
        return
    with root_lock(layout):
        if layout.manifest.exists():
            return
        atomic_write(layout.manifest, _dump({
            "format_version": FORMAT_VERSION,
            "name": layout.root.resolve().name,
            "tool_version": tool_version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "spec": None,
            "runs": [],
        }))


def update_manifest(layout: Layout, spec_resolved: dict[str, Any], run: dict[str, Any]) -> None:
    """Record the resolved spec (without secrets) and add or replace the entry of ``run``."""
    if not isinstance(run, dict) or "run_id" not in run:
        raise DatasetError("update_manifest: `run` must be a dict with a run_id")
    check_run_id(str(run["run_id"]))
    with root_lock(layout):
        data = read_manifest(layout)
        data.setdefault("format_version", FORMAT_VERSION)
        data.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
        spec = scrub(dict(spec_resolved or {}))
        data["name"] = spec.get("name") or data.get("name") or layout.root.resolve().name
        data["tool_version"] = tool_version()
        data["spec"] = spec
        runs = [r for r in data.get("runs") or [] if isinstance(r, dict) and r.get("run_id") != run["run_id"]]
        runs.append(scrub(dict(run)))
        data["runs"] = runs
        atomic_write(layout.manifest, _dump(data))


def migrate(layout: Layout, legacy: Callable[[dict[str, Any]], dict[str, int]]) -> bool:
    """Bring a format-1 manifest to the current format: every run entry gets a ``ledger``
    (``legacy(manifest)`` gives run_id → billed images). Returns whether it changed anything."""
    if not layout.manifest.exists():
        return False
    if read_manifest(layout).get("format_version", 1) >= FORMAT_VERSION:
        return False
    with root_lock(layout):
        data = read_manifest(layout)
        if data.get("format_version", 1) >= FORMAT_VERSION:
            return False
        billed = legacy(data)
        for run in data.get("runs") or []:
            if isinstance(run, dict) and not isinstance(run.get("ledger"), dict):
                run["ledger"] = {"billed_images": billed.get(str(run.get("run_id")), 0), "in_doubt_images": 0,
                                 "resolved_images": 0, "migrated_from_format": 1}
        data["format_version"] = FORMAT_VERSION
        atomic_write(layout.manifest, _dump(data))
    return True


def record_ledger(layout: Layout, run_id: str, ledger: dict[str, int]) -> bool:
    """Fold the ledger of a run whose writer died into its manifest entry (added if missing, marked
    ``killed``). A run entry that already has a ledger is left alone (the run folded it before it
    died). Returns whether the manifest changed."""
    check_run_id(run_id)
    with root_lock(layout):
        data = read_manifest(layout)
        runs = [r for r in data.get("runs") or [] if isinstance(r, dict)]
        for run in runs:
            if run.get("run_id") == run_id:
                if isinstance(run.get("ledger"), dict):
                    return False
                run["ledger"] = dict(ledger)
                break
        else:
            runs.append({"run_id": run_id, "status": "killed", "recovered_at": datetime.now(UTC).isoformat(
                timespec="seconds"), "ledger": dict(ledger)})
        data["runs"] = runs
        data.setdefault("format_version", FORMAT_VERSION)
        atomic_write(layout.manifest, _dump(data))
    return True


def write_run_summary(layout: Layout, run_id: str, summary: dict[str, Any]) -> Path:
    check_run_id(run_id)
    path = layout.run_summary(run_id)
    data = _dump(scrub(summary))
    with root_lock(layout):
        atomic_write(path, data)
    return path
