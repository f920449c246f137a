"""Plain data types shared by every stage: spec → plan → runner → provider → dataset.

Nothing here does I/O. Every other module may import this one; this one imports nothing of wanbatch
but :mod:`wanbatch.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed"]

#: Most pixels a delivered image may have. The models' largest output is 4096×4096 (16.8 MP: the 4K
#: tier, and the cap on explicit pixel sizes); delivered images need not have the requested size
#: (a 2K request has come back 2985×1405), so twice that is allowed. Decoding the largest accepted
#: image then takes at most 33.5 MP × 4 bytes ≈ 134 MB, where a 6.5 KB WebP of 13000² took 676 MB.
MAX_IMAGE_PIXELS = 2 * 4096 * 4096
#: Default largest image file, on the wire and decoded: a 4096×4096 RGB image stored without any
#: compression is 48 MiB; 64 MiB leaves room for an alpha-less PNG's overhead and metadata.
MAX_IMAGE_BYTES = 64 << 20
#: Default slowest average download rate (bytes/s) tolerated once a download is a few seconds old:
#: a 20 MB 4K PNG at this rate already takes ten minutes.
MIN_DOWNLOAD_RATE = 32 << 10


@dataclass(frozen=True, slots=True)
class InputImage:
    """One input image of an editing / reference request, as the plan resolved it.

    ``source`` is where the user said it comes from (a path relative to the spec, a URL, or
    ``dataset:<image_id>``); it is recorded, never sent. A local image (``path`` set: the absolute file
    to read at send time) is identified by the ``sha256`` of its bytes, so moving it changes nothing and
    editing it makes a new job; a URL is never fetched by wanbatch, so the URL itself identifies it.
    ``format`` is the detected format (``png``, ``jpeg``, ``webp``, ``bmp``; None for a URL).
    """

    source: str
    sha256: str | None = None
    format: str | None = None
    path: str | None = None
    #: Sent as :func:`wanbatch.images.fit_input` made it (``fit_inputs: true``): ``sha256`` and
    #: ``format`` are those of that PNG, not of the file at ``path``.
    fitted: bool = False

    @property
    def is_url(self) -> bool:
        return self.path is None

    @property
    def identity(self) -> str:
        """What the job id hashes: the content's sha256, or the URL of a URL input."""
        return self.sha256 if self.sha256 is not None else self.source


@dataclass(frozen=True, slots=True)
class Job:
    """One request to a gateway: ``n`` images of one rendered prompt at one seed and size.

    ``size`` is normalised: a tier (``"1K"``, ``"2K"``, ``"4K"``) or pixels as ``"W*H"``.
    ``params`` holds only the request parameters that are set (``None`` values dropped), with
    canonical keys: ``watermark``, ``thinking_mode``, ``color_palette``, ``enable_sequential``.
    ``job_id`` is a digest of (model, prompt, size, seed, n, params) — see :mod:`wanbatch.plan`.
    ``template`` and ``vars`` describe where the prompt came from; they are not part of the identity.
    ``sent_params`` are the params as the spec wrote them (documented defaults kept): they are sent and
    recorded, but the identity uses ``params``, so writing a default out changes no job id.
    """

    job_id: str
    model: str
    prompt: str
    size: str
    seed: int
    n: int
    params: dict[str, Any]
    template: str = ""
    vars: dict[str, str] = field(default_factory=dict)
    pipeline: str = ""
    #: The params to send (the spec's as written, defaults kept); None: send ``params``.
    sent_params: dict[str, Any] | None = None
    #: Input images, in request order (empty: text-to-image). Part of the job id (their identities).
    inputs: tuple[InputImage, ...] = ()

    @property
    def wire_params(self) -> dict[str, Any]:
        """What the request carries (and the index's ``params`` column records)."""
        return self.params if self.sent_params is None else self.sent_params

    def image_ids(self) -> list[str]:
        return [f"{self.job_id}-{k}" for k in range(self.n)]


@dataclass(frozen=True, slots=True)
class DeliveredImage:
    """One image slot as a gateway answered it, before download: a URL or inline base64."""

    index: int
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str = ""
    #: The size the gateway says it delivered (DashScope's ``usage.size``, ``"W*H"``), checked
    #: against the image once downloaded.
    claimed_size: str | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """A gateway's successful answer to one job (sync answer, or a finished async task).

    ``images`` may hold fewer than ``job.n`` items: the missing slots are failures
    (``error_kind="missing_image"``), never successes. A 200 that carries images *and* an error keeps
    the images; the error goes to ``note`` (and the ``error_message`` of their rows).
    """

    images: list[DeliveredImage]
    task_id: str | None = None
    request_id: str | None = None
    #: An error the gateway reported next to the images it did deliver: kept with their rows.
    note: str = ""


@dataclass(frozen=True, slots=True)
class TaskState:
    """One poll of an async task: still running (``generation is None``) or done."""

    task_id: str
    status: str
    progress: int | None = None
    generation: Generation | None = None


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image that is on disk, verified and in place (``path`` is relative to the dataset root)."""

    path: str
    format: str
    width: int
    height: int
    bytes: int
    sha256: str
