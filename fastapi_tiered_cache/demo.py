"""The demo: a small product catalogue API behind the cache, runnable anywhere.

Run it with ``python -m fastapi_tiered_cache.demo`` (needs the ``demo`` extra) and follow
the curl commands on its root page. The catalogue endpoints are slow on purpose, as the
database calls of the classic caching tutorial are, so a hit is easy to see and to time.

Configuration comes from the ``TIERED_CACHE_*`` variables like any other app. Two
things are filled in so that both tiers and per-identity caching work on a bare machine:
without ``TIERED_CACHE_REDIS_URL`` the L2 tier is an in-process fakeredis, and without
``TIERED_CACHE_SECRET_KEY`` a random key is made for the process.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import secrets
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from .cache import TieredCache
from .exceptions import ConfigurationError
from .install import get_cache, install
from .routes import cache_policy
from .settings import CacheSettings, RouteRule, load_settings

__all__ = ["build_app", "main"]

INSTALL_HINT = "the demo needs uvicorn and fakeredis: pip install 'fastapi-tiered-cache[demo]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SLOW_SECONDS = 0.3  # what a cache miss costs on the catalogue endpoints

# Demo bearer tokens, shown on the root page. A real app verifies a token before trusting it.
USERS: dict[str, dict[str, str]] = {
    "alice-token": {"user": "alice", "name": "Alice Archer", "role": "admin"},
    "bob-token": {"user": "bob", "name": "Bob Baker", "role": "customer"},
}


class ProductIn(BaseModel):
    """What a client sends to create or replace a product."""

    name: str = Field(min_length=1, max_length=100)
    price: float = Field(ge=0)
    description: str = ""
    stock: int = Field(0, ge=0)


class Product(ProductIn):
    """A product of the catalogue."""

    id: int


class ProductList(BaseModel):
    """The whole catalogue, with the time it was read (unchanged on a cache hit)."""

    products: list[Product]
    count: int
    generated_at: str


class Catalogue:
    """The demo's in-memory "database", with a counter of the slow reads it served.

    - ``delay``: seconds each read takes (``SLOW_SECONDS`` by default; tests pass 0).
    """

    def __init__(self, delay: float = SLOW_SECONDS) -> None:
        self.delay = delay
        self.reads: Counter[str] = Counter()  # slow reads by kind: "list", "detail"
        self.products: dict[int, Product] = {}
        for name, price, description, stock in (
            ("Laptop", 999.99, "Powerful laptop", 10),
            ("Smartphone", 499.99, "Latest model", 20),
            ("Headphones", 149.99, "Noise cancelling", 15),
        ):
            self.add(ProductIn(name=name, price=price, description=description, stock=stock))

    async def slow_read(self, kind: str) -> None:
        self.reads[kind] += 1
        await asyncio.sleep(self.delay)

    def add(self, data: ProductIn) -> Product:
        product = Product(id=max(self.products, default=0) + 1, **data.model_dump())
        self.products[product.id] = product
        return product


def _catalogue_routes(catalogue: Catalogue) -> APIRouter:
    router = APIRouter(prefix="/products", tags=["products"])

    def find(product_id: int) -> Product:
        product = catalogue.products.get(product_id)
        if product is None:
            raise HTTPException(status_code=404, detail="Product not found")
        return product

    @router.get("", summary="List products (slow)")
    async def list_products() -> ProductList:
        await catalogue.slow_read("list")
        products = sorted(catalogue.products.values(), key=lambda product: product.id)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return ProductList(products=products, count=len(products), generated_at=now)

    @router.get("/{product_id}", summary="One product (slow; 404 for unknown ids)")
    async def get_product(product_id: int) -> Product:
        await catalogue.slow_read("detail")
        return find(product_id)

    @router.post("", status_code=201, summary="Create a product")
    async def create_product(data: ProductIn) -> Product:
        return catalogue.add(data)

    @router.put("/{product_id}", summary="Replace a product")
    async def replace_product(product_id: int, data: ProductIn) -> Product:
        find(product_id)
        product = Product(id=product_id, **data.model_dump())
        catalogue.products[product_id] = product
        return product

    @router.delete(
        "/{product_id}", status_code=204, response_class=Response, summary="Delete a product"
    )
    async def delete_product(product_id: int) -> Response:
        find(product_id)
        del catalogue.products[product_id]
        return Response(status_code=204)

    return router


bearer = HTTPBearer(auto_error=False, description="Demo tokens: alice-token, bob-token")


def _account_routes() -> APIRouter:
    router = APIRouter(tags=["account"])

    @router.get("/me", summary="Who you are (HTTP Bearer token)")
    @cache_policy(cache_private=True)  # private: stored in the caller's own scope only
    async def me(
        response: Response,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> dict[str, str]:
        user = USERS.get(credentials.credentials) if credentials is not None else None
        if user is None:
            raise HTTPException(
                status_code=401,
                detail="Send 'Authorization: Bearer alice-token' (or bob-token)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # private: never shared; cached in this identity's own scope as the policy opts in.
        response.headers["Cache-Control"] = "private"
        return user

    @router.get("/stats", summary="What the cache did so far (never cached)")
    async def stats(
        response: Response, cache: Annotated[TieredCache, Depends(get_cache)]
    ) -> dict[str, object]:
        response.headers["Cache-Control"] = "no-store"
        tiers = describe_tiers(cache)
        return {"tiers": tiers, "l2_faults": cache.store.faults, **cache.stats.snapshot()}

    return router


def landing_page(url: str) -> str:
    """The root page: what the demo is and curl commands to try (``url``: base, no '/')."""
    lines = [
        "# A slow product catalogue behind fastapi-tiered-cache. Watch X-Cache and Cache-Status.",
        "",
        "# 1. The same list twice: MISS (about 0.3 s), then HIT (served by the cache at once).",
        f"curl -si {url}/products | grep -iE '^(x-cache|cache-status|age|etag):'",
        f"curl -si {url}/products | grep -iE '^(x-cache|cache-status|age|etag):'",
        f"curl -so /dev/null -w '%{{time_total}} s\\n' {url}/products",
        "",
        "# 2. A product, and an unknown one (errors are never cached: MISS every time).",
        f"curl -i {url}/products/1",
        f"curl -i {url}/products/999",
        "",
        "# 3. Conditional requests: send the ETag back, get 304 Not Modified from the cache.",
        f"etag=$(curl -si {url}/products | awk 'tolower($1) == \"etag:\" {{print $2}}' \\",
        "       | tr -d '\\r')",
        f'curl -i -H "If-None-Match: $etag" {url}/products',
        "",
        "# 4. Who am I? Cached per identity: Alice's hit is never Bob's.",
        f"curl -i -H 'Authorization: Bearer alice-token' {url}/me",
        f"curl -i -H 'Authorization: Bearer bob-token' {url}/me",
        "",
        "# 5. Writes go straight to the app (X-Cache: BYPASS). Then read the product again.",
        "curl -i -X PUT -H 'Content-Type: application/json' \\",
        f'     -d \'{{"name": "Laptop Pro", "price": 1299, "stock": 5}}\' {url}/products/1',
        f"curl -si {url}/products/1 | grep -iE '^(x-cache|cache-status|age):'",
        "",
        "# 6. What the cache did so far (never cached itself).",
        f"curl -s {url}/stats",
    ]
    commands = html.escape("\n".join(lines), quote=False)
    href = html.escape(f"{url}/docs", quote=True)
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>fastapi-tiered-cache demo</title></head>
<body style="font-family: sans-serif; max-width: 60rem; margin: 2rem auto">
<h1>fastapi-tiered-cache demo</h1>
<p>A product catalogue API whose reads are slow on purpose. The cache sits in front of it as
pure ASGI middleware with two tiers: L1 in this process, L2 in Redis (an embedded fakeredis
unless <code>TIERED_CACHE_REDIS_URL</code> is set).</p>
<p>Demo bearer tokens: <code>alice-token</code> and <code>bob-token</code>.
Interactive API docs: <a href="{href}">{href}</a>.</p>
<pre>{commands}</pre>
</body>
</html>
"""


def demo_settings() -> tuple[CacheSettings, bool]:
    """Settings from the environment; a random secret key when none is set.

    Returns the settings and whether the key was generated.
    """
    settings = load_settings()
    overrides: dict[str, Any] = {}
    if "openapi" not in settings.model_fields_set:
        overrides["openapi"] = True  # the demo shows the cache in /docs
    generated = settings.secret_key is None
    if generated:
        overrides["secret_key"] = secrets.token_urlsafe(32)
    return (load_settings(**overrides) if overrides else settings), generated


def embedded_redis() -> Any:
    """An in-process fake Redis server and client, for when no Redis URL is configured."""
    try:
        import fakeredis
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return fakeredis.FakeAsyncRedis()


def build_app(
    settings: CacheSettings | None = None,
    *,
    redis: Any = None,
    delay: float = SLOW_SECONDS,
) -> FastAPI:
    """The demo application with the cache installed.

    - ``settings``: the cache settings; from the environment (see ``demo_settings``) if omitted.
    - ``redis``: a ``redis.asyncio`` client for L2; when omitted and ``settings`` has no Redis
      URL, an embedded fakeredis is used.
    - ``delay``: seconds each catalogue read takes.

    The catalogue is reachable as ``app.state.catalogue``.
    """
    if settings is None:
        settings, _ = demo_settings()
    if redis is None and settings.redis_url is None:
        redis = embedded_redis()
    # /stats describes the cache, so it must never come from it.
    rules = [RouteRule.model_validate({"path": "/stats", "cache": False}), *settings.rules]
    settings = settings.model_copy(update={"rules": rules})

    app = FastAPI(
        title="fastapi-tiered-cache demo",
        summary="A slow product catalogue behind a two-tier HTTP cache.",
    )
    catalogue = Catalogue(delay)
    app.state.catalogue = catalogue
    app.include_router(_catalogue_routes(catalogue))
    app.include_router(_account_routes())

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def root(request: Request) -> str:
        return landing_page(str(request.base_url).rstrip("/"))

    install(app, settings, redis=redis)
    return app


def mask_url(url: str) -> str:
    """``url`` without its password (and without a query, which may carry one)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe_tiers(cache: TieredCache) -> str:
    """The active tiers as the start-up banner shows them."""
    settings = cache.settings
    if not settings.enabled:
        return "disabled (TIERED_CACHE_ENABLED=false): every request goes to the app"
    # Not ``cache.tiers``: an empty L1 is falsy there (MemoryStore has a __len__).
    names = []
    if cache.store.l1 is not None:
        names.append("L1")
    if cache.store.l2 is not None:
        url = settings.redis_url
        where = "embedded fakeredis" if url is None else mask_url(url.get_secret_value())
        names.append(f"L2 ({where})")
    return " + ".join(names) or "none (L1 disabled, no Redis)"


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the fastapi-tiered-cache demo: a slow product catalogue API.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    return parser


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m fastapi_tiered_cache.demo"
) -> int:
    """Run the demo with uvicorn until interrupted; returns the exit status.

    ``prog`` is how the user started it (``fastapi-tiered-cache demo`` from the CLI), for
    ``--help`` and usage errors.
    """
    args = _parser(prog).parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        sys.exit(INSTALL_HINT)
    try:
        settings, generated = demo_settings()
        redis = embedded_redis() if settings.redis_url is None else None
    except ConfigurationError as exc:
        sys.exit(f"error: {exc}")
    except ImportError as exc:
        sys.exit(str(exc))
    app = build_app(settings, redis=redis)
    cache: TieredCache = app.state.tiered_cache
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"fastapi-tiered-cache demo on http://{host}:{args.port}/ (open it for what to try)")
    print(f"cache tiers: {describe_tiers(cache)}")
    if generated:
        why = ", so /me is cached per identity" if cache.settings.caches_identities else ""
        print(f"TIERED_CACHE_SECRET_KEY is not set: using a random key for this process{why}")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
