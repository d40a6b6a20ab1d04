"""Invalidation: by key, path, prefix, tag, tenant, identity and everything; automatic after
writes; coherent across workers through the bus (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_tiered_cache import TieredCache, lifecycle
from fastapi_tiered_cache.invalidation import exact_index, tag_index
from fastapi_tiered_cache.settings import RouteRule
from fastapi_tiered_cache.tags import fill_tags, rule_params

from .helpers import Origin, client_for, healthy, make_cache
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
    cache.identifier.identity_resolver = lambda request: request.headers.get("x-user")
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


async def test_a_purge_that_could_not_be_announced_is_announced_later(
    workers: list[TieredCache],
) -> None:
    """A publish that fails (a timeout under load) must not leave the other workers serving
    their L1 copies while their own pings keep coming back: it is retried until sent."""
    state = {"v": 1}
    origin = Origin(body=versioned(state))
    a, b = workers
    assert a.bus is not None
    publish = a.bus.publish
    failures = {"left": 2}

    async def flaky_publish(kind: str, data: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise TimeoutError("publish timed out")
        await publish(kind, data)

    a.bus.publish = flaky_publish  # type: ignore[method-assign]
    async with client_for(origin, a) as ca, client_for(origin, b) as cb:
        await ca.get("/item")
        await cb.get("/item")
        assert (await cb.get("/item")).headers["cache-status"].endswith("detail=l1")
        state["v"] = 2
        assert await a.invalidate_path("/item") == 1  # the caller is not kept waiting
        assert failures["left"] == 1 and len(a.invalidator.announcements.pending) == 1
        assert b.store.l1 is not None
        await wait_for(lambda: len(b.store.l1) == 0)  # type: ignore[arg-type]
        assert failures["left"] == 0 and a.invalidator.announcements.retried == 1
        assert await fetch(cb, "/item") == (b"/item? v2", "MISS")


async def test_losing_the_bus_drops_l1_and_distrusts_generations(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with TcpProxy(port) as proxy:
        client = aioredis.Redis.from_url(proxy.url, socket_timeout=1, socket_connect_timeout=1)
        cache = make_cache(redis=client, redis_timeout=0.5, bus_heartbeat=0.1, l1_max_ttl=60)
        cache.start_background()
        await wait_for(lambda: cache.bus is not None and cache.bus.healthy)
        assert cache.coherence.l1_ttl(60) == 60
        async with client_for(Origin(), cache) as c:
            await c.get("/")
            l1 = cache.store.l1
            assert l1 is not None and len(l1) == 1
            proxy.blackhole()  # silent death: the socket stays open, nothing arrives
            # Not trusted once no ping came back within the bound; declared lost soon after.
            await wait_for(lambda: not cache.coherence.trusted(), timeout=1.5)
            assert [key for key in l1._fast if cache.store.lookup_local(key)] == []
            await wait_for(lambda: cache.bus is not None and not cache.bus.healthy, timeout=3)
            assert len(l1) == 0
            # While not heard, an entry lives in L1 at most the bound after its data was read.
            assert cache.coherence.l1_ttl(60) == pytest.approx(1.0, abs=0.01)
            assert cache.generations.trusted is False
            proxy.passthrough()
            await wait_for(lambda: cache.bus is not None and cache.bus.healthy, timeout=10)
            assert cache.coherence.l1_ttl(60) == 60 and cache.generations.trusted
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
        assert await cache.invalidate_tags("bulk", soft=True) == 0
        assert (await fetch(c, "/bulk/7"))[1] == "MISS"
        await c.get("/bulk/8")
        assert await cache.invalidate_tags("bulk", soft=True) == 2
        stale = await cache.lookup("http://test/bulk/8")
        assert stale is not None and stale.fresh_for == 0.0
    await client.aclose()


async def test_a_purge_drops_the_purging_workers_copy_taken_from_redis(
    workers: list[TieredCache],
) -> None:
    state = {"v": 1}
    origin = Origin(body=versioned(state))
    a, b = workers
    async with client_for(origin, a) as ca, client_for(origin, b) as cb:
        await cb.get("/copied")  # stored by b
        assert (await ca.get("/copied")).headers["cache-status"].endswith("detail=l2")
        assert (await ca.get("/copied")).headers["cache-status"].endswith("detail=l1")
        state["v"] = 2
        assert await a.invalidate_path("/copied") == 1  # one entry (in Redis, and copied)
        assert await fetch(ca, "/copied") == (b"/copied? v2", "MISS")


async def test_a_write_costs_no_extra_miss_later(workers: list[TieredCache]) -> None:
    """The purge is not repeated a second later: the entry refilled after a write stays."""
    state = {"v": 1}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            state["v"] += 1
        await Origin(body=versioned(state))(scope, receive, send)

    a, b = workers
    calls = {"n": 0}

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls["n"] += scope["method"] == "GET"
        await app(scope, receive, send)

    async with client_for(counted, a) as ca, client_for(counted, b) as cb:
        await ca.get("/doc")
        await ca.put("/doc")
        assert await fetch(cb, "/doc") == (b"/doc? v2", "MISS")
        await asyncio.sleep(1.3)  # when the old delayed second purge would have struck
        assert await fetch(ca, "/doc") == (b"/doc? v2", "HIT")
        assert await fetch(cb, "/doc") == (b"/doc? v2", "HIT")
    assert calls["n"] == 2


async def test_an_entry_stored_again_during_a_purge_stays_indexed(redis_url: str) -> None:
    """A purge reads an index, deletes its entries, then forgets the members it read. A fill
    that started after the purge's marker (new data) may store the same key meanwhile: it
    must stay in the index, or no later purge could find it."""
    from fastapi_tiered_cache.markers import UNINDEX

    from .helpers import FakeClock

    client = aioredis.Redis.from_url(redis_url)
    state = {"v": 1}
    clock = FakeClock()
    cache = make_cache(clock, redis=client, redis_timeout=1.0)
    invalidator = cache.invalidator
    async with client_for(Origin(body=versioned(state)), cache) as c:
        cache.ensure_started()  # the bus heard first: hearing it later resets what L1 holds
        await healthy(cache)
        await c.get("/again")
        key = next(iter(invalidator.local[exact_index("_", "/again")]))
        pipelined = invalidator.pipelined

        async def refill_first(commands: list[Any]) -> list[Any]:
            if commands and commands[0][1][0] == UNINDEX:  # deleted, not yet forgotten
                state["v"] = 2
                clock.advance(0.5)
                await c.get("/again")  # a miss: stored again, under the same key
            return await pipelined(commands)

        invalidator.pipelined = refill_first  # type: ignore[method-assign]
        assert await cache.invalidate_path("/again") == 1
        invalidator.pipelined = pipelined  # type: ignore[method-assign]
        index = invalidator.redis_key(exact_index("_", "/again"))
        assert await client.zscore(index, key) is not None  # still indexed
        assert (await fetch(c, "/again"))[0] == b"/again? v2"
        state["v"] = 3
        assert await cache.invalidate_path("/again") == 1  # found, and deleted
        assert await fetch(c, "/again") == (b"/again? v3", "MISS")
    await client.aclose()


# -- purge markers: a fill that a purge followed is not stored --------------------------


async def _fill_raced_by_a_purge(cache: TieredCache, client: Any) -> None:
    """Begin a fill, purge its path, then try to store: refused (or deleted again), and
    a fill begun after the purge is stored."""
    from fastapi_tiered_cache.entry import CachedResponse

    fills = cache.invalidator.fills
    names = [exact_index("_", "/raced")]
    key = "ftc:g0.0.0:_:pub:raced"
    record = CachedResponse(status=200, headers=(), body=b"old", stored_at=0.0, fresh_for=60)
    start = await fills.begin(cache.coherence.timer())
    assert await cache.invalidate_path("/raced") == 0  # nothing stored yet: marks all the same
    assert await fills.fill([(key, record, 60.0)], key, names, start) is False
    assert await client.exists(key) == 0
    assert fills.raced == 1
    # A cluster dates a fill's start by its own duration, so a purge within one round trip
    # before it still counts as racing it (safe, not exact): begin a round trip later.
    await asyncio.sleep(0.1)
    later = await fills.begin(cache.coherence.timer())
    assert await fills.fill([(key, record, 60.0)], key, names, later) is True
    assert await client.exists(key) == 1
    assert await cache.invalidate_path("/raced") == 1


async def test_a_fill_a_purge_followed_is_refused_atomically(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client, redis_timeout=1.0)
    assert cache.invalidator.fills.atomic(await cache.invalidator.fills.begin(0.0))
    await _fill_raced_by_a_purge(cache, client)
    await cache.close()
    await client.aclose()


async def test_a_fill_a_purge_followed_is_deleted_again_on_a_cluster(
    cluster_urls: list[str],
) -> None:
    from fastapi_tiered_cache.stores.connect import build_client

    client = build_client(",".join(cluster_urls), mode="cluster")
    cache = make_cache(redis=client, redis_timeout=1.0)
    published: list[Any] = []

    async def publish(kind: str, data: Any) -> None:
        published.append((kind, data))

    cache.invalidator.announcements.publish = publish
    assert not cache.invalidator.fills.atomic(await cache.invalidator.fills.begin(0.0))
    await _fill_raced_by_a_purge(cache, client)  # seen by the first check: nothing stored
    assert ("purge", [[], ["ftc:g0.0.0:_:pub:raced"]]) not in published

    # A purge between the first check and the store: the second check withdraws it.
    from fastapi_tiered_cache.entry import CachedResponse

    invalidator, fills = cache.invalidator, cache.invalidator.fills
    key = "ftc:g0.0.0:_:pub:raced"
    record = CachedResponse(status=200, headers=(), body=b"old", stored_at=0.0, fresh_for=60)
    pipeline = invalidator.pipeline

    async def purge_before_the_store(commands: list[Any]) -> list[Any]:
        if any(name == "execute_command" for name, _ in commands):
            invalidator.pipeline = pipeline  # type: ignore[method-assign]
            assert await cache.invalidate_path("/raced") == 0  # indexed, not yet stored
        return await pipeline(commands)

    invalidator.pipeline = purge_before_the_store  # type: ignore[method-assign]
    await asyncio.sleep(0.05)  # the last purge's marker is well before this fill began
    start = await fills.begin(cache.coherence.timer())
    names = [exact_index("_", "/raced")]
    assert await fills.fill([(key, record, 60.0)], key, names, start) is False
    assert await client.exists(key) == 0
    assert ("purge", [[], [key]]) in published  # copies taken meanwhile dropped fleet-wide
    await cache.close()
    await client.aclose()


async def test_a_set_on_a_cluster_is_stored_however_slow_the_check_replies(
    cluster_urls: list[str],
) -> None:
    """``set`` purges its key, then stores. The cluster check dates a fill's start by its
    own duration, so when the check's reply came back slower than the purge's (jitter),
    the set's own marker looked like a later purge: about 1 set in 6 was withdrawn, and
    the next ``get`` found nothing. Here every check looks a second late."""
    import time

    from fastapi_tiered_cache.stores.connect import build_client

    client = build_client(",".join(cluster_urls), mode="cluster")
    cache = make_cache(redis=client, redis_timeout=1.0)
    cache.invalidator.timer = lambda: time.monotonic() + 1.0  # type: ignore[method-assign]
    other = build_client(",".join(cluster_urls), mode="cluster")
    reader = make_cache(redis=other)
    reader.store.l1 = None  # reads Redis only
    for n in range(10):
        await cache.set(f"k{n}", {"n": n}, ttl=60)
        assert await reader.get(f"k{n}") == {"n": n}
    # A read-through is still refused when a purge may have followed its start.
    assert cache.invalidator.fills.raced == 0
    await cache.close()
    await reader.close()
    await client.aclose()
    await other.aclose()


async def test_a_cluster_fill_lives_provisionally_until_its_check_passes(
    cluster_urls: list[str],
) -> None:
    """Stored, then checked: an entry whose check never answered (a timeout under load)
    is in no index, so no purge would find it; it must not live its whole life."""
    from fastapi_tiered_cache.entry import CachedResponse
    from fastapi_tiered_cache.exceptions import StoreUnavailable
    from fastapi_tiered_cache.fills import PROVISIONAL_MS
    from fastapi_tiered_cache.stores.connect import build_client

    client = build_client(",".join(cluster_urls), mode="cluster")
    cache = make_cache(redis=client, redis_timeout=1.0)
    invalidator = cache.invalidator
    fills = invalidator.fills
    names = [exact_index("_", "/checked")]
    record = CachedResponse(status=200, headers=(), body=b"v1", stored_at=0.0, fresh_for=600)
    key = "ftc:g0.0.0:_:pub:checked"

    # A check that passes: the full life.
    start = await fills.begin(cache.coherence.timer())
    assert await fills.fill([(key, record, 600.0)], key, names, start)
    assert await client.pttl(key) > 500_000

    # A check that never answers: the entry lives briefly, and copies other processes
    # took meanwhile are dropped through the bus (without keeping the request waiting).
    pipeline = invalidator.pipeline
    published: list[Any] = []

    async def publish(kind: str, data: Any) -> None:
        published.append((kind, data))

    checks = {"seen": 0}

    async def no_checks(commands: list[Any]) -> list[Any]:
        if any(args and "ZADD" in str(args[0]) for _, args in commands):
            checks["seen"] += 1
            if checks["seen"] == 2:  # the first check (indexing) passes, the second fails
                raise StoreUnavailable("fill check timed out")
        return await pipeline(commands)

    invalidator.announcements.publish = publish
    invalidator.pipeline = no_checks  # type: ignore[method-assign]
    await client.delete(key)
    start = await fills.begin(cache.coherence.timer())
    with pytest.raises(StoreUnavailable):
        await fills.fill([(key, record, 600.0)], key, names, start)
    assert 0 < await client.pttl(key) <= PROVISIONAL_MS
    assert published == [] and len(invalidator.announcements.pending) == 1  # not waited on
    for _ in range(100):
        if published:
            break
        await asyncio.sleep(0.01)
    assert published == [("purge", [[], [key]])]

    # A judged fill extends only the value it stored, not a newer fill's.
    invalidator.pipeline = pipeline  # type: ignore[method-assign]
    from fastapi_tiered_cache.fills import EXTEND

    await client.set(key, b"newer", px=PROVISIONAL_MS)
    assert await client.eval(EXTEND, 1, key, "0" * 40, 600_000) == 0
    assert await client.pttl(key) <= PROVISIONAL_MS
    await cache.close()
    await client.aclose()


async def test_a_fill_across_a_bus_change_goes_to_redis_but_not_to_l1(
    workers: list[TieredCache],
) -> None:
    """While the bus was lost (or just came back), purges may have gone unheard: L1 cannot
    tell whether a fill is stale, so it keeps nothing of one that began before. Redis can:
    its purge markers judge the fill, so the fill is stored there and the next request
    is a hit (it was a miss again, under load, when the bus flapped during a fill)."""
    a, _ = workers
    reset = {"done": False}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not reset["done"]:
            reset["done"] = True
            lifecycle.on_bus_change(a)  # the bus came back while the origin was answering
        await Origin(body=b"fresh")(scope, receive, send)

    async with client_for(app, a) as client:
        first = await client.get("/doc")
        second = await client.get("/doc")
    assert first.headers["cache-status"].endswith("fwd=miss; stored")
    assert "; hit; " in second.headers["cache-status"]
    assert second.headers["cache-status"].endswith("detail=l2")
    assert second.content == b"fresh"


def test_an_entry_is_indexed_by_its_path_and_its_ancestors_only() -> None:
    """No prefix index of an entry's own path: a prefix purge reads the prefix's exact index
    too, so the entry at the prefix itself is still purged (one sorted set fewer each)."""
    from fastapi_tiered_cache.invalidation import index_names, prefix_index

    names = index_names("_", "/a/b/c", ["t"])
    assert names == [
        exact_index("_", "/a/b/c"),
        prefix_index("_", "/a"),
        prefix_index("_", "/a/b"),
        tag_index("_", "t"),
    ]
    assert index_names("_", "/", []) == [exact_index("_", "/")]


async def test_a_prefix_purge_reaches_the_path_itself_in_redis(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client, redis_timeout=0.5, l1_max_entries=0)
    state = {"v": 1}
    try:
        async with client_for(Origin(body=versioned(state)), cache) as c:
            for url in ("/a/b", "/a/b/c", "/a/bc"):
                await c.get(url)
            assert await cache.invalidate_prefix("/a/b") == 2
            state["v"] = 2
            after = [await fetch(c, url) for url in ("/a/b", "/a/b/c", "/a/bc")]
    finally:
        await cache.close()
        await client.aclose()
    assert after == [(b"/a/b? v2", "MISS"), (b"/a/b/c? v2", "MISS"), (b"/a/bc? v1", "HIT")]
