"""Contender "aiohttp": the job shape on a bare aiohttp loop — the ceiling of this machine."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from jobshape import CHUNK, Args, body, finish, image_path, parse_args, save


async def one(session: aiohttp.ClientSession, sem: asyncio.Semaphore, args: Args,
              seed: int) -> dict[str, Any]:
    async with sem:
        async with session.post(f"{args.base}/images/generations", json=body(args, seed),
                                headers={"Authorization": f"Bearer {args.key}"}) as resp:
            resp.raise_for_status()
            url = (await resp.json())["data"][0]["url"]
        path = image_path(args, seed)
        async with session.get(url) as resp:
            resp.raise_for_status()
            return await save(seed, path, resp.content.iter_chunked(CHUNK))


async def main(args: Args) -> None:
    started = time.perf_counter()
    sem = asyncio.Semaphore(args.concurrency)
    connector = aiohttp.TCPConnector(limit=2 * args.concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        rows = await asyncio.gather(*(one(session, sem, args, s) for s in range(args.jobs)))
    finish(args, list(rows), started)


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "")))
