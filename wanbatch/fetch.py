"""Images from a gateway's answer to a file: stream a URL (or decode base64), hash, verify.

Downloads go to object-store links that expire (about 24 h) and must never carry the gateway key:
the shared client has no credentials and requests here add none. Files are written in chunks while
hashing, so memory stays bounded whatever the image size; a failed download leaves no partial file.

What a hostile or broken server sends is bounded by :class:`DownloadLimits`: bytes on the wire and
decoded (a gzip "image" inflates), pixels claimed by the header (checked before decoding, in every
format) and time. A file over a cap fails its slot as ``too_large``; a body arriving too slowly
(under ``min_rate`` on average once ``grace`` seconds have passed, or unfinished at the deadline)
fails as ``too_slow``. Neither is retried: the same link would send the same again. A server that
never answers at all is a network failure (``download``) and is retried.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
import httpx
from PIL import Image, UnidentifiedImageError

from wanbatch.dataset.fsutil import explain
from wanbatch.errors import DatasetError, GatewayError, RefusedError, TransientError
from wanbatch.hosts import check_download_host, network_errors
from wanbatch.images import ImageTooLarge, safe_open_image
from wanbatch.types import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MIN_DOWNLOAD_RATE, DeliveredImage

CHUNK = 1 << 20
_EXPIRED = frozenset({401, 403, 404, 410})
_RETRYABLE = frozenset({408, 425, 429})
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp", "gif": "gif", "bmp": "bmp",
               "tiff": "tif", "avif": "avif"}
# Formats whose verify() checks every chunk's CRC through the end; others are decoded in full.
_VERIFY_ENOUGH = frozenset({"PNG"})


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """What one image download may cost. The deadline is the call's ``timeout``."""

    max_bytes: int = MAX_IMAGE_BYTES
    """Largest image, counted on the wire and again decoded (gzip, base64)."""
    max_pixels: int = MAX_IMAGE_PIXELS
    """Most pixels the image's header may claim (checked before decoding)."""
    min_rate: float = MIN_DOWNLOAD_RATE
    """Slowest average rate (bytes/s) tolerated once ``grace`` seconds have passed."""
    grace: float = 10.0
    """Seconds before ``min_rate`` applies (connection set-up, a slow first byte)."""
    hosts: tuple[str, ...] | None = None
    """``limits.download_hosts``: the only hosts (and their subdomains) images may come from; None: any
    public host (see :mod:`wanbatch.hosts`)."""
    gateway: str | None = None
    """The gateway's base URL: images come from non-public addresses only when it is on one itself.
    None (a download outside a run): that rule is skipped; link-local addresses are refused anyway."""


DEFAULT_LIMITS = DownloadLimits()


async def fetch_image(
    client: httpx.AsyncClient, image: DeliveredImage, dest: Path, *, timeout: float,
    limits: DownloadLimits = DEFAULT_LIMITS,
) -> tuple[int, str]:
    """Write the image to ``dest`` and return (bytes, sha256 hex); the whole download gets ``timeout`` s."""
    size, digest, _ = await _fetch(client, image, dest, timeout, None, limits)
    return size, digest


async def fetch_verified(
    client: httpx.AsyncClient, image: DeliveredImage, dest: Path, *, timeout: float,
    limits: DownloadLimits = DEFAULT_LIMITS,
) -> tuple[int, str, tuple[str, int, int]]:
    """:func:`fetch_image`, then :func:`verify_image` in the same worker-thread hop as the last write
    (one hop per image instead of two: a measurable share of a fast run's CPU)."""
    max_pixels = limits.max_pixels
    size, digest, verified = await _fetch(client, image, dest, timeout,
                                          lambda path: verify_image(path, max_pixels), limits)
    if verified is None:  # _fetch runs ``finish`` whenever it is given one
        raise RefusedError(f"{dest.name}: the image was not verified", kind="bad_image")
    return size, digest, verified


Finish = Callable[[Path], tuple[str, int, int]]


async def _fetch(
    client: httpx.AsyncClient, image: DeliveredImage, dest: Path, timeout: float, finish: Finish | None,
    limits: DownloadLimits,
) -> tuple[int, str, tuple[str, int, int] | None]:
    try:
        if image.url:
            await check_download_host(image.url, limits)
            return await _download(client, image.url, dest, timeout, finish, limits)
        if image.b64_json:
            return await anyio.to_thread.run_sync(_decode_to, image.b64_json, dest, finish, limits.max_bytes)
        raise RefusedError("the gateway delivered neither a URL nor base64 data", kind="bad_image")
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


class _Sink:
    """The file being downloaded; opened, written and closed in worker threads only."""

    def __init__(self, dest: Path, finish: Finish | None) -> None:
        self.dest, self.finish = dest, finish
        self.fh: BinaryIO | None = None

    def write(self, data: bytes | bytearray, last: bool) -> tuple[str, int, int] | None:
        if self.fh is None:
            self.fh = _open(self.dest)
        _write(self.fh, data, self.dest)
        if not last:
            return None
        self.close()
        return self.finish(self.dest) if self.finish else None

    def close(self) -> None:
        if self.fh is not None and not self.fh.closed:
            try:
                self.fh.close()
            except OSError as exc:
                raise explain(exc, f"write {self.dest}") from None


def _open(dest: Path) -> BinaryIO:
    try:
        return dest.open("wb")
    except OSError as exc:
        raise explain(exc, f"write {dest}") from None


def _too_large(where: str, max_bytes: int, what: str = "is larger than") -> RefusedError:
    return RefusedError(f"the image at {where} {what} {max_bytes} bytes (limits.max_image_bytes)",
                        kind="too_large")


async def _download(
    client: httpx.AsyncClient, url: str, dest: Path, timeout: float, finish: Finish | None,
    limits: DownloadLimits,
) -> tuple[int, str, tuple[str, int, int] | None]:
    http_timeout = httpx.Timeout(timeout, connect=min(timeout, 30.0))
    digest = hashlib.sha256()
    size = 0
    sink = _Sink(dest, finish)
    where = _where(url)
    max_bytes, min_rate, grace = limits.max_bytes, limits.min_rate, limits.grace
    receiving = False  # headers are in: from here on, running out of time is the body's fault
    started = time.monotonic()
    try:
        with anyio.fail_after(timeout):
            async with _follow(client, url, http_timeout, limits) as response:
                where = _where(str(response.url))
                _check_status(response.status_code, str(response.url))
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(where, max_bytes, f"announces {declared} bytes, more than")
                receiving = True
                # The transport's own pieces (16 KB with aiohttp), gathered here into ~CHUNK writes:
                # one copy, where aiter_bytes(CHUNK) re-chunks through BytesIO with three.
                pending = bytearray()
                chunks = response.aiter_bytes()
                while True:
                    # The next piece must come before the average rate falls under min_rate.
                    due = max(grace, size / min_rate) if min_rate > 0 else timeout
                    with anyio.move_on_after(due - (time.monotonic() - started)) as wait:
                        chunk = await anext(chunks, None)
                    if wait.cancelled_caught:
                        raise RefusedError(
                            f"the image at {where} arrived too slowly ({size} bytes in "
                            f"{time.monotonic() - started:.0f} s, under {min_rate:g} bytes/s)",
                            kind="too_slow")
                    if chunk is None:
                        break
                    size += len(chunk)  # decoded bytes; the wire's count is num_bytes_downloaded
                    if size > max_bytes or response.num_bytes_downloaded > max_bytes:
                        raise _too_large(where, max_bytes)
                    digest.update(chunk)
                    pending += chunk
                    if len(pending) >= CHUNK:
                        await anyio.to_thread.run_sync(sink.write, pending, False)
                        pending = bytearray()
        if size == 0:
            raise RefusedError(f"the image at {where} is empty", kind="bad_image")
        verified = await anyio.to_thread.run_sync(sink.write, pending, True)
    except (GatewayError, DatasetError):
        raise
    except TimeoutError:
        if receiving:
            raise RefusedError(f"the image at {where} did not finish arriving within {timeout:g} s "
                               f"({size} bytes)", kind="too_slow") from None
        raise TransientError(f"download from {where} did not finish within {timeout:g} s",
                             kind="download") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        raise RefusedError(f"the gateway delivered an unusable image link ({where})",
                           kind="bad_image") from None
    except network_errors() as exc:
        detail = _QUERY.sub("?…", str(exc))  # some clients quote the whole link, signed query and all
        raise TransientError(f"download from {where} failed: {type(exc).__name__}: {detail}",
                             kind="download") from None
    finally:
        sink.close()
    return size, digest.hexdigest(), verified


_QUERY = re.compile(r"\?[^\s'\"<>)]*")

#: Statuses a CDN redirects with; at most MAX_REDIRECTS hops are followed, each checked like the first.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3


@asynccontextmanager
async def _follow(client: httpx.AsyncClient, url: str, timeout: httpx.Timeout,
                  limits: DownloadLimits) -> AsyncIterator[httpx.Response]:
    """The streamed answer for ``url`` after at most :data:`MAX_REDIRECTS` redirects.

    Each hop is a new request built here with no credentials (the client holds none, and nothing is
    carried over from the previous hop but the URL), to an http(s) URL that passes
    :func:`wanbatch.hosts.check_download_host` (``limits.download_hosts``, no private address beside a
    public gateway, never link-local) before any connection is made.
    """
    first = url
    for hop in range(MAX_REDIRECTS + 1):
        response = await client.send(client.build_request("GET", url, timeout=timeout), stream=True)
        location = response.headers.get("location", "") if response.status_code in _REDIRECTS else ""
        if not location:
            try:
                yield response
            finally:
                await response.aclose()
            return
        await response.aclose()
        if hop == MAX_REDIRECTS:
            raise RefusedError(f"the image link {_where(first)} redirected more than {MAX_REDIRECTS} times "
                               f"(last to {_where(str(response.url.join(location)))}); not followed further",
                               kind="too_many_redirects")
        try:
            target = str(response.url.join(location))
        except (httpx.InvalidURL, TypeError, ValueError):
            raise RefusedError(f"the image link {_where(first)} redirected to an unusable address",
                               kind="bad_image") from None
        await check_download_host(target, limits)
        url = target
    raise AssertionError("unreachable")  # pragma: no cover


def _check_status(status: int, url: str) -> None:
    if status == 200:
        return
    where = _where(url)
    if status in _EXPIRED:
        raise RefusedError(f"the image link expired or is gone ({status} from {where})", kind="url_expired",
                           status=status)
    if status >= 500 or status in _RETRYABLE:
        raise TransientError(f"{status} from {where} while downloading", kind="download", status=status)
    raise RefusedError(f"{status} from {where} while downloading", kind="url_expired", status=status)


def _decode_to(data: str, dest: Path, finish: Finish | None = None,
               max_bytes: int = MAX_IMAGE_BYTES) -> tuple[int, str, tuple[str, int, int] | None]:
    if len(data) // 4 * 3 > max_bytes + 3:  # decoded size, known before decoding
        raise RefusedError(f"the gateway's b64_json image is larger than {max_bytes} bytes "
                           "(limits.max_image_bytes)", kind="too_large")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise RefusedError("the gateway's b64_json is not valid base64", kind="bad_image") from None
    if not raw:
        raise RefusedError("the gateway's b64_json decodes to nothing", kind="bad_image")
    if len(raw) > max_bytes:  # whitespace or padding made the estimate low
        raise RefusedError(f"the gateway's b64_json image is larger than {max_bytes} bytes "
                           "(limits.max_image_bytes)", kind="too_large")
    sink = _Sink(dest, finish)
    try:
        verified = sink.write(raw, True)
    finally:
        sink.close()
    return len(raw), hashlib.sha256(raw).hexdigest(), verified


def _write(fh: BinaryIO, data: bytes | bytearray, dest: Path) -> None:
    """Write; a local failure (disk full) is the dataset's problem, not the gateway's."""
    try:
        fh.write(data)
    except OSError as exc:
        raise explain(exc, f"write {dest}") from None


def verify_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, int, int]:
    """(format lower-case, width, height) of a complete, decodable image; else RefusedError(bad_image),
    or RefusedError(too_large) when its header claims more than ``max_pixels`` (nothing is decoded then).

    Blocking: call it in a worker thread.
    """
    try:
        with safe_open_image(path, max_pixels) as img:
            fmt, (width, height) = img.format or "", img.size
            img.verify()
        if fmt not in _VERIFY_ENOUGH:
            with safe_open_image(path, max_pixels) as img:
                img.load()
    except ImageTooLarge as exc:
        raise RefusedError(f"the delivered image is too large: {exc}", kind="too_large") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError) as exc:
        raise RefusedError(f"the delivered file is not a complete image: {type(exc).__name__}: {exc}",
                           kind="bad_image") from None
    if not fmt or width <= 0 or height <= 0:
        raise RefusedError("the delivered file is not a usable image", kind="bad_image")
    return fmt.lower(), width, height


def ext_for(format: str) -> str:
    """File extension (no dot) for a Pillow format name: ``JPEG`` → ``jpg``."""
    fmt = format.lower().strip(".")
    return _EXTENSIONS.get(fmt, fmt or "bin")


def _where(url: str) -> str:
    """Host (and port) and path of a link, for messages: a signed link's query string is what lets
    anyone download the image, so it stays out of messages, logs and the index."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "?"
    host = parsed.host or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{host}{port}{parsed.path}"


redact_link = _where
