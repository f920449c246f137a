"""Datasets on object storage (``s3://bucket/prefix``…) through ``pyarrow.fs``: a local staging
dataset mirrored to the bucket. The :class:`Mirror` is the storage a
:class:`~wanbatch.dataset.writer.DatasetWriter` is composed with for such a root (see its ``Storage``
protocol); reading needs no staging (:class:`~wanbatch.dataset.view.DatasetView` reads the bucket).

Object stores have no rename, no append and no locks, and everything crash-safe in this package rests
on those. So a remote output is written as a *local* dataset — the **staging** folder
(``$WANBATCH_STAGING/<digest of the URI>``, default ``~/.cache/wanbatch/staging/…``) holds the journal,
the temp files and the locks exactly as for a local run — and a :class:`Mirror` copies every
*finished* file to the bucket, where a completed upload is atomic (a SIGKILL mid-upload leaves no
object):

- an image right after it is placed (in a small thread pool: the event loop never waits for the
  network);
- an index part after its flush, once every image upload so far has completed, so the remote index
  never names an image the bucket lacks;
- the manifest and the run summary at the end of the run.

The mirror records, in ``STAGING/.remote/parts``, which parts it knows to be in the bucket. A crash
between an upload and its record only means uploading the same file again.

**Hydration** (on open; for a run, once it holds its lease: its writer opens with only the manifest,
``listing=False``, and :meth:`Mirror.catch_up` hydrates under the lease, so a run lists ``index/``
once and that listing already holds what a run finishing meanwhile stored): ``index/`` is listed once
(never ``images/``). Remote parts missing from the
staging are downloaded; staging parts that are not in the bucket are uploaded (a flush that crashed
before its upload), unless the record says they were there, i.e. a compaction elsewhere removed them
(then they are dropped locally). Staging images (not yet indexed in the bucket) are uploaded first.
A run's triage (a :class:`~wanbatch.dataset.view.DatasetView` of the bucket) takes an ok row's image
as present (a part is uploaded only after its images), so a resume on another machine requests
nothing already indexed in the bucket. A staging folder new to the dataset lists ``images/`` once,
so an image in the bucket with no row (a lost machine, killed between upload and journal) is
downloaded once to be verified and adopted, not paid for again.

**Uploads**: a file up to :data:`ONE_PUT_BYTES` is one PUT (read whole, sent on close through
pyarrow's ``allow_delayed_open``), a larger one a multipart upload; both appear only complete.

**Local copies** of images are deleted once their row is in a part that is in the bucket (after each
flush, and at hydration): the staging stays about one flush of images big, and a crash before that
still finds every journaled image locally for recovery.

**Compaction** merges the staging parts, uploads the merged part, then deletes the old objects. In
between, readers listing ``index/`` see old and new parts together (every row, some twice;
``read_index`` dedupes). Parts another machine flushed meanwhile are not in the snapshot and are left
alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from ..errors import DatasetError, NotADatasetError
from .fsutil import atomic_write, disk_errors
from .layout import FORMAT_VERSION, MANIFEST, Layout, is_dataset, is_part
from .manifest import read_manifest, root_lock
from .parts import read_parts

STAGING_ENV = "WANBATCH_STAGING"
UPLOAD_THREADS = 4
#: Files up to this size are uploaded in one PUT (read whole, then sent); larger ones as a multipart
#: upload. Images are far smaller; index parts of large datasets are larger.
ONE_PUT_BYTES = 8 << 20
_LOCAL_SCHEMES = frozenset({"", "file"})


def is_remote(root: object) -> bool:
    """True for an object-store URI such as ``s3://bucket/prefix`` (``file://`` is local)."""
    if not isinstance(root, str) or "://" not in root:
        return False
    return urlsplit(root).scheme.lower() not in _LOCAL_SCHEMES


def staging_dir(uri: str, env: dict[str, str] | None = None) -> Path:
    """The local staging folder of ``uri``: one per URI (query and trailing slash ignored)."""
    environ = os.environ if env is None else env
    base = environ.get(STAGING_ENV)
    if base:
        parent = Path(base).expanduser()
    else:
        cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        parent = Path(cache).expanduser() / "wanbatch" / "staging"
    key = _canonical(uri)
    tail = key.rstrip("/").rsplit("/", 1)[-1] or "root"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in tail)[:40]
    return (parent / f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:16]}").resolve()


def _one_put(uri: str) -> str:
    """``uri`` with ``allow_delayed_open=true`` for ``s3://``: a small object written in one go is
    then sent as one PUT when its stream is closed, not as a 3-request multipart upload (measured with
    pyarrow 26 against moto's request log). Either appears only complete."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3" or "allow_delayed_open" in parts.query:
        return uri
    query = f"{parts.query}&allow_delayed_open=true" if parts.query else "allow_delayed_open=true"
    return parts._replace(query=query).geturl()


def _canonical(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


# ----------------------------------------------------------------------------------- the bucket


class RemoteRoot:
    """One dataset root in an object store: a pyarrow file system and the base path inside it."""

    def __init__(self, uri: str) -> None:
        self.uri = _canonical(uri)
        try:
            self._multipart_fs, _ = pafs.FileSystem.from_uri(uri)
            self.fs, base = pafs.FileSystem.from_uri(_one_put(uri))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
            raise DatasetError(f"{self.uri}: cannot open this object storage URI: {_short(exc)}") from None
        self.base = base.rstrip("/")
        if not self.base:
            raise NotADatasetError(f"{self.uri}: give a bucket and a prefix, e.g. s3://bucket/datasets/name")

    def key(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    @staticmethod
    def canonical(uri: str) -> str:
        return _canonical(uri)

    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Translate pyarrow's errors (``OSError``: network, auth, missing bucket) into DatasetError."""
        return self.translate(f"in object storage at {self.uri}", what)

    @staticmethod
    @contextmanager
    def translate(where: str, what: str) -> Iterator[None]:
        """:meth:`errors` for any location (``FileNotFoundError`` passes through for the caller)."""
        try:
            yield
        except FileNotFoundError:
            raise
        except DatasetError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot {what} {where}: {_short(exc)}") from None

    def is_dataset(self) -> bool:
        with self.errors("open the dataset"):
            return is_dataset(self.fs, self.base)

    def image_files(self) -> list[str]:
        """Relative paths of every object under ``images/`` (one recursive listing: ~1 request per
        1,000 images; done once per staging folder, see :meth:`Mirror.hydrate`)."""
        with self.errors("list the images"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.key("images"), recursive=True,
                                                            allow_not_found=True))
        cut = len(self.base) + 1
        return [i.path[cut:] for i in infos if i.type == pafs.FileType.File]

    def exists(self, rel: str) -> bool:
        """Whether the object ``rel`` exists (one HEAD request)."""
        with self.errors(f"look for {rel}"):
            (info,) = self.fs.get_file_info([self.key(rel)])
        return bool(info.type == pafs.FileType.File)

    def is_empty(self) -> bool:
        """Whether nothing at all is under the root (one listing of its top level, not recursive)."""
        with self.errors("list the dataset"):
            try:
                infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
            except FileNotFoundError:
                return True
        return not infos

    def parts(self) -> list[str]:
        """Full paths (inside the file system) of the visible ``index/part-*.parquet``, sorted."""
        with self.errors("list the index"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.key("index"), allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and _is_part(i.base_name))

    def upload(self, local: Path, rel: str) -> None:
        """Copy a finished local file to ``rel`` (a multipart upload becomes visible only complete)."""
        with self.errors(f"upload {rel}"):
            with disk_errors(f"read {local}"):
                small = local.stat().st_size <= ONE_PUT_BYTES
                data = local.read_bytes() if small else b""
            if not small:  # a multipart upload (becomes visible only complete)
                pafs.copy_files(str(local), self.key(rel), source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self._multipart_fs, use_threads=False)
                return
            out = self.fs.open_output_stream(self.key(rel))  # delayed open: nothing sent yet
            out.write(data)
            out.close()  # one PUT of the whole object; its errors are raised here, never dropped

    def download(self, rel: str, local: Path) -> None:
        """Copy ``rel`` to ``local`` through a temp name and a rename (never a half file)."""
        tmp = local.with_name(f".{local.name}.dl.tmp")
        with disk_errors(f"download {rel}"):
            local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.errors(f"download {rel}"):
                pafs.copy_files(self.key(rel), str(tmp), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem(), use_threads=False)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        with self.errors(f"delete {rel}"), contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.key(rel))


def _is_part(name: str) -> bool:
    return is_part(name)


def short(exc: BaseException) -> str:
    """An exception as one short line, for messages."""
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


# ----------------------------------------------------------------------------------- the mirror


class Mirror:
    """Keeps a staging dataset's finished files in the bucket; see the module docstring."""

    def __init__(self, remote: RemoteRoot, staging: Path) -> None:
        self.remote = remote
        self.staging = staging
        self.layout = Layout(staging)
        self.state = staging / ".remote"
        self.images: set[str] = set()  # in the bucket: uploaded by this mirror, or listed once (hydrate)
        self.has_manifest = False
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="wanbatch-upload")
        self._uploads: list[Future[None]] = []

    # ------------------------------------------------------------------------- hydration

    def hydrate(self, *, create: bool, listing: bool = True) -> None:
        """Bring the staging in line with the bucket (see the module docstring); idempotent.

        ``listing=False``: only the manifest (what opening a writer needs); the index is listed, and
        the staging brought in line, by a later full hydration (:meth:`catch_up`, once the run holds
        its lease), so a run lists ``index/`` once. A manifest that a writer will migrate needs every
        part in the staging first: then the listing is not deferred."""
        self._check_manifest(create)
        listed = self.state / "images-listed"
        if not listing:
            self._stage_manifest()
            if not self.has_manifest:  # a new dataset: no images to adopt, now or when caught up
                with disk_errors("record the listing"):
                    listed.touch()
            if not self._migrating():
                return
        remote_parts = {f"index/{p.rsplit('/', 1)[1]}" for p in self.remote.parts()} \
            if self.has_manifest else set()
        self._stage_manifest()
        recorded = self._recorded()
        local_parts = {f"index/{p.name}" for p in self.layout.parts()}
        for rel in sorted(remote_parts - local_parts):
            self.remote.download(rel, self.staging / rel)
        for rel in sorted(local_parts - remote_parts):
            if rel in recorded:  # was in the bucket, now gone: compacted away elsewhere
                (self.staging / rel).unlink(missing_ok=True)
                self._record([], [rel])
        # Local images are those not yet indexed in the bucket (copies are dropped once they are):
        # after a clean run none, after a crash about one flush. Upload them all again (one PUT each)
        # rather than list the bucket's images: a part in the bucket only names uploaded images.
        for rel in self._local_images():
            self.remote.upload(self.staging / rel, rel)
            self.images.add(rel)
        if not listed.exists():
            # A machine new to this dataset lists its images once, so an object a lost machine
            # uploaded without a row is adopted, not paid for again; later runs here never list them
            # (a new dataset has none to list).
            if self.has_manifest:
                self.images |= set(self.remote.image_files())
            with disk_errors("record the listing"):
                listed.touch()
        self._record(sorted(remote_parts - recorded), [])
        self.sync_parts()
        self.drop_indexed_copies()

    def _check_manifest(self, create: bool) -> None:
        """Whether the bucket holds a dataset here (:attr:`has_manifest`); refuse a prefix that holds
        something else, or nothing when ``create`` is false."""
        self.has_manifest = self.remote.exists(MANIFEST)
        if not self.has_manifest:
            empty = self.remote.is_empty()
            if empty and not create:
                raise NotADatasetError(
                    f"{self.remote.uri}: no wanbatch dataset there (no {MANIFEST} or index/)")
            if not empty:
                raise NotADatasetError(f"{self.remote.uri}: holds objects but is not a wanbatch dataset "
                                       f"(no {MANIFEST} or index/); choose an empty or new prefix")

    def _stage_manifest(self) -> None:
        """The staging's folders, and the bucket's manifest in it (if there is one)."""
        with disk_errors(f"create the staging folder {self.staging}"):
            self.state.mkdir(parents=True, exist_ok=True)
            self.layout.index.mkdir(exist_ok=True)
        if self.has_manifest:
            self._pull_manifest()

    def _migrating(self) -> bool:
        """Whether the staging's manifest is of an older format (a writer migrates it when it opens,
        from the rows of every part)."""
        if not self.layout.manifest.exists():
            return False
        return bool(read_manifest(self.layout).get("format_version", 1) < FORMAT_VERSION)

    def _pull_manifest(self) -> None:
        """Take the bucket's manifest, keeping run entries only the staging knows (a crashed upload)."""
        tmp = self.state / "manifest.remote"
        self.remote.download(MANIFEST, tmp)
        try:
            data = json.loads(tmp.read_bytes())
        except ValueError as exc:
            raise DatasetError(f"{self.remote.uri}/{MANIFEST}: not valid JSON ({exc})") from None
        finally:
            tmp.unlink(missing_ok=True)
        if not isinstance(data, dict):
            raise DatasetError(f"{self.remote.uri}/{MANIFEST}: not a JSON object")
        with root_lock(self.layout):
            local = read_manifest(self.layout) if self.layout.manifest.exists() else {}
            known = {r.get("run_id") for r in data.get("runs") or [] if isinstance(r, dict)}
            extra = [r for r in local.get("runs") or []
                     if isinstance(r, dict) and r.get("run_id") not in known]
            data["runs"] = list(data.get("runs") or []) + extra
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            atomic_write(self.layout.manifest, text.encode())

    def _local_images(self) -> list[str]:
        found: list[str] = []
        if not self.layout.images.is_dir():
            return found
        with disk_errors("list the staged images"):
            for sub in sorted(self.layout.images.iterdir()):
                if sub.is_dir():
                    found += [f"images/{sub.name}/{n}" for n in sorted(os.listdir(sub)) if n[0] != "."]
        return found

    # ------------------------------------------------------------------------- the record of parts

    def _recorded(self) -> set[str]:
        path = self.state / "parts"
        known: set[str] = set()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return known
        for line in lines:
            if line[:1] == "+":
                known.add(line[1:])
            elif line[:1] == "-":
                known.discard(line[1:])
        return known

    def _record(self, added: Sequence[str], removed: Sequence[str]) -> None:
        if not added and not removed:
            return
        text = "".join(f"+{r}\n" for r in added) + "".join(f"-{r}\n" for r in removed)
        with disk_errors("record the uploaded parts"):
            fd = os.open(self.state / "parts", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)

    # ------------------------------------------------------------------------- uploads

    def upload_image_later(self, rel: str) -> None:
        """Queue the upload of a placed image (the local copy stays until its row is in the bucket)."""
        future = self._pool.submit(self._upload_image, rel)
        with self._lock:
            self._uploads.append(future)

    def _upload_image(self, rel: str) -> None:
        self.remote.upload(self.staging / rel, rel)
        with self._lock:
            self.images.add(rel)

    def wait_uploads(self) -> None:
        """Block until every queued image upload is done; the first failure is raised."""
        with self._lock:
            pending, self._uploads = self._uploads, []
        error: BaseException | None = None
        for future in pending:
            exc = future.exception()
            if exc is not None and error is None:
                error = exc
        if error is not None:
            if isinstance(error, DatasetError):
                raise error
            raise DatasetError(f"an image upload to {self.remote.uri} failed: {_short(error)}")

    def sync_parts(self) -> None:
        """Upload staging parts the bucket lacks, then delete the bucket's parts the staging dropped
        (compacted): uploads first, so rows are never missing from the bucket, only doubled."""
        self.wait_uploads()
        recorded = self._recorded()
        local = {f"index/{p.name}" for p in self.layout.parts()}
        new = sorted(local - recorded)
        for rel in new:
            self.remote.upload(self.staging / rel, rel)
            self._record([rel], [])
        gone = sorted(recorded - local)
        for rel in gone:
            self.remote.delete(rel)
        self._record([], gone)

    def drop_indexed_copies(self, only: set[str] | None = None) -> int:
        """Delete local copies of images that are in the bucket and have an ok row in a part."""
        with self._lock:
            uploaded = set(self.images)
        candidates = [r for r in (only if only is not None else self._local_images()) if r in uploaded]
        if not candidates:
            return 0
        table = read_parts(self.layout, ["path"], pc.field("status") == "ok")
        indexed = set(pc.unique(table["path"]).to_pylist()) if table.num_rows else set()
        removed = 0
        for rel in candidates:
            if rel in indexed:
                (self.staging / rel).unlink(missing_ok=True)
                removed += 1
        return removed

    def push_file(self, local: Path) -> None:
        rel = local.relative_to(self.staging).as_posix()
        self.remote.upload(local, rel)

    def push_missing_images(self) -> None:
        """Upload staged images the bucket lacks (e.g. rescued from a dead writer's temp files)."""
        for rel in self._local_images():
            with self._lock:
                known = rel in self.images
            if not known:
                self.remote.upload(self.staging / rel, rel)
                with self._lock:
                    self.images.add(rel)

    def pull_manifest_if_any(self) -> None:
        """Take in the run entries other machines added to the bucket's manifest meanwhile."""
        try:
            self._pull_manifest()
        except FileNotFoundError:
            return
        self.has_manifest = True

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------------- as a writer's storage

    @classmethod
    def open(cls, uri: str, *, create: bool, staging: Path | None = None, listing: bool = True) -> Mirror:
        """The mirror of ``uri``, its staging folder hydrated from the bucket (with ``listing=False``
        only its manifest, until :meth:`catch_up`: see :meth:`hydrate`)."""
        remote = RemoteRoot(uri)
        folder = staging or staging_dir(uri)
        mirror = cls(remote, folder)
        try:
            with _staging_lock(folder):
                mirror.hydrate(create=create, listing=listing)
        except BaseException:
            mirror.close()
            raise
        return mirror

    @property
    def location(self) -> str:
        return self.remote.uri

    def opened(self, manifest: Path) -> None:
        if not self.has_manifest:  # mark the prefix as a dataset from the start
            self.push_file(manifest)
            self.has_manifest = True

    def placed(self, rel: str) -> None:
        self.upload_image_later(rel)

    def stored_images(self) -> set[str]:
        with self._lock:
            return set(self.images)

    def stored_parts(self) -> list[str]:
        """The bucket's index parts as this mirror knows them (listed at hydration, kept up to date by
        its own uploads and deletions): a run's triage reads them without listing ``index/`` again."""
        return sorted(self.remote.key(rel) for rel in self._recorded())

    def fetch(self, rel: str, local: Path) -> None:
        self.remote.download(rel, local)

    def flushed(self, paths: set[str]) -> None:
        self.sync_parts()
        self.drop_indexed_copies(paths)

    def compacting(self) -> None:
        self.wait_uploads()

    def compacted(self) -> None:
        self.sync_parts()

    def publish(self, local: Path) -> None:
        self.push_file(local)

    def refresh_manifest(self) -> None:
        self.pull_manifest_if_any()

    def recovered(self) -> None:
        self.push_missing_images()
        self.sync_parts()

    def catch_up(self) -> None:
        """Hydrate (list ``index/``) once the run holds its lease, not before: a run that held the slice
        when this mirror was opened (``--wait``), or that ended between the opening and the lease,
        stored parts a listing taken earlier would not know, and a triage on it would pay for them
        again. A run's writer is opened with ``listing=False``, so this is its one listing."""
        with _staging_lock(self.staging):
            self.hydrate(create=True)


# ----------------------------------------------------------------------------------- the dataset


@contextmanager
def _staging_lock(staging: Path) -> Iterator[None]:
    """Serialises hydration between processes sharing one staging folder."""
    with disk_errors(f"create the staging folder {staging}"):
        (staging / ".remote").mkdir(parents=True, exist_ok=True)
        fd = os.open(staging / ".remote" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


