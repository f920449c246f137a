"""Contender "openai-sdk": a plain script on the ``openai`` SDK, as a user would write it.

``AsyncOpenAI(...).images.generate(model, prompt, size, n=1)`` with the seed in ``extra_body`` (the
SDK has no seed argument). The SDK sends ``response_format`` only when given, so the strict flat mock
accepts its body as is; nothing is omitted. Downloads use one ``httpx.AsyncClient``; a semaphore and
``asyncio.gather`` bound the concurrency. SDK defaults are kept (``max_retries=2``, its own client).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from jobshape import CHUNK, PROMPT, Args, finish, image_path, parse_args, save
from openai import AsyncOpenAI


async def one(sdk: AsyncOpenAI, http: httpx.AsyncClient, sem: asyncio.Semaphore, args: Args,
              seed: int) -> dict[str, Any]:
    async with sem:
        answer = await sdk.images.generate(model=args.model, prompt=PROMPT, size=args.size,  # type: ignore[arg-type]
                                           n=1, extra_body={"seed": seed})
        url = answer.data[0].url if answer.data else None
        if not url:
            raise RuntimeError(f"seed {seed}: no image URL in the answer")
        path = image_path(args, seed)
        async with http.stream("GET", url) as stream:
            stream.raise_for_status()
            return await save(seed, path, stream.aiter_bytes(CHUNK))


async def main(args: Args) -> None:
    started = time.perf_counter()
    sem = asyncio.Semaphore(args.concurrency)
    async with AsyncOpenAI(base_url=args.base, api_key=args.key) as sdk, \
            httpx.AsyncClient(timeout=600) as http:
        rows = await asyncio.gather(*(one(sdk, http, sem, args, s) for s in range(args.jobs)))
    finish(args, list(rows), started)


if __name__ == "__main__":
    asyncio.run(main(parse_args(__doc__ or "")))
