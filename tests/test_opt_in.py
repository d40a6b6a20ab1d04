"""``TIERED_CACHE_OPT_IN``: cache only what a rule or ``@cache_policy`` names."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings, RouteRule, cache_policy, install

from .helpers import SECRET


def build(**settings: object) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/products")
    @cache_policy(ttl=30)
    async def products() -> list[int]:
        return [1, 2]

    @app.get("/ruled")
    async def ruled() -> dict[str, int]:
        return {"n": 1}

    install(app, CacheSettings(secret_key=SECRET, **settings))  # type: ignore[arg-type]
    return app


async def statuses(app: FastAPI, path: str) -> list[str]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [(await client.get(path)).headers["cache-status"] for _ in range(2)]


async def test_opt_in_caches_only_what_a_rule_or_a_policy_names() -> None:
    app = build(opt_in=True, rules=[RouteRule(path="/ruled", ttl=10)])
    health = await statuses(app, "/health")
    assert all(status.endswith("fwd=bypass; detail=not-opted-in") for status in health)
    assert (await statuses(app, "/products"))[1].startswith("fastapi-tiered-cache; hit")
    assert (await statuses(app, "/ruled"))[1].startswith("fastapi-tiered-cache; hit")


async def test_by_default_every_cacheable_get_is_cached() -> None:
    app = build()
    assert (await statuses(app, "/health"))[1].startswith("fastapi-tiered-cache; hit")


async def test_a_rule_turning_caching_off_still_wins_in_opt_in_mode() -> None:
    app = build(opt_in=True, rules=[RouteRule(path="/products", cache=False)])
    assert (await statuses(app, "/products"))[1].endswith("fwd=bypass; detail=rule")
