"""Files a spec may read: under the spec's folder or the current directory, nothing else.

A spec is often someone else's (a shared pipeline, a pull request): a path such as
``../../home/me/.ssh/id_rsa.png`` or ``/etc/passwd`` must not turn into a request body. So every file
a spec names goes through :func:`confined`, which resolves it (symlinks included) and refuses what
lies outside both roots.
"""

from __future__ import annotations

from pathlib import Path

from wanbatch.errors import SpecError


def confined(path: Path, spec_dir: Path, field: str) -> Path:
    """``path`` (relative paths are relative to ``spec_dir``) resolved, if it lies under ``spec_dir``
    or the current directory; else a :class:`SpecError` naming ``field``."""
    resolved = (spec_dir / path).resolve()
    roots = [spec_dir.resolve(), Path.cwd().resolve()]
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved
    raise SpecError(f"{path} lies outside the spec's folder ({roots[0]}) and the current directory",
                    field=field, hint="move the file under the spec's folder, or run wanbatch from a folder "
                    "that contains it")
