"""The data API against a real redis-server: sharing, coherence, command counts, faults,
and scripts that run several event loops one after another."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Response
from pydantic import BaseModel
from redis.asyncio.retry import Retry
from redis.backoff import FullJitterBackoff

from fastapi_tiered_cache import CacheSettings, TieredCache, cached

from .helpers import SECRET, client_for, healthy, make_cache, seen_within
from .support.redis_server import RedisServer
from .support.tcp_proxy import TcpProxy

COHERENCE_BOUND = 0.1  # seconds: another worker's L1 stops serving an overwritten value


class Product(BaseModel):
    id: int
    name: str
    tags: list[str]


@pytest.fixture
async def workers(redis_url: str) -> AsyncIterator[tuple[TieredCache, TieredCache]]:
    """Two caches (two workers) on one real Redis, each with its own connections and bus."""
    caches = [
        make_cache(redis=aioredis.Redis.from_url(redis_url), redis_timeout=1.0, bus_heartbeat=0.2)
        for _ in range(2)
    ]
    for cache in caches:
        await cache.get("warm-up")  # starts the bus, reads the generations
    await healthy(*caches)
    yield caches[0], caches[1]
    for cache in caches:
        await cache.close()
        await cache.store.l2.client.aclose()  # type: ignore[union-attr]


async def test_a_value_set_by_one_worker_is_read_by_another(
    workers: tuple[TieredCache, TieredCache],
) -> None:
    a, b = workers
    await a.set("p", Product(id=1, name="Laptop", tags=["x"]), tags=["product:1"])

    assert await b.get("p", as_type=Product) == Product(id=1, name="Laptop", tags=["x"])
    assert b.stats.counters["hit", "l2"] == 1
    assert await b.get("p") == {"id": 1, "name": "Laptop", "tags": ["x"]}  # now from L1
    assert b.stats.l1_hits == 1


async def test_overwrites_and_deletes_reach_every_workers_l1_within_the_bound(
    workers: tuple[TieredCache, TieredCache],
) -> None:
    a, b = workers
    await a.set("k", "v1")
    assert await b.get("k") == "v1"  # b holds it in L1 (for up to l1_max_ttl, 30 s)
    assert await b.get("k") == "v1" and b.stats.l1_hits >= 1

    await a.set("k", "v2")
    overwritten = await seen_within(b, "k", "v2", COHERENCE_BOUND)
    await a.delete("k")
    deleted = await seen_within(b, "k", None, COHERENCE_BOUND)

    assert overwritten < COHERENCE_BOUND and deleted < COHERENCE_BOUND


async def test_tag_purges_reach_responses_and_values_in_every_worker(
    workers: tuple[TieredCache, TieredCache],
) -> None:
    a, b = workers
    app = FastAPI()
    renders = 0

    @app.get("/products/1")
    async def page(response: Response) -> dict[str, int]:
        nonlocal renders
        renders += 1
        response.headers["Surrogate-Key"] = "product:1"
        return {"renders": renders}

    http = client_for(app, b)
    await b.set("p1", "value", tags=["product:1"])
    await b.set("p2", "other", tags=["product:2"])
    assert (await http.get("/products/1")).headers["x-cache"] == "MISS"
    hit = await http.get("/products/1")
    assert hit.headers["x-cache"] == "HIT"
    assert await b.get("p1") == "value"

    purged = await a.invalidate_tags("product:1")  # from the other worker

    assert purged == 2
    assert await seen_within(b, "p1", None, COHERENCE_BOUND) < COHERENCE_BOUND
    assert (await http.get("/products/1")).headers["x-cache"] == "MISS"
    assert await b.get("p2") == "other"
    await httpx.AsyncClient.aclose(http)


async def test_concurrent_cold_calls_in_two_workers_compute_once(
    workers: tuple[TieredCache, TieredCache],
) -> None:
    a, b = workers
    runs = 0

    async def slow() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.2)
        return 42

    results = await asyncio.gather(
        *(cache.get_or_set("hot", slow, ttl=30) for cache in (a, b, a, b))
    )

    assert results == [42, 42, 42, 42]
    assert runs == 1


async def test_callers_that_take_the_lease_with_their_lookup_never_stall_each_other(
    workers: tuple[TieredCache, TieredCache],
) -> None:
    """The lookup takes the fleet lease in the same round trip. Only one caller per process
    looks up, so no caller can hold the lease while it waits on another caller of its own
    process (which would stall the fleet for lease_ttl)."""
    a, b = workers
    runs = 0

    async def slow() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return 7

    lookups: list[str] = []
    for cache in workers:
        original = cache.store.find_remote

        async def counted(
            *args: Any, _original: Any = original, _name: str = str(id(cache))
        ) -> Any:
            lookups.append(_name)
            return await _original(*args)

        cache.store.find_remote = counted  # type: ignore[method-assign]

    started = time.monotonic()
    results = await asyncio.gather(
        *(cache.get_or_set("cold", slow, ttl=30) for cache in (a, b) * 4)
    )
    elapsed = time.monotonic() - started

    assert results == [7] * 8 and runs == 1
    assert sorted(lookups) == sorted([str(id(a)), str(id(b))])  # one lookup per process
    assert elapsed < a.settings.lease_ttl / 2, elapsed


# -- Redis commands per operation ---------------------------------------------------------


BUS = {"PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE", "PING"}  # the invalidation bus's own


class Counting(aioredis.Connection):
    """A connection that notes the name of every command it sends (pipelined or not;
    commands a script runs inside Redis are not sent, so not counted)."""

    sent: list[str] = []

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        Counting.sent.append(name.split()[0].upper())
        return super().pack_command(*args)


def commands() -> dict[str, int]:
    """Commands sent since the last call, but the bus's."""
    counts: dict[str, int] = {}
    for name in Counting.sent:
        if name not in BUS:
            counts[name] = counts.get(name, 0) + 1
    Counting.sent.clear()
    return counts


def _loader(cache: TieredCache) -> Any:
    """The same ``@cached`` function (one key space) on ``cache``: another process's."""

    @cached(ttl=60, tags=["product:{product_id}"], cache=cache)
    async def load(product_id: int) -> Product:
        return Product(id=product_id, name="n", tags=[])

    return load


async def _warm(cache: TieredCache) -> None:
    await cache.set("warm", 1)  # connections open, generations known, scripts loaded
    for _ in range(500):  # and the bus heard: the generations are trusted
        if cache.bus is not None and cache.bus.healthy:
            break
        await asyncio.sleep(0.01)
    await cache.get("warm")


async def test_an_l2_hit_is_one_get_and_a_miss_at_most_four_commands(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, connection_class=Counting)
    cache = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)
    other = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)  # another worker
    load, load_elsewhere = _loader(cache), _loader(other)
    try:
        await _warm(cache)
        await _warm(other)
        await load(0)  # the lookup script loaded
        commands()
        await load(1)
        miss = commands()
        await load(1)
        hit_through_load = commands()
        await cache.get("warm")
        hit_through_get = commands()
        assert await load_elsewhere(1) == Product(id=1, name="n", tags=[])
        first_hit_elsewhere = commands()
        await load_elsewhere(1)
        next_hit_elsewhere = commands()
    finally:
        await cache.close()
        await other.close()
        await client.aclose()

    # EVALSHA (lookup, time and lease), then one script storing the value and its indexes
    # unless a purge raced it, with the lease's release in the same pipeline.
    assert sum(miss.values()) <= 4, miss
    # One command per L2 hit: a plain GET for a key this process saw in L2 a moment ago
    # (it stored it), as for get; the lookup script (which also says the time and would
    # take the lease on a miss) for a key it knows nothing of, then GET.
    assert hit_through_load == {"GET": 1}, hit_through_load
    assert hit_through_get == {"GET": 1}, hit_through_get
    assert first_hit_elsewhere == {"EVALSHA": 1}, first_hit_elsewhere
    assert next_hit_elsewhere == {"GET": 1}, next_hit_elsewhere


async def test_a_key_purged_elsewhere_is_looked_up_again_with_the_lease(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, connection_class=Counting)
    cache = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)
    other = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)
    runs: list[int] = []

    def counted(target: TieredCache) -> Any:
        @cached(ttl=60, tags=["product:{product_id}"], cache=target)
        async def load(product_id: int) -> Product:
            runs.append(product_id)
            return Product(id=product_id, name=f"v{len(runs)}", tags=[])

        return load

    load = counted(cache)
    try:
        await _warm(cache)
        await _warm(other)
        assert (await load(7)).name == "v1"  # stored: this process expects it in L2
        await other.invalidate_tags("product:7")  # another worker purges it
        commands()
        assert (await load(7)).name == "v2"  # the GET misses: the full lookup, the origin
        after_purge = commands()
        assert (await load(7)).name == "v2"
        assert commands() == {"GET": 1}
    finally:
        await cache.close()
        await other.close()
        await client.aclose()
    assert runs == [7, 7]
    assert after_purge.get("GET") == 1 and after_purge.get("EVALSHA", 0) >= 2, after_purge


# -- faults --------------------------------------------------------------------------------


@pytest.fixture
async def proxied(fresh_redis_server: RedisServer) -> AsyncIterator[tuple[TcpProxy, TieredCache]]:
    async with TcpProxy(fresh_redis_server.port) as proxy:
        client = aioredis.Redis(
            host="127.0.0.1",
            port=proxy.port,
            socket_timeout=0.25,
            socket_connect_timeout=0.25,
            retry=Retry(FullJitterBackoff(cap=0.1, base=0.01), 1),
        )
        cache = make_cache(redis=client, redis_timeout=0.05, breaker_threshold=3)
        await cache.set("warm", 1)
        yield proxy, cache
        await cache.close()
        await client.aclose()


@pytest.mark.parametrize("fault", ["blackhole", "drop", "delay"])
async def test_redis_faults_never_raise_and_never_block(
    proxied: tuple[TcpProxy, TieredCache], fault: str
) -> None:
    proxy, cache = proxied
    runs = 0

    @cached(ttl=60, cache=cache)
    async def load(product_id: int) -> int:
        nonlocal runs
        runs += 1
        return product_id

    if fault == "blackhole":
        proxy.blackhole()
    elif fault == "drop":
        proxy.drop(cut_existing=True)
    else:
        proxy.delay(0.5)  # ten budgets per round trip
    started = time.monotonic()
    results = [await load(i) for i in range(5)]
    found = await cache.get("absent", default="default")
    await cache.set("k", "v")
    await cache.delete("k")
    computed = await cache.get_or_set("g", _answer, ttl=30)
    elapsed = time.monotonic() - started

    assert results == list(range(5)) and runs == 5
    assert found == "default" and computed == 42
    assert elapsed < 3.0, elapsed  # bounded by budgets and the breaker, not by Redis
    assert cache.store.faults + cache.store.short_circuits > 0


async def _answer() -> int:
    return 42


# -- several event loops in one process (scripts calling asyncio.run more than once) ----


ROOT = Path(__file__).resolve().parent.parent


def collect_abandoned() -> None:
    """Let the connections of closed event loops go (they cannot be closed on another
    loop) without their ResourceWarnings failing a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_a_script_may_run_several_event_loops_against_one_cache(redis_url: str) -> None:
    """Two ``asyncio.run`` in a row on a cache built from settings (as ``get_cache()``
    builds it): the second loop still reaches Redis (it reads back from L2 what the first
    stored, computing nothing again) and nothing raises. In its own process, with a
    deadline: a hang must fail this test, not hold up the suite."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.data_loops", redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["first"] == [1, "from the first loop"]
    assert result["second"] == [1, "from the first loop"]
    assert result["runs"] == 1, "the second loop recomputed: it could not read L2"


def test_closing_the_cache_on_a_later_event_loop_does_not_raise(redis_url: str) -> None:
    error = close_on_a_later_loop(redis_url)
    collect_abandoned()  # once no traceback holds the cache any more
    if error is not None:
        raise RuntimeError(error)


def close_on_a_later_loop(redis_url: str) -> str | None:
    settings = CacheSettings(redis_url=redis_url, secret_key=SECRET, redis_timeout=1.0)
    cache = TieredCache(settings)

    async def two_connections() -> None:  # both stay in the pool when the loop ends
        await asyncio.gather(cache.set("a", 1), cache.set("b", 2))

    asyncio.run(two_connections())
    try:
        asyncio.run(cache.close())
    except RuntimeError as exc:
        return str(exc)
    return None
