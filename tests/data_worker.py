"""A worker process for tests/test_data_multiprocess.py: the process's cache (``get_cache()``,
built from ``TIERED_CACHE_*``) driven by JSON commands on stdin, one answer per line.

Commands: ``ready`` (bus up), ``get``, ``set``, ``delete``, ``watch`` (poll ``get`` until a
value appears; says what it read first, at once, then when it saw the value), ``load``
(``get_or_set`` with a slow factory that counts its runs in Redis, so the test can see how
many processes computed).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from fastapi_tiered_cache import get_cache
from fastapi_tiered_cache.settings import load_settings


async def handle(command: dict[str, Any], counter: aioredis.Redis) -> dict[str, Any]:
    cache = get_cache()
    op, key = command["op"], command.get("key", "")
    if op == "ready":
        await cache.get("warm-up")  # starts the bus
        deadline = time.monotonic() + 10
        while cache.bus is None or not cache.bus.healthy:
            if time.monotonic() > deadline:
                return {"error": "bus not healthy"}
            await asyncio.sleep(0.01)
        return {"ok": True}
    if op == "get":
        return {"value": await cache.get(key)}
    if op == "set":
        await cache.set(key, command["value"], ttl=60)
        return {"done_at": time.monotonic()}
    if op == "delete":
        await cache.delete(key)
        return {"done_at": time.monotonic()}
    if op == "watch":
        first = await cache.get(key)
        print(json.dumps({"first": first}), flush=True)  # the test writes only after this
        deadline = time.monotonic() + command["timeout"]
        while (value := await cache.get(key)) != command["until"]:
            if time.monotonic() > deadline:
                return {"first": first, "seen_at": None, "last": value}
            await asyncio.sleep(0.001)
        return {"first": first, "seen_at": time.monotonic()}
    if op == "load":

        async def slow() -> str:
            await counter.incr(f"runs:{key}")
            await asyncio.sleep(command["seconds"])
            return f"computed by {command['name']}"

        return {"value": await cache.get_or_set(key, slow, ttl=60)}
    return {"error": f"unknown op {op}"}


async def main() -> None:
    settings = load_settings()
    assert settings.redis_url is not None
    counter = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    print(json.dumps({"started": True}), flush=True)
    while line := await asyncio.to_thread(sys.stdin.readline):
        answer = await handle(json.loads(line), counter)
        print(json.dumps(answer), flush=True)
    await get_cache().close()
    await counter.aclose()


if __name__ == "__main__":
    asyncio.run(main())
