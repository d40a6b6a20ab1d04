"""Route-aware keys: what a route declares joins its key; decorators set its policy.

Requests with credentials are cached, per identity, only when TIERED_CACHE_SECRET_KEY is
set. Without it they bypass the cache.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Cookie, Depends, FastAPI, Header, Request
from fastapi.security import APIKeyHeader

from fastapi_tiered_cache import cache_policy, install, no_cache

PARTNERS = {"acme-key": "acme", "globex-key": "globex"}  # your real key check goes here

app = FastAPI()
install(app)
partner_key = APIKeyHeader(name="X-Partner-Key")


@app.get("/greeting")
async def greeting(accept_language: Annotated[str | None, Header()] = None) -> dict[str, str]:
    # A declared header joins the key: no Vary header or rule is needed.
    french = (accept_language or "").startswith("fr")
    return {"text": "Bonjour" if french else "Hello"}


@app.get("/home")
async def home(theme: Annotated[str, Cookie()] = "light") -> dict[str, str]:
    return {"theme": theme}  # the "theme" cookie joins the key, other cookies do not


@app.get("/partner/prices")
async def partner_prices(key: Annotated[str, Depends(partner_key)]) -> dict[str, object]:
    # A security scheme's credential chooses the identity scope: one entry per partner.
    return {"partner": PARTNERS.get(key, "unknown"), "discount": 0.1}


@app.get("/client-info")
@cache_policy(ttl=300, vary=["user-agent"])
async def client_info(request: Request) -> dict[str, str]:
    # The raw Request could read anything: cached only because a policy says what matters.
    return {"agent": request.headers.get("user-agent", "")}


@app.get("/debug/headers")
async def debug_headers(request: Request) -> dict[str, str]:
    return dict(request.headers)  # no policy: never cached (detail=request-object)


@app.get("/products/{product_id}")
@cache_policy(ttl=600, tags=["product:{product_id}"], cache_control="public, max-age=60")
async def get_product(product_id: int) -> dict[str, object]:
    return {"id": product_id, "name": "Laptop"}


@app.get("/clock")
@no_cache
async def clock() -> dict[str, float]:
    return {"now": time.time()}
