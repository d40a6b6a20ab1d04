"""Invalidation: by key, path, prefix, tag, tenant, identity and everything; automatic after
writes; coherent across workers through the bus (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_tiered_cache import TieredCache
from fastapi_tiered_cache.invalidation import tag_index
from fastapi_tiered_cache.settings import RouteRule
from fastapi_tiered_cache.tags import fill_tags, rule_params

from .helpers import Origin, client_for, make_cache
from .support.tcp_proxy import TcpProxy


def versioned(origin_state: dict[str, int]) -> Any:
    def body(scope: dict[str, Any]) -> bytes:
        return f"{scope['path']}?{scope['query_string'].decode()} v{origin_state['v']}".encode()

    return body


async def fetch(client: Any, url: str, **kwargs: Any) -> tuple[bytes, str]:
    response = await client.get(url, **kwargs)
    return response.content, response.headers.get("x-cache", "")


async def test_path_purge_removes_every_variant_and_scope_of_that_path_only() -> None:
    state = {"v": 1}
    origin = Origin(body=versioned(state))
    cache = make_cache()
    async with client_for(origin, cache) as c:
        for url in ("/p", "/p?x=1", "/other"):
            await c.get(url)
        await c.get("/p", headers={"authorization": "Bearer a"})
        state["v"] = 2
        assert await cache.invalidate_path("/p") >= 3
        assert await fetch(c, "/p") == (b"/p? v2", "MISS")
        assert await fetch(c, "/p?x=1") == (b"/p?x=1 v2", "MISS")
        assert (await c.get("/p", headers={"authorization": "Bearer a"})).headers[
            "x-cache"
        ] == "MISS"
        assert await fetch(c, "/other") == (b"/other? v1", "HIT")


async def test_prefix_purge_works_by_whole_segments() -> None:
    state = {"v": 1}
    cache = make_cache()
    async with client_for(Origin(body=versioned(state)), cache) as c:
        for url in ("/a", "/a/b", "/a/b/c", "/ab"):
            await c.get(url)
        await cache.invalidate_prefix("/a/")
        assert [(await fetch(c, u))[1] for u in ("/a", "/a/b", "/a/b/c", "/ab")] == [
            "MISS",
            "MISS",
            "MISS",
            "HIT",
        ]


async def test_tag_purge_from_rule_templates_and_surrogate_headers() -> None:
    origin = Origin(headers=[("surrogate-key", "catalogue featured"), ("cache-tag", "x,y")])
    rules = [{"path": "/products/{product_id}", "tags": ["product:{product_id}", "products"]}]
    cache = make_cache(rules=rules)
    async with client_for(origin, cache) as c:
        first = await c.get("/products/1")
        await c.get("/products/2")
        assert "surrogate-key" not in first.headers and "cache-tag" not in first.headers
        assert await cache.invalidate_tags("product:1") == 1
        assert (await fetch(c, "/products/1"))[1] == "MISS"
        assert (await fetch(c, "/products/2"))[1] == "HIT"
        assert await cache.invalidate_tags("featured") == 2
        assert (await fetch(c, "/products/2"))[1] == "MISS"
        await cache.invalidate_tags("y")
        assert (await fetch(c, "/products/1"))[1] == "MISS"


async def test_surrogate_keys_can_be_forwarded() -> None:
    origin = Origin(headers=[("surrogate-key", "a b")])
    async with client_for(origin, make_cache(forward_surrogate_keys=True)) as c:
        first = await c.get("/")
        hit = await c.get("/")
    assert first.headers["surrogate-key"] == "a b"
    assert hit.headers["surrogate-key"] == "a b"  # for a CDN in front to purge alike


@pytest.mark.parametrize(
    ("purge", "expected"),
    [
        ("tenant", {"acme": "MISS", "globex": "HIT", "anon": "HIT"}),
        ("identity", {"acme": "HIT", "globex": "HIT", "anon": "HIT", "alice": "MISS"}),
        ("all", {"acme": "MISS", "globex": "MISS", "anon": "MISS"}),
    ],
)
async def test_generation_purges(purge: str, expected: dict[str, str]) -> None:
    cache = make_cache()
    who = {
        "acme": {"x-tenant-id": "acme"},
        "globex": {"x-tenant-id": "globex"},
        "anon": {},
        "alice": {"authorization": "Bearer alice"},
    }
    async with client_for(Origin(), cache) as c:
        for headers in who.values():
            await c.get("/", headers=headers)
        if purge == "tenant":
            await cache.invalidate_tenant("acme")
        elif purge == "identity":
            await cache.invalidate_identity(headers={"authorization": "Bearer alice"})
        else:
            await cache.invalidate_all()
        for name, outcome in expected.items():
            assert (await fetch(c, "/", headers=who[name]))[1] == outcome, name


async def test_identity_purge_by_principal_with_a_resolver() -> None:
    cache = make_cache()
    cache.identity_resolver = lambda request: request.headers.get("x-user")
    async with client_for(Origin(), cache) as c:
        await c.get("/", headers={"x-user": "u1", "authorization": "t"})
        await cache.invalidate_identity(principal="u1")
        assert (await fetch(c, "/", headers={"x-user": "u1", "authorization": "t"}))[1] == "MISS"


async def test_request_purge_and_lookup_follow_vary() -> None:
    origin = Origin(
        body=lambda scope: dict(scope["headers"]).get(b"accept-language", b"-"),
        headers=[("vary", "Accept-Language")],
    )
    cache = make_cache()
    async with client_for(origin, cache) as c:
        await c.get("/v", headers={"accept-language": "fr"})
        await c.get("/v", headers={"accept-language": "de"})
        stored = await cache.lookup("http://test/v", headers={"accept-language": "fr"})
        assert stored is not None and stored.body == b"fr"
        assert await cache.lookup("http://test/v", headers={"accept-language": "it"}) is None
        purged = await cache.invalidate_request(
            "GET", "http://test/v", headers={"accept-language": "fr"}
        )
        assert purged == 1
        assert (await fetch(c, "/v", headers={"accept-language": "fr"}))[1] == "MISS"
        assert (await fetch(c, "/v", headers={"accept-language": "de"}))[1] == "HIT"


async def test_successful_writes_purge_target_parent_location_and_rule_tags() -> None:
    state = {"v": 1}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] == "GET":
            await Origin(body=versioned(state))(scope, receive, send)
            return
        state["v"] += 1
        status = 500 if scope["path"] == "/fail" else 201
        headers = [(b"location", b"/created/9")] if scope["path"] == "/heroes" else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    rules = [
        {"path": "/heroes/{id}", "invalidates": ["team:{id}"]},
        {"path": "/teams/{id}", "tags": ["team:{id}"]},
    ]
    cache = make_cache(rules=rules)
    async with client_for(app, cache) as c:
        urls = [
            "/heroes",
            "/heroes/",
            "/heroes/2",
            "/heroes/2/powers",
            "/heroes/3",
            "/created/9",
            "/teams/2",
            "/teams/3",
            "/fail",
        ]
        for url in urls:
            await c.get(url)
        response = await c.put("/heroes/2", content=b"{}")
        assert response.headers["x-cache"] == "BYPASS"
        outcomes = {url: (await fetch(c, url))[1] for url in urls}
        assert outcomes == {
            "/heroes": "MISS",
            "/heroes/": "MISS",
            "/heroes/2": "MISS",
            "/heroes/2/powers": "HIT",
            "/heroes/3": "HIT",
            "/created/9": "HIT",
            "/teams/2": "MISS",
            "/teams/3": "HIT",
            "/fail": "HIT",
        }
        await c.post("/heroes", content=b"{}")
        assert (await fetch(c, "/created/9"))[1] == "MISS"
        assert (await fetch(c, "/heroes/3"))[1] == "HIT"  # a POST to a collection spares members
        await c.post("/fail", content=b"{}")
        assert (await fetch(c, "/fail"))[1] == "HIT"  # a failed write purges nothing


async def test_write_by_one_user_purges_every_users_copy() -> None:
    state = {"v": 1}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            state["v"] += 1
        await Origin(body=versioned(state))(scope, receive, send)

    cache = make_cache()
    async with client_for(app, cache) as c:
        bob = {"authorization": "Bearer bob"}
        await c.get("/doc", headers=bob)
        await c.patch("/doc", headers={"authorization": "Bearer alice"})
        assert await fetch(c, "/doc", headers=bob) == (b"/doc? v2", "MISS")


async def test_write_invalidation_can_be_turned_off() -> None:
    state = {"v": 1}
    cache = make_cache(invalidate_on_write=False)
    async with client_for(Origin(body=versioned(state)), cache) as c:
        await c.get("/x")
        await c.delete("/x")
        assert (await fetch(c, "/x"))[1] == "HIT"


async def test_a_purge_during_a_slow_read_through_prevents_storing_the_old_value() -> None:
    state = {"v": 1}
    started, release = asyncio.Event(), asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = f"v{state['v']}".encode()  # read the data *before* the write lands
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    cache = make_cache()
    async with client_for(app, cache) as c:
        slow = asyncio.create_task(c.get("/r"))
        await started.wait()
        state["v"] = 2
        await cache.invalidate_path("/r")
        release.set()
        assert (await slow).content == b"v1"
        started.clear()
        again = asyncio.create_task(c.get("/r"))
        await started.wait()
        release.set()
        assert (await again).headers["x-cache"] == "MISS"  # the old value was not stored


def test_tag_templates() -> None:
    rule = RouteRule(path="/shops/{shop}/items/{item}", tags=["item:{shop}:{item}", "x:{nope}"])
    params = rule_params(rule, "/shops/s1/items/42")
    assert params == {"shop": "s1", "item": "42"}
    assert fill_tags(rule.tags, params) == ["item:s1:42"]


# -- across workers, through a real Redis and the bus ------------------------------------


@pytest.fixture
async def workers(redis_url: str) -> AsyncIterator[list[TieredCache]]:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    caches = [
        make_cache(redis=client, redis_timeout=0.5, bus_heartbeat=0.1, l1_max_ttl=60)
        for client in clients
    ]
    for cache in caches:
        cache.start_background()
    await wait_for(lambda: all(c.bus is not None and c.bus.healthy for c in caches))
    yield caches
    for cache in caches:
        await cache.close()
    for client in clients:
        await client.aclose()


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_purge_on_one_worker_reaches_the_other_workers_l1(
    workers: list[TieredCache],
) -> None:
    state = {"v": 1}
    origin = Origin(body=versioned(state))
    a, b = workers
    async with client_for(origin, a) as ca, client_for(origin, b) as cb:
        await ca.get("/item")
        await cb.get("/item")
        assert (await cb.get("/item")).headers["cache-status"].endswith("detail=l1")
        state["v"] = 2
        await a.invalidate_path("/item")
        assert b.store.l1 is not None
        await wait_for(lambda: len(b.store.l1) == 0)  # type: ignore[arg-type]
        assert await fetch(cb, "/item") == (b"/item? v2", "MISS")


async def test_generation_bump_reaches_the_other_worker(workers: list[TieredCache]) -> None:
    a, b = workers
    origin = Origin()
    async with client_for(origin, a) as ca, client_for(origin, b) as cb:
        await ca.get("/", headers={"x-tenant-id": "acme"})
        assert (await fetch(cb, "/", headers={"x-tenant-id": "acme"}))[1] == "HIT"
        await a.invalidate_tenant("acme")
        await wait_for(lambda: b.generations.peek("acme", "pub") == "g0.1.0")
        assert (await fetch(cb, "/", headers={"x-tenant-id": "acme"}))[1] == "MISS"


async def test_write_on_one_worker_is_seen_by_the_other(workers: list[TieredCache]) -> None:
    state = {"v": 1}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            state["v"] += 1
        await Origin(body=versioned(state))(scope, receive, send)

    a, b = workers
    async with client_for(app, a) as ca, client_for(app, b) as cb:
        await cb.get("/doc")
        await ca.put("/doc")
        await wait_for(lambda: b.store.l1 is not None and len(b.store.l1) == 0)
        assert await fetch(cb, "/doc") == (b"/doc? v2", "MISS")


async def test_losing_the_bus_drops_l1_and_distrusts_generations(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with TcpProxy(port) as proxy:
        client = aioredis.Redis.from_url(proxy.url, socket_timeout=1, socket_connect_timeout=1)
        cache = make_cache(redis=client, redis_timeout=0.5, bus_heartbeat=0.1, l1_max_ttl=60)
        cache.start_background()
        await wait_for(lambda: cache.bus is not None and cache.bus.healthy)
        assert cache.store.l1_max_ttl == 60
        async with client_for(Origin(), cache) as c:
            await c.get("/")
            assert cache.store.l1 is not None and len(cache.store.l1) == 1
            proxy.blackhole()  # silent death: the socket stays open, nothing arrives
            await wait_for(lambda: cache.bus is not None and not cache.bus.healthy, timeout=3)
            assert len(cache.store.l1) == 0
            assert cache.store.l1_max_ttl == pytest.approx(0.3)
            assert cache.generations.trusted is False
            proxy.passthrough()
            await wait_for(lambda: cache.bus is not None and cache.bus.healthy, timeout=10)
            assert cache.store.l1_max_ttl == 60 and cache.generations.trusted
        await cache.close()
        await client.aclose()


async def test_tag_index_stays_bounded_under_churn(redis_url: str) -> None:
    from .helpers import FakeClock

    clock = FakeClock()
    client = aioredis.Redis.from_url(redis_url)
    origin = Origin(headers=[("surrogate-key", "hot"), ("cache-control", "max-age=1")])
    cache = make_cache(clock, redis=client, redis_timeout=1.0)
    async with client_for(origin, cache) as c:
        for i in range(60):
            await c.get(f"/churn/{i}")
            clock.advance(0.5)
    index = cache.invalidator.redis_key(tag_index(cache.tenant_label(None), "hot"))
    assert 0 < await client.zcard(index) <= 3  # only the entries still alive
    await client.aclose()


async def test_repeated_identical_requests_use_the_memo_and_still_see_every_purge() -> None:
    import httpx

    from fastapi_tiered_cache import TieredCacheMiddleware

    state = {"v": 1}
    cache = make_cache()
    middleware = TieredCacheMiddleware(Origin(body=versioned(state)), cache=cache)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        await c.get("/m")
        await c.get("/m")  # a full-path hit records the memo
        assert middleware.memo is not None and len(middleware.memo.keys) == 1
        assert await fetch(c, "/m") == (b"/m? v1", "HIT")
        state["v"] = 2
        await cache.invalidate_path("/m")
        assert await fetch(c, "/m") == (b"/m? v2", "MISS")
        await c.get("/m")
        state["v"] = 3
        await cache.invalidate_all()
        assert await fetch(c, "/m") == (b"/m? v3", "MISS")
        other = await c.get("/m", headers={"authorization": "Bearer x"})
        assert other.headers["x-cache"] == "MISS"


async def test_purges_of_many_entries_work_within_the_connection_pool(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, max_connections=5)
    origin = Origin(headers=[("surrogate-key", "bulk")])
    cache = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)
    async with client_for(origin, cache) as c:
        for i in range(300):
            await c.get(f"/bulk/{i}")
        assert await cache.invalidate_tags("bulk") == 300
        await asyncio.sleep(1.2)  # the purge repeats itself once, a second later
        assert await cache.invalidate_tags("bulk", soft=True) == 0
        assert (await fetch(c, "/bulk/7"))[1] == "MISS"
        await c.get("/bulk/8")
        assert await cache.invalidate_tags("bulk", soft=True) == 2
        stale = await cache.lookup("http://test/bulk/8")
        assert stale is not None and stale.fresh_for == 0.0
    await client.aclose()
