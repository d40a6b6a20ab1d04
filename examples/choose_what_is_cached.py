"""Choosing what is cached, route by route: typed decorators with durations.

``@cache_policy`` takes every rule field as a typed keyword argument (an IDE completes
them, mypy checks them); durations are seconds, a ``timedelta`` or a string like ``"5m"``.
``fastapi-tiered-cache routes examples.choose_what_is_cached:app`` prints each verdict, and
``/docs`` shows it on each operation (``x-cache``), as ``openapi=True`` asks.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from fastapi_tiered_cache import cache_policy, install, load_settings, no_cache

app = FastAPI()
# TIERED_CACHE_* from the environment; the verdicts in /docs too (off by default).
install(app, load_settings(openapi=True))


@app.get("/products/{product_id}")
@cache_policy(ttl="10m", tags=["product:{product_id}"], stale_if_error=timedelta(hours=1))
async def product(product_id: int) -> dict[str, object]:
    return {"id": product_id, "name": "Laptop"}


@app.get("/products")
@cache_policy(ttl=90, query_allow=["page"])  # other query parameters share the entry
async def products(page: int = 1) -> dict[str, object]:
    return {"page": page, "items": [1, 2, 3]}


@app.get("/healthz")
@no_cache
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
