"""Stampede protection and stale serving through the middleware (real Redis for the fleet)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_tiered_cache import Identity
from fastapi_tiered_cache.request import RequestInfo

from .helpers import FakeClock, client_for, make_cache


class SlowOrigin:
    """An origin that takes ``delay`` seconds and counts its calls."""

    def __init__(self, delay: float = 0.2, status: int = 200, headers: list[Any] | None = None):
        self.delay = delay
        self.status = status
        self.headers = headers or []
        self.calls = 0
        self.fail: Exception | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        call = self.calls
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        body = f"v{call}".encode()
        headers = [(k.encode(), v.encode()) for k, v in self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def test_200_concurrent_misses_make_one_origin_call() -> None:
    origin = SlowOrigin(delay=0.2)
    async with client_for(origin, make_cache()) as c:
        responses = await asyncio.gather(*(c.get("/hot") for _ in range(200)))
    assert origin.calls == 1
    assert {r.content for r in responses} == {b"v1"}
    collapsed = [r for r in responses if "collapsed" in r.headers["cache-status"]]
    assert len(collapsed) == 199


async def test_uncacheable_responses_are_not_shared_and_skip_the_wait_next_time() -> None:
    origin = SlowOrigin(delay=0.1, headers=[("set-cookie", "a=1")])
    cache = make_cache()
    async with client_for(origin, cache) as c:
        responses = await asyncio.gather(*(c.get("/private") for _ in range(5)))
        assert origin.calls == 5  # each went to the origin itself
        assert len({r.content for r in responses}) == 5
        await c.get("/private")
    assert origin.calls == 6


async def test_distinct_identities_are_never_coalesced_together() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(0.1)
        who = dict(scope["headers"]).get(b"authorization", b"anon")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": who})

    async with client_for(app, make_cache()) as c:
        tokens = [f"Bearer u{i % 5}" for i in range(50)]
        responses = await asyncio.gather(
            *(c.get("/me", headers={"authorization": t}) for t in tokens)
        )
    assert [r.content.decode() for r in responses] == tokens


async def test_four_workers_sharing_redis_make_one_origin_call(redis_url: str) -> None:
    origin = SlowOrigin(delay=0.3)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
    caches = [make_cache(redis=cl, redis_timeout=0.5, lease_ttl=2) for cl in clients]
    https = [client_for(origin, cache) for cache in caches]
    try:
        requests = [https[i % 4].get("/fleet") for i in range(40)]
        responses = await asyncio.gather(*requests)
    finally:
        for h in https:
            await h.aclose()
        for cache in caches:
            await cache.close()
        for cl in clients:
            await cl.aclose()
    assert {r.status_code for r in responses} == {200}
    assert {r.content for r in responses} == {b"v1"}
    assert origin.calls == 1


async def test_a_crashed_lease_owner_blocks_others_at_most_the_lease_time(redis_url: str) -> None:
    origin = SlowOrigin(delay=0.0)
    client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client, redis_timeout=0.5, lease_ttl=0.5, coalesce_wait=5)
    assert cache.fleet is not None
    # Another process took the lease for this key and died without releasing it.
    async with client_for(origin, cache) as c:
        info = RequestInfo.from_url("GET", "http://test/crash")
        primary = cache.key_for(info, Identity(), (), "g0.0.0")
        await client.set(f"ftc:lease:{primary}", "dead-owner", px=500)
        started = asyncio.get_running_loop().time()
        response = await c.get("/crash")
        waited = asyncio.get_running_loop().time() - started
    await cache.close()
    await client.aclose()
    assert response.status_code == 200
    assert waited < 2.0  # the lease (0.5 s) expired, plus a re-check interval


async def test_stale_while_revalidate_serves_stale_and_refreshes_once() -> None:
    clock = FakeClock()
    origin = SlowOrigin(
        delay=0.05, headers=[("cache-control", "max-age=10, stale-while-revalidate=60")]
    )
    cache = make_cache(clock, l1_max_ttl=1000)
    async with client_for(origin, cache) as c:
        first = await c.get("/swr")
        clock.advance(20)
        stale = await asyncio.gather(*(c.get("/swr") for _ in range(20)))
        for _ in range(50):
            if not cache.refreshing:
                break
            await asyncio.sleep(0.02)
        fresh = await c.get("/swr")
    assert first.content == b"v1"
    assert {r.content for r in stale} == {b"v1"}
    assert all(r.headers["x-cache"] == "STALE" for r in stale)
    assert "fwd=stale" in stale[0].headers["cache-status"]
    assert origin.calls == 2  # exactly one background refresh
    assert fresh.content == b"v2" and fresh.headers["x-cache"] == "HIT"


async def test_stale_while_revalidate_window_from_a_rule() -> None:
    clock = FakeClock()
    origin = SlowOrigin(delay=0.0)
    rules = [{"path": "/**", "ttl": 10, "stale_while_revalidate": 30}]
    async with client_for(origin, make_cache(clock, rules=rules, l1_max_ttl=1000)) as c:
        await c.get("/r")
        clock.advance(15)
        assert (await c.get("/r")).headers["x-cache"] == "STALE"
        await asyncio.sleep(0.05)  # the background refresh stores a fresh copy
        assert (await c.get("/r")).headers["x-cache"] == "HIT"
        clock.advance(100)  # past freshness and the stale window
        assert (await c.get("/r")).headers["x-cache"] == "MISS"


async def test_must_revalidate_forbids_stale_serving() -> None:
    clock = FakeClock()
    headers = [("cache-control", "max-age=10, stale-while-revalidate=60, must-revalidate")]
    origin = SlowOrigin(delay=0.0, headers=headers)
    async with client_for(origin, make_cache(clock, l1_max_ttl=1000)) as c:
        await c.get("/m")
        clock.advance(20)
        assert (await c.get("/m")).headers["x-cache"] == "MISS"


async def test_stale_if_error_on_500_exception_and_timeout() -> None:
    clock = FakeClock()
    origin = SlowOrigin(delay=0.0, headers=[("cache-control", "max-age=10, stale-if-error=60")])
    cache = make_cache(clock, l1_max_ttl=1000, origin_timeout=0.2)
    async with client_for(origin, cache) as c:
        await c.get("/e")
        clock.advance(20)
        origin.status = 500
        on_500 = await c.get("/e")
        origin.status, origin.fail = 200, RuntimeError("database down")
        on_exception = await c.get("/e")
        origin.fail, origin.delay = None, 1.0
        on_timeout = await c.get("/e")
        clock.advance(100)  # past the window: errors reach the client again
        origin.delay, origin.status = 0.0, 500
        late = await c.get("/e")
    for response in (on_500, on_exception, on_timeout):
        assert response.status_code == 200 and response.content == b"v1"
        assert "detail=stale-if-error" in response.headers["cache-status"]
    assert late.status_code == 500


async def test_exception_without_stale_entry_propagates() -> None:
    origin = SlowOrigin(delay=0.0)
    origin.fail = ValueError("boom")
    async with client_for(origin, make_cache()) as c:
        with pytest.raises(ValueError, match="boom"):
            await c.get("/x")


async def test_early_refresh_runs_in_the_background_before_expiry() -> None:
    clock = FakeClock()
    origin = SlowOrigin(delay=0.0, headers=[("cache-control", "max-age=10")])
    cache = make_cache(clock, l1_max_ttl=1000, early_refresh=1000.0)
    async with client_for(origin, cache) as c:
        await c.get("/early")
        clock.advance(9.9)
        hit = await c.get("/early")
        for _ in range(50):
            if origin.calls == 2:
                break
            await asyncio.sleep(0.01)
    assert hit.headers["x-cache"] == "HIT" and hit.content == b"v1"
    assert origin.calls == 2


async def test_background_refreshes_are_bounded_and_cancelled_on_close() -> None:
    clock = FakeClock()
    origin = SlowOrigin(
        delay=10.0, headers=[("cache-control", "max-age=1, stale-while-revalidate=100")]
    )
    cache = make_cache(clock, l1_max_ttl=1000, max_background_refreshes=2)
    origin.delay = 0.0
    async with client_for(origin, cache) as c:
        for i in range(5):
            await c.get(f"/b{i}")
        origin.delay = 10.0
        clock.advance(5)
        for i in range(5):
            assert (await c.get(f"/b{i}")).headers["x-cache"] == "STALE"
        assert len(cache.refreshing) == 2
    await asyncio.wait_for(cache.close(), 2)
    assert not cache.background


async def _commands(admin: aioredis.Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_miss_costs_one_round_trip_before_the_origin(redis_url: str) -> None:
    """The lookup that misses also takes the fleet lease (one script call): no separate
    SET NX, and no second look after it."""
    admin = aioredis.Redis.from_url(redis_url)
    seen_by_origin: list[dict[str, int]] = []

    async def origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen_by_origin.append(await _commands(admin))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client, redis_timeout=0.5)
    async with client_for(origin, cache) as http:
        await http.get("/warm")  # starts the bus, loads the scripts
        for _ in range(200):  # the bus heard: counters known from here on
            if cache.store.coherence.trusted():
                break
            await asyncio.sleep(0.02)
        await http.get("/warm2")  # the generation counters, read again once the bus is up
        await admin.config_resetstat()
        before = await _commands(admin)
        response = await http.get("/cold")
    await client.aclose()
    assert response.headers["x-cache"] == "MISS"
    during = seen_by_origin[-1]
    sent = {
        name: during.get(name, 0) - before.get(name, 0)
        for name in during
        if name not in ("info", "config|resetstat")
    }
    # One EVALSHA; the TIME, GET and SET NX counted are the ones the script ran.
    expected = {"evalsha": 1, "time": 1, "get": 1, "set": 1}
    assert {name: n for name, n in sent.items() if n} == expected
    await admin.aclose()


async def test_a_lease_taken_by_a_lookup_but_not_used_is_released(redis_url: str) -> None:
    origin = SlowOrigin(delay=0)
    client = aioredis.Redis.from_url(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client, redis_timeout=0.5, honour_request_cache_control=True)
    async with client_for(origin, cache) as http:
        response = await http.get("/cold", headers={"cache-control": "only-if-cached"})
        assert response.status_code == 504
        assert [key async for key in admin.scan_iter("*lease*")] == []
        assert (await http.get("/cold")).headers["x-cache"] == "MISS"  # nobody waits on it
    assert origin.calls == 1
    await client.aclose()
    await admin.aclose()
