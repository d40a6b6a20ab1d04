"""Per-route rules: pattern compilation and their effect through the middleware."""

from __future__ import annotations

import pytest

from fastapi_tiered_cache.rules import RuleSet, compile_pattern
from fastapi_tiered_cache.settings import RouteRule

from .helpers import FakeClock, Origin, client_for, make_cache


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/products/*", "/products/1", True),
        ("/products/*", "/products/1/reviews", False),
        ("/products/**", "/products/1/reviews", True),
        ("/products/{product_id}", "/products/7", True),
        ("/products/{product_id}", "/products/", False),
        ("/files/{p:path}", "/files/a/b.txt", True),
        ("/a.b", "/aXb", False),
        ("/exact", "/exact/", False),
    ],
)
def test_compile_pattern(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_pattern(pattern).match(path)) is matches


def test_first_matching_rule_wins() -> None:
    rules = RuleSet([RouteRule(path="/a/*", ttl=1), RouteRule(path="/**", ttl=2)])
    assert rules.match("/a/x").ttl == 1  # type: ignore[union-attr]
    assert rules.match("/b").ttl == 2  # type: ignore[union-attr]


async def test_rule_off_bypasses_even_when_the_path_is_percent_encoded() -> None:
    origin = Origin()
    cache = make_cache(rules=[{"path": "/admin/**", "cache": False}])
    async with client_for(origin, cache) as client:
        plain = await client.get("/admin/users")
        encoded = await client.get("/%61dmin/users")
        await client.get("/%61dmin/users")
    assert "detail=rule" in plain.headers["cache-status"]
    assert "detail=rule" in encoded.headers["cache-status"]
    assert origin.calls == 3


async def test_rule_ttl_and_statuses_apply() -> None:
    clock = FakeClock()
    origin = Origin(status=404)
    rules = [{"path": "/missing", "ttl": 5, "statuses": [200, 404]}]
    async with client_for(origin, make_cache(clock, rules=rules)) as client:
        await client.get("/missing")
        clock.advance(4)
        hit = await client.get("/missing")
        clock.advance(2)
        miss = await client.get("/missing")
        other = await client.get("/elsewhere")
        other_again = await client.get("/elsewhere")
    assert hit.headers["x-cache"] == "HIT" and hit.status_code == 404
    assert miss.headers["x-cache"] == "MISS"
    assert other_again.headers["x-cache"] == "MISS" and other.status_code == 404


async def test_rule_vary_headers_join_the_key() -> None:
    origin = Origin(body=lambda scope: repr(scope["headers"]).encode())
    rules = [{"path": "/**", "vary": ["X-Client"]}]
    async with client_for(origin, make_cache(rules=rules)) as client:
        await client.get("/", headers={"x-client": "a"})
        other = await client.get("/", headers={"x-client": "b"})
        empty = await client.get("/", headers={"x-client": ""})
        absent = await client.get("/")
        again = await client.get("/", headers={"x-client": "a"})
    assert [r.headers["x-cache"] for r in (other, empty, absent, again)] == [
        "MISS",
        "MISS",
        "MISS",
        "HIT",
    ]


async def test_query_deny_and_allow_lists_apply_only_where_configured() -> None:
    origin = Origin(body=lambda scope: scope["query_string"])
    rules = [
        {"path": "/deny", "query_deny": ["utm_*", "fbclid"]},
        {"path": "/allow", "query_allow": ["page"]},
    ]
    async with client_for(origin, make_cache(rules=rules)) as client:
        await client.get("/deny?page=1&utm_source=x")
        junk = await client.get("/deny?fbclid=1&page=1&utm_medium=y")
        other_page = await client.get("/deny?page=2&utm_source=x")
        await client.get("/allow?page=1&a=1")
        allowed = await client.get("/allow?b=2&page=1")
        await client.get("/elsewhere?page=1&utm_source=x")
        untouched = await client.get("/elsewhere?page=1&utm_source=y")
    assert junk.headers["x-cache"] == "HIT"
    assert other_page.headers["x-cache"] == "MISS"
    assert allowed.headers["x-cache"] == "HIT"
    assert untouched.headers["x-cache"] == "MISS"  # never applied by default


async def test_rules_can_name_a_route_instead_of_a_path() -> None:
    import httpx
    from fastapi import FastAPI

    from fastapi_tiered_cache import TieredCacheMiddleware

    app = FastAPI()

    @app.get("/things/{thing_id}", name="thing")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app.add_middleware(
        TieredCacheMiddleware, cache=make_cache(rules=[{"route": "thing", "cache": False}])
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/things/1")
    assert "detail=rule" in response.headers["cache-status"]


@pytest.mark.parametrize("rule", [{}, {"path": "/a", "route": "a"}])
def test_a_rule_names_exactly_one_selector(rule: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RouteRule.model_validate(rule)
