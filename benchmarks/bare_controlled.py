"""Contender "controller": bare_httpx.py's loop with wanbatch's ConcurrencyController instead of a semaphore.

What the controller alone achieves at a hidden quota, before the runner is wired to it. A slot is
held only while the POST is on the wire. A 5xx is retried after the runner's backoff (exponential
from 1 s with full jitter, as ``RetryPolicy``'s defaults); a 429 after a jittered tenth of a latency
at most, as the runner does, since the controller's slot is the back-pressure (a longer wait would
only leave a tail of late retries); both are slept outside the slot. A Retry-After goes to the
controller, which pauses everyone. Downloads are outside the slot:
the quota counts generations, not object-store reads.

``--fixed-limit N`` (contender "oracle") pins the limit to N: the same loop told the quota in
advance, the practical ceiling on the machine at hand.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import httpx
from jobshape import CHUNK, Args, body, finish, image_path, parse_args, save

from wanbatch.concurrency import ConcurrencyController


def retry_after(resp: httpx.Response) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(resp.headers[name]) * scale
        except (KeyError, ValueError):
            continue
    return None


async def one(client: httpx.AsyncClient, ctl: ConcurrencyController, args: Args, seed: int) -> dict[str, Any]:
    attempt = 0
    while True:
        throttled = False
        async with ctl.slot():
            sent = time.perf_counter()
            try:
                resp = await client.post(f"{args.base}/images/generations", json=body(args, seed),
                                         headers={"Authorization": f"Bearer {args.key}"})
            except httpx.TransportError:  # e.g. a keep-alive connection the server closed: as a 5xx
                resp = None
            if resp is not None and resp.status_code == 200:
                ctl.on_success(time.perf_counter() - sent)
                break
            if resp is not None and resp.status_code == 429:
                ctl.on_throttled(retry_after(resp))
                throttled = True
            elif resp is None or resp.status_code >= 500:
                ctl.on_error()
            else:
                resp.raise_for_status()
        if throttled:
            await asyncio.sleep((ctl.latency or 1.0) * random.uniform(0.0, 0.1))
            continue
        attempt += 1
        await asyncio.sleep(random.uniform(0, min(60.0, 2.0 ** (attempt - 1))))
    url = resp.json()["data"][0]["url"]
    async with client.stream("GET", url) as stream:
        stream.raise_for_status()
        return await save(seed, image_path(args, seed), stream.aiter_bytes(CHUNK))


def fixed_limit() -> int | None:
    """Take ``--fixed-limit N`` out of argv (the shared parser in jobshape does not know it)."""
    if "--fixed-limit" not in sys.argv:
        return None
    at = sys.argv.index("--fixed-limit")
    value = int(sys.argv[at + 1])
    del sys.argv[at:at + 2]
    return value


async def main(args: Args, fixed: int | None) -> None:
    started = time.perf_counter()
    if fixed:
        ctl = ConcurrencyController(max_limit=fixed, initial=fixed, min_limit=fixed)
    else:
        ctl = ConcurrencyController(max_limit=args.concurrency)
    limits = httpx.Limits(max_connections=2 * args.concurrency,
                          max_keepalive_connections=2 * args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        rows = await asyncio.gather(*(one(client, ctl, args, s) for s in range(args.jobs)))
    print(json.dumps({"controller": ctl.stats.__repr__()}), file=sys.stderr)
    finish(args, list(rows), started)


if __name__ == "__main__":
    fixed = fixed_limit()
    asyncio.run(main(parse_args(__doc__ or ""), fixed))
