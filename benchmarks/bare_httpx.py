"""Contender "httpx": the same bare loop as bare_aiohttp.py on httpx's default transport (httpcore)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from jobshape import CHUNK, Args, body, finish, image_path, parse_args, save


async def one(client: httpx.AsyncClient, sem: asyncio.Semaphore, args: Args, seed: int) -> dict[str, Any]:
    async with sem:
        resp = await client.post(f"{args.base}/images/generations", json=body(args, seed),
                                 headers={"Authorization": f"Bearer {args.key}"})
        resp.raise_for_status()
        url = resp.json()["data"][0]["url"]
        path = image_path(args, seed)
        async with client.stream("GET", url) as stream:
            stream.raise_for_status()
            return await save(seed, path, stream.aiter_bytes(CHUNK))


async def main(args: Args) -> None:
    started = time.perf_counter()
    sem = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=2 * args.concurrency,
                          max_keepalive_connections=2 * args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        rows = await asyncio.gather(*(one(client, sem, args, s) for s in range(args.jobs)))
    finish(args, list(rows), started)


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "")))
