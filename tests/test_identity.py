"""Tenants and auth identities never share an entry; resolvers fail closed."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from fastapi_tiered_cache import BYPASS, CacheSettings, TieredCache, TieredCacheMiddleware
from fastapi_tiered_cache.identity import tenant_from_path_prefix, tenant_from_subdomain

from .helpers import CATCH_ALL, Origin, client_for, make_cache


def echo_identity(scope: dict[str, Any]) -> bytes:
    wanted = {b"authorization", b"cookie", b"x-tenant-id", b"x-api-key"}
    return repr(sorted((k, v) for k, v in scope["headers"] if k in wanted)).encode()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"authorization": "Bearer alice"}, {"authorization": "Bearer bob"}),
        ({"authorization": "Bearer alice"}, {}),
        ({}, {"authorization": "Bearer alice"}),
        ({"cookie": "session=alice"}, {"cookie": "session=bob"}),
        ({"cookie": "session=alice"}, {}),
        ({"cookie": "sessionid=a"}, {"cookie": "SESSIONID=b"}),
        ({"x-api-key": "k1"}, {"x-api-key": "k2"}),
        ({"x-tenant-id": "acme"}, {"x-tenant-id": "globex"}),
        ({"x-tenant-id": "acme"}, {}),
        ({"x-tenant-id": "_"}, {}),
        ({"x-tenant-id": "a:b"}, {"x-tenant-id": "a_b"}),
    ],
    ids=[
        "two-bearers",
        "bearer-then-anon",
        "anon-then-bearer",
        "two-sessions",
        "session-then-anon",
        "cookie-name-case",
        "api-keys",
        "two-tenants",
        "tenant-then-default",
        "underscore-tenant",
        "odd-tenant",
    ],
)
async def test_distinct_identities_and_tenants_never_share(
    first: dict[str, str], second: dict[str, str]
) -> None:
    origin = Origin(body=echo_identity)
    async with client_for(origin, make_cache()) as client:
        one = await client.get("/me", headers=first)
        two = await client.get("/me", headers=second)
        again = await client.get("/me", headers=first)
    assert two.headers["x-cache"] == "MISS"
    assert one.content != two.content
    assert again.content == one.content
    assert again.headers["x-cache"] == "HIT"


async def test_unrelated_cookies_do_not_make_a_request_authenticated() -> None:
    origin = Origin(body=b"public")
    async with client_for(origin, make_cache()) as client:
        await client.get("/", headers={"cookie": "_ga=1"})
        hit = await client.get("/")
    assert hit.headers["x-cache"] == "HIT"


async def test_without_secret_authenticated_requests_bypass() -> None:
    settings = CacheSettings(rules=[CATCH_ALL])  # no secret: identities are not cached
    origin = Origin()
    async with client_for(origin, TieredCache(settings)) as client:
        response = await client.get("/", headers={"authorization": "Bearer x"})
        anon = await client.get("/")
    assert "detail=authenticated" in response.headers["cache-status"]
    assert anon.headers["x-cache"] == "MISS"


async def test_private_responses_are_not_stored_by_default_in_any_scope() -> None:
    """RFC 9111 §5.2.2.7: a shared cache must not store a ``private`` response."""
    origin = Origin(body=echo_identity, headers=[("cache-control", "private, max-age=60")])
    async with client_for(origin, make_cache()) as client:
        await client.get("/", headers={"authorization": "Bearer a"})
        mine = await client.get("/", headers={"authorization": "Bearer a"})
        await client.get("/")
        anon = await client.get("/")
    assert mine.headers["x-cache"] == "MISS" and "detail=private" in mine.headers["cache-status"]
    assert anon.headers["x-cache"] == "MISS" and "detail=private" in anon.headers["cache-status"]
    assert origin.calls == 4


@pytest.mark.parametrize(
    "options",
    [{"cache_private": True}, {"rules": [{"path": "/**", "cache_private": True}]}],
    ids=["setting", "rule"],
)
async def test_private_responses_opted_in_are_stored_only_in_the_identity_scope(
    options: dict[str, Any],
) -> None:
    origin = Origin(body=echo_identity, headers=[("cache-control", "private, max-age=60")])
    async with client_for(origin, make_cache(**options)) as client:
        await client.get("/", headers={"authorization": "Bearer a"})
        mine = await client.get("/", headers={"authorization": "Bearer a"})
        other = await client.get("/", headers={"authorization": "Bearer b"})
        await client.get("/")
        anon = await client.get("/")
    assert mine.headers["x-cache"] == "HIT"
    assert other.headers["x-cache"] == "MISS" and other.content != mine.content
    assert anon.headers["x-cache"] == "MISS"


async def test_credentials_never_appear_in_keys() -> None:
    cache = make_cache()
    origin = Origin()
    async with client_for(origin, cache) as client:
        await client.get("/", headers={"authorization": "Bearer SECRET-TOKEN", "x-tenant-id": "t"})
        await client.get("/", headers={"cookie": "session=SESSION-VALUE"})
        assert cache.store.l1 is not None
        keys = list(cache.store.l1._cache.keys())
    assert len(keys) == 2
    for key in keys:
        assert "SECRET" not in key and "SESSION" not in key
        assert key.startswith("ftc:")
        assert ":u." in key


async def test_custom_identity_resolver_maps_to_principal() -> None:
    def principal(request: Request) -> str | None:
        token = request.headers.get("authorization", "")
        return token.split(".")[0] if token else None  # "user1.sig-a" and "user1.sig-b" share

    cache = make_cache(identity_resolver=None)
    cache.identifier.identity_resolver = principal
    origin = Origin(body=b"user1 data")
    async with client_for(origin, cache) as client:
        await client.get("/", headers={"authorization": "user1.sig-a"})
        shared = await client.get("/", headers={"authorization": "user1.sig-b"})
        other = await client.get("/", headers={"authorization": "user2.sig"})
    assert shared.headers["x-cache"] == "HIT"
    assert other.headers["x-cache"] == "MISS"


@pytest.mark.parametrize("answer", [None, BYPASS], ids=["none-with-credentials", "bypass"])
async def test_resolver_that_cannot_classify_fails_closed(answer: Any) -> None:
    async def resolver(request: Request) -> Any:
        return answer

    cache = make_cache()
    cache.identifier.identity_resolver = resolver
    origin = Origin()
    async with client_for(origin, cache) as client:
        response = await client.get("/", headers={"authorization": "Bearer x"})
    assert "detail=resolver" in response.headers["cache-status"]


async def test_resolver_from_dotted_path_setting() -> None:
    settings = CacheSettings(
        secret_key="x" * 32,
        tenant_resolver="fastapi_tiered_cache.identity:tenant_from_subdomain",
        rules=[CATCH_ALL],
    )
    origin = Origin(body=lambda scope: dict(scope["headers"])[b"host"])
    middleware = TieredCacheMiddleware(origin, cache=TieredCache(settings))
    import httpx

    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport) as client:
        acme = await client.get("http://acme.example.com/")
        globex = await client.get("http://globex.example.com/")
    assert acme.content != globex.content
    assert globex.headers["x-cache"] == "MISS"


def _request(host: str = "example.com", path: str = "/") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", host.encode())],
            "scheme": "http",
            "server": (host, 80),
        }
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("acme.example.com", "acme"),
        ("example.com", None),
        ("acme.example.com:8000", "acme"),
        ("acme.example.com.", "acme"),  # the fully qualified form is the same host
        ("acme.example.com.:8000", "acme"),
        ("ACME.Example.com", "acme"),
        ("a..b", BYPASS),  # not a host name: the tenant cannot be told
        (".example.com", BYPASS),
        ("x" * 2000 + ".example.com", BYPASS),
        ("[::1]:8000", None),
        ("", None),
    ],
)
def test_tenant_from_subdomain(host: str, expected: Any) -> None:
    assert tenant_from_subdomain(_request(host=host)) == expected


def test_tenant_from_path_prefix() -> None:
    assert tenant_from_path_prefix(_request(path="/acme/products")) == "acme"
    assert tenant_from_path_prefix(_request(path="/")) is None
