"""A script that runs two event loops one after the other on one cache (as scripts calling
``asyncio.run`` twice do); run by tests/test_data_redis.py in its own process, so that a
hang cannot hold up the suite. Prints the result as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from fastapi_tiered_cache import CacheSettings, TieredCache, cached


def main(redis_url: str) -> dict[str, Any]:
    settings = CacheSettings(
        redis_url=redis_url,
        secret_key="loops-secret-key-0123456789",
        redis_timeout=1.0,
        l1_max_entries=0,  # every read goes to Redis
    )
    cache = TieredCache(settings)
    runs = 0

    @cached(ttl=60, cache=cache)
    async def load(product_id: int) -> int:
        nonlocal runs
        runs += 1
        return product_id

    async def first() -> list[Any]:
        await cache.set("k", "from the first loop")
        return [await load(1), await cache.get("k")]

    async def second() -> list[Any]:
        try:
            return [await load(1), await cache.get("k")]
        finally:
            with contextlib.suppress(RuntimeError):  # issue 15, see the xfail test
                await cache.close()

    return {"first": asyncio.run(first()), "second": asyncio.run(second()), "runs": runs}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
