"""A small app for the CLI tests: ``fastapi-tiered-cache routes tests.cli_app:app``, and an
admin router that ``fastapi-tiered-cache stats`` reads when uvicorn serves it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Response, WebSocket
from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from fastapi_tiered_cache import (
    CacheSettings,
    RouteRule,
    TieredCache,
    TieredCacheMiddleware,
    cache_policy,
    install,
)
from fastapi_tiered_cache.admin import build_admin_router

ADMIN_TOKEN = "cli-admin-token-0123456789"
SECRET = "cli-secret-key-0123456789abcdef"

app = FastAPI()


@app.get("/products", name="list_products")
async def list_products() -> list[int]:
    return [1, 2, 3]


@app.get("/products/{product_id}", name="get_product")
async def get_product(product_id: int) -> dict[str, int]:
    return {"id": product_id}


@app.get("/catalog/{section}", name="catalog")
@cache_policy(ttl=120, query_allow=["page"])
async def catalog(
    section: str, x_region: Annotated[str | None, Header()] = None
) -> dict[str, str | None]:
    return {"section": section, "region": x_region}


@app.post("/products", name="create_product", status_code=201)
async def create_product() -> dict[str, int]:
    return {"id": 4}


@app.get("/account/me", name="me")
async def me(response: Response) -> dict[str, str]:
    response.headers["cache-control"] = "private"
    return {"user": "alice"}


@app.get("/orders", name="orders")
async def orders(token: Annotated[Any, Depends(HTTPBearer())]) -> list[int]:
    return [1]


@app.get("/debug", name="debug")
async def debug(request: Request) -> dict[str, str]:
    return {"ua": request.headers.get("user-agent", "")}


@app.websocket("/ws", name="live")
async def live(websocket: WebSocket) -> None:
    await websocket.close()


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app.router.routes.append(Mount("/ops", routes=[Route("/health", health, name="health")]))


class Audit:
    """A plain ASGI middleware (an audit log, say): the cache cannot see what it reads,
    so it is vouched for (``trusted_middleware``); ``gated`` below shows one that is not."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


app.add_middleware(Audit)

cache = install(
    app,
    CacheSettings(
        secret_key=SECRET,
        default_ttl=60,
        trusted_middleware=["tests.cli_app.Audit"],
        rules=[
            RouteRule(path="/products/*", ttl=300, vary=["accept-language"]),
            RouteRule(path="/account/**", cache=False),
            RouteRule(path="/_cache/**", cache=False),
        ],
    ),
)
app.include_router(build_admin_router(cache, token=ADMIN_TOKEN), prefix="/_cache")


class Shim:
    """An ASGI wrapper the cache cannot see through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


blind = TieredCacheMiddleware(
    Shim(FastAPI()),
    cache=TieredCache(CacheSettings(rules=[RouteRule(path="/static/**", ttl=3600)])),
)


gated = FastAPI()


@gated.get("/news")
async def news() -> dict[str, str]:
    return {"news": "members only"}


@gated.get("/declared")
@cache_policy(ttl=30, vary=["x-team"])
async def declared() -> dict[str, str]:
    return {"news": "keyed by team"}


class TeamGate(Audit):
    """Not vouched for (a subclass is another class): it may read any header."""


gated.add_middleware(TeamGate)
install(gated, CacheSettings(secret_key=SECRET))
