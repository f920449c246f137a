"""One writer per slice of work: the lease a run holds on what it will request.

A run leases its *slice* — the whole plan, or ``--shard i/N`` — before it triages, and gives the lease
back when it ends (also after Ctrl-C or a fatal error). A second run whose slice overlaps stops at
once naming the holder, or waits (``--wait``). The whole plan overlaps everything; ``i/N`` and ``j/N``
overlap iff ``i == j``; shards of different counts ``i/N`` and ``j/M`` overlap iff
``i ≡ j (mod gcd(N, M))`` — exact, since a shard is a residue of the job id, whatever the spec (so
``0/2`` and ``1/4`` run side by side, ``0/2`` and ``2/4`` do not). A slice says nothing about the
spec: two specs writing one dataset are kept apart as long as their slices overlap.

**Local datasets** keep one file per lease, ``leases/<slice>.json`` (``all.json``,
``shard-0-of-4.json``). Its content says who holds it: host, pid (and the pid's start time and the
machine's boot id, against pid reuse), run id, since when, the slice, a heartbeat counter, and the
images the run has reserved so far (the shared caps, below). Everything is lock-free except the caps:

- *create*: the content is written to a temp file, then ``link``-ed to the lease name (fails if the
  name exists: ``O_EXCL`` semantics with the content complete the moment it is visible);
- *heartbeat*: every :data:`BEAT` seconds the holder rewrites its file in place through the open file
  descriptor (fixed-size content, one ``pwrite``), which also refreshes its mtime; it first checks
  that the name still points at its inode, else the lease was taken over (the holder was judged
  dead): the run is told (:attr:`Lease.lost`) and reserves nothing more;
- *stale*: on the same host (and boot) a lease whose pid is dead (or reused) is stale at once; on
  another host, one whose heartbeat (mtime) is older than :data:`EXPIRY`;
- *take over*: a taker of a stale lease creates a marker named after the stale holder's token
  (``O_EXCL``: one taker at a time), checks the file still holds that token and renames it to a
  private name (see :meth:`LocalLeases.claim`). Then it creates its own lease by ``link``, which only
  one process wins: several processes racing for one stale lease end with one holder;
- *after creating*, the run lists the leases again: if another overlapping live lease appeared in the
  meantime (two different slices created at the same instant), it withdraws its own and reports the
  other. Both may withdraw; neither pays.

**Caps shared live** (:class:`SharedCaps`): each holder publishes the images it has reserved in its
lease. For local datasets a reservation of a run with a dataset cap reads the other holders' numbers
and publishes its own under one ``flock`` (``leases/.lock``, held for a millisecond), so concurrent
capped runs on one dataset never reserve more than ``limits.max_images`` / ``max_cost`` together: the
cap is exact. A run without a dataset cap publishes at its heartbeats only (no lock per job), so a
capped run may count it up to :data:`BEAT` seconds late.

**Object storage** (``s3://``) has no rename and no conditional write through ``pyarrow.fs`` (S3's
``If-None-Match: *`` is not reachable without a new dependency), so there the lease is an object
``leases/<slice>-<token>.json``: written, then after :data:`SETTLE` seconds the prefix is listed again
and the run withdraws if another overlapping live lease is there. With a store whose listings are
strongly consistent after a write (AWS S3 since 2020, MinIO, moto) at least one of two racing runs
sees the other, so two runs never both proceed; stale means the object was last written more than
:data:`REMOTE_EXPIRY` seconds ago (clocks assumed within a few seconds), or a dead pid on the same
host. Shared caps there are counted from the heartbeats: see ``docs/object-storage.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import DatasetError

LEASES = "leases"
BEAT = 2.0  #: seconds between heartbeats (local)
EXPIRY = 30.0  #: a lease on another host whose heartbeat is older than this is stale (local)
REMOTE_BEAT = 5.0
REMOTE_EXPIRY = 60.0
SETTLE = 1.0  #: seconds between writing a remote lease and listing again
_SIZE = 2048  #: fixed size of a local lease file: a heartbeat is one pwrite of the whole content
_TEMP_AGE = 60.0  #: temp and claim files older than this are swept by recovery


def _read_boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


HOST = socket.gethostname()
BOOT_ID = _read_boot_id()


def pid_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or None if unknown."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return int(raw.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# ----------------------------------------------------------------------------------- slices and holders


@dataclass(frozen=True, slots=True)
class Slice:
    """What a run requests: the whole plan (``shard`` None) or shard ``i`` of ``N``."""

    shard: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return "all" if self.shard is None else f"shard-{self.shard[0]}-of-{self.shard[1]}"

    def __str__(self) -> str:
        return "the whole plan" if self.shard is None else f"shard {self.shard[0]}/{self.shard[1]}"

    def overlaps(self, other: Slice) -> bool:
        if self.shard is None or other.shard is None:
            return True
        (i, n), (j, m) = self.shard, other.shard
        # Shard i/N holds the jobs whose id x (its first 32 bits) has x % N == i, in every spec (see
        # plan.Plan.jobs): i/N and j/M share jobs iff some x has x % N == i and x % M == j, i.e. iff
        # i ≡ j (mod gcd(N, M)) (Chinese remainder theorem; 2^32 ids leave room for every residue).
        return (i - j) % math.gcd(n, m) == 0

    @classmethod
    def parse(cls, value: Any) -> Slice:
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return cls((value[0], value[1]))
        return cls(None)


@dataclass(slots=True)
class Holder:
    """Who holds a lease (the content of a lease file or object)."""

    token: str
    run_id: str
    slice: Slice
    host: str = HOST
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None
    boot_id: str | None = BOOT_ID
    since: float = field(default_factory=time.time)
    beat: int = 0
    beat_at: float = field(default_factory=time.time)
    reserved: int = 0  #: images this run has reserved against the caps so far

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["slice"] = list(self.slice.shard) if self.slice.shard else None
        return data

    def encode(self, size: int | None = None) -> bytes:
        raw = json.dumps(self.to_dict(), sort_keys=True).encode()
        if size is None:
            return raw
        if len(raw) >= size:
            raise DatasetError("lease content too long (host name?)")
        return raw + b" " * (size - len(raw) - 1) + b"\n"

    @classmethod
    def decode(cls, raw: bytes) -> Holder | None:
        try:
            data = json.loads(raw)
            return cls(token=str(data["token"]), run_id=str(data["run_id"]), slice=Slice.parse(data["slice"]),
                       host=str(data["host"]), pid=int(data["pid"]),
                       pid_start=data.get("pid_start") if isinstance(data.get("pid_start"), int) else None,
                       boot_id=data.get("boot_id") if isinstance(data.get("boot_id"), str) else None,
                       since=float(data["since"]), beat=int(data.get("beat", 0)),
                       beat_at=float(data.get("beat_at", data["since"])),
                       reserved=max(int(data.get("reserved", 0)), 0))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"run {self.run_id} (host {self.host}, pid {self.pid}, since {since}, {self.slice})"


@dataclass(frozen=True, slots=True)
class Entry:
    """A lease as listed: its name, its holder (None: unreadable), when it was last written."""

    name: str
    holder: Holder | None
    mtime: float


def alive(entry: Entry, *, expiry: float, now: float | None = None) -> bool:
    """Whether the holder of ``entry`` may still be running (when unsure: yes, unless it is silent
    for longer than ``expiry``)."""
    now = time.time() if now is None else now
    holder = entry.holder
    if holder is not None and holder.host == HOST:
        if holder.boot_id and BOOT_ID and holder.boot_id != BOOT_ID:
            return False  # the machine rebooted since
        if not pid_alive(holder.pid):
            return False
        if holder.pid_start is not None:
            started = pid_start(holder.pid)
            if started is not None and started != holder.pid_start:
                return False  # the pid was reused
        return True
    return now - entry.mtime <= expiry


# ----------------------------------------------------------------------------------- stores


class LeaseStore(Protocol):
    beat: float
    expiry: float

    def entries(self) -> list[Entry]: ...
    def create(self, holder: Holder) -> Any | None: ...  # a handle, or None if the name is taken
    def claim(self, entry: Entry) -> bool: ...  # remove a stale lease; False if someone else did
    def write(self, handle: Any, holder: Holder) -> None: ...
    def owns(self, handle: Any, holder: Holder) -> bool: ...
    def remove(self, handle: Any, holder: Holder) -> None: ...
    def exclusive(self) -> contextlib.AbstractContextManager[None]: ...  # serialises cap reservations
    @property
    def settle(self) -> float: ...


@dataclass
class _LocalHandle:
    name: str
    fd: int


class LocalLeases:
    """Leases of a local dataset: ``<root>/leases/<slice>.json`` (see the module docstring)."""

    beat = BEAT
    expiry = EXPIRY
    settle = 0.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def entries(self) -> list[Entry]:
        try:
            names = sorted(n for n in os.listdir(self.folder)
                           if n.endswith(".json") and not n.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DatasetError(f"cannot list the leases in {self.folder}: {exc.strerror or exc}") from None
        out = []
        for name in names:
            path = self.folder / name
            holder: Holder | None = None
            mtime = 0.0
            for _ in range(3):  # a read torn by a heartbeat is read again
                try:
                    raw = path.read_bytes()
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    break
                holder = Holder.decode(raw)
                if holder is not None:
                    break
                time.sleep(0.005)
            else:
                out.append(Entry(name[:-5], None, mtime))
                continue
            if holder is not None:
                out.append(Entry(name[:-5], holder, mtime))
        return out

    def create(self, holder: Holder) -> _LocalHandle | None:
        try:
            self.folder.mkdir(exist_ok=True)
            temp = self.folder / f".new-{holder.token}"
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise DatasetError(f"cannot create a lease in {self.folder}: {exc.strerror or exc}") from None
        try:
            os.pwrite(fd, holder.encode(_SIZE), 0)
            os.fsync(fd)
            try:
                os.link(temp, self._path(holder.slice.name))
            except FileExistsError:
                os.close(fd)
                return None
        except OSError as exc:
            os.close(fd)
            raise DatasetError(f"cannot create a lease in {self.folder}: {exc.strerror or exc}") from None
        finally:
            temp.unlink(missing_ok=True)
        return _LocalHandle(holder.slice.name, fd)

    def claim(self, entry: Entry) -> bool:
        """Remove the stale lease ``entry``; False if it is not there any more (another taker was
        first, or it is not the lease judged stale).

        A taker first creates the marker ``.claim-<name>-<token>`` (``O_EXCL``: one taker per stale
        lease at a time), checks that the lease file still holds that token, renames it away (a
        private name) and checks again what it moved. The lease file changes only by its holder's
        heartbeat (same inode, same token), by a marker holder's rename, or by a creator filling an
        empty name; so a taker never removes a lease it did not judge stale, except one whose holder
        released it at that very instant (then it is linked back)."""
        path = self._path(entry.name)
        token = entry.holder.token if entry.holder else f"unreadable-{int(entry.mtime)}"
        marker = self.folder / f".claim-{entry.name}-{token}"
        for _ in range(2):
            try:
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                break
            except FileExistsError:  # another taker is at it, or one was killed a while ago
                with contextlib.suppress(OSError):
                    if time.time() - marker.stat().st_mtime > _TEMP_AGE:
                        marker.unlink()
                        continue
                return False
        else:
            return False
        try:
            if self._token_at(path) != (entry.holder.token if entry.holder else None):
                return False
            moved = self.folder / f".claimed-{secrets.token_hex(6)}"
            try:
                os.rename(path, moved)
            except FileNotFoundError:
                return False
            try:
                if self._token_at(moved) != (entry.holder.token if entry.holder else None):
                    with contextlib.suppress(FileExistsError):  # not ours to remove: put it back
                        os.link(moved, path)
                    return False
                return True
            finally:
                moved.unlink(missing_ok=True)
        finally:
            marker.unlink(missing_ok=True)

    @staticmethod
    def _token_at(path: Path) -> str | None:
        try:
            holder = Holder.decode(path.read_bytes())
        except FileNotFoundError:
            return "(gone)"
        return holder.token if holder else None

    def write(self, handle: _LocalHandle, holder: Holder) -> None:
        os.pwrite(handle.fd, holder.encode(_SIZE), 0)

    def owns(self, handle: _LocalHandle, holder: Holder) -> bool:
        try:
            return os.stat(self._path(handle.name)).st_ino == os.fstat(handle.fd).st_ino
        except FileNotFoundError:
            return False

    def remove(self, handle: _LocalHandle, holder: Holder) -> None:
        try:
            if self.owns(handle, holder):
                self._path(handle.name).unlink(missing_ok=True)
        finally:
            os.close(handle.fd)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self.folder.mkdir(exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def sweep(folder: Path) -> int:
    """Remove temp and claim files a killed acquirer left in ``leases/`` (older than a minute)."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if name.startswith((".new-", ".claim-", ".claimed-")):
            path = folder / name
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > _TEMP_AGE:
                    path.unlink()
                    removed += 1
    return removed


# ----------------------------------------------------------------------------------- the lease


class LeaseHeld(DatasetError):
    """Another live run holds an overlapping slice (exit 3)."""

    def __init__(self, holder: Holder | None, mine: Slice, location: str) -> None:
        self.holder = holder
        who = holder.describe() if holder else "a run whose lease cannot be read"
        shard_hint = ""
        if holder is not None and holder.slice.shard is not None:
            i, n = holder.slice.shard
            shard_hint = f", or run another shard of {n} (--shard j/{n} with j ≠ {i})"
        super().__init__(
            f"{location}: {mine} overlaps the work of {who}, which is still running; "
            f"wait for it to finish (or pass --wait to wait here){shard_hint}")


class Lease:
    """A held lease: heartbeats in a thread; :meth:`release` gives it back."""

    def __init__(self, store: LeaseStore, handle: Any, holder: Holder) -> None:
        self.store = store
        self.handle = handle
        self.holder = holder
        self.lost: str | None = None  # set when another run took the lease over
        self.taken_over: list[Holder] = []  # stale leases this one replaced (for a note)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_beat: Callable[[], object] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat_loop, name="wanbatch-lease", daemon=True)
        self._thread.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.store.beat):
            try:
                self.beat()
                if self.on_beat is not None:
                    self.on_beat()
            except Exception:  # a failed heartbeat (a network blip) is retried at the next beat
                continue

    def beat(self, reserved: int | None = None) -> None:
        with self._lock:
            if self.lost is not None or (self._stop.is_set() and reserved is None):
                return
            if not self.store.owns(self.handle, self.holder):
                self.lost = (f"the lease on {self.holder.slice} was taken over by another run (this run was "
                             "judged dead: no heartbeat); nothing more is requested")
                return
            self.holder.beat += 1
            self.holder.beat_at = time.time()
            if reserved is not None:
                self.holder.reserved = reserved
            self.store.write(self.handle, self.holder)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self.store.remove(self.handle, self.holder)


def new_holder(run_id: str, shard: tuple[int, int] | None) -> Holder:
    return Holder(token=secrets.token_hex(8), run_id=run_id, slice=Slice(shard),
                  pid_start=pid_start(os.getpid()))


def try_acquire(store: LeaseStore, holder: Holder, location: str) -> Lease:
    """Take the lease ``holder`` describes, taking over stale overlapping ones; raises
    :class:`LeaseHeld` naming a live overlapping holder."""
    mine = holder.slice
    taken: list[Holder] = []
    for _ in range(20):  # each round loses only to another process's progress
        blocker: Entry | None = None
        for entry in store.entries():
            slice_ = entry.holder.slice if entry.holder else None
            if slice_ is not None and not slice_.overlaps(mine):
                continue
            if alive(entry, expiry=store.expiry):
                blocker = entry
                break
            if store.claim(entry) and entry.holder is not None:
                taken.append(entry.holder)
        if blocker is not None:
            raise LeaseHeld(blocker.holder, mine, location)
        holder.since = holder.beat_at = time.time()
        handle = store.create(holder)
        if handle is None:
            continue  # someone created the same slice meanwhile: look again
        if store.settle:
            time.sleep(store.settle)
        others = [e for e in store.entries()
                  if (e.holder is None or e.holder.token != holder.token)
                  and (e.holder is None or e.holder.slice.overlaps(mine)) and alive(e, expiry=store.expiry)]
        if others:  # an overlapping slice created at the same instant: withdraw, neither pays
            store.remove(handle, holder)
            raise LeaseHeld(others[0].holder, mine, location)
        lease = Lease(store, handle, holder)
        lease.taken_over = taken
        lease.start()
        return lease
    raise DatasetError(f"{location}: could not take the lease on {mine}: other runs keep taking it; "
                       "try again")


# ----------------------------------------------------------------------------------- shared caps


class SharedCaps:
    """The images other live runs of the dataset have reserved, and publishing this run's own.

    The dataset's ledger read at start-up leaves out the journals of runs holding a live lease (read
    before and after it); they are counted here from their leases instead, as they grow. A run seen
    here that ends is counted by what it last published, or by its manifest entry (``folded(run_id)``:
    billed + in doubt, read when its lease disappears), whichever is larger. Runs whose manifest entry
    the ledger already held (``counted``: ending as this run started) are not counted again.
    """

    def __init__(self, lease: Lease, others: list[Entry], folded: Callable[[str], int | None],
                 counted: Collection[str] = ()) -> None:
        self.lease = lease
        self.store = lease.store
        self.folded = folded
        self.counted = frozenset(counted)  # runs the base ledger holds already (their manifest entry)
        self._seen: dict[str, tuple[str, int]] = {}  # token → (run_id, images)
        self._gone: set[str] = set()
        self._lock = threading.Lock()
        self._update(others)

    @staticmethod
    def live_others(store: LeaseStore, token: str | None = None) -> list[Entry]:
        return [e for e in store.entries() if e.holder is not None and e.holder.token != token
                and alive(e, expiry=store.expiry)]

    def _update(self, entries: list[Entry]) -> int:
        with self._lock:
            present = set()
            for e in entries:
                h = e.holder
                if h is None or h.token == self.lease.holder.token or h.run_id in self.counted:
                    continue
                present.add(h.token)
                if h.token not in self._seen and not alive(e, expiry=self.store.expiry):
                    continue  # dead before we saw it live: its journal is in the base ledger
                old = self._seen.get(h.token, (h.run_id, 0))[1]
                self._seen[h.token] = (h.run_id, max(old, h.reserved))
            for token, (run_id, images) in list(self._seen.items()):
                if token not in present and token not in self._gone:
                    self._gone.add(token)  # it ended: its manifest entry may say more
                    final = self.folded(run_id)
                    if final is not None and final > images:
                        self._seen[token] = (run_id, final)
            return sum(images for _, images in self._seen.values())

    def others(self) -> int:
        """Images the other runs hold, as last read."""
        with self._lock:
            return sum(images for _, images in self._seen.values())

    def refresh(self) -> int:
        return self._update(self.store.entries())

    @contextlib.contextmanager
    def reserving(self) -> Iterator[int]:
        """Serialise one reservation with the other runs' (local: exact): yields the other runs'
        images now; the caller publishes its own with :meth:`publish` before leaving."""
        if self.store.settle:  # object storage: no lock, the numbers of the last heartbeat
            yield self.others()
            return
        with self.store.exclusive():
            yield self.refresh()

    def publish(self, reserved: int) -> None:
        if self.store.settle:
            self.lease.holder.reserved = reserved  # written by the next heartbeat
            return
        self.lease.beat(reserved)

# ----------------------------------------------------------------------------------- object storage


class RemoteLeases:
    """Leases of an ``s3://`` dataset: objects ``leases/<slice>-<token>.json`` in the bucket."""

    beat = REMOTE_BEAT
    expiry = REMOTE_EXPIRY
    settle = SETTLE

    def __init__(self, remote: Any) -> None:  # a remote.RemoteRoot
        self.remote = remote
        self.prefix = remote.key(LEASES)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}.json"

    def entries(self) -> list[Entry]:
        import pyarrow.fs as pafs

        fs = self.remote.fs
        with self.remote.errors("list the leases"):
            infos = fs.get_file_info(pafs.FileSelector(self.prefix, allow_not_found=True))
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
                continue
            try:
                with self.remote.errors("read a lease"), fs.open_input_stream(info.path) as fh:
                    raw = fh.read()
            except FileNotFoundError:
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else time.time()
            out.append(Entry(info.base_name[:-5], Holder.decode(raw), mtime))
        return out

    def _put(self, name: str, holder: Holder) -> None:
        with self.remote.errors("write a lease"), self.remote.fs.open_output_stream(self._key(name)) as fh:
            fh.write(holder.encode())

    def create(self, holder: Holder) -> str:
        name = f"{holder.slice.name}-{holder.token}"
        self._put(name, holder)
        return name

    def claim(self, entry: Entry) -> bool:
        try:
            with self.remote.errors("remove a stale lease"):
                self.remote.fs.delete_file(self._key(entry.name))
        except FileNotFoundError:
            return False
        return True

    def write(self, handle: str, holder: Holder) -> None:
        self._put(handle, holder)

    def owns(self, handle: str, holder: Holder) -> bool:
        import pyarrow.fs as pafs

        with self.remote.errors("check the lease"):
            (info,) = self.remote.fs.get_file_info([self._key(handle)])
        return bool(info.type == pafs.FileType.File)

    def remove(self, handle: str, holder: Holder) -> None:
        with contextlib.suppress(FileNotFoundError), self.remote.errors("remove the lease"):
            self.remote.fs.delete_file(self._key(handle))

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def open_store(root: str | Path) -> LeaseStore:
    """The leases of the dataset at ``root`` (a folder, or an ``s3://`` URI)."""
    from .remote import RemoteRoot, is_remote

    if is_remote(root):
        return RemoteLeases(RemoteRoot(str(root)))
    return LocalLeases(Path(root) / LEASES)


def holders(location: str | Path) -> list[dict[str, Any]]:
    """Every lease of a dataset, for ``wanbatch status``: the holder and whether it looks live."""
    store = open_store(location)
    return [{**(e.holder.to_dict() if e.holder else {"name": e.name}),
             "live": alive(e, expiry=store.expiry)} for e in store.entries()]
