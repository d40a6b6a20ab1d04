"""The middleware against a real redis-server: sharing across workers, outages, recovery."""

from __future__ import annotations

import asyncio
import time

import msgpack
import redis.asyncio as aioredis

from fastapi_tiered_cache.codec import FORMAT_VERSION

from .helpers import FakeClock, Origin, client_for, make_cache
from .support.redis_server import RedisServer


async def test_two_workers_share_entries_through_redis(redis_url: str) -> None:
    origin = Origin(body=b"shared")
    first_redis = aioredis.Redis.from_url(redis_url)
    second_redis = aioredis.Redis.from_url(redis_url)
    worker_a = make_cache(redis=first_redis, redis_timeout=1.0)
    worker_b = make_cache(redis=second_redis, redis_timeout=1.0)
    async with client_for(origin, worker_a) as a, client_for(origin, worker_b) as b:
        miss = await a.get("/p")
        from_l2 = await b.get("/p")
        from_l1 = await b.get("/p")
    assert origin.calls == 1
    assert miss.headers["x-cache"] == "MISS"
    assert from_l2.headers["cache-status"].endswith("detail=l2")
    assert from_l1.headers["cache-status"].endswith("detail=l1")
    assert from_l2.content == b"shared"
    keys = [key.decode() for key in await first_redis.keys("ftc:g*")]
    assert len(keys) == 1 and keys[0].startswith("ftc:g0.0.0:_:pub:")
    raw = await first_redis.get(keys[0])
    assert raw is not None and msgpack.unpackb(raw)[0] == FORMAT_VERSION  # a versioned envelope
    await first_redis.aclose()
    await second_redis.aclose()


async def test_age_is_correct_across_workers(redis_url: str) -> None:
    clock = FakeClock()
    origin = Origin()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    worker_a = make_cache(clock, redis=clients[0], redis_timeout=1.0)
    worker_b = make_cache(clock, redis=clients[1], redis_timeout=1.0)
    async with client_for(origin, worker_a) as a, client_for(origin, worker_b) as b:
        await a.get("/")
        clock.advance(7)
        response = await b.get("/")
    assert response.headers["age"] == "7"
    assert "ttl=53" in response.headers["cache-status"]
    for client in clients:
        await client.aclose()


async def test_l1_disabled_serves_every_hit_from_l2(redis_url: str) -> None:
    origin = Origin()
    client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client, l1_max_entries=0, redis_timeout=1.0)
    async with client_for(origin, cache) as http:
        await http.get("/")
        hits = [await http.get("/") for _ in range(3)]
    assert all(h.headers["cache-status"].endswith("detail=l2") for h in hits)
    assert origin.calls == 1
    await client.aclose()


async def test_vary_pointer_lets_a_fresh_worker_find_the_variant(redis_url: str) -> None:
    origin = Origin(
        body=lambda scope: dict(scope["headers"]).get(b"accept-language", b"none"),
        headers=[("vary", "Accept-Language")],
    )
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    writer = make_cache(redis=clients[0], redis_timeout=1.0)
    reader = make_cache(redis=clients[1], redis_timeout=1.0)
    async with client_for(origin, writer) as w, client_for(origin, reader) as r:
        await w.get("/", headers={"accept-language": "fr"})
        await w.get("/", headers={"accept-language": "de"})
        fr = await r.get("/", headers={"accept-language": "fr"})
        de = await r.get("/", headers={"accept-language": "de"})
        en = await r.get("/", headers={"accept-language": "en"})
    assert (fr.content, fr.headers["x-cache"]) == (b"fr", "HIT")
    assert (de.content, de.headers["x-cache"]) == (b"de", "HIT")
    assert (en.content, en.headers["x-cache"]) == (b"en", "MISS")
    assert origin.calls == 3
    for client in clients:
        await client.aclose()


async def test_redis_outage_degrades_to_origin_and_recovers(
    fresh_redis_server: RedisServer,
) -> None:
    origin = Origin(body=lambda scope: scope["path"].encode())
    client = aioredis.Redis.from_url(
        fresh_redis_server.url, socket_timeout=0.2, socket_connect_timeout=0.2
    )
    cache = make_cache(redis=client, redis_timeout=0.1, l1_max_entries=0, breaker_cooldown=0.2)
    async with client_for(origin, cache) as http:
        await http.get("/before")
        assert (await http.get("/before")).headers["x-cache"] == "HIT"
        fresh_redis_server.stop()
        started = time.monotonic()
        during = [await http.get(f"/during/{i}") for i in range(5)]
        elapsed = time.monotonic() - started
        assert [r.status_code for r in during] == [200] * 5
        assert [r.content for r in during] == [f"/during/{i}".encode() for i in range(5)]
        assert elapsed < 5 * (0.1 * 2 + 0.2)  # lookup + store budget per request, with slack
        fresh_redis_server.start()
        recovered = None
        for _ in range(50):
            await http.get("/after")
            recovered = await http.get("/after")
            if recovered.headers["x-cache"] == "HIT":
                break
            await asyncio.sleep(0.05)
        assert recovered is not None and recovered.headers["x-cache"] == "HIT"
    assert cache.store.faults > 0
    await client.aclose()
