"""The fail-closed machinery, piece by piece: route verdicts, dependency overrides, what the
middleware can see, the memo and credential names, bounded parsing, ``root_path``, rules,
soft purges, private responses and the settings that guard them (issue 14)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, Query, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPBearer
from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

from fastapi_tiered_cache import (
    CacheSettings,
    TieredCache,
    TieredCacheMiddleware,
    get_cache,
    install,
)
from fastapi_tiered_cache.exceptions import ConfigurationError
from fastapi_tiered_cache.keys import filter_query, normalize_query, vary_values
from fastapi_tiered_cache.request import RequestInfo, route_path
from fastapi_tiered_cache.routes import NOT_FOUND, RouteTable, cache_policy
from fastapi_tiered_cache.settings import load_settings
from fastapi_tiered_cache.verdicts import Refusal

from .helpers import SECRET, FakeClock, Origin, make_cache


def info_for(path: str, headers: list[tuple[bytes, bytes]] | None = None, **scope: Any) -> Any:
    base: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *(headers or [])],
    }
    return RequestInfo.from_scope({**base, **scope})


# -- route verdicts ----------------------------------------------------------------------


class Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    x_a: str | None = None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: str | None = None


class Plain(BaseModel):
    x_b: str | None = None


class Sub(HTTPBearer):
    """A subclass that changes nothing: still not provably the stock scheme."""


sub = Sub()


def verdict_app() -> FastAPI:
    app = FastAPI()

    @app.get("/stock")
    async def stock(k: Annotated[str, Depends(APIKeyHeader(name="X-Key"))]) -> None: ...

    @app.get("/stock-cookie")
    async def stock_cookie(k: Annotated[str, Depends(APIKeyCookie(name="Sess"))]) -> None: ...

    @app.get("/subclass")
    async def subclass(c: Annotated[Any, Depends(sub)]) -> None: ...

    @app.get("/request")
    async def request(request: Request) -> None: ...

    @app.get("/alias-path")
    async def alias_path(
        v: Annotated[str | None, Header(validation_alias=AliasPath("x", 0))] = None,
    ) -> None: ...

    @app.get("/choices")
    async def choices(
        v: Annotated[str | None, Cookie(validation_alias=AliasChoices("Pref", "pref_v2"))] = None,
    ) -> None: ...

    @app.get("/models")
    async def models(h: Annotated[Plain, Header()]) -> None: ...

    @app.get("/extra-header")
    async def extra_header(h: Annotated[Extra, Header()]) -> None: ...

    @app.get("/extra-cookie")
    async def extra_cookie(c: Annotated[Strict, Cookie()]) -> None: ...

    @app.get("/extra-query")
    async def extra_query(q: Annotated[Strict, Query()]) -> None: ...

    @app.get("/opted-in")
    @cache_policy(vary=["x-anything"])
    async def opted_in(request: Request) -> None: ...

    app.mount("/static", Starlette())
    return app


@pytest.mark.parametrize(
    ("path", "opaque", "why"),
    [
        ("/stock", None, ""),
        ("/stock-cookie", None, ""),
        ("/subclass", Refusal.OPAQUE_DEPENDENCY, "Sub is not a stock FastAPI security scheme"),
        ("/request", Refusal.REQUEST_OBJECT, "takes the Request"),
        ("/alias-path", Refusal.OPAQUE_INPUT, "AliasPath"),
        ("/choices", None, ""),
        ("/models", None, ""),
        ("/extra-header", Refusal.OPAQUE_INPUT, "accepts or forbids extra fields"),
        ("/extra-cookie", Refusal.OPAQUE_INPUT, "accepts or forbids extra fields"),
        ("/extra-query", None, ""),
        ("/opted-in", Refusal.REQUEST_OBJECT, "takes the Request"),
        ("/static/x", Refusal.OPAQUE_ROUTE, "a Mount of Starlette"),
        ("/docs", Refusal.OPAQUE_ROUTE, "plain Starlette route"),
        ("/nowhere", None, ""),
    ],
)
def test_route_verdicts(path: str, opaque: Refusal | None, why: str) -> None:
    found = RouteTable(verdict_app()).find(info_for(path))
    assert found.opaque is opaque
    assert why in found.why


def test_our_own_get_cache_dependency_stays_transparent() -> None:
    app = FastAPI()

    @app.get("/stats")
    async def stats(cache: Annotated[TieredCache, Depends(get_cache)]) -> None: ...

    found = RouteTable(app).find(info_for("/stats"))
    assert found.opaque is None and found.vary == ()


def test_what_routes_read_is_named_exactly() -> None:
    table = RouteTable(verdict_app())
    assert table.find(info_for("/stock")).credential_headers == ("x-key",)
    assert table.find(info_for("/stock-cookie")).credential_cookies == ("Sess",)  # case kept
    assert table.find(info_for("/choices")).vary == ("cookie:Pref", "cookie:pref_v2", "cookie:v")
    assert table.find(info_for("/models")).vary == ("header:x-b",)
    assert table.find(info_for("/extra-query")).query_all
    assert table.find(info_for("/opted-in")).policy is not None


def test_an_unknown_route_type_ahead_makes_what_follows_opaque() -> None:
    from starlette.routing import BaseRoute, Match

    class Anything(BaseRoute):
        def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
            return Match.NONE, {}

    app = FastAPI()

    @app.get("/before")
    async def before() -> None: ...

    app.router.routes.append(Anything())

    @app.get("/after")
    async def after() -> None: ...

    table = RouteTable(app)
    assert table.find(info_for("/before")).opaque is None
    assert table.find(info_for("/after")).opaque is Refusal.OPAQUE_ROUTE
    assert "Anything" in table.find(info_for("/after")).why


def test_host_routes_are_matched_by_host() -> None:
    app = FastAPI()
    app.host("api.example.com", Starlette())

    @app.get("/page")
    async def page() -> None: ...

    table = RouteTable(app)
    api = info_for("/page", [(b"host", b"api.example.com")])
    api.scope["headers"] = [(b"host", b"api.example.com")]
    assert table.find(api).opaque is Refusal.OPAQUE_ROUTE
    assert table.find(info_for("/page")).opaque is None


def test_unmatched_paths_are_opaque_when_the_app_answers_them_itself() -> None:
    plain = FastAPI()
    assert RouteTable(plain).find(info_for("/x")) is NOT_FOUND

    custom = FastAPI()

    @custom.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse(request.headers.get("x-who", ""), 404)

    found = RouteTable(custom).find(info_for("/x"))
    assert found.opaque is Refusal.OPAQUE_ROUTE and "404 handler" in found.why


def test_routes_added_later_are_read() -> None:
    app = FastAPI()
    table = RouteTable(app)
    assert table.find(info_for("/late")) is NOT_FOUND

    @app.get("/late")
    async def late(request: Request) -> None: ...

    assert table.find(info_for("/late")).opaque is Refusal.REQUEST_OBJECT


def test_included_routers_are_read_with_their_dependencies() -> None:
    def guard(x_team: Annotated[str, Header()]) -> None: ...

    app = FastAPI()
    router = APIRouter(prefix="/team", dependencies=[Depends(guard)])

    @router.get("/{team_id}")
    async def team(team_id: int) -> None: ...

    inner = APIRouter(prefix="/sub")

    @inner.get("/raw")
    async def raw(request: Request) -> None: ...

    router.include_router(inner)
    app.include_router(router)
    table = RouteTable(app)
    assert table.find(info_for("/team/7")).vary == ("header:x-team",)
    assert table.find(info_for("/team/sub/raw")).opaque is Refusal.REQUEST_OBJECT


# -- dependency overrides ------------------------------------------------------------------


def real_user(x_user: Annotated[str | None, Header()] = None) -> str | None:
    return x_user


def test_overrides_in_force_are_followed_and_marked_in_the_key() -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(user: Annotated[str | None, Depends(real_user)]) -> None: ...

    table = RouteTable(app)
    assert table.find(info_for("/me")).vary == ("header:x-user",)
    assert not table.overridden

    def fake(x_other: Annotated[str | None, Header()] = None) -> str | None:
        return x_other

    app.dependency_overrides[real_user] = fake
    first = table.find(info_for("/me"))
    assert "header:x-other" in first.vary and "header:x-user" not in first.vary
    assert any(name.startswith("~overrides.") for name in first.vary)
    assert table.overridden

    def taking_request(request: Request) -> str:
        return "x"

    app.dependency_overrides[real_user] = taking_request
    second = table.find(info_for("/me"))
    assert second.opaque is Refusal.REQUEST_OBJECT
    app.dependency_overrides[real_user] = fake
    third = table.find(info_for("/me"))
    assert third.vary != first.vary  # a new marker: never an entry made under other overrides
    app.dependency_overrides.clear()
    assert table.find(info_for("/me")).vary == ("header:x-user",)


async def test_the_memo_never_answers_while_overrides_are_in_force() -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(user: Annotated[str | None, Depends(real_user)]) -> dict[str, Any]:
        return {"user": user}

    install(app, CacheSettings(secret_key=SECRET))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(3):
            await client.get("/me")
        memo = app.__dict__["_tiered_cache_ahead"].memo
        assert len(memo.keys) == 1
        app.dependency_overrides[real_user] = lambda: "fake"
        assert memo.find({"type": "http", "method": "GET", "path": "/me", "headers": []}) is None
        overridden = await client.get("/me")
        assert overridden.json() == {"user": "fake"}
        again = await client.get("/me")
        assert again.json() == {"user": "fake"} and again.headers["x-cache"] == "HIT"
        app.dependency_overrides.clear()
        back = await client.get("/me")
        assert back.json() == {"user": None}


# -- what the middleware can see -----------------------------------------------------------


async def test_a_blind_middleware_bypasses_unless_a_rule_covers_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin = Origin()
    cache = make_cache(catch_all=False, rules=[{"path": "/covered/**"}])
    middleware = TieredCacheMiddleware(origin, cache=cache)
    transport = httpx.ASGITransport(app=middleware)
    caplog.set_level(logging.INFO, "fastapi_tiered_cache")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        blind = [await client.get("/page") for _ in range(2)]
        covered = [await client.get("/covered/x") for _ in range(2)]
    assert all(r.headers["cache-status"].endswith("detail=opaque-app") for r in blind)
    assert [r.headers["x-cache"] for r in covered] == ["MISS", "HIT"]
    said = [r for r in caplog.records if "cannot see the routes of Origin" in r.getMessage()]
    assert len(said) == 1
    await cache.close()


async def test_a_cache_mounted_inside_another_app_does_not_use_the_outer_routes() -> None:
    inner = Origin()
    cache = make_cache(catch_all=False)
    outer = FastAPI()

    @outer.get("/sub/page")
    async def page() -> dict[str, str]:
        return {"outer": "route"}

    outer.router.routes.insert(0, Mount("/sub", app=TieredCacheMiddleware(inner, cache=cache)))
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/sub/page")
    assert response.headers["cache-status"].endswith("detail=opaque-app")
    await cache.close()


async def test_middleware_between_the_cache_and_the_routes_is_listed_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    @app.get("/")
    async def home() -> dict[str, str]:
        return {}

    cache = install(app, CacheSettings())
    caplog.set_level(logging.INFO, "fastapi_tiered_cache")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(3):
            await client.get("/")
    said = [r.getMessage() for r in caplog.records if "cannot see what these" in r.getMessage()]
    assert len(said) == 1 and "BaseHTTPMiddleware(" in said[0] and ".auth)" in said[0]
    assert "detail=opaque-middleware" in said[0]
    assert "CORSMiddleware" not in said[0]
    await cache.close()


# -- middleware the cache cannot see through ------------------------------------------------


class TeamGate:
    """Auth done in a plain ASGI middleware: only the blue team may read, and the route
    behind it reads nothing, so nothing the cache can see tells the requests apart."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (b"x-team", b"blue") not in scope["headers"]:
            await PlainTextResponse("members only", status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _gated_app(**settings: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/members")
    async def members() -> dict[str, str]:
        return {"news": "for the blue team"}

    @app.get("/declared")
    @cache_policy(ttl=30, vary=["x-team"])
    async def declared() -> dict[str, str]:
        return {"news": "keyed by team"}

    app.add_middleware(TeamGate)  # before install(): between the cache and the routes
    install(app, CacheSettings(secret_key=SECRET, **settings))
    return app


async def _statuses(app: FastAPI, path: str, teams: list[str | None]) -> list[tuple[int, str]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answers = []
        for team in teams:
            headers = {} if team is None else {"x-team": team}
            response = await client.get(path, headers=headers)
            answers.append((response.status_code, response.headers["cache-status"]))
    return answers


async def test_a_gate_in_a_plain_middleware_is_never_bypassed_through_the_cache() -> None:
    """The gate answers 403 to anyone not on the blue team; the route behind it reads
    nothing. Cached by URL, the blue team's 200 was served to everyone (a HIT)."""
    answers = await _statuses(_gated_app(), "/members", ["blue", "blue", None, "red"])
    assert [status for status, _ in answers] == [200, 200, 403, 403]
    assert all(status.endswith("fwd=bypass; detail=opaque-middleware") for _, status in answers)


async def test_a_policy_that_says_what_the_route_varies_on_opts_back_in() -> None:
    answers = await _statuses(_gated_app(), "/declared", ["blue", "blue", None, "red"])
    assert [status for status, _ in answers] == [200, 200, 403, 403]
    assert "hit" in answers[1][1] and "hit" not in answers[2][1] and "hit" not in answers[3][1]


async def test_trusted_middleware_are_seen_through() -> None:
    trusted = f"{TeamGate.__module__}.{TeamGate.__qualname__}"
    app = _gated_app(trusted_middleware=[trusted])
    answers = await _statuses(app, "/members", ["blue", "blue"])
    assert answers[1][1].startswith("fastapi-tiered-cache; hit")


async def test_a_function_middleware_is_trusted_by_its_function_path() -> None:
    app = FastAPI()

    @app.middleware("http")
    async def timing(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    @app.get("/")
    async def home() -> dict[str, str]:
        return {}

    path = f"{timing.__module__}.{timing.__qualname__}"
    install(app, CacheSettings(trusted_middleware=[path]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [(await client.get("/")).headers["cache-status"] for _ in range(2)]
    assert "hit" in statuses[1]


def test_trusted_middleware_must_be_dotted_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERED_CACHE_TRUSTED_MIDDLEWARE", "myapp.Timing, not a path")
    with pytest.raises(ConfigurationError, match="TRUSTED_MIDDLEWARE"):
        load_settings()
    monkeypatch.setenv("TIERED_CACHE_TRUSTED_MIDDLEWARE", "myapp.mw.Timing,myapp.main.timing")
    assert load_settings().trusted_middleware == ["myapp.main.timing", "myapp.mw.Timing"]


# -- the memo and credential names ----------------------------------------------------------


async def test_the_memo_watches_credential_names_and_screens_credential_values() -> None:
    clock = FakeClock()
    cache = TieredCache(
        CacheSettings(secret_key=SECRET, rules=[{"path": "/**"}]), clock=clock, l1_timer=clock
    )
    origin = Origin(body=lambda scope: repr(sorted(scope["headers"])).encode())
    middleware = TieredCacheMiddleware(origin, cache=cache)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for headers in ({}, {}, {}):
            await client.get("/", headers=headers)
        assert middleware.memo is not None and len(middleware.memo.keys) == 1
        alice = await client.get("/", headers={"x-acme-token": "alice"})
        bob = await client.get("/", headers={"x-acme-token": "bob"})
        shaped = await client.get("/", headers={"x-note": "Bearer carol"})
        anon = await client.get("/")
    assert b"alice" in alice.content and b"bob" in bob.content and b"carol" in shaped.content
    assert [r.headers["x-cache"] for r in (alice, bob, shaped)] == ["MISS"] * 3
    assert anon.headers["x-cache"] == "HIT" and b"alice" not in anon.content
    assert b"x-acme-token" in middleware.memo.picks
    await cache.close()


# -- keys: exact inputs, queries ------------------------------------------------------------


def test_route_read_headers_are_keyed_exactly() -> None:
    def value(*fields: tuple[bytes, bytes]) -> Any:
        return vary_values(info_for("/", list(fields)), ["header:x-lang"])[0][1]

    assert value((b"x-lang", b"fr"), (b"x-lang", b"en")) != value((b"x-lang", b"fr, en"))
    assert value((b"x-lang", b"fr  CA")) != value((b"x-lang", b"fr CA"))
    assert value((b"x-lang", b"")) != value()
    assert value((b"x-lang", b"fr")) == value((b"x-lang", b"fr"))


def test_route_read_cookies_are_keyed_by_case_sensitive_name() -> None:
    def value(cookie: bytes) -> Any:
        return vary_values(info_for("/", [(b"cookie", cookie)]), ["cookie:currency"])[0][1]

    assert value(b"CURRENCY=EUR") is None
    assert value(b"currency=EUR") == "EUR"
    assert value(b'currency="EUR"') == "EUR"  # Starlette unquotes: as the app reads it


def test_queries_share_a_form_only_when_the_app_reads_the_same_values() -> None:
    assert normalize_query(b"q=1&%71=2") != normalize_query(b"%71=2&q=1")
    assert normalize_query(b"b=2&a=1") == normalize_query(b"a=1&b=2")


def test_a_query_filter_never_drops_declared_or_credential_parameters() -> None:
    def keep(name: str) -> bool:
        return name in {"page"} or "token" in name

    query = b"page=2&utm_source=x&access_token=abc&%70age=3"
    assert filter_query(query, [], [], keep) == b"page=2&access_token=abc&%70age=3"
    assert filter_query(query, None, ["*"], keep) == b"page=2&access_token=abc&%70age=3"


# -- bounded parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [(b"cookie", b"; ".join(b"c%d=v" % i for i in range(300)))],
        [(b"x-big", b"v" * 40_000)],
        [(b"x-h%d" % i, b"v") for i in range(300)],
        [(b"x-h%d" % i, b"v" * 30_000) for i in range(3)],
    ],
    ids=["cookies", "value", "fields", "total"],
)
def test_requests_beyond_the_bounds_are_oversized(headers: list[tuple[bytes, bytes]]) -> None:
    assert info_for("/", headers).oversized
    assert not info_for("/", [(b"cookie", b"a=1; b=2")]).oversized


async def test_an_overlong_tenant_bypasses() -> None:
    cache = make_cache()
    info = info_for("/", [(b"x-tenant-id", b"t" * 300)])
    assert await cache.identify(info) is Refusal.OVERSIZED
    await cache.close()


# -- root_path -------------------------------------------------------------------------------


def test_the_routed_path_drops_the_root_path() -> None:
    assert route_path("/api/items", "/api") == "/items"
    assert route_path("/api", "/api") == ""
    assert route_path("/apix/items", "/api") == "/apix/items"
    assert route_path("/items", "/api") == "/items"
    assert info_for("/api/admin", root_path="/api").path == "/admin"


async def test_purges_and_tags_match_the_routed_path_behind_a_root_path() -> None:
    app = FastAPI()
    version = {"n": 1}

    @app.get("/items/{item_id}")
    @cache_policy(tags=["item:{item_id}"])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id, "v": version["n"]}

    @app.post("/items/{item_id}")
    async def update(item_id: int) -> dict[str, int]:
        version["n"] += 1
        return {"id": item_id}

    cache = install(app, CacheSettings(secret_key=SECRET))
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def read() -> tuple[int, str]:
            response = await client.get("/api/items/1")
            return response.json()["v"], response.headers["x-cache"]

        assert [await read(), await read()] == [(1, "MISS"), (1, "HIT")]
        version["n"] = 2
        assert await cache.invalidate_path("/items/1") >= 1
        assert await read() == (2, "MISS")
        version["n"] = 3
        assert await cache.invalidate_tags("item:1") >= 1
        assert await read() == (3, "MISS")
        await read()
        await client.post("/api/items/1")
        assert await read() == (4, "MISS")  # the write purged the routed path
        version["n"] = 6
        assert await cache.invalidate_request("GET", "http://t/api/items/1") == 1
        assert await read() == (6, "MISS")
    await cache.close()


# -- settings ---------------------------------------------------------------------------------


def test_an_empty_identity_headers_setting_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"IDENTITY_HEADERS: .*at least one header"):
        load_settings({}, identity_headers="")


# -- soft purges (issue 14, item 9) --------------------------------------------------------


async def test_a_soft_purge_is_revalidated_never_served_stale_while_revalidating(
    redis_url: str,
) -> None:
    clock = FakeClock()
    state = {"v": 1}
    origin = Origin(
        body=lambda scope: b"v%d" % state["v"],
        headers=[("cache-control", "max-age=60, stale-while-revalidate=600"), ("etag", '"e"')],
    )
    client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(clock, redis=client, redis_timeout=1.0, l1_max_entries=0)
    middleware = TieredCacheMiddleware(origin, cache=cache)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/doc")).content == b"v1"
        assert (await c.get("/doc")).headers["x-cache"] == "HIT"
        state["v"] = 2
        origin.headers = [("cache-control", "max-age=60"), ("etag", '"e2"')]
        assert await cache.invalidate_path("/doc", soft=True) == 1
        after = await c.get("/doc")
    assert after.content == b"v2" and after.headers["x-cache"] != "STALE"
    await asyncio.sleep(0)
    await cache.close()
    await client.aclose()


def test_standard_headers_are_not_screened_for_credential_shapes() -> None:
    """A browser's standard headers cannot carry a credential by their grammar: their values
    are not screened (the memo skips them, and the full path agrees)."""
    cache = make_cache()
    for name in (b"user-agent", b"accept", b"referer", b"sec-fetch-site", b"x-request-id"):
        info = info_for("/", [(name, b"Bearer abc.eyJhbGciOi.eyJzdWIi.sig")])
        identity = asyncio.run(cache.identify(info))
        assert getattr(identity, "is_anonymous", False), (name, identity)
    custom = info_for("/", [(b"x-custom", b"Bearer abc")])
    assert not asyncio.run(cache.identify(custom)).is_anonymous  # type: ignore[union-attr]


async def test_a_blind_cache_says_so_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    cache = make_cache(catch_all=False)
    middleware = TieredCacheMiddleware(Origin(), cache=cache)
    caplog.set_level(logging.INFO, "fastapi_tiered_cache")
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    middleware.app = app  # a raw app that answers the lifespan
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await middleware({"type": "lifespan", "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert any("cannot see the routes of" in r.getMessage() for r in caplog.records)


async def test_the_stack_is_followed_through_middleware_that_name_their_app_otherwise() -> None:
    class Tracer:
        def __init__(self, app: Any) -> None:
            self._app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self._app(scope, receive, send)

    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"home": "page"}

    cache = install(app, CacheSettings(placement="middleware"))
    app.add_middleware(Tracer)  # outside the cache: the stack reaches it through `_app`
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        replies = [await client.get("/") for _ in range(2)]
    assert [r.headers["x-cache"] for r in replies] == ["MISS", "HIT"]
    await cache.close()
