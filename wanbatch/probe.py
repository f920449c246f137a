"""``wanbatch probe``: the fewest requests that tell whether a gateway honours what a spec relies on.

Three requests of the spec's first prompt, first size and ``n``: seed S, seed S again, seed S+1.
The first answers whether the key, the model and the dialect's body are accepted, whether the
delivered size is the requested one (read from the image) and whether ``n`` images came; the second
whether the same seed gives the same image (identical bytes, or — since the docs promise only
"relatively stable" results — a small perceptual-hash distance); the third whether another seed gives
another image. Over an async provider the requests go through submit and poll, which checks async too.
A provider pool is probed member by member (each its own key and gateway: any of them may be the one
that refuses the key, drops the seed or delivers another size), three requests each.

The verdict is written beside the spec (``<spec>.probe.json``); ``plan`` and ``run`` read it back to
warn when a spec sweeps seeds through a provider whose seed handling is unverified or known dropped.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from wanbatch.errors import FatalError, GatewayError
from wanbatch.fetch import DownloadLimits, fetch_verified
from wanbatch.hosts import allow_list
from wanbatch.identity import job_id
from wanbatch.images import safe_open_image
from wanbatch.models import TIER_PIXELS, pixels
from wanbatch.providers.base import Provider
from wanbatch.providers.factory import check_settings, make_provider, open_client
from wanbatch.spec import Spec
from wanbatch.types import Generation, InputImage, Job

#: Requests a probe sends: seed S, seed S again, seed S+1.
PROBE_REQUESTS = 3
#: Largest dHash distance (of 64 bits) at which two images count as the same picture.
SAME_PICTURE = 6
PROBE_SUFFIX = ".probe.json"

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


@dataclass
class Verdict:
    """What a probe found: each check maps to (status, detail)."""

    provider: str
    dialect: str
    base_url: str
    model: str
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)
    seed: str = "unverified"  # "honoured" | "dropped" | "ignored" | "unverified"

    @property
    def failed(self) -> bool:
        return any(status == FAILED for status, _ in self.checks.values())

    @property
    def host(self) -> str:
        """The gateway's host (and port), for a report line; the base URL itself when it has none."""
        try:
            url = httpx.URL(self.base_url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return self.base_url
        return f"{url.host}:{url.port}" if url.port else (url.host or self.base_url)

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "dialect": self.dialect, "base_url": self.base_url,
                "model": self.model, "seed": self.seed, "checked_at": int(time.time()),
                "checks": {k: {"status": s, "detail": d} for k, (s, d) in self.checks.items()}}


@dataclass
class PoolVerdict:
    """A probe of every member of a provider pool (a single provider: one member), in pool order."""

    provider: str
    members: list[Verdict]

    @property
    def seed(self) -> str:
        """``honoured`` only when every member honours it; else the first other verdict."""
        return next((m.seed for m in self.members if m.seed != "honoured"), "honoured")

    @property
    def failed(self) -> bool:
        return any(m.failed for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        """The first member's verdict (what a single provider's file always held), the pool's seed
        verdict and, for a pool, ``members``: each member's verdict."""
        data = self.members[0].to_dict()
        if len(self.members) > 1:
            data.update(provider=self.provider, seed=self.seed, members=[m.to_dict() for m in self.members])
        return data


def probe_path(spec_path: str | Path) -> Path:
    return Path(f"{spec_path}{PROBE_SUFFIX}")


def probe_cost(spec: Spec) -> tuple[int, int, float | None]:
    """(requests, images at most, cost or None) a probe of ``spec`` spends (every member of a pool)."""
    requests = PROBE_REQUESTS * len(spec.provider.member_configs())
    images = requests * spec.n
    price = spec.price_per_image
    return requests, images, None if price is None else images * price


def _job(spec: Spec, prompt: str, seed: int) -> Job:
    size = spec.sizes[0]
    inputs = _first_inputs(spec)
    jid = job_id(spec.model, prompt, size, seed, spec.n, dict(spec.params), [i.identity for i in inputs])
    return Job(jid, spec.model, prompt, size, seed, spec.n, dict(spec.params),
               sent_params=dict(spec.sent_params) or None, inputs=inputs)


def _first_inputs(spec: Spec) -> tuple[InputImage, ...]:
    """The input images of the spec's first request (an editing spec is probed as it will run)."""
    first = spec.prompts[0] if spec.prompts else None
    if first is None or not all(first.vars.get(name) for name in first.inputs):
        return ()
    return tuple(spec.input_images[first.vars[name][0]] for name in first.inputs)


async def probe_async(spec: Spec, *, env: Mapping[str, str] = os.environ) -> Verdict:
    """The verdict on the spec's provider (a pool: its first member; :func:`probe_pool` checks each)."""
    return await _probe_member(spec, spec.provider.member_configs()[0][0], env)


async def probe_pool_async(spec: Spec, *, env: Mapping[str, str] = os.environ) -> PoolVerdict:
    """Every member of the spec's provider, one after the other (a single provider: itself). Every
    key is checked to be set before any request is sent."""
    configs = [config for config, _ in spec.provider.member_configs()]
    for config in configs:
        check_settings(config, env)
    return PoolVerdict(spec.provider.name, [await _probe_member(spec, config, env) for config in configs])


def probe_pool(spec: Spec, *, env: Mapping[str, str] = os.environ) -> PoolVerdict:
    return anyio.run(lambda: probe_pool_async(spec, env=env))


async def _probe_member(spec: Spec, config: Any, env: Mapping[str, str]) -> Verdict:
    verdict = Verdict(config.name, config.dialect, config.base_url or config.kind, spec.model)
    check_settings(config, env)
    prompt = next(iter(_first_prompt(spec)))
    seed = (spec.seeds.values() or [1234])[0]
    timeout = spec.limits.request_timeout
    limits = DownloadLimits(gateway=config.base_url, hosts=allow_list(spec.limits.download_hosts))
    async with open_client(config, concurrency=2, timeout=timeout) as client:
        provider = make_provider(config, client, request_timeout=timeout, env=env)
        with tempfile.TemporaryDirectory(prefix="wanbatch-probe-") as tmp:
            first = await _one(provider, client, _job(spec, prompt, seed), Path(tmp), "a", verdict, limits)
            if first is None:
                return verdict
            _judge_first(spec, provider, first, verdict)
            again = await _one(provider, client, _job(spec, prompt, seed), Path(tmp), "b", verdict,
                               limits)
            other = await _one(provider, client, _job(spec, prompt, seed + 1), Path(tmp), "c", verdict,
                               limits)
            _judge_seed(first[0], again[0] if again else None, other[0] if other else None, verdict)
    return verdict


def probe(spec: Spec, *, env: Mapping[str, str] = os.environ) -> Verdict:
    return anyio.run(lambda: probe_async(spec, env=env))


def _first_prompt(spec: Spec) -> list[str]:
    from wanbatch.plan import plan

    return plan(spec).sample_prompts(1) or ["a red door"]


_Fetched = tuple[list[tuple[bytes, int, int]], Generation]


async def _one(provider: Provider, client: httpx.AsyncClient, job: Job, tmp: Path, tag: str,
               verdict: Verdict, limits: DownloadLimits) -> _Fetched | None:
    """One request and its downloads; a failure is recorded in ``verdict`` and gives None."""
    try:
        generation = await _generate(provider, job)
        images = []
        for k, item in enumerate(generation.images):
            dest = tmp / f"{tag}{k}"
            _, _, (_, width, height) = await fetch_verified(client, item, dest, timeout=120.0, limits=limits)
            images.append((dest.read_bytes(), width, height))
    except GatewayError as exc:
        _record_failure(exc, verdict)
        return None
    return images, generation


async def _generate(provider: Provider, job: Job) -> Generation:
    if not provider.use_async:
        return await provider.generate(job)
    task_id = await provider.submit(job)
    with anyio.fail_after(600):
        while True:
            state = await provider.poll(task_id)
            if state.generation is not None:
                return state.generation
            await anyio.sleep(provider.poll_interval)


def _record_failure(exc: GatewayError, verdict: Verdict) -> None:
    checks = verdict.checks
    if "key accepted" in checks:  # a later request failed: the earlier checks stand
        checks.setdefault("later requests", (FAILED, exc.message))
        return
    if exc.kind == "auth" or (isinstance(exc, FatalError) and exc.kind == "forbidden"):
        checks["key accepted"] = (FAILED, exc.message)
        return
    checks["key accepted"] = (OK, "")
    if exc.kind in ("not_found", "server_error") and "model" in exc.message.lower():
        checks["model available"] = (FAILED, exc.message)
        return
    checks["model available"] = (OK, "") if exc.kind != "server_error" else (UNKNOWN, exc.message)
    checks["body accepted"] = (FAILED, exc.message)


def _judge_first(spec: Spec, provider: Provider, first: _Fetched, verdict: Verdict) -> None:
    images, _ = first
    checks = verdict.checks
    checks["key accepted"] = checks["model available"] = checks["body accepted"] = (OK, "")
    if images:
        _, width, height = images[0]
        size = spec.sizes[0]
        want = pixels(size)
        if size in TIER_PIXELS:
            checks["delivered size"] = (OK, f"{width}*{height} for tier {size} (tiers are approximate)")
        else:
            match = (width, height) == want
            checks["delivered size"] = (OK if match else FAILED,
                                        f"{width}*{height} for {size}" + ("" if match else " requested"))
    checks["n honoured"] = (OK if len(images) == spec.n else FAILED, f"{len(images)} of {spec.n} images")
    checks["async"] = ((OK, "submit and poll worked") if provider.use_async
                       else (UNKNOWN, "not used by the spec"))


def _judge_seed(first: list[tuple[bytes, int, int]], again: list[tuple[bytes, int, int]] | None,
                other: list[tuple[bytes, int, int]] | None, verdict: Verdict) -> None:
    """Same seed → identical bytes, or a picture clearly closer than another seed's: honoured.
    Same seed → a picture no closer than another seed's: dropped. Every seed → the same bytes: ignored."""
    if not first or not again or not other:
        verdict.checks["seed honoured"] = (UNKNOWN, "a request failed")
        return
    a, b, c = first[0][0], again[0][0], other[0][0]
    if a == b:
        if a == c:
            verdict.seed = "ignored"
            verdict.checks["seed honoured"] = (FAILED, "seed ignored: another seed gave the same image")
            return
        verdict.seed = "honoured"
        verdict.checks["seed honoured"] = (OK, "honoured: same seed → identical bytes; another seed → "
                                           "another image")
        return
    same, differs = _distance(a, b), _distance(a, c)
    if same <= SAME_PICTURE < differs:
        verdict.seed = "honoured"
        verdict.checks["seed honoured"] = (OK, f"honoured: same seed → a similar image (hash distance "
                                           f"{same}); another seed → distance {differs}")
        return
    verdict.seed = "dropped"
    verdict.checks["seed honoured"] = (FAILED, f"seed dropped: the same seed gave another image (hash "
                                       f"distance {same}, another seed {differs})")


def _distance(a: bytes, b: bytes) -> int:
    """Hamming distance of the two images' 64-bit difference hashes (0 for identical bytes)."""
    if a == b:
        return 0
    return bin(_dhash(a) ^ _dhash(b)).count("1")


def _dhash(data: bytes) -> int:
    import io

    with safe_open_image(io.BytesIO(data)) as image:
        small = image.convert("L").resize((9, 8))
        px = small.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (px[row * 9 + col] > px[row * 9 + col + 1])
    return bits


# ---------------------------------------------------------------------------------- reading it back


def _probed_members(found: dict[str, Any]) -> set[str | None]:
    """The gateways a saved probe checked: its members', or its one provider's."""
    members = found.get("members")
    if isinstance(members, list):
        return {m.get("base_url") for m in members if isinstance(m, dict)}
    return {found.get("base_url")}


def write_probe(spec_path: str | Path, verdict: Verdict | PoolVerdict) -> Path:
    path = probe_path(spec_path)
    path.write_text(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def seed_warning(spec: Spec, spec_path: str | Path) -> str | None:
    """A warning when ``spec`` sweeps seeds through a provider whose seed handling is unverified or
    known dropped (a pool: through any member), or None."""
    values = spec.seeds.values()
    if values is None or len(values) < 2:
        return None
    config = spec.provider
    if config.kind == "mock":
        return None
    try:
        found = json.loads(probe_path(spec_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = None
    fits = isinstance(found, dict) and found.get("base_url") == config.base_url and \
        found.get("dialect") == config.dialect and found.get("model") == spec.model and \
        _probed_members(found) >= {m.base_url for m in config.members}
    if not fits:
        return (f"this spec sweeps {len(values)} seeds through {config.name} ({config.dialect}), whose seed "
                f"handling is unverified: run `wanbatch probe {spec_path}` first")
    assert isinstance(found, dict)
    if found.get("seed") != "honoured":
        hint = (" (stock new-api drops a top-level seed: try dialect: newapi)" if config.dialect == "flat"
                else "")
        members = found.get("members")
        by = config.name
        if isinstance(members, list):  # a pool: the members that do not honour it
            by = ", ".join(f"{m.get('provider')} ({m.get('seed')})" for m in members
                           if isinstance(m, dict) and m.get("seed") != "honoured")
            by = f"member(s) {by} of {config.name}"
        return (f"this spec sweeps {len(values)} seeds, but the last probe found the seed "
                f"{found.get('seed')} by {by}{hint}")
    return None
