"""Where everything lives inside a dataset root. The one place that knows paths and names, and the
one place that decides what counts as a dataset (:func:`is_dataset`).

Object storage (``s3://…``) uses the same relative names under its prefix (see :mod:`.remote`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from ..errors import DatasetError

MANIFEST = "wanbatch.json"
#: 2: run entries in the manifest carry their ``ledger`` (see :mod:`.ledger`); a format-1 dataset is
#: migrated when a writer opens it (its runs' ledgers are derived from their ok rows and summaries).
FORMAT_VERSION = 2

_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_EXT = re.compile(r"^[A-Za-z0-9]{1,8}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_PART = re.compile(r"^part-.*\.parquet$")
INDEX = "index"
#: Input images of editing requests, stored once each: ``inputs/<sha256[:2]>/<sha256>.<ext>``.
INPUTS = "inputs"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(sha256: str) -> None:
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise DatasetError(f"invalid sha256 {sha256!r}: expected 64 lower-case hex digits")


def input_rel(sha256: str, ext: str) -> str:
    """The relative path of a stored input image (see :data:`INPUTS`)."""
    check_sha256(sha256)
    check_ext(ext)
    return f"{INPUTS}/{sha256[:2]}/{sha256}.{ext}"


def is_dataset(fs: pafs.FileSystem, base: str) -> bool:
    """Whether ``base`` inside ``fs`` is a wanbatch dataset: it holds wanbatch's manifest
    ``wanbatch.json`` (written before anything else of a new dataset). A folder that merely has an
    ``index/`` is someone else's. The one test, for local folders and object storage alike."""
    (manifest,) = fs.get_file_info([f"{base}/{MANIFEST}"])
    return manifest.type == pafs.FileType.File


#: What a new dataset may hold before its manifest lands (a crash in between): the root lock and the
#: manifest's own temp file (``fsutil.temp_name``). Nothing else lets a folder without a manifest be used.
_PRE_MANIFEST = re.compile(rf"^(\.lock|\.{re.escape(MANIFEST)}\.[a-z]+-[0-9a-f]{{8}}\.tmp)$")
#: Names of files wanbatch writes through a temp name (``fsutil.temp_name``, ``parts.write_part``).
OWN_TEMP = re.compile(r"^\.(?:[\w.-]+\.[a-z]+-[0-9a-f]{8}\.tmp"
                      r"|part-\d{13}-[a-z][0-9a-f]*-[0-9a-f]{6}\.parquet\.tmp)$")
#: A writer's id (``{pid:x}{8 hex}``): the name of its folders under ``journal/`` and ``.tmp/``.
WRITER_ID = re.compile(r"^[0-9a-f]{9,16}$")


def fresh_folder(names: list[str]) -> bool:
    """Whether a folder holding ``names`` (hidden ones included) may become a new dataset: empty, or
    only what wanbatch itself leaves before the manifest exists."""
    return all(_PRE_MANIFEST.match(n) for n in names)


def is_part(name: str) -> bool:
    """A visible index part (what ``index/*.parquet`` matches); temp files are hidden."""
    return bool(_PART.match(name))


def check_image_id(image_id: str) -> None:
    if not isinstance(image_id, str) or not _IMAGE_ID.match(image_id) or len(image_id) < 3:
        raise DatasetError(f"invalid image id {image_id!r}: expected something like '3fa9c2e1d04b7a55-0'")


def check_ext(ext: str) -> None:
    if not isinstance(ext, str) or not _EXT.match(ext):
        raise DatasetError(f"invalid image extension {ext!r}: expected letters/digits such as 'png'")


def check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise DatasetError(f"invalid run id {run_id!r}: use letters, digits, '_', '-', '.', ':'")


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths of one local dataset root."""

    root: Path

    @classmethod
    def of(cls, root: str | Path) -> Layout:
        text = str(root)
        if "://" in text:
            raise DatasetError(
                f"{text}: object storage outputs are not supported yet; use a local folder"
            )
        return cls(Path(root))

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def leases(self) -> Path:
        """One file per run holding a slice of the work (see :mod:`.lease`)."""
        return self.root / "leases"

    @property
    def tmp(self) -> Path:
        return self.root / ".tmp"

    @property
    def lock(self) -> Path:
        """Serialises read-modify-write of the manifest and compactions between processes."""
        return self.root / ".lock"

    def image_rel(self, image_id: str, ext: str) -> str:
        return f"images/{image_id[:2]}/{image_id}.{ext}"

    def image_path(self, image_id: str, ext: str) -> Path:
        return self.root / self.image_rel(image_id, ext)

    @property
    def inputs(self) -> Path:
        return self.root / INPUTS

    def input_path(self, sha256: str, ext: str) -> Path:
        """Where an input image with this content is stored (once per dataset, content-addressed)."""
        return self.root / input_rel(sha256, ext)

    def run_summary(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def writer_journal(self, writer: str) -> Path:
        return self.journal / writer

    def writer_tmp(self, writer: str) -> Path:
        return self.tmp / writer

    def parts(self) -> list[Path]:
        """The visible index parts (what ``index/*.parquet`` matches), sorted by name."""
        try:
            names = [e.name for e in _scandir(self.index) if _PART.match(e.name)]
        except FileNotFoundError:
            return []
        return [self.index / n for n in sorted(names)]

    def is_dataset(self) -> bool:
        return is_dataset(pafs.LocalFileSystem(), str(self.root.absolute()))

    def image_files(self) -> list[str]:
        """Relative paths of every file under ``images/*/`` (one listing, no stat per file)."""
        return [rel for chunk in self.image_file_chunks() for rel in chunk]

    def image_file_chunks(self) -> Iterator[list[str]]:
        """:meth:`image_files`, one ``images/<xx>/`` folder at a time."""
        try:
            top = _scandir(self.images)
        except FileNotFoundError:
            return
        for sub in sorted(top, key=lambda e: e.name):
            if sub.is_dir():
                prefix = f"images/{sub.name}/"
                try:
                    names = os.listdir(sub.path)
                except FileNotFoundError:
                    continue
                yield [prefix + n for n in names if n[0] != "."]


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return list(it)

