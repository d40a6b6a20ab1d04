"""Route-aware keys: headers, cookies and security schemes that FastAPI routes declare."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPBasic, HTTPBearer
from pydantic import BaseModel

from fastapi_tiered_cache import TieredCacheMiddleware
from fastapi_tiered_cache.routes import RouteTable, cache_policy, no_cache

from .helpers import FakeClock, make_cache


class Tags(BaseModel):
    x_tag: str | None = None


def token_header(x_token: Annotated[str | None, Header()] = None) -> str | None:
    return x_token


def build() -> FastAPI:
    app = FastAPI()

    @app.get("/ua")
    async def ua(user_agent: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        return {"ua": user_agent}

    @app.api_route("/ua-or-head", methods=["GET", "HEAD"])
    async def ua_or_head(user_agent: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        return {"ua": user_agent}

    @app.get("/dep")
    async def dep(token: Annotated[str | None, Depends(token_header)]) -> dict[str, Any]:
        return {"token": token}

    @app.get("/model")
    async def model(tags: Annotated[Tags, Header()]) -> dict[str, Any]:
        return {"tag": tags.x_tag}

    @app.get("/ads")
    async def ads(ads_id: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        return {"ads": ads_id}

    @app.get("/key")
    async def key(k: Annotated[str, Depends(APIKeyHeader(name="X-Key"))]) -> dict[str, Any]:
        return {"key": k}

    @app.get("/cookie-key")
    async def cookie_key(k: Annotated[str, Depends(APIKeyCookie(name="sess2"))]) -> dict[str, Any]:
        return {"key": k}

    @app.get("/bearer")
    async def bearer(c: Annotated[Any, Depends(HTTPBearer())]) -> dict[str, Any]:
        return {"who": c.credentials}

    @app.get("/basic")
    async def basic(c: Annotated[Any, Depends(HTTPBasic())]) -> dict[str, Any]:
        return {"who": c.username}

    @app.get("/raw")
    async def raw(request: Request) -> dict[str, Any]:
        return {"anything": request.headers.get("x-anything")}

    @app.get("/raw-allowed")
    @cache_policy(ttl=30, vary=["x-anything"])
    async def raw_allowed(request: Request) -> dict[str, Any]:
        return {"anything": request.headers.get("x-anything")}

    @app.get("/never")
    @no_cache
    async def never() -> dict[str, Any]:
        return {"n": 1}

    @app.get("/short")
    @cache_policy(ttl=5)
    async def short() -> dict[str, Any]:
        return {"n": 1}

    router = APIRouter(prefix="/team", dependencies=[Depends(token_header)])

    @router.get("/{team_id}")
    async def team(team_id: int, x_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        return {"team": team_id, "token": x_token}

    app.include_router(router)
    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(clock: FakeClock) -> Any:
    app = build()
    app.add_middleware(
        TieredCacheMiddleware, cache=make_cache(clock, l1_max_ttl=100, catch_all=False)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        ("/ua", {"user-agent": "a"}, {"user-agent": "b"}),
        ("/dep", {"x-token": "a"}, {"x-token": "b"}),
        ("/dep", {"x-token": "a"}, {}),
        ("/model", {"x-tag": "a"}, {"x-tag": "b"}),
        ("/ads", {"cookie": "ads_id=a"}, {"cookie": "ads_id=b"}),
        ("/key", {"x-key": "a"}, {"x-key": "b"}),
        ("/cookie-key", {"cookie": "sess2=a"}, {"cookie": "sess2=b"}),
        ("/bearer", {"authorization": "Bearer a"}, {"authorization": "Bearer b"}),
        ("/basic", {"authorization": "Basic YTpi"}, {"authorization": "Basic Yzpk"}),
        ("/team/1", {"x-token": "a"}, {"x-token": "b"}),
    ],
)
async def test_declared_inputs_join_the_key(
    client: httpx.AsyncClient, path: str, first: dict[str, str], second: dict[str, str]
) -> None:
    one = await client.get(path, headers=first)
    two = await client.get(path, headers=second)
    again = await client.get(path, headers=first)
    assert one.status_code == 200
    assert two.headers["x-cache"] == "MISS"
    assert one.json() != two.json()
    assert again.headers["x-cache"] == "HIT" and again.json() == one.json()


async def test_unrelated_cookies_do_not_split_a_cookie_keyed_route(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/ads", headers={"cookie": "ads_id=a; _ga=1"})
    hit = await client.get("/ads", headers={"cookie": "_ga=2; ads_id=a"})
    assert hit.headers["x-cache"] == "HIT"


async def test_raw_request_endpoints_are_cached_only_when_a_policy_says_so(
    client: httpx.AsyncClient,
) -> None:
    raw = await client.get("/raw", headers={"x-anything": "a"})
    assert "detail=request-object" in raw.headers["cache-status"]
    await client.get("/raw-allowed", headers={"x-anything": "a"})
    other = await client.get("/raw-allowed", headers={"x-anything": "b"})
    same = await client.get("/raw-allowed", headers={"x-anything": "a"})
    assert other.headers["x-cache"] == "MISS" and other.json() == {"anything": "b"}
    assert same.headers["x-cache"] == "HIT"


async def test_decorators_set_the_policy(client: httpx.AsyncClient, clock: FakeClock) -> None:
    never = await client.get("/never")
    assert "detail=rule" in never.headers["cache-status"]
    await client.get("/short")
    clock.advance(6)
    assert (await client.get("/short")).headers["x-cache"] == "MISS"


async def test_head_uses_the_get_entry_where_the_route_accepts_head(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/ua-or-head", headers={"user-agent": "a"})
    head = await client.head("/ua-or-head", headers={"user-agent": "a"})
    assert head.headers["x-cache"] == "HIT" and head.content == b""


async def test_head_to_a_get_only_route_gets_the_routers_405(client: httpx.AsyncClient) -> None:
    """FastAPI's APIRoute does not accept HEAD for a GET route: no stored GET answers it."""
    await client.get("/ua", headers={"user-agent": "a"})
    head = await client.head("/ua", headers={"user-agent": "a"})
    assert head.status_code == 405
    assert head.headers["cache-status"].endswith("fwd=bypass; detail=method-not-allowed")


def test_route_table_lists_inputs() -> None:
    table = RouteTable.of(build())
    by_template = {inputs.template: inputs for _, _, inputs in table.routes}
    assert by_template["/dep"].vary == ("header:x-token",)
    assert by_template["/model"].vary == ("header:x-tag",)
    assert by_template["/ads"].vary == ("cookie:ads_id",)
    assert by_template["/key"].credential_headers == ("x-key",)
    assert by_template["/cookie-key"].credential_cookies == ("sess2",)
    assert by_template["/bearer"].credential_headers == ("authorization",)
    assert by_template["/raw"].raw_request
    assert by_template["/team/{team_id}"].vary == ("header:x-token",)
    assert by_template["/never"].policy is not None and not by_template["/never"].policy.cache
