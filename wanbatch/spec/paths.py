"""Which local files a spec may make wanbatch read.

A spec is often someone else's file, and what a vars or rows file holds is sent, line by line, to a
gateway the spec itself names. So ``{file: ../../.ssh/id_rsa}`` would mail the user's key to a
stranger. A spec may therefore name only files under its own folder or the current working folder
(symlinks resolved first), and no hidden file or folder (``.ssh``, ``.aws``, ``.env``) below them.
The user, never the spec, widens that: ``--allow-read DIR`` (repeatable) or ``WANBATCH_ALLOW_READ``
(folders separated by ``os.pathsep``). The working folder does not count when it is ``/`` or the home
folder: running a downloaded spec from ``~`` must not open ``~/Documents`` to it.

Every file a spec names goes through :func:`confined` (vars files, rows files, input images).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from wanbatch.errors import SpecError

#: Folders (``os.pathsep``-separated) a spec may read from besides its own folder and the cwd.
ALLOW_READ_ENV = "WANBATCH_ALLOW_READ"

_HINT = ("keep the file beside the spec (or below it), or allow its folder: "
         "wanbatch … --allow-read DIR (or WANBATCH_ALLOW_READ=DIR)")


def allowed_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """The folders the user allowed beyond the defaults (``WANBATCH_ALLOW_READ``), resolved."""
    raw = (os.environ if env is None else env).get(ALLOW_READ_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def add_allowed(dirs: Iterable[str | os.PathLike[str]]) -> None:
    """Allow ``dirs`` for the rest of this process and its children (the CLI's ``--allow-read``)."""
    extra = [os.fspath(Path(d).expanduser().resolve()) for d in dirs]
    if extra:
        old = [p for p in os.environ.get(ALLOW_READ_ENV, "").split(os.pathsep) if p]
        os.environ[ALLOW_READ_ENV] = os.pathsep.join(dict.fromkeys([*old, *extra]))


def _default_roots(spec_dir: Path) -> list[Path]:
    roots = [spec_dir.resolve()]
    cwd = Path.cwd().resolve()
    if cwd != Path(cwd.anchor) and cwd != Path.home().resolve():
        roots.append(cwd)
    return roots


def _hidden_part(path: Path, root: Path) -> str | None:
    """The first hidden component of ``path`` below ``root`` (``.ssh``), or None."""
    return next((part for part in path.relative_to(root).parts if part.startswith(".")), None)


def confined(path: Path, spec_dir: Path, field: str, *, max_bytes: int | None = None) -> Path:
    """``path`` (relative to ``spec_dir``) resolved, once it is known to be one the spec may read.

    Raises :class:`SpecError` (``field`` set, no location: the caller knows where ``field`` is written)
    when it lies outside the allowed folders or under a hidden folder; with ``max_bytes`` (a file to be
    read whole) also when it is missing, not a regular file (a FIFO, ``/dev/zero``, a folder) or larger.
    """
    written = path
    real = (spec_dir / path).resolve()
    defaults = _default_roots(spec_dir)
    extra = allowed_dirs()
    if any(real.is_relative_to(root) for root in extra):
        pass
    elif (root := next((r for r in defaults if real.is_relative_to(r)), None)) is not None:
        if (hidden := _hidden_part(real, root)) is not None:
            raise SpecError(f"{written} is inside a hidden file or folder ({hidden}); a spec may not read "
                            "hidden files unless you allow their folder", field=field, hint=_HINT)
    else:
        where = " or ".join(str(r) for r in defaults)
        shown = f"{written} (that is {real})" if str(real) != str(written) else str(written)
        raise SpecError(f"{shown} is outside the spec's folder (the folders a spec may read: {where})",
                        field=field, hint=_HINT)
    if max_bytes is None:  # a folder or a file its caller checks (input images, a dataset)
        return real
    try:
        info = real.stat()
    except FileNotFoundError:
        raise SpecError(f"file not found: {written} (looked in {spec_dir})", field=field,
                        hint="paths are relative to the spec's directory") from None
    except OSError as exc:
        raise SpecError(f"{written} cannot be read: {exc.strerror}", field=field,
                        hint="check the file and its permissions") from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"{written} is a folder, not a file", field=field, hint="name a file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(f"{written} is not a regular file (a pipe, device or socket)", field=field,
                        hint="point it at an ordinary file")
    if info.st_size > max_bytes:
        raise SpecError(f"{written} is {info.st_size} bytes; at most {max_bytes} may be read",
                        field=field, hint="split it, or keep only what you mean to use")
    return real
