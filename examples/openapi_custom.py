"""An app with its own ``openapi()`` function, set after ``install()``: it adds the cache's
description itself with ``add_cache_info`` (set before ``install()``, it would be extended
without this)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from fastapi_tiered_cache import install
from fastapi_tiered_cache.openapi import add_cache_info

app = FastAPI()
cache = install(app)


@app.get("/products")
async def products() -> list[int]:
    return [1, 2, 3]


def custom_openapi() -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title="Shop", version="1.0", routes=app.routes)
        schema["info"]["x-logo"] = {"url": "https://example.com/logo.png"}
        app.openapi_schema = add_cache_info(schema, app, cache)
    return app.openapi_schema


app.openapi = custom_openapi  # type: ignore[method-assign]
