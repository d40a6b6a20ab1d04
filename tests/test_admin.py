"""The admin router over HTTP, behind the cache middleware.

The first part checks the router itself against a cache whose invalidation API only
records its calls; the second runs every selector end to end against a real Redis.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Header, HTTPException, Request, Response
from pydantic import SecretStr

from fastapi_tiered_cache import (
    CachedResponse,
    CacheSettings,
    ConfigurationError,
    RouteRule,
    StoreUnavailable,
    TieredCache,
)
from fastapi_tiered_cache.admin import build_admin_router
from fastapi_tiered_cache.metrics import Event

from .helpers import SECRET, FakeClock, client_for, healthy

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


class RecordingCache(TieredCache):
    """A real cache (L1 only) whose invalidation API records its calls instead."""

    def __init__(self, **settings: Any) -> None:
        clock = FakeClock()
        super().__init__(CacheSettings(secret_key=SECRET, **settings), clock=clock, l1_timer=clock)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.stored: CachedResponse | None = None
        self.fail = False

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self.fail:
            raise StoreUnavailable("redis EVALSHA: no answer within 0.05s")
        self.calls.append((name, args, kwargs))

    async def invalidate_request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> int:
        self._call("request", method, url, headers=headers, tenant=tenant)
        return 1

    async def invalidate_path(
        self, path: str, *, tenant: str | None = None, soft: bool = False
    ) -> int:
        self._call("path", path, tenant=tenant, **({"soft": True} if soft else {}))
        return 4

    async def invalidate_prefix(
        self, prefix: str, *, tenant: str | None = None, soft: bool = False
    ) -> int:
        self._call("prefix", prefix, tenant=tenant, **({"soft": True} if soft else {}))
        return 7

    async def invalidate_tags(
        self, *tags: str, tenant: str | None = None, soft: bool = False
    ) -> int:
        self._call("tags", *tags, tenant=tenant, soft=soft)
        return 2

    async def invalidate_tenant(self, tenant: str | None) -> None:
        self._call("tenant", tenant)

    async def invalidate_identity(
        self,
        *,
        principal: str | None = None,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> None:
        self._call("identity", principal=principal, headers=headers, tenant=tenant)

    async def invalidate_all(self) -> None:
        self._call("all")

    async def lookup(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> CachedResponse | None:
        self._call("lookup", url, headers=headers, tenant=tenant)
        return self.stored


def build_app(cache: TieredCache, **router_options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(
        item_id: int, response: Response, x_user: Annotated[str | None, Header()] = None
    ) -> dict[str, object]:
        response.headers["surrogate-key"] = f"item:{item_id} items"
        return {"id": item_id, "user": x_user}

    router_options.setdefault("token", TOKEN)
    app.include_router(build_admin_router(cache, **router_options), prefix="/_cache")
    return app


@pytest.fixture
def cache() -> RecordingCache:
    # As install() mounts it: a rule keeps the admin router out of the cache and its stats.
    return RecordingCache(rules=[RouteRule(path="/_cache/**", cache=False)])


@pytest.fixture
async def client(cache: RecordingCache) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(build_app(cache), cache) as client:
        yield client


# -- building and authentication -------------------------------------------------------


def test_refuses_to_build_without_a_token_or_a_dependency(cache: RecordingCache) -> None:
    with pytest.raises(ConfigurationError, match="ADMIN_TOKEN"):
        build_admin_router(cache)
    for weak in ("", "  ", "admin", " " * 20, "x" * 15):
        with pytest.raises(ConfigurationError, match="at least 16 characters"):
            build_admin_router(cache, token=weak)
    assert build_admin_router(cache, token=SecretStr(TOKEN)).routes
    assert build_admin_router(cache, dependency=lambda: "ops").routes


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, None),
        ({"authorization": "Bearer"}, None),
        ({"authorization": f"Basic {TOKEN}"}, None),
        ({"authorization": "Bearer wrong-token"}, "invalid_token"),
        ({"authorization": f"Bearer {TOKEN}x"}, "invalid_token"),
    ],
    ids=["missing", "empty", "basic", "wrong", "longer"],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/_cache/stats", None), ("POST", "/_cache/purge", {"all": True})],
    ids=["stats", "purge"],
)
async def test_401_without_the_right_token(
    client: httpx.AsyncClient,
    cache: RecordingCache,
    headers: dict[str, str],
    error: str | None,
    method: str,
    path: str,
    body: object,
) -> None:
    response = await client.request(method, path, headers=headers, json=body)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="fastapi-tiered-cache"')
    assert ('error="invalid_token"' in challenge) == (error is not None)
    assert response.headers["cache-control"] == "no-store"
    assert cache.calls == []


async def test_a_dependency_can_authenticate_instead_and_names_the_caller(
    cache: RecordingCache, caplog: pytest.LogCaptureFixture
) -> None:
    def operator(request: Request) -> str | None:
        user = request.headers.get("x-operator")
        if user == "mallory":
            raise HTTPException(403, detail="not an operator")
        return user

    app = build_app(cache, token=None, dependency=operator)
    caplog.set_level(logging.INFO, logger="fastapi_tiered_cache")
    async with client_for(app, cache) as client:
        missing = await client.post("/_cache/purge", json={"all": True})
        forbidden = await client.post(
            "/_cache/purge", json={"all": True}, headers={"x-operator": "mallory"}
        )
        allowed = await client.post(
            "/_cache/purge", json={"all": True}, headers={"x-operator": "ops@example.com"}
        )
    assert missing.status_code == 401
    assert forbidden.status_code == 403
    assert forbidden.headers["cache-control"] == "no-store"
    assert allowed.json() == {"kind": "all", "purged": None}
    assert cache.calls == [("all", (), {})]
    assert "admin purge by ops@example.com: all" in caplog.text


async def test_token_and_dependency_together_both_apply(cache: RecordingCache) -> None:
    def operator(request: Request) -> str | None:
        return request.headers.get("x-operator")

    app = build_app(cache, dependency=operator)
    async with client_for(app, cache) as client:
        token_only = await client.get("/_cache/stats", headers=AUTH)
        both = await client.get("/_cache/stats", headers={**AUTH, "x-operator": "ops"})
        dependency_only = await client.get("/_cache/stats", headers={"x-operator": "ops"})
    assert [token_only.status_code, both.status_code, dependency_only.status_code] == [
        401,
        200,
        401,
    ]


# -- stats, status page, lookup ---------------------------------------------------------


async def test_stats_shows_counters_tiers_and_l1(client: httpx.AsyncClient) -> None:
    await client.get("/items/1")
    await client.get("/items/1")
    response = await client.get("/_cache/stats", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    stats = response.json()
    assert stats["tiers"] == {"l1": True, "l2": False}
    assert stats["l1"]["entries"] == 1
    assert stats["l1"]["bytes"] > 0
    assert stats["l1"]["evictions"] == 0
    assert stats["l2_faults"] == 0
    assert stats["breaker"] is None  # no L2, nothing to guard
    assert stats["counts"]["hit"] == {"l1": 1}
    assert stats["counts"]["store"] == {"all": 1}
    assert stats["hit_ratio"] == 0.5
    assert "/items/{item_id}" in stats["routes"]


async def test_admin_responses_are_never_stored_even_without_a_rule() -> None:
    cache = RecordingCache()  # no rule for the admin path: no-store alone must keep it out
    async with client_for(build_app(cache), cache) as client:
        first = await client.get("/_cache/stats", headers=AUTH)
        second = await client.get("/_cache/stats", headers=AUTH)
        page = await client.get("/_cache/", headers=AUTH)
    # Answered by the app every time: never from the cache, whichever rule keeps it out.
    assert {first.headers["x-cache"], second.headers["x-cache"], page.headers["x-cache"]} <= {
        "MISS",
        "BYPASS",
    }

    def events(response: httpx.Response) -> int:
        return sum(sum(d.values()) for d in response.json()["counts"].values())

    assert events(second) == events(first) + 1  # live numbers, not a replay
    assert len(cache.store.l1 or ()) == 0


async def test_status_page_shows_hit_ratios(client: httpx.AsyncClient) -> None:
    for _ in range(4):
        await client.get("/items/1")
    page = await client.get("/_cache/", headers=AUTH)
    refused = await client.get("/_cache/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "This process: hit ratio <b>75.0%</b>" in page.text
    assert "Fleet: 1 processes, hit ratio <b>75.0%</b>" in page.text  # alone: itself
    assert "<td>l1</td><td>75.0%</td>" in page.text
    assert "/items/{item_id}" in page.text
    assert refused.status_code == 401


async def test_lookup_shows_the_stored_entry(
    client: httpx.AsyncClient, cache: RecordingCache
) -> None:
    cache.stored = CachedResponse(
        status=200,
        headers=((b"content-type", b"application/json"), (b"content-length", b"2")),
        body=b"{}",
        stored_at=cache.clock() - 10,
        fresh_for=60,
        etag='"v1"',
        vary=(("accept-language", "de"), ("authorization", "Bearer alice-secret")),
        tags=("item:1", "items"),
    )
    response = await client.get(
        "/_cache/lookup",
        params={"url": "http://test/items/1", "tenant": "acme", "header": "Accept-Language: de"},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    entry = response.json()
    assert entry["url"] == "http://test/items/1"
    assert entry["status"] == 200
    assert ["content-type", "application/json"] in entry["headers"]
    assert entry["age"] == 10
    assert entry["ttl"] == 50
    assert entry["fresh"] is True
    assert entry["size"] == cache.stored.size
    assert entry["tags"] == ["item:1", "items"]
    assert entry["etag"] == '"v1"'
    assert entry["vary"] == {"accept-language": "de", "authorization": "[secure]"}
    assert "alice-secret" not in response.text
    assert cache.calls == [
        (
            "lookup",
            ("http://test/items/1",),
            {"headers": {"accept-language": "de"}, "tenant": "acme"},
        )
    ]


async def test_lookup_of_nothing_is_404_and_bad_headers_422(client: httpx.AsyncClient) -> None:
    missing = await client.get("/_cache/lookup", params={"url": "/nothing"}, headers=AUTH)
    bad = await client.get(
        "/_cache/lookup", params={"url": "/x", "header": "no-colon"}, headers=AUTH
    )
    no_url = await client.get("/_cache/lookup", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "not cached"}
    assert missing.headers["cache-control"] == "no-store"
    assert bad.status_code == 422
    assert no_url.status_code == 422
    assert no_url.headers["cache-control"] == "no-store"


# -- purge ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "call", "answer"),
    [
        (
            {"request": {"url": "http://test/items/1", "headers": {"Accept": "json"}}},
            (
                "request",
                ("GET", "http://test/items/1"),
                {"headers": {"Accept": "json"}, "tenant": None},
            ),
            {"kind": "request", "purged": 1},
        ),
        (
            {"request": {"method": "head", "url": "/items/1"}, "tenant": "acme"},
            ("request", ("HEAD", "/items/1"), {"headers": None, "tenant": "acme"}),
            {"kind": "request", "purged": 1},
        ),
        (
            {"path": "/items/1", "tenant": "acme"},
            ("path", ("/items/1",), {"tenant": "acme"}),
            {"kind": "path", "purged": 4},
        ),
        (
            {"prefix": "/items"},
            ("prefix", ("/items",), {"tenant": None}),
            {"kind": "prefix", "purged": 7},
        ),
        (
            {"path": "/items/1", "soft": True},
            ("path", ("/items/1",), {"tenant": None, "soft": True}),
            {"kind": "path", "purged": 4},
        ),
        (
            {"prefix": "/items", "soft": True, "tenant": "acme"},
            ("prefix", ("/items",), {"tenant": "acme", "soft": True}),
            {"kind": "prefix", "purged": 7},
        ),
        (
            {"tags": ["item:1", "items"], "soft": True},
            ("tags", ("item:1", "items"), {"tenant": None, "soft": True}),
            {"kind": "tags", "purged": 2},
        ),
        ({"tenant": "acme"}, ("tenant", ("acme",), {}), {"kind": "tenant", "purged": None}),
        (
            {"all": True, "tenant": "acme"},
            ("tenant", ("acme",), {}),
            {"kind": "tenant", "purged": None},
        ),
        (
            {"identity": {"principal": "alice"}},
            ("identity", (), {"principal": "alice", "headers": None, "tenant": None}),
            {"kind": "identity", "purged": None},
        ),
        (
            {"identity": {"headers": {"authorization": "Bearer x"}}, "tenant": "acme"},
            (
                "identity",
                (),
                {"principal": None, "headers": {"authorization": "Bearer x"}, "tenant": "acme"},
            ),
            {"kind": "identity", "purged": None},
        ),
        ({"all": True}, ("all", (), {}), {"kind": "all", "purged": None}),
    ],
    ids=[
        "request",
        "request-head-tenant",
        "path",
        "prefix",
        "path-soft",
        "prefix-soft",
        "tags-soft",
        "tenant",
        "all-of-tenant",
        "principal",
        "identity-headers",
        "all",
    ],
)
async def test_each_selector_calls_the_cache_api(
    client: httpx.AsyncClient,
    cache: RecordingCache,
    body: dict[str, object],
    call: tuple[str, tuple[object, ...], dict[str, object]],
    answer: dict[str, object],
) -> None:
    response = await client.post("/_cache/purge", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == answer
    assert cache.calls == [call]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"path": "/a", "tags": ["x"]},
        {"all": True, "prefix": "/a"},
        {"soft": True, "request": {"url": "/a"}},
        {"soft": True, "all": True},
        {"soft": True, "prefix": "/"},
        {"tags": []},
        {"tags": [""]},
        {"path": ""},
        {"identity": {}},
        {"identity": {"principal": "a", "headers": {"a": "b"}}},
        {"request": {"method": "GET"}},
        {"request": {"url": "/a", "method": "G T"}},
        {"all": False},
        {"everything": True},
        "not an object",
    ],
    ids=[
        "empty",
        "two",
        "all-and-prefix",
        "soft-request",
        "soft-all",
        "soft-root-prefix",
        "no-tags",
        "empty-tag",
        "empty-path",
        "identity-empty",
        "identity-both",
        "request-no-url",
        "request-bad-method",
        "all-false",
        "unknown-field",
        "not-object",
    ],
)
async def test_a_purge_needs_exactly_one_valid_selector(
    client: httpx.AsyncClient, cache: RecordingCache, body: object
) -> None:
    response = await client.post("/_cache/purge", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.headers["cache-control"] == "no-store"
    assert cache.calls == []


async def test_invalid_json_is_422(client: httpx.AsyncClient, cache: RecordingCache) -> None:
    response = await client.post(
        "/_cache/purge",
        content=b"{not json",
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert cache.calls == []


async def test_a_failed_purge_is_503(client: httpx.AsyncClient, cache: RecordingCache) -> None:
    cache.fail = True
    response = await client.post("/_cache/purge", json={"tags": ["x"]}, headers=AUTH)
    assert response.status_code == 503
    assert "purge failed" in response.json()["detail"]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("body", "logged", "hidden"),
    [
        ({"path": "/items/1", "tenant": "acme"}, "path /items/1 tenant=acme -> 4 purged", []),
        ({"tags": ["a", "b"], "soft": True}, "tags a,b (soft) -> 2 purged", []),
        ({"identity": {"principal": "alice@example.com"}}, "identity scope=u.", ["alice"]),
        (
            {"identity": {"headers": {"Authorization": "Bearer cred-123"}}},
            "identity headers=authorization -> done",
            ["cred-123"],
        ),
        (
            {
                "request": {
                    "url": "https://user:pw@test/items/1?token=q-secret",
                    "headers": {"Cookie": "session=s-secret"},
                }
            },
            "request GET https://test/items/1?... headers=cookie -> 1 purged",
            ["q-secret", "s-secret", "pw"],
        ),
    ],
    ids=["path", "tags", "principal", "identity-headers", "request"],
)
async def test_every_purge_is_logged_with_who_and_what_but_no_secret(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, object],
    logged: str,
    hidden: list[str],
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_tiered_cache")
    response = await client.post("/_cache/purge", json=body, headers=AUTH)
    assert response.status_code == 200
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "admin_purge"]
    message = record.getMessage()
    assert re.match(r"admin purge by token:[0-9a-f]{12}: ", message)
    assert logged in message
    for secret in [TOKEN, *hidden]:
        assert secret not in caplog.text


# -- end to end against the real cache and a real Redis ---------------------------------


def user_of(request: Request) -> str | None:
    return request.headers.get("x-user")


@pytest.fixture
async def real(redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, TieredCache]]:
    redis = aioredis.Redis.from_url(redis_url)
    clock = FakeClock()
    cache = TieredCache(
        CacheSettings(secret_key=SECRET, redis_timeout=1.0),
        redis=redis,
        identity_resolver=user_of,
        clock=clock,
        l1_timer=clock,
    )
    async with client_for(build_app(cache), cache) as client:
        cache.ensure_started()  # the bus, heard before the first request: no L1 drop later
        await healthy(cache)
        yield client, cache
    await cache.close()
    await redis.aclose()


ALICE = {"x-user": "alice"}
BOB = {"x-user": "bob"}
ACME = {"x-tenant-id": "acme"}
# (label, path, request headers) of the entries each purge starts with.
WARM: list[tuple[str, str, dict[str, str]]] = [
    ("1", "/items/1", {}),
    ("2", "/items/2", {}),
    ("1 acme", "/items/1", ACME),
    ("1 alice", "/items/1", ALICE),
    ("1 bob", "/items/1", BOB),
]
DEFAULT_TENANT = ["1", "2", "1 alice", "1 bob"]


@pytest.mark.parametrize(
    ("body", "purged"),
    [
        ({"path": "/items/1"}, ["1", "1 alice", "1 bob"]),  # every identity of the path
        ({"prefix": "/items"}, DEFAULT_TENANT),
        ({"tags": ["item:2"]}, ["2"]),
        ({"tags": ["items"]}, DEFAULT_TENANT),
        ({"request": {"url": "http://test/items/2"}}, ["2"]),
        ({"request": {"url": "http://test/items/1", "headers": ALICE}}, ["1 alice"]),
        ({"tenant": "acme"}, ["1 acme"]),
        ({"path": "/items/1", "tenant": "acme"}, ["1 acme"]),
        ({"identity": {"principal": "alice"}}, ["1 alice"]),
        ({"all": True}, [label for label, _, _ in WARM]),
    ],
    ids=[
        "path",
        "prefix",
        "tag",
        "shared-tag",
        "request",
        "request-of-identity",
        "tenant",
        "path-in-tenant",
        "identity",
        "all",
    ],
)
async def test_purge_removes_exactly_what_it_selects(
    real: tuple[httpx.AsyncClient, TieredCache], body: dict[str, object], purged: list[str]
) -> None:
    client, _ = real

    async def served() -> dict[str, str]:
        return {
            label: (await client.get(path, headers=headers)).headers["x-cache"]
            for label, path, headers in WARM
        }

    await served()
    assert set((await served()).values()) == {"HIT"}
    response = await client.post("/_cache/purge", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert await served() == {label: "MISS" if label in purged else "HIT" for label, _, _ in WARM}


async def test_lookup_reads_the_real_cache(real: tuple[httpx.AsyncClient, TieredCache]) -> None:
    client, _ = real
    await client.get("/items/1")
    found = await client.get("/_cache/lookup", params={"url": "http://test/items/1"}, headers=AUTH)
    missing = await client.get(
        "/_cache/lookup", params={"url": "http://test/items/9"}, headers=AUTH
    )
    assert found.status_code == 200, found.text
    entry = found.json()
    assert entry["status"] == 200
    assert entry["tags"] == ["item:1", "items"]
    assert ["content-type", "application/json"] in entry["headers"]
    assert not any(name in ("set-cookie", "surrogate-key") for name, _ in entry["headers"])
    assert entry["ttl"] == 60
    assert missing.status_code == 404


# -- purges that tell the truth, fleet-wide stats -------------------------------------


async def test_a_purge_that_matches_nothing_says_not_cached(
    real: tuple[httpx.AsyncClient, TieredCache],
) -> None:
    client, _ = real
    await client.get("/items/1")
    for body in (
        {"path": "/items/9"},
        {"tags": ["nothing"]},
        {"request": {"url": "http://test/items/9"}},
        {"request": {"url": "/items/9"}},
    ):
        response = await client.post("/_cache/purge", json=body, headers=AUTH)
        assert response.status_code == 404, body
        assert response.json()["detail"] == "not cached"
        assert response.json()["purged"] == 0
    assert (await client.get("/items/1")).headers["x-cache"] == "HIT"


async def test_purge_counts_are_exact(real: tuple[httpx.AsyncClient, TieredCache]) -> None:
    client, cache = real
    for path in ("/items/1", "/items/2"):
        await client.get(path)
    # A stale index member (an entry that left Redis) is not counted.
    keys = await cache.purges._keys_of("GET", "http://test/items/2", None, None)
    assert cache.store.l2 is not None and cache.store.l1 is not None
    await cache.store.l2.delete(keys[-1])
    cache.store.l1.discard(keys[-1])
    response = await client.post("/_cache/purge", json={"tags": ["items"]}, headers=AUTH)
    assert response.json() == {"kind": "tags", "purged": 1}
    again = await client.post("/_cache/purge", json={"tags": ["items"]}, headers=AUTH)
    assert again.status_code == 404


async def test_relative_urls_resolve_against_the_origins_seen(
    real: tuple[httpx.AsyncClient, TieredCache],
) -> None:
    client, cache = real
    await client.get("/items/1")
    assert await cache.origins() == ["http://test"]  # recorded in Redis with the entry
    found = await client.get("/_cache/lookup", params={"url": "/items/1"}, headers=AUTH)
    assert found.status_code == 200, found.text
    assert found.json()["url"] == "http://test/items/1"
    purged = await client.post("/_cache/purge", json={"request": {"url": "/items/1"}}, headers=AUTH)
    assert purged.json() == {
        "kind": "request",
        "purged": 1,
        "urls": ["http://test/items/1", "/items/1"],
    }
    assert (await client.get("/items/1")).headers["x-cache"] == "MISS"


async def test_relative_urls_resolve_against_the_public_url(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    settings = CacheSettings(secret_key=SECRET, public_url="HTTP://Test/", redis_timeout=1.0)
    cache = TieredCache(settings, redis=redis)
    async with client_for(build_app(cache), cache) as client:
        await client.get("/items/1")
        await redis.delete(cache.invalidator.fills.origins_key)  # only the setting is used
        found = await client.get("/_cache/lookup", params={"url": "items/1"}, headers=AUTH)
        assert found.json()["url"] == "http://test/items/1"
    await redis.aclose()


async def test_stats_show_the_fleet_through_redis(
    real: tuple[httpx.AsyncClient, TieredCache], redis_url: str
) -> None:
    client, _ = real
    other = TieredCache(
        CacheSettings(secret_key=SECRET, redis_timeout=1.0),
        redis=aioredis.Redis.from_url(redis_url),
    )
    other.stats.record(Event.HIT, tier="l1", route="/items/{item_id}")
    other.stats.record(Event.MISS, reason="miss", route="/items/{item_id}")
    assert other.reporter is not None
    await other.reporter.report()  # another process of the fleet, as of its last report
    await client.get("/items/1")
    await client.get("/items/1")
    stats = (await client.get("/_cache/stats", headers=AUTH)).json()
    assert stats["counts"]["hit"] == {"l1": 1}  # this process
    fleet = stats["fleet"]
    assert fleet["processes"] == 2
    assert fleet["counts"]["hit"] == {"l1": 2}
    assert fleet["counts"]["miss"] == {"miss": 2}
    assert fleet["hit_ratio"] == 0.5
    assert fleet["routes"]["/items/{item_id}"]["hit"] == 2
    await other.close()
    await other.store.l2.client.aclose()  # type: ignore[union-attr]
