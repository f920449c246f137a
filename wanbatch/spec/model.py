"""Pydantic models of a spec: what a YAML file may say (``*In``) and the normalised :class:`Spec`.

Input models forbid unknown keys and are strict (``"8"`` is not an integer, ``1`` is not ``true``),
so a typo never passes silently. Cross-field rules (sizes per model and dialect, params per dialect,
dialect and provider-type names, templates against vars) live in :mod:`wanbatch.spec.loader`, where
each error can be pinned to the line that caused it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from wanbatch.spec.bytesizes import parse_bytes
from wanbatch.spec.durations import parse_duration
from wanbatch.spec.issues import describe, fail
from wanbatch.spec.seeds import SeedsIn, SeedSpec
from wanbatch.spec.sizes import normalize_size
from wanbatch.types import MAX_IMAGE_BYTES, MIN_DOWNLOAD_RATE, InputImage

Model = Literal["wan2.7-image-pro", "wan2.7-image"]
#: Dialect and provider-type names are checked against :mod:`wanbatch.registry` in ``spec.provider``.
Dialect = str


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _none_is_empty(value: Any) -> Any:
    """``limits:`` with every entry commented out means the defaults, not an error."""
    return {} if value is None else value


def _one_or_many(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    fail(f"must be a text value (a string or a number), got {describe(value)}",
         "write one value per list item")


Seconds = Annotated[float, BeforeValidator(parse_duration)]
Bytes = Annotated[int, BeforeValidator(parse_bytes)]
VarScalar = Annotated[str, BeforeValidator(_scalar_text)]


class VarFile(_In):
    """Values read from a file beside the spec: ``.txt`` lines, a ``.csv`` column, ``.jsonl`` key."""

    file: str
    column: str | None = None


def _var_tag(value: Any) -> str:
    return "@list" if isinstance(value, list) else "@file" if isinstance(value, dict) else "@scalar"


VarIn = Annotated[
    Annotated[list[VarScalar], Tag("@list"), Field(min_length=1)]
    | Annotated[VarFile, Tag("@file")]
    | Annotated[VarScalar, Tag("@scalar")],
    Discriminator(_var_tag),
]


class ImageFile(_In):
    """Input images listed in a file beside the spec: ``.txt`` lines, a ``.csv`` column, ``.jsonl`` key."""

    file: str
    column: str | None = None


class ImageGlob(_In):
    """Input images matching a glob, relative to the spec's folder (``inputs/*.png``)."""

    glob: str


class ImageDataset(_In):
    """The ok images of another wanbatch dataset (a folder, or the spec file that writes it),
    optionally filtered by index columns: ``where: {size: 1K, model: [wan2.7-image]}``."""

    dataset: str
    where: dict[str, Annotated[str, BeforeValidator(_scalar_text)] | list[Annotated[
        str, BeforeValidator(_scalar_text)]]] = {}


def _image_tag(value: Any) -> str:
    if isinstance(value, list):
        return "@list"
    if isinstance(value, dict):
        return "@dataset" if "dataset" in value else "@glob" if "glob" in value else "@file"
    return "@scalar"


ImagesIn = Annotated[
    Annotated[list[VarScalar], Tag("@list"), Field(min_length=1)]
    | Annotated[ImageDataset, Tag("@dataset")]
    | Annotated[ImageGlob, Tag("@glob")]
    | Annotated[ImageFile, Tag("@file")]
    | Annotated[VarScalar, Tag("@scalar")],
    Discriminator(_image_tag),
]

#: ``inputs: [a, b]``: the image vars (or columns of rows) a request carries, in order.
InputsIn = Annotated[list[str], BeforeValidator(_one_or_many), Field(min_length=1)]


class RowsFile(_In):
    """Rows read from a file beside the spec: a ``.csv`` with a header, or ``.jsonl`` objects."""

    file: str


def _cell_text(value: Any) -> Any:
    """An empty cell (``null``) is an empty value: allowed, and warned about by the loader."""
    return "" if value is None else _scalar_text(value)


def _rows_tag(value: Any) -> str:
    return "@file" if isinstance(value, dict) else "@list"


RowsIn = Annotated[
    Annotated[list[dict[str, Annotated[str, BeforeValidator(_cell_text)]]], Tag("@list"), Field(min_length=1)]
    | Annotated[RowsFile, Tag("@file")],
    Discriminator(_rows_tag),
]


def _zip_groups(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [value]
    if isinstance(value, list) and any(isinstance(v, str) for v in value):
        fail("must be a list of var names (one group) or a list of such lists, not a mix",
             "write zip: [a, b] or zip: [[a, b], [c, d]]")
    return value


ZipIn = Annotated[list[Annotated[list[str], Field(min_length=1)]], BeforeValidator(_zip_groups)]


class PromptIn(_In):
    template: str
    vars: Annotated[dict[str, VarIn], BeforeValidator(_none_is_empty)] = {}
    zip: ZipIn = []
    inputs: InputsIn | None = None


def _template_shorthand(value: Any) -> Any:
    return {"template": value} if isinstance(value, str) else value


class PoolMemberIn(_In):
    """One member of ``provider: {pool: [...]}``: a key and/or a gateway; the rest is the pool's."""

    name: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    weight: Annotated[int, Field(ge=1, le=1000)] = 1
    dialect: Dialect | None = None  # only to say clearly that members share the pool's dialect


class ProviderIn(_In):
    type: str | None = None
    name: str | None = None
    base_url: str | None = None
    #: one variable, or several (the short form of a pool: one member per key, equal weights)
    api_key_env: str | list[str] = "WAN_API_KEY"
    pool: list[PoolMemberIn] | None = None
    dialect: Dialect = "flat"
    use_async: bool = Field(False, alias="async")
    response_format: Literal["url", "b64_json"] = "url"
    poll_interval: Annotated[Seconds, Field(gt=0)] | None = None
    latency: Seconds | None = None
    scale: Annotated[float, Field(gt=0, le=1)] | None = None
    faults: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}


def _provider_tag(value: Any) -> str:
    return "@mapping" if isinstance(value, dict) else "@named"


ProviderRef = Annotated[
    Annotated[ProviderIn, Tag("@mapping")] | Annotated[str, Tag("@named")],
    Discriminator(_provider_tag),
]


_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")
_PERCENT = re.compile(r"^\d{1,3}(\.\d+)?%$")
_PALETTE_HINT = ('write a theme string ("warm tones"; parameters gateways) or a list of 3-10 colours '
                 '[{hex: "#C2D1E6", ratio: "40%"}, ...] (Model Studio)')


def _palette(value: Any) -> Any:
    """A ``color_palette``: Model Studio documents a list of 3–10 ``{hex, ratio}`` colours (ratio a
    percentage string or a number); "parameters" gateways (seed doc 001) a theme string."""
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    if not isinstance(value, list):
        fail(f"must be a theme string or a list of colours, got {describe(value)}", _PALETTE_HINT)
    if not 3 <= len(value) <= 10:
        fail(f"must hold 3 to 10 colours, got {len(value)}", _PALETTE_HINT)
    for i, colour in enumerate(value):
        if not isinstance(colour, dict) or set(colour) != {"hex", "ratio"}:
            fail(f"colour {i + 1} must be a mapping with exactly hex and ratio, got {describe(colour)}",
                 _PALETTE_HINT)
        hex_, ratio = colour["hex"], colour["ratio"]
        if not (isinstance(hex_, str) and _HEX.match(hex_)):
            fail(f"colour {i + 1}: hex must be #RRGGBB, got {describe(hex_)}", _PALETTE_HINT)
        number = isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 <= ratio <= 100
        if not (number or (isinstance(ratio, str) and _PERCENT.match(ratio))):
            fail(f"colour {i + 1}: ratio must be a percentage like \"40%\" or a number in [0, 100], "
                 f"got {describe(ratio)}", _PALETTE_HINT)
    return [{"hex": c["hex"], "ratio": c["ratio"]} for c in value]


Palette = Annotated[Any, BeforeValidator(_palette)]


class ParamsIn(_In):
    watermark: bool | None = None
    thinking_mode: bool | None = None
    color_palette: Palette = None
    enable_sequential: bool | None = None
    #: Interactive editing: one list of boxes ``[x1, y1, x2, y2]`` per input image (checked against
    #: the number of inputs by the loader).
    bbox_list: Any = None


class Limits(_In):
    """Run limits; durations are float seconds, sizes int bytes (rates bytes per second).

    ``download_timeout`` is the deadline of one image download, headers and body together; a body
    still arriving then, or arriving under ``min_download_rate`` on average after its first 10 s,
    fails its slot as ``too_slow`` (not retried: a slow link stays slow). ``max_image_bytes`` caps an
    image on the wire and decoded (``too_large``). ``submit_concurrency`` async submissions may be
    between the gateway and the journal at once: what a kill at the worst moment can cost.
    """

    concurrency: Annotated[int, Field(ge=1)] = 8
    submit_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    rpm: Annotated[float, Field(gt=0)] | None = None
    retries: Annotated[int, Field(ge=0)] = 6
    request_timeout: Annotated[Seconds, Field(gt=0)] = 300.0
    download_timeout: Annotated[Seconds, Field(gt=0)] = 120.0
    max_image_bytes: Annotated[Bytes, Field(ge=1024)] = MAX_IMAGE_BYTES
    min_download_rate: Annotated[Bytes, Field(ge=0)] = MIN_DOWNLOAD_RATE
    max_images: Annotated[int, Field(ge=1)] | None = None
    max_cost: Annotated[float, Field(ge=0)] | None = None
    ambiguous_retries: Annotated[int, Field(ge=0)] = 0
    #: Slots an earlier run left in doubt (maybe billed, no image): ``skip`` leaves them, ``retry``
    #: requests them again (which may pay twice).
    in_doubt: Literal["skip", "retry"] = "skip"
    #: The only hosts images may be downloaded from (and their subdomains); None: any public host, and
    #: private ones only when the gateway is private too (wanbatch.hosts).
    download_hosts: Annotated[list[Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9.:\[\]_-]+$")]],
                              Field(min_length=1)] | None = None
    #: How long an image link stays downloadable (gateways' object stores: about 24 h). Images paid
    #: for and not downloaded are downloaded by a rerun within it, and generated again after it.
    link_life: Annotated[Seconds, Field(gt=0)] = 86400.0


class SpecIn(_In):
    """A spec file exactly as written (validated shapes, no cross-field rules yet)."""

    name: str | None = None
    description: str | None = None
    model: Model = "wan2.7-image-pro"
    provider: Annotated[ProviderRef, BeforeValidator(lambda v: "mock" if v is None else v)] = "mock"
    prompt: str | None = None
    prompts: Annotated[
        list[Annotated[PromptIn, BeforeValidator(_template_shorthand)]], Field(min_length=1)
    ] | None = None
    vars: Annotated[dict[str, VarIn], BeforeValidator(_none_is_empty)] = {}
    zip: ZipIn = []
    rows: RowsIn | None = None
    images: Annotated[dict[str, ImagesIn], BeforeValidator(_none_is_empty)] = {}
    inputs: InputsIn | None = None
    #: Let wanbatch re-encode (PNG, lossless) and downscale inputs outside the limits instead of
    #: refusing them; recorded in the manifest (``fit_inputs``, ``fitted_inputs``).
    fit_inputs: bool = False
    seeds: SeedsIn | None = None
    sizes: Annotated[list[Annotated[str, BeforeValidator(normalize_size)]],
                     BeforeValidator(_one_or_many), Field(min_length=1)] = ["2K"]
    n: Annotated[int, Field(ge=1)] = 1
    params: Annotated[ParamsIn, BeforeValidator(_none_is_empty)] = ParamsIn()
    limits: Annotated[Limits, BeforeValidator(_none_is_empty)] = Limits()
    price_per_image: Annotated[float, Field(ge=0)] | None = None
    output: str | None = None


# ---------------------------------------------------------------------------------------------
# The normalised spec


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolMember(_Out):
    """One key or gateway of a pool (its name goes into the index's ``provider`` column)."""

    name: str
    base_url: str | None
    api_key_env: str
    weight: int = 1


class ProviderConfig(_Out):
    """Where and how requests go. Holds the *name* of the key's env var, never the key.

    A pool (``members`` not empty) shares everything but ``name``, ``base_url``, ``api_key_env`` and
    a weight among its members; ``base_url`` and ``api_key_env`` here are the first member's.
    """

    kind: str
    name: str
    base_url: str | None
    api_key_env: str
    dialect: Dialect
    use_async: bool
    response_format: Literal["url", "b64_json"]
    poll_interval: float
    latency: float
    scale: float | None
    faults: dict[str, float]
    #: The wanbatch.yaml that defined this provider (None: written in the spec). Not in the manifest.
    defined_in: str | None = None
    #: The keys or gateways of a pool (empty: one provider).
    members: list[PoolMember] = []

    def member_configs(self) -> list[tuple[ProviderConfig, int]]:
        """Each member as a provider of its own, with its weight (a single provider: itself, 1)."""
        if not self.members:
            return [(self, 1)]
        return [(self.model_copy(update={"name": m.name, "base_url": m.base_url,
                                         "api_key_env": m.api_key_env, "members": []}), m.weight)
                for m in self.members]


class PromptSpec(_Out):
    """One template with the resolved values of the vars it uses; ``zip`` groups advance together.

    ``metadata`` names vars the template does not render (columns of ``rows:``): they advance with
    their row and land in the index's ``vars``, but never reach the request, so never the job id.
    """

    template: str
    vars: dict[str, list[str]]
    zip: list[list[str]]
    metadata: list[str] = []
    #: Vars whose values are input images (sources), in request order; the template never renders them.
    inputs: list[str] = []


class Spec(_Out):
    """A validated, normalised spec: everything :func:`wanbatch.plan.plan` and the runner need."""

    name: str
    description: str | None = None
    model: Model
    provider: ProviderConfig
    warnings: tuple[str, ...] = ()
    """What the loader found suspicious but allowed (``file:line:col: message``); not in the manifest."""
    prompts: list[PromptSpec]
    seeds: SeedSpec
    sizes: list[str]
    n: int
    params: dict[str, Any]
    limits: Limits
    price_per_image: float | None
    output: str
    source: str
    #: The params as the spec wrote them (``None`` dropped, documented defaults kept): what is sent.
    #: ``params`` (defaults dropped) is what identifies a job, so writing ``watermark: false`` changes
    #: what travels but no job id.
    sent_params: dict[str, Any] = {}
    #: Every input image the prompts' image vars name, by source (checked and hashed at load time).
    input_images: dict[str, InputImage] = {}

    def resolved(self) -> dict[str, Any]:
        """JSON-able form for the dataset manifest (no secrets: the key stays in the environment)."""
        out = {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "provider": self.provider.model_dump(exclude={"defined_in"}),
            "prompts": [p.model_dump(exclude={"inputs"} if not p.inputs else None) for p in self.prompts],
            "seeds": self.seeds.describe(),
            "sizes": list(self.sizes),
            "n": self.n,
            "params": dict(self.params),
            "sent_params": dict(self.sent_params),
            "limits": self.limits.model_dump(),
            "price_per_image": self.price_per_image,
            "output": self.output,
            "source": self.source,
        }
        if self.input_images:  # how many; their sources are the image vars' values above
            out["input_images"] = len(self.input_images)
        fitted = sorted(s for s, i in self.input_images.items() if i.fitted)
        if fitted:  # sent re-encoded (and maybe downscaled) as the user allowed: say which
            out["fit_inputs"] = True
            out["fitted_inputs"] = fitted
        return out


#: Keys each kind of mapping accepts, for "unknown key … did you mean" messages.
KEYS: dict[str, list[str]] = {
    "spec": [f.alias or n for n, f in SpecIn.model_fields.items()],
    "provider": [f.alias or n for n, f in ProviderIn.model_fields.items()],
    "pool_member": list(PoolMemberIn.model_fields),
    "params": list(ParamsIn.model_fields),
    "limits": list(Limits.model_fields),
    "prompt": list(PromptIn.model_fields),
    "var": list(VarFile.model_fields),
    "image": sorted({*ImageFile.model_fields, *ImageGlob.model_fields, *ImageDataset.model_fields}),
    "rows": list(RowsFile.model_fields),
}
