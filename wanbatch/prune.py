"""`wanbatch prune SPEC`: remove from a dataset what no spec that ran into it still plans.

A spec changes (a template edited, a var dropped) and its dataset keeps the images of the old
version. Which images may go is decided from the manifest: every run records the spec file it ran
(absolute path and sha256, ``runs[].spec``). An image is kept when SPEC plans it, or when any other
recorded spec file plans it as it reads today (several specs may share one output folder). A
recorded spec that can no longer be read stops the prune: nobody can say what it still needs
(``--forget PATH`` names one to ignore). Runs made before specs were recorded make ``--yes``
refuse too, unless ``--forget unrecorded``. Images of a spec edited in place are what prune is for: the
file at SPEC's path is read as it is now. Dry run unless ``yes``: the report says what would go.

Only local datasets: the index is rewritten first (one compaction leaving the dropped rows out), then
the image files are deleted, so a reader never meets a row whose file was removed on purpose. Prune
holds the dataset's whole-plan lease meanwhile (:mod:`wanbatch.dataset.lease`): it refuses while a run
is writing, and no run starts while it deletes.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from .dataset import DatasetView, DatasetWriter
from .dataset.lease import LEASES, LeaseHeld, LocalLeases, new_holder, try_acquire
from .errors import DatasetError, SpecError, UsageError
from .plan import plan as make_plan
from .spec import Spec, load_spec


@dataclass
class PruneReport:
    dataset: str
    kept_by: list[str]  # spec files whose plans were kept
    images: int = 0  # ok images that would go (or went)
    failed_rows: int = 0  # failed rows of slots no spec plans
    bytes: int = 0
    deleted: bool = False
    sample: list[str] = field(default_factory=list)  # a few prompts of what goes

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def recorded_specs(view: DatasetView) -> list[str]:
    """Absolute paths of the spec files that ran into the dataset, oldest first (from the manifest)."""
    paths: list[str] = []
    for run in view.manifest().get("runs") or []:
        spec = run.get("spec") if isinstance(run, dict) else None
        path = spec.get("path") if isinstance(spec, dict) else None
        if isinstance(path, str) and path not in paths:
            paths.append(path)
    return paths


def last_spec_order(dataset: str) -> dict[str, int] | None:
    """Plan positions of the image ids the spec that last ran into ``dataset`` plans (the gallery's
    row order), or None when that spec cannot be read any more."""
    try:
        paths = recorded_specs(DatasetView.open(dataset))
        return make_plan(load_spec(paths[-1], require_env=False)).image_ids() if paths else None
    except (SpecError, UsageError, IndexError):
        return None


def prune(spec: Spec, *, output: str | None = None, yes: bool = False,
          forget: Collection[str] = ()) -> PruneReport:
    target = output or spec.output
    if "://" in target:
        raise UsageError(f"prune works on a local dataset folder, not {target}")
    view = DatasetView.find(target)
    if view is None:
        raise UsageError(f"{target}: no dataset there, so nothing to prune (is the output relative to "
                         "another directory?)")
    own = str(Path(spec.source).expanduser().resolve())
    forgotten = {str(Path(f).expanduser().resolve()) for f in forget}
    keep = set(make_plan(spec).image_ids())
    kept_by = [own]
    unreadable: list[str] = []
    for path in recorded_specs(view):
        if path == own or path in forgotten:
            continue
        try:
            other = load_spec(path, require_env=False)
        except SpecError as exc:
            unreadable.append(f"{path} ({exc.message})")
            continue
        keep.update(make_plan(other).image_ids())
        kept_by.append(path)
    runs = [r for r in view.manifest().get("runs") or [] if isinstance(r, dict)]
    unrecorded = sum(not isinstance(r.get("spec"), dict) for r in runs)
    if yes and unrecorded and "unrecorded" not in forget:
        raise UsageError(f"{unrecorded} run(s) of this dataset were made before wanbatch recorded their "
                         "spec, so prune cannot tell what they still need. Pass --forget unrecorded to "
                         "prune anyway (keeping only what the recorded specs plan)")
    if unreadable:
        raise UsageError("cannot tell what these specs, which ran into the dataset, still need: "
                         + "; ".join(unreadable) + ". Restore them, or pass --forget PATH for each to "
                         "let prune remove their images too")
    table = view.read_index(["image_id", "status", "path", "bytes", "prompt"])
    gone = table.filter(pc.invert(pc.is_in(table["image_id"], value_set=_array(keep))))
    ok = gone.filter(pc.equal(gone["status"], "ok"))
    report = PruneReport(
        dataset=view.location, kept_by=kept_by, images=ok.num_rows, failed_rows=gone.num_rows - ok.num_rows,
        bytes=int(pc.sum(ok["bytes"]).as_py() or 0),
        sample=list(dict.fromkeys(ok["prompt"].to_pylist()))[:3],
    )
    if not yes or gone.num_rows == 0:
        return report
    drop = set(gone["image_id"].to_pylist())
    root = Path(view.location)
    # The whole dataset's lease: no run is writing (a run of a spec not recorded yet would lose its new
    # images), and none starts while images are deleted.
    try:
        lease = try_acquire(LocalLeases(root / LEASES), new_holder(f"prune-{secrets.token_hex(3)}", None),
                            view.location)
    except LeaseHeld as exc:
        who = exc.holder.describe() if exc.holder else "a run"
        raise DatasetError(f"{view.location}: {who} is writing the dataset; prune once it has finished") \
            from None
    try:
        with DatasetWriter.open(target, create=False) as writer:
            writer.compact(drop=drop)
        for rel in ok["path"].to_pylist():
            if rel:
                (root / rel).unlink(missing_ok=True)
        for rel in view.image_files():  # files without a row (a crash before indexing) of dropped ids
            if rel.rsplit("/", 1)[-1].rsplit(".", 1)[0] in drop:
                (root / rel).unlink(missing_ok=True)
    finally:
        lease.release()
    report.deleted = True
    return report


def _array(ids: Collection[str]) -> Any:
    import pyarrow as pa

    return pa.array(sorted(ids), pa.string())
