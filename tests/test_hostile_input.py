"""Hostile and broken input, through the middleware: nothing crashes, every client gets the
origin's answer, work and memory stay bounded, and nothing half-finished is ever stored."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.types import Message, Receive, Scope, Send

from fastapi_tiered_cache import TieredCache, TieredCacheMiddleware

from .helpers import Origin, make_cache

Headers = list[tuple[bytes, bytes]]
KEY_LIMIT = 200  # characters; keys are namespace:generation:tenant:scope:digest


def scope_for(
    path: bytes = b"/", query: bytes = b"", headers: Iterable[tuple[bytes, bytes]] = ()
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path.decode("utf-8", "replace"),
        "raw_path": path,
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"test"), *headers],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Reply:
    """What a client received for one request."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


async def get(app: Any, scope: dict[str, Any]) -> Reply:
    reply = Reply()
    await app(scope, receive, reply.send)
    return reply


def digest_origin() -> Origin:
    """Answers with a digest of everything that selects the response."""

    def body(scope: dict[str, Any]) -> bytes:
        seen = hashlib.sha256(scope["raw_path"] + b"?" + scope["query_string"])
        return seen.hexdigest().encode()

    return Origin(body=body)


def l1_keys(cache: TieredCache) -> list[str]:
    assert cache.store.l1 is not None
    return list(cache.store.l1._cache)


async def test_a_one_megabyte_query_string_is_answered_and_keyed_in_bounded_space() -> None:
    origin = digest_origin()
    cache = make_cache()
    app = TieredCacheMiddleware(origin, cache=cache)
    query = b"q=" + b"x" * (1024 * 1024)
    first = await get(app, scope_for(b"/search", query))
    second = await get(app, scope_for(b"/search", query))
    expected = hashlib.sha256(b"/search?" + query).hexdigest().encode()
    assert (first.status, first.body) == (second.status, second.body) == (200, expected)
    assert second.header(b"x-cache") == b"HIT" and origin.calls == 1
    assert all(len(key) < KEY_LIMIT for key in l1_keys(cache))


async def test_ten_thousand_parameters_in_any_order_share_one_bounded_entry() -> None:
    origin = digest_origin()
    cache = make_cache(rules=[{"path": "/filtered", "query_deny": ["utm_*", "fbclid"]}])
    app = TieredCacheMiddleware(origin, cache=cache)
    params = [f"p{i}={i}".encode() for i in range(10_000)]
    shuffled = random.Random(7).sample(params, len(params))
    for path in (b"/plain", b"/filtered"):
        first = await get(app, scope_for(path, b"&".join(params)))
        again = await get(app, scope_for(path, b"&".join(shuffled)))
        assert first.status == again.status == 200
        assert first.body == hashlib.sha256(path + b"?" + b"&".join(params)).hexdigest().encode()
        assert again.header(b"x-cache") == b"HIT"
    assert origin.calls == 2
    assert all(len(key) < KEY_LIMIT for key in l1_keys(cache))


HOSTILE_REQUESTS = {
    "bad-percent-path": (b"/%zz%/%", b"", []),
    "invalid-utf8-path": (b"/\xff\xfe/\xc3\x28", b"", []),
    "invalid-utf8-query": (b"/q", b"a=%ff%fe&\xff\xfe=\xc3\x28&%=%%", []),
    "invalid-utf8-headers": (
        b"/h",
        b"",
        [(b"accept-language", b"\xff\xfe"), (b"x-forwarded-host", b"\xc3\x28"), (b"te", b"\x80")],
    ),
    "invalid-utf8-tenant": (b"/t", b"", [(b"x-tenant-id", b"\xff\xfe\x00")]),
    "invalid-utf8-credentials": (
        b"/c",
        b"",
        [(b"authorization", b"Bearer \xff\xfe"), (b"cookie", b"session=\xff; \xfe=\x80")],
    ),
    "nul-and-controls": (b"/\x00\x01", b"\x00=\x7f", [(b"x-api-key", b"\x00\r")]),
}


@pytest.mark.parametrize(
    "request_parts", list(HOSTILE_REQUESTS.values()), ids=list(HOSTILE_REQUESTS)
)
async def test_undecodable_requests_get_the_origins_answer(
    request_parts: tuple[bytes, bytes, Headers],
) -> None:
    path, query, headers = request_parts
    origin = digest_origin()
    cache = make_cache(vary_on=["accept-language"])
    app = TieredCacheMiddleware(origin, cache=cache)
    expected = hashlib.sha256(path + b"?" + query).hexdigest().encode()
    for _ in range(2):
        reply = await get(app, scope_for(path, query, headers))
        assert (reply.status, reply.body) == (200, expected)
    assert origin.calls in (1, 2)  # cached, or bypassed (credentials): never wrong
    assert all(len(key) < KEY_LIMIT for key in l1_keys(cache))


async def test_a_hundred_kilobyte_path_is_answered_and_keyed_in_bounded_space() -> None:
    origin = digest_origin()
    cache = make_cache()
    app = TieredCacheMiddleware(origin, cache=cache)
    for path in (b"/" + b"a" * 100_000, b"/" + b"/".join([b"s"] * 50_000)):
        first = await get(app, scope_for(path))
        second = await get(app, scope_for(path))
        assert first.status == second.status == 200
        assert first.body == second.body == hashlib.sha256(path + b"?").hexdigest().encode()
        assert second.header(b"x-cache") == b"HIT"
    assert all(len(key) < KEY_LIMIT for key in l1_keys(cache))


async def test_a_flood_of_distinct_keys_never_breaks_the_l1_bounds() -> None:
    origin = Origin(body=lambda scope: scope["query_string"] * 8)
    max_bytes, max_entries = 64 * 1024, 500
    cache = make_cache(l1_max_bytes=max_bytes, l1_max_entries=max_entries)
    app = TieredCacheMiddleware(origin, cache=cache)
    l1 = cache.store.l1
    assert l1 is not None
    for n in range(2000):
        query = f"n={n}&pad={'x' * (n % 300)}".encode()
        reply = await get(
            app, scope_for(b"/flood", query, [(b"x-tenant-id", f"t{n % 3}".encode())])
        )
        assert (reply.status, reply.body) == (200, query * 8)
        assert l1.current_bytes <= max_bytes
        assert len(l1) <= max_entries
    assert origin.calls == 2000
    assert all(len(key) < KEY_LIMIT for key in l1_keys(cache))


# ------------------------------------------------------------------ broken exchanges


def streaming_origin(chunks: int, release: asyncio.Event | None = None) -> Any:
    """An origin sending ``chunks`` body messages; after the first it may wait for ``release``."""
    calls = {"n": 0}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls["n"] += 1
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(chunks):
            if i == 1 and release is not None:
                await release.wait()
            last = i == chunks - 1
            await send({"type": "http.response.body", "body": b"%d," % i, "more_body": not last})

    app.calls = calls  # type: ignore[attr-defined]
    return app


def nothing_stored(cache: TieredCache) -> None:
    assert cache.store.l1 is not None and len(cache.store.l1) == 0


async def nothing_left(cache: TieredCache, redis: aioredis.Redis) -> None:
    """No entry in either tier, and (soon) no compute lease left behind in Redis."""
    nothing_stored(cache)
    assert await redis.keys("ftc:g*") == []
    for _ in range(100):  # a lease is given up in its own task, within a couple of budgets
        if not await redis.keys("ftc:lease:*"):
            break
        await asyncio.sleep(0.01)
    assert await redis.keys("ftc:lease:*") == []


async def test_a_client_that_disconnects_mid_response_leaves_nothing_stored(
    redis_url: str,
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=redis, redis_timeout=1.0)
    origin = streaming_origin(3)
    app = TieredCacheMiddleware(origin, cache=cache)
    bodies = 0

    async def send(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies == 2:
                raise OSError("client went away")

    with pytest.raises(OSError, match="client went away"):
        await app(scope_for(b"/gone"), receive, send)
    await nothing_left(cache, redis)
    reply = await get(app, scope_for(b"/gone"))
    assert reply.body == b"0,1,2," and reply.header(b"x-cache") == b"MISS"
    assert origin.calls["n"] == 2
    await cache.close()
    await redis.aclose()


async def test_a_request_cancelled_mid_stream_leaves_nothing_stored_and_nothing_running(
    redis_url: str,
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=redis, redis_timeout=1.0)
    release = asyncio.Event()
    origin = streaming_origin(3, release)
    app = TieredCacheMiddleware(origin, cache=cache)
    reply = Reply()
    first_chunk = asyncio.Event()

    async def send(message: Message) -> None:
        await reply.send(message)
        if reply.chunks:
            first_chunk.set()

    task = asyncio.ensure_future(app(scope_for(b"/cancel"), receive, send))
    await first_chunk.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await nothing_left(cache, redis)
    release.set()
    again = await get(app, scope_for(b"/cancel"))
    assert again.body == b"0,1,2," and again.header(b"x-cache") == b"MISS"
    await cache.close()
    await redis.aclose()
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []


class OriginError(Exception):
    pass


async def fail_before_start(scope: Scope, receive: Receive, send: Send) -> None:
    raise OriginError("before start: ünïcode")


async def fail_after_start(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise KeyError("after start")


async def fail_mid_body(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("mid body")


@pytest.mark.parametrize("app", [fail_before_start, fail_after_start, fail_mid_body])
async def test_an_origin_exception_propagates_exactly_as_without_the_cache(app: Any) -> None:
    async def raised(target: Any) -> BaseException:
        with pytest.raises(Exception) as info:
            await get(target, scope_for(b"/boom"))
        return info.value

    bare = await raised(app)
    cache = make_cache()
    wrapped = await raised(TieredCacheMiddleware(app, cache=cache))
    assert type(wrapped) is type(bare)
    assert str(wrapped) == str(bare) and wrapped.args == bare.args
    nothing_stored(cache)


async def test_server_sent_events_are_forwarded_one_by_one_without_buffering() -> None:
    """Each event is produced only once the client has the previous one: a buffering cache
    would deadlock (caught by the timeout). The client leaves after 50 events."""
    cache = make_cache(max_body_bytes=1024)
    delivered = asyncio.Event()
    produced = 0

    async def events(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal produced
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        while True:  # an endless stream
            delivered.clear()
            produced += 1
            event = b"id: %d\ndata: %s\n\n" % (produced, b"x" * 40)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await delivered.wait()

    received: list[bytes] = []

    async def client(message: Message) -> None:
        if message["type"] == "http.response.body":
            assert len(received) == produced - 1  # never ahead of, never behind the origin
            received.append(message["body"])
            if len(received) == 50:
                raise OSError("client closed the event stream")
            delivered.set()

    app = TieredCacheMiddleware(events, cache=cache)
    with pytest.raises(OSError, match="closed the event stream"):
        await asyncio.wait_for(app(scope_for(b"/events"), receive, client), 5)
    assert received[0].startswith(b"id: 1\n") and received[-1].startswith(b"id: 50\n")
    nothing_stored(cache)


HOP_BY_HOP = [
    (b"connection", b"keep-alive, x-hop-secret"),
    (b"keep-alive", b"timeout=5"),
    (b"transfer-encoding", b"chunked"),
    (b"upgrade", b"h2c"),
    (b"proxy-authenticate", b'Basic realm="proxy"'),
    (b"te", b"trailers"),
    (b"trailer", b"x-checksum"),
    (b"proxy-connection", b"keep-alive"),
]


async def test_hop_by_hop_headers_are_never_replayed_from_a_stored_entry() -> None:
    origin = Origin(
        headers=[("content-type", "text/plain")] + [(k.decode(), v.decode()) for k, v in HOP_BY_HOP]
    )
    cache = make_cache()
    app = TieredCacheMiddleware(origin, cache=cache)
    await get(app, scope_for(b"/hop"))
    hit = await get(app, scope_for(b"/hop"))
    assert hit.header(b"x-cache") == b"HIT" and hit.body == b"hello"
    replayed = {name for name, _ in hit.headers}
    assert replayed.isdisjoint(name for name, _ in HOP_BY_HOP)
    assert hit.header(b"content-type") == b"text/plain"


async def test_headers_named_by_connection_are_never_replayed() -> None:
    origin = Origin(
        headers=[
            ("content-type", "text/plain"),
            ("connection", "x-hop-secret"),
            ("x-hop-secret", "1"),
        ]
    )
    cache = make_cache()
    app = TieredCacheMiddleware(origin, cache=cache)
    await get(app, scope_for(b"/named"))
    hit = await get(app, scope_for(b"/named"))
    assert hit.header(b"x-cache") == b"HIT"
    assert hit.header(b"x-hop-secret") is None


async def test_set_cookie_is_never_replayed_from_a_stored_entry() -> None:
    origin = Origin(
        headers=[("content-type", "text/plain"), ("set-cookie", "session=abc; HttpOnly")]
    )
    cache = make_cache(default_ttl=60)
    app = TieredCacheMiddleware(origin, cache=cache)
    replies = [await get(app, scope_for(b"/cookie")) for _ in range(3)]
    for reply in replies:
        assert reply.body == b"hello"
        if reply.header(b"x-cache") == b"HIT":
            assert reply.header(b"set-cookie") is None
        else:
            assert reply.header(b"set-cookie") == b"session=abc; HttpOnly"  # the origin's own
    assert all(
        b"set-cookie" not in dict(r.headers) for r in replies if r.header(b"x-cache") == b"HIT"
    )


# ------------------------------------------------------------------ bugs found (invalidation.py)


async def test_indexing_a_flood_of_distinct_deep_paths_costs_bounded_work_per_store() -> None:
    cache = make_cache()
    app = TieredCacheMiddleware(Origin(), cache=cache)
    l1 = cache.store.l1
    assert l1 is not None
    lookups = 0
    real_lookup = l1.lookup

    def counting_lookup(key: str) -> Any:
        nonlocal lookups
        lookups += 1
        return real_lookup(key)

    l1.lookup = counting_lookup  # type: ignore[method-assign]
    n = 300
    for i in range(n):
        path = b"/%d/" % i + b"/".join(b"s%d" % depth for depth in range(15))
        assert (await get(app, scope_for(path))).status == 200
    assert lookups <= 10 * n  # the request path itself does one or two per request


async def test_the_local_index_of_a_long_path_is_bounded_like_l1() -> None:
    cache = make_cache()
    app = TieredCacheMiddleware(Origin(), cache=cache)
    path = b"/" + b"/".join([b"x" * 6000] * 16)  # about 100 KB, 16 segments
    assert (await get(app, scope_for(path))).status == 200
    l1 = cache.store.l1
    assert l1 is not None and len(l1) == 1
    index_bytes = sum(len(name) for name in cache.invalidator.local)
    assert index_bytes <= 4 * l1.current_bytes + 4096


async def test_one_path_with_endless_query_strings_keeps_the_local_index_bounded() -> None:
    """Every query string is its own L1 entry under one path, so under one index name: L1
    evicts the old ones, and the index must forget them too, whatever the flood's size."""
    cache = make_cache(l1_max_entries=200)
    app = TieredCacheMiddleware(Origin(), cache=cache)
    for i in range(6000):
        scope = scope_for(b"/search")
        scope["query_string"] = b"q=%d" % i
        assert (await get(app, scope)).status == 200
    l1 = cache.store.l1
    assert l1 is not None and len(l1) <= 200
    members = sum(len(keys) for keys in cache.invalidator.local.values())
    # Two index names per entry (the path and its one ancestor); the prune is amortised.
    assert members <= 2 * 2 * 1000 + 2 * 2 * len(l1)
    assert members < 6000
