"""End to end: a response is only ever served to the identity and tenant it was made for.

The origin is a FastAPI app whose answers depend on who asks but which declares no
``Vary``: the cache alone must keep callers apart. It has three kinds of route:

- ``/raw/{item}``: takes the raw ``Request`` and opts in with ``@cache_policy()``; it
  echoes the ``Authorization`` and ``X-API-Key`` headers, the ``session`` cookie and
  ``X-Tenant-ID``, all of which the cache treats as identity or tenant;
- ``/declared/{item}``: reads the same through FastAPI ``Header()``/``Cookie()``/``Query()``
  parameters, plus ``X-User`` (a header set by an auth proxy: the cache treats it as a
  credential on every route, by its name, whether or not a route declares it);
- ``/whoami``: takes the raw ``Request`` with no policy: it must never be cached.

Hypothesis drives sequences of requests from a small pool of callers (anonymous, bearer
and basic tokens, an empty ``Authorization``, an API key, session cookies, ``X-User``,
combinations) and tenants, on a few URLs, with time passing in between, and checks every
response, hit or miss:

- the body is exactly what the origin returns for *that* request's caller and tenant;
- it is a hit exactly when a request with the same key inputs (what the route reads, the
  tenant, the raw path, the query up to the order of distinct names) was answered within
  the entry's lifetime before, so the isolation check runs on hits, not only on misses;
  hits served from Redis say so.

Variants: L1 only (the middleware wrapping the app from outside, and ``install``); L2 only
(fakeredis, ``l1_max_entries=0``); both tiers on a real redis-server.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Annotated, Any

import fakeredis
import httpx
import pytest
import redis.asyncio
from fastapi import Cookie, FastAPI, Header, Query, Request, Response
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from fastapi_tiered_cache import (
    CacheSettings,
    TieredCache,
    TieredCacheMiddleware,
    cache_policy,
    install,
)

SECRET = "isolation-secret-0123456789abcdef"
TTL = 60  # default_ttl: the origin sends no Cache-Control
L1_MAX_TTL = 30
START = 1_700_000_000.0

# Request headers of each caller.
CALLERS: dict[str, dict[str, str]] = {
    "anonymous": {},
    "bearer-alice": {"authorization": "Bearer alice"},
    "bearer-bob": {"authorization": "Bearer bob"},
    "bearer-Alice": {"authorization": "Bearer Alice"},
    "basic-alice": {"authorization": "Basic YWxpY2U6cHc="},
    "empty-authorization": {"authorization": ""},
    "api-key": {"x-api-key": "k-123"},
    "session-alice": {"cookie": "session=s-alice"},
    "session-bob": {"cookie": "session=s-bob; theme=dark"},
    "bearer-alice+session-bob": {"authorization": "Bearer alice", "cookie": "session=s-bob"},
    "proxy-user-alice": {"x-user": "alice"},
    "proxy-user-bob": {"x-user": "bob"},
    "proxy-user-bob+bearer-bob": {"x-user": "bob", "authorization": "Bearer bob"},
}
TENANTS: list[bytes | None] = [
    None,
    b"acme",
    b"globex",
    b"ACME",
    b"acme corp",
    "ü".encode("latin-1"),
]
URLS = [
    "/whoami",
    "/raw/1",
    "/raw/2",
    "/raw/%31",
    "/raw/1?a=1&b=2",
    "/raw/1?b=2&a=1",
    "/raw/1?a=1&a=2",
    "/raw/1?a=2&a=1",
    "/declared/1",
    "/declared/1?b=2&a=1",
    "/declared/1?a=1&b=2",
]


def origin_body(
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str | None],
    session: str | None,
) -> bytes:
    """What the origin answers: everything it knows about who asked, and for what."""
    answer = {
        "path": path,
        "query": sorted(query, key=lambda pair: pair[0]),  # stable: a name's values keep order
        "authorization": headers.get("authorization"),
        "api_key": headers.get("x-api-key"),
        "session": session,
        "tenant": headers.get("x-tenant-id"),
    }
    if "x-user" in headers:
        answer["user"] = headers["x-user"]
    return json.dumps(answer).encode()


def make_app() -> FastAPI:
    app = FastAPI()

    def from_request(request: Request) -> Response:
        headers: dict[str, str | None] = {
            name: request.headers.get(name)
            for name in ("authorization", "x-api-key", "x-tenant-id")
        }
        body = origin_body(
            request.url.path,
            request.query_params.multi_items(),
            headers,
            request.cookies.get("session"),
        )
        return Response(body, media_type="application/json")

    @app.get("/whoami")
    async def whoami(request: Request) -> Response:
        return from_request(request)

    @app.get("/raw/{item}")
    @cache_policy()
    async def raw(request: Request) -> Response:
        return from_request(request)

    @app.get("/declared/{item}")
    async def declared(
        item: str,
        a: Annotated[list[str] | None, Query()] = None,
        b: Annotated[list[str] | None, Query()] = None,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
        x_user: Annotated[str | None, Header()] = None,
        x_tenant_id: Annotated[str | None, Header()] = None,
        session: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        headers = {
            "authorization": authorization,
            "x-api-key": x_api_key,
            "x-user": x_user,
            "x-tenant-id": x_tenant_id,
        }
        query = [("a", value) for value in a or []] + [("b", value) for value in b or []]
        return Response(
            origin_body(f"/declared/{item}", query, headers, session),
            media_type="application/json",
        )

    return app


@dataclass(frozen=True)
class Ask:
    caller: str
    tenant: bytes | None
    url: str

    def headers(self) -> dict[str, str | bytes]:
        headers: dict[str, str | bytes] = dict(CALLERS[self.caller])
        if self.tenant is not None:
            headers["x-tenant-id"] = self.tenant
        return headers

    @property
    def declared(self) -> bool:
        return self.url.startswith("/declared/")

    @property
    def cached(self) -> bool:
        return not self.url.startswith("/whoami")

    def session(self) -> str | None:
        cookie = CALLERS[self.caller].get("cookie", "")
        cookies = dict(part.strip().split("=", 1) for part in cookie.split(";") if part)
        return cookies.get("session")

    def expected_body(self) -> bytes:
        raw_path, _, query = self.url.partition("?")
        names = ["authorization", "x-api-key", *(["x-user"] if self.declared else [])]
        headers: dict[str, str | None] = {name: CALLERS[self.caller].get(name) for name in names}
        headers["x-tenant-id"] = None if self.tenant is None else self.tenant.decode("latin-1")
        return origin_body(
            urllib.parse.unquote(raw_path),
            urllib.parse.parse_qsl(query, keep_blank_values=True),
            headers,
            self.session(),
        )

    def entry(self) -> tuple[object, ...]:
        """What selects a cache entry: what the route reads, tenant, raw path, query."""
        raw_path, _, query = self.url.partition("?")
        pairs = sorted(query.split("&") if query else [], key=lambda p: p.partition("=")[0])
        caller = CALLERS[self.caller]
        # X-User is a credential by its name ("user"), read or not: it always splits.
        reads = [caller.get("authorization"), caller.get("x-api-key"), self.session()]
        reads.append(caller.get("x-user"))
        return (tuple(reads), self.tenant, raw_path, tuple(pairs))


@dataclass(frozen=True)
class Wait:
    seconds: int


@st.composite
def scripts(draw: st.DrawFn) -> list[Ask | Wait]:
    """A sequence of requests over a few of the callers, tenants and URLs (so they repeat)."""
    callers = draw(st.lists(st.sampled_from(sorted(CALLERS)), min_size=1, max_size=3))
    tenants = draw(st.lists(st.sampled_from(TENANTS), min_size=1, max_size=2))
    urls = draw(st.lists(st.sampled_from(URLS), min_size=1, max_size=2))
    ask = st.builds(Ask, st.sampled_from(callers), st.sampled_from(tenants), st.sampled_from(urls))
    wait = st.builds(Wait, st.sampled_from([1, 5, 20, 29, 31, 45, 61]))
    return draw(st.lists(st.one_of(ask, ask, ask, ask, ask, wait), min_size=8, max_size=30))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """One scenario: the cache in front of the app, and the model of what is stored."""

    clock: Clock
    lifetime: float  # seconds an answer is served from the cache after it was stored
    l2_only: bool = False
    stored_at: dict[tuple[object, ...], float] = field(default_factory=dict)
    hits: int = 0

    async def play(self, client: httpx.AsyncClient, script: list[Ask | Wait]) -> None:
        try:
            await self._play(client, script)
        finally:
            if currently_in_test_context():
                event(f"hits: {min(self.hits, 5)}{'+' if self.hits >= 5 else ''}")

    async def _play(self, client: httpx.AsyncClient, script: list[Ask | Wait]) -> None:
        for step in script:
            if isinstance(step, Wait):
                self.clock.now += step.seconds
                continue
            response = await client.get(step.url, headers=step.headers())
            assert response.status_code == 200, (step, response.text)
            expected = step.expected_body()
            assert response.content == expected, (step, response.headers)
            assert response.headers["content-length"] == str(len(expected))
            x_cache = response.headers["x-cache"]
            if not step.cached:
                assert x_cache == "BYPASS", (step, response.headers)
                continue
            since = self.stored_at.get(step.entry())
            should_hit = since is not None and self.clock.now - since < self.lifetime
            assert x_cache == ("HIT" if should_hit else "MISS"), (step, response.headers)
            if should_hit:
                self.hits += 1
                if self.l2_only:
                    assert "detail=l2" in response.headers["cache-status"]
            else:
                assert "stored" in response.headers["cache-status"], response.headers
                self.stored_at[step.entry()] = self.clock.now


def _settings(**options: Any) -> CacheSettings:
    return CacheSettings(
        secret_key=SECRET,
        default_ttl=TTL,
        l1_max_ttl=L1_MAX_TTL,
        redis_timeout=5.0,  # a slow test machine must not turn a Redis answer into a fault
        early_refresh=0.0,  # no probabilistic refresh: the model knows when entries expire
        **options,
    )


def _wrap(how: str, settings: CacheSettings, **options: Any) -> tuple[Any, TieredCache]:
    """The app with the cache in front: from outside (plain ASGI wrapping) or ``install``."""
    app = make_app()
    if how == "outside":
        cache = TieredCache(settings, **options)
        return TieredCacheMiddleware(app, cache=cache), cache
    return app, install(app, settings, **options)


async def _drive(app: Any, cache: TieredCache, run: Run, script: list[Ask | Wait]) -> None:
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await run.play(client, script)
    finally:
        await cache.close()


ISOLATION = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("how", ["outside", "install"])
@ISOLATION
@given(script=scripts())
def test_l1_never_serves_another_caller_or_tenant(how: str, script: list[Ask | Wait]) -> None:
    clock = Clock()
    app, cache = _wrap(how, _settings(), clock=clock, l1_timer=clock)
    run = Run(clock, lifetime=L1_MAX_TTL)  # L1 keeps an entry at most l1_max_ttl
    asyncio.run(_drive(app, cache, run, script))


async def _l2_scenario(script: list[Ask | Wait]) -> int:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    try:
        clock = Clock()
        # coalesce=False: fleet leases are released by a Lua script, which fakeredis runs
        # only with lupa installed; without it every refill of a key would first wait out
        # the previous lease (lease_ttl, in real time). The real-Redis variant coalesces.
        options = _settings(l1_max_entries=0, coalesce=False)
        app, cache = _wrap("install", options, redis=client, clock=clock)
        assert cache.store.l1 is None
        assert cache.store.l2 is not None
        run = Run(clock, lifetime=TTL, l2_only=True)
        await _drive(app, cache, run, script)
        assert cache.store.faults == 0
        return run.hits
    finally:
        await client.aclose()


@ISOLATION
@given(script=scripts())
def test_l2_never_serves_another_caller_or_tenant(script: list[Ask | Wait]) -> None:
    asyncio.run(_l2_scenario(script))


async def _real_redis_scenario(url: str, script: list[Ask | Wait]) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.flushdb()
        clock = Clock()
        app, cache = _wrap("install", _settings(), redis=client, clock=clock, l1_timer=clock)
        run = Run(clock, lifetime=TTL)  # L1 for a while, then L2 until stale
        await _drive(app, cache, run, script)
        assert cache.store.faults == 0
    finally:
        await client.aclose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(script=scripts())
def test_both_tiers_on_real_redis_never_serve_another_caller_or_tenant(
    redis_url: str, script: list[Ask | Wait]
) -> None:
    # redis_url is flushed once per test; each example flushes it again before it starts.
    asyncio.run(_real_redis_scenario(redis_url, script))


SCRIPT: list[Ask | Wait] = [
    Ask("bearer-alice", b"acme", "/raw/1"),
    Ask("bearer-bob", b"acme", "/raw/1"),
    Ask("bearer-alice", b"acme", "/raw/1"),  # hit
    Ask("bearer-alice", b"globex", "/raw/1"),
    Ask("anonymous", b"acme", "/raw/1?a=1&b=2"),
    Ask("anonymous", b"acme", "/raw/1?b=2&a=1"),  # hit
    Ask("proxy-user-alice", None, "/declared/1"),
    Ask("proxy-user-bob", None, "/declared/1"),
    Ask("proxy-user-alice", None, "/declared/1"),  # hit
    Ask("proxy-user-alice", None, "/whoami"),
    Wait(31),
    Ask("bearer-bob", b"acme", "/raw/1"),  # hit only from L2
]


@pytest.mark.parametrize("how", ["outside", "install"])
def test_a_known_script_hits_where_it_should(how: str) -> None:
    """The properties above are checked on hits: make sure a plain script produces them."""
    clock = Clock()
    app, cache = _wrap(how, _settings(), clock=clock, l1_timer=clock)
    run = Run(clock, lifetime=L1_MAX_TTL)
    asyncio.run(_drive(app, cache, run, SCRIPT))
    assert run.hits == 3


def test_a_known_script_hits_where_it_should_from_l2() -> None:
    assert asyncio.run(_l2_scenario(SCRIPT)) == 4
