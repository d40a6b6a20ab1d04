"""The memo: repeated requests skip parsing and hashing, never at the cost of a wrong answer.

It maps a request line and the values of the headers the cache reads to the key the full
path chose; headers the cache never reads (trace ids, user agents) do not split it, and
headers it may read (credentials, tenant, Vary, validators) always do, whatever their
case or however late their relevance is learnt (a route's declared header, a response's
``Vary``).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Annotated, Any

from fastapi import FastAPI, Header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastapi_tiered_cache import CacheSettings, TieredCache, TieredCacheMiddleware

from .helpers import CATCH_ALL, SECRET, FakeClock

Headers = list[tuple[bytes, bytes]]


class Exchange:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.lower(): v for k, v in message.get("headers", ())}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


def scope_for(path: str, headers: Headers, method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


class EchoOrigin:
    """Answers with what it was asked by whom: the body names every input of the answer."""

    def __init__(self, vary: str | None = None) -> None:
        self.vary = vary
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = expected_body(scope["path"], headers, self.vary)
        response: Headers = [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=60")]
        if self.vary:
            response.append((b"vary", self.vary.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": response})
        await send({"type": "http.response.body", "body": body})


def expected_body(path: str, headers: dict[str, str], vary: str | None) -> bytes:
    parts = [
        path,
        headers.get("authorization", "-"),
        headers.get("x-tenant-id", "-"),
        headers.get(vary.lower(), "-") if vary else "",
    ]
    return "|".join(parts).encode()


async def ask(app: Any, path: str, headers: Headers) -> Exchange:
    exchange = Exchange()
    await app(scope_for(path, headers), exchange.receive, exchange.send)
    return exchange


def make(origin: Any, **options: Any) -> tuple[TieredCacheMiddleware, TieredCache]:
    clock = FakeClock()
    options.setdefault("rules", [CATCH_ALL])  # a raw origin: opted in, as a user would
    cache = TieredCache(CacheSettings(secret_key=SECRET, **options), clock=clock, l1_timer=clock)
    return TieredCacheMiddleware(origin, cache=cache), cache


async def test_headers_the_cache_never_reads_do_not_split_the_memo() -> None:
    origin = EchoOrigin()
    app, cache = make(origin)
    ids = itertools.count()
    for _ in range(5):
        noise = [(b"x-request-id", str(next(ids)).encode()), (b"user-agent", b"ua")]
        answer = await ask(app, "/items", noise)
        assert answer.body == b"/items|-|-|"
    assert origin.calls == 1
    assert app.memo is not None and len(app.memo.keys) == 1
    await cache.close()


async def test_a_header_named_in_another_case_takes_the_full_path() -> None:
    origin = EchoOrigin()
    app, cache = make(origin)
    await ask(app, "/items", [])
    await ask(app, "/items", [])  # remembered: anonymous
    # A server that does not lower-case names: the memo must not read this as anonymous.
    answer = await ask(app, "/items", [(b"Authorization", b"Bearer mallory")])
    assert answer.body == b"/items|Bearer mallory|-|"
    await cache.close()


async def test_a_response_vary_is_learnt_and_splits_later_requests() -> None:
    origin = EchoOrigin(vary="Accept-Language")
    app, cache = make(origin)
    en = [(b"accept-language", b"en")]
    fr = [(b"accept-language", b"fr")]
    assert (await ask(app, "/doc", en)).body == b"/doc|-|-|en"
    assert (await ask(app, "/doc", en)).headers[b"x-cache"] == b"HIT"  # learns the Vary
    assert (await ask(app, "/doc", en)).headers[b"x-cache"] == b"HIT"  # from the memo
    french = await ask(app, "/doc", fr)
    assert (french.body, french.headers[b"x-cache"]) == (b"/doc|-|-|fr", b"MISS")
    assert app.memo is not None and b"accept-language" in app.memo.watched
    await cache.close()


async def test_a_route_declared_header_is_learnt() -> None:
    api = FastAPI()

    @api.get("/greet")
    async def greet(x_locale: Annotated[str, Header()] = "en") -> dict[str, str]:
        return {"locale": x_locale}

    app, cache = make(api)

    async def get(locale: bytes) -> Exchange:
        exchange = Exchange()
        scope = scope_for("/greet", [(b"x-locale", locale)])
        scope["app"] = api  # as Starlette sets it before its middleware
        await app(scope, exchange.receive, exchange.send)
        return exchange

    for _ in range(3):
        assert (await get(b"de")).body == b'{"locale":"de"}'
    assert (await get(b"it")).body == b'{"locale":"it"}'
    assert app.memo is not None and b"x-locale" in app.memo.watched
    await cache.close()


async def test_validators_and_ranges_never_use_the_memo() -> None:
    origin = EchoOrigin()
    app, cache = make(origin)
    first = await ask(app, "/items", [])
    etag = first.headers[b"etag"]
    await ask(app, "/items", [])
    conditional = await ask(app, "/items", [(b"if-none-match", etag)])
    assert conditional.status == 304
    ranged = await ask(app, "/items", [(b"range", b"bytes=0-2")])
    assert (ranged.status, ranged.body) == (206, b"/it")
    await cache.close()


async def test_a_generation_purge_is_not_bypassed_by_the_memo() -> None:
    origin = EchoOrigin()
    app, cache = make(origin)
    await ask(app, "/items", [])
    await ask(app, "/items", [])
    await cache.invalidate_all()
    assert (await ask(app, "/items", [])).headers[b"x-cache"] == b"MISS"
    assert origin.calls == 2
    await cache.close()


# -- property: whatever the sequence, every answer is the origin's answer to that request --

NAMES = st.sampled_from([b"authorization", b"Authorization", b"AUTHORIZATION"])
AUTH = st.one_of(st.none(), st.sampled_from([b"Bearer alice", b"Bearer bob"]))
TENANT = st.one_of(st.none(), st.sampled_from([b"t1", b"t2"]))
LANG = st.one_of(st.none(), st.sampled_from([b"en", b"fr"]))
NOISE = st.lists(
    st.tuples(
        st.sampled_from([b"x-request-id", b"user-agent", b"traceparent"]),
        st.sampled_from([b"", b"1", b"abc"]),
    ),
    max_size=3,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Headers]:
    headers: Headers = list(draw(NOISE))
    auth = draw(AUTH)
    if auth is not None:
        headers.append((draw(NAMES), auth))
    tenant = draw(TENANT)
    if tenant is not None:
        headers.append((b"x-tenant-id", tenant))
    lang = draw(LANG)
    if lang is not None:
        headers.append((b"accept-language", lang))
    return draw(st.sampled_from(["/a", "/b"])), draw(st.permutations(headers))


TIERS = st.sampled_from(["l1", "l1+l2", "l2"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TIERS, st.booleans(), st.lists(requests(), min_size=1, max_size=25))
def test_every_answer_is_the_origins_answer_to_that_request(
    tiers: str, vary: bool, script: list[tuple[str, Headers]]
) -> None:
    async def run() -> None:
        origin = EchoOrigin(vary="Accept-Language" if vary else None)
        if tiers == "l1":
            app, cache = make(origin)
        else:
            app, cache = await make_l2(origin, l1_max_entries=0 if tiers == "l2" else 10_000)
        try:
            for path, headers in script:
                answer = await ask(app, path, headers)
                seen = {k.decode().lower(): v.decode() for k, v in headers}
                expected = expected_body(path, seen, origin.vary)
                assert answer.body == expected, (answer.headers.get(b"cache-status"), headers)
        finally:
            await cache.close()

    asyncio.run(run())


async def make_l2(origin: Any, **options: Any) -> tuple[TieredCacheMiddleware, TieredCache]:
    """A cache with a (fake) Redis L2 whose invalidation bus is up, as after start-up: the
    memo trusts its generation counters only while the bus delivers."""
    import fakeredis

    clock = FakeClock()
    cache = TieredCache(
        CacheSettings(secret_key=SECRET, rules=[CATCH_ALL], **options),
        redis=fakeredis.FakeAsyncRedis(),
        clock=clock,
        l1_timer=clock,
    )
    cache.start_background()
    for _ in range(200):
        if cache.generations.trusted:
            break
        await asyncio.sleep(0.01)
    assert cache.generations.trusted
    return TieredCacheMiddleware(origin, cache=cache), cache


class FullPaths:
    """Counts requests that took the full path (parse, route, identify, hash)."""

    def __init__(self, monkeypatch: Any) -> None:
        from fastapi_tiered_cache import middleware

        self.count = 0
        original = middleware.Responder.__call__

        async def counted(responder: Any, scope: Any, receive: Any, send: Any) -> None:
            self.count += 1
            await original(responder, scope, receive, send)

        monkeypatch.setattr(middleware.Responder, "__call__", counted)


async def test_without_l1_repeats_are_answered_from_l2_by_the_memo(monkeypatch: Any) -> None:
    origin = EchoOrigin()
    app, cache = await make_l2(origin, l1_max_entries=0)
    full = FullPaths(monkeypatch)
    await ask(app, "/items", [])  # miss
    await ask(app, "/items", [])  # L2 hit through the full path: remembered
    assert full.count == 2
    for _ in range(3):
        hit = await ask(app, "/items", [(b"x-request-id", b"1")])
        assert hit.body == b"/items|-|-|"
        assert hit.headers[b"cache-status"].endswith(b"detail=l2")
    assert full.count == 2
    assert origin.calls == 1
    await cache.close()


async def test_an_entry_gone_from_l1_is_fetched_from_l2_then_served_from_l1(
    monkeypatch: Any,
) -> None:
    origin = EchoOrigin()
    app, cache = await make_l2(origin)
    full = FullPaths(monkeypatch)
    await ask(app, "/items", [])
    await ask(app, "/items", [])  # L1 hit through the full path: remembered
    assert cache.store.l1 is not None
    cache.store.l1.clear()  # as after L1's own lifetime ran out
    assert (await ask(app, "/items", [])).headers[b"cache-status"].endswith(b"detail=l2")
    assert (await ask(app, "/items", [])).headers[b"cache-status"].endswith(b"detail=l1")
    assert full.count == 2
    await cache.invalidate_path("/items")  # gone from both tiers: the full path, a miss
    assert (await ask(app, "/items", [])).headers[b"x-cache"] == b"MISS"
    assert origin.calls == 2
    await cache.close()
