"""A small app for the CLI tests: ``fastapi-tiered-cache routes tests.cli_app:app``, and an
admin router that ``fastapi-tiered-cache stats`` reads when uvicorn serves it."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header, Response, WebSocket
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from fastapi_tiered_cache import CacheSettings, RouteRule, cache_policy, install
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


@app.websocket("/ws", name="live")
async def live(websocket: WebSocket) -> None:
    await websocket.close()


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app.router.routes.append(Mount("/ops", routes=[Route("/health", health, name="health")]))

cache = install(
    app,
    CacheSettings(
        secret_key=SECRET,
        default_ttl=60,
        rules=[
            RouteRule(path="/products/*", ttl=300, vary=["accept-language"]),
            RouteRule(path="/account/**", cache=False),
            RouteRule(path="/_cache/**", cache=False),
        ],
    ),
)
app.include_router(build_admin_router(cache, token=ADMIN_TOKEN), prefix="/_cache")
