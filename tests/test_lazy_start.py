"""An app served without lifespan events (``uvicorn --lifespan off``, a bare
``httpx.ASGITransport``) starts the invalidation bus on first use, once per event loop: its
hits take the fast path once the bus is heard, and purges from other processes reach it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_tiered_cache import TieredCache

from .helpers import Origin, client_for, make_cache


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def count_full_paths(cache: TieredCache) -> list[int]:
    """Count requests that took the full path (the memo did not answer them)."""
    calls = [0]
    generation = cache.generation

    async def counted(identity: Any) -> Any:
        calls[0] += 1
        return await generation(identity)

    cache.generation = counted  # type: ignore[method-assign]
    return calls


async def test_a_lifespan_less_app_gets_fast_hits_and_hears_other_processes_purges(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    other_client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client, namespace="lazy")
    other = make_cache(redis=other_client, namespace="lazy")  # another process's cache
    origin = Origin(body=b"v1")
    full = count_full_paths(cache)
    try:
        with caplog.at_level(logging.INFO, logger="fastapi_tiered_cache"):
            async with client_for(origin, cache) as http:  # no lifespan events at all
                assert (await http.get("/doc")).headers["x-cache"] == "MISS"
                await until(cache.store.coherence.trusted)  # the bus started and is heard
                assert (await http.get("/doc")).headers["x-cache"] == "HIT"
                before = full[0]
                for _ in range(20):
                    assert (await http.get("/doc")).headers["x-cache"] == "HIT"
                assert full[0] == before  # the memo answered them all, from L1
                assert origin.calls == 1

                origin.body = b"v2"
                await other.invalidate_path("/doc")  # published on the bus by "another process"
                await until(lambda: cache.store.l1 is not None and len(cache.store.l1) == 0)
                response = await http.get("/doc")
                assert (response.headers["x-cache"], response.content) == ("MISS", b"v2")
        started = [r for r in caplog.records if "on first use" in r.getMessage()]
        assert len(started) == 1
    finally:
        await cache.close()
        await other.close()
        await client.aclose()
        await other_client.aclose()


def test_each_event_loop_starts_its_own_bus(redis_url: str) -> None:
    """TestClient and scripts run one loop after another: each gets its bus on first use."""
    cache = make_cache(redis=lambda: aioredis.Redis.from_url(redis_url), namespace="lazy2")

    async def serve() -> bool:
        async with client_for(Origin(), cache) as http:
            await http.get("/doc")
            await until(cache.store.coherence.trusted)
            bus = cache.bus
            return bus is not None and bus._task is not None and not bus._task.done()

    assert asyncio.run(serve())
    cache.store.coherence.lose()  # as the closed loop's bus left it
    assert asyncio.run(serve())


def test_nothing_starts_outside_an_event_loop_or_when_turned_off(redis_url: str) -> None:
    cache = make_cache(redis=lambda: aioredis.Redis.from_url(redis_url), namespace="lazy3")
    cache.ensure_started()  # no running loop (as under trio): nothing, no error
    assert cache.bus is not None and cache.bus._task is None

    async def serve() -> None:
        cache.start_on_first_use = False
        async with client_for(Origin(), cache) as http:
            await http.get("/doc")
            assert cache.bus is not None and cache.bus._task is None

    asyncio.run(serve())
