"""The cache in the app's OpenAPI schema (``openapi.py``): the ``x-cache`` extension of every
operation, with the verdicts of ``fastapi-tiered-cache routes``, and on cached operations the
headers the cache adds and its 304 answer."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPBearer
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from fastapi_tiered_cache import CacheSettings, TieredCache, cache_policy, install, no_cache
from fastapi_tiered_cache.explain import describe_route, iter_routes
from fastapi_tiered_cache.openapi import COMPONENT_PREFIX, add_cache_info

from .helpers import SECRET

HEADERS = ["Cache-Status", "X-Cache", "ETag", "Age"]
# FastAPI gives a route serving GET and POST one operation id for both (it warns).
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate Operation ID:UserWarning")


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{COMPONENT_PREFIX}{name}"}


def build(**options: Any) -> FastAPI:
    """Routes of every kind the verdicts tell apart; ``install()`` before the routes, as
    apps usually do."""
    app = FastAPI()
    install(app, CacheSettings(secret_key=SECRET, **{"openapi": True, **options}))

    @app.get("/items/{item_id}")
    @cache_policy(ttl="5m", tags=["item:{item_id}"])
    async def item(item_id: int, x_lang: Annotated[str | None, Header()] = None) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/items")
    async def items() -> list[int]:
        return [1]

    @app.get("/me")
    async def me(credentials: Annotated[Any, Depends(HTTPBearer())]) -> dict[str, str]:
        return {"user": "alice"}

    @app.get("/raw")
    async def raw(request: Request) -> dict[str, str]:
        return {}

    @app.get("/clock")
    @no_cache
    async def clock() -> float:
        return 0.0

    @app.post("/items")
    async def create() -> dict[str, int]:
        return {"id": 2}

    @app.api_route("/both", methods=["GET", "POST"])
    async def both() -> dict[str, int]:
        return {}

    router = APIRouter(prefix="/v1")

    @router.get("/files/{file_path:path}")
    async def files(file_path: str) -> str:
        return file_path

    app.include_router(router)
    app.router.routes.append(Mount("/legacy", routes=[Route("/x", PlainTextResponse)]))
    return app


def resolved(schema: dict[str, Any], reference: dict[str, str]) -> dict[str, Any]:
    """A ``$ref`` followed within the schema (it must point at something)."""
    node: Any = schema
    for part in reference["$ref"].removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def test_every_operation_carries_its_verdict() -> None:
    schema = build().openapi()
    paths = schema["paths"]

    assert paths["/items/{item_id}"]["get"]["x-cache"] == {
        "cached": True,
        "verdict": "yes",
        "scope": "shared",
        "ttl": 300,
        "key": ["path", "query", "h:x-lang", "tenant", "identity"],
        "rule": "@cache_policy",
    }
    assert paths["/items"]["get"]["x-cache"]["ttl"] == 60
    assert paths["/me"]["get"]["x-cache"]["scope"] == "per-user"
    assert paths["/raw"]["get"]["x-cache"] == {
        "cached": False,
        "verdict": "no (request-object)",
        "reason": "build.<locals>.raw takes the Request",
        "rule": None,
    }
    assert paths["/clock"]["get"]["x-cache"] == {
        "cached": False,
        "verdict": "no (rule)",
        "rule": "@cache_policy",
    }
    assert paths["/items"]["post"]["x-cache"]["verdict"] == "no (method)"
    assert paths["/both"]["get"]["x-cache"]["cached"] is True
    assert paths["/both"]["post"]["x-cache"]["cached"] is False
    assert paths["/v1/files/{file_path}"]["get"]["x-cache"]["cached"] is True
    assert not any(path.startswith("/legacy") for path in paths)


def test_the_verdicts_are_those_of_the_routes_command() -> None:
    app = build()
    cache = app.state.tiered_cache
    schema = app.openapi()
    shown = {
        (path, methods): describe_route(cache, methods, path, owner)[0]
        for methods, path, _, owner in iter_routes(app.routes)
    }

    compared = 0
    for (path, methods), verdict in shown.items():
        for method in methods.split(","):
            operation = schema["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            expected = verdict if "," not in methods else operation["x-cache"]["verdict"]
            assert operation["x-cache"]["verdict"] == expected, (path, method)
            compared += 1
    assert compared >= 7


def test_cached_operations_document_the_headers_and_the_304() -> None:
    schema = build().openapi()
    item = schema["paths"]["/items/{item_id}"]["get"]["responses"]

    assert item["200"]["headers"] == {name: ref(name) for name in HEADERS}
    assert "headers" not in item["422"]  # errors are never stored
    assert item["304"]["headers"] == {name: ref(name) for name in HEADERS}
    assert "without a body" in item["304"]["description"]
    for name in HEADERS:
        header = resolved(schema, ref(name))
        assert header["description"] and header["schema"]["type"] in ("string", "integer")
    assert resolved(schema, ref("X-Cache"))["schema"]["enum"] == [
        "HIT",
        "MISS",
        "STALE",
        "REVALIDATED",
        "BYPASS",
    ]
    for path in ("/raw", "/clock"):
        responses = schema["paths"][path]["get"]["responses"]
        assert "304" not in responses
        assert "headers" not in responses["200"]
    assert "304" not in schema["paths"]["/items"]["post"]["responses"]


def test_what_the_app_documents_is_kept() -> None:
    app = FastAPI()
    install(app, CacheSettings(secret_key=SECRET, openapi=True))
    mine = {"description": "My own Age", "schema": {"type": "integer"}}
    responses: dict[int | str, dict[str, Any]] = {
        200: {"headers": {"Age": mine}},
        304: {"description": "Nothing new"},
    }

    @app.get("/doc", responses=responses)
    async def doc() -> dict[str, int]:
        return {}

    documented = app.openapi()["paths"]["/doc"]["get"]["responses"]
    assert documented["200"]["headers"]["Age"] == mine
    assert documented["200"]["headers"]["Cache-Status"] == ref("Cache-Status")
    assert documented["304"] == {"description": "Nothing new"}


@pytest.mark.parametrize(
    ("options", "x_cache", "headers"),
    [
        ({"openapi": False}, False, False),
        ({"enabled": False}, False, False),
        ({"x_cache_header": False}, True, True),
    ],
    ids=["openapi-off", "cache-disabled", "no-x-cache"],
)
def test_settings_turn_it_off(options: dict[str, Any], x_cache: bool, headers: bool) -> None:
    schema = build(**options).openapi()
    operation = schema["paths"]["/items"]["get"]

    assert ("x-cache" in operation) is x_cache
    assert ("headers" in operation["responses"]["200"]) is headers
    assert ("headers" in schema.get("components", {})) is headers
    if options == {"x_cache_header": False}:
        assert set(operation["responses"]["200"]["headers"]) == set(HEADERS) - {"X-Cache"}


def test_opt_in_says_which_routes_are_not_named() -> None:
    schema = build(opt_in=True).openapi()

    assert schema["paths"]["/items"]["get"]["x-cache"]["verdict"] == "no (not-opted-in)"
    assert schema["paths"]["/items/{item_id}"]["get"]["x-cache"]["cached"] is True


def test_routes_added_later_are_described_and_a_second_call_changes_nothing() -> None:
    app = build()
    first = app.openapi()
    again = app.openapi()
    assert again is first

    @app.get("/late")
    async def late() -> int:
        return 1

    app.openapi_schema = None  # older FastAPI releases keep the first schema: regenerate
    schema = app.openapi()
    assert schema is not first
    assert schema["paths"]["/late"]["get"]["x-cache"]["cached"] is True
    before = repr(schema)
    add_cache_info(schema, app, app.state.tiered_cache)
    assert repr(schema) == before


def test_an_openapi_function_set_before_install_is_extended() -> None:
    app = FastAPI()

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title="Shop", version="1", routes=app.routes)
            schema["info"]["x-logo"] = {"url": "logo.png"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]

    @app.get("/items")
    async def items() -> list[int]:
        return []

    install(app, CacheSettings(secret_key=SECRET, openapi=True))
    schema = app.openapi()
    assert schema["info"]["x-logo"] == {"url": "logo.png"}
    assert schema["paths"]["/items"]["get"]["x-cache"]["cached"] is True


def test_an_openapi_function_set_after_install_can_add_the_cache_itself() -> None:
    app = FastAPI()
    cache = install(app, CacheSettings(secret_key=SECRET, openapi=True))

    @app.get("/items")
    async def items() -> list[int]:
        return []

    def custom_openapi() -> dict[str, Any]:
        schema = get_openapi(title="Shop", version="1", routes=app.routes)
        return add_cache_info(schema, app, cache)

    app.openapi = custom_openapi  # type: ignore[method-assign]
    assert app.openapi()["paths"]["/items"]["get"]["x-cache"]["cached"] is True


async def test_the_served_schema_and_docs_show_it() -> None:
    app = build()
    cache: TieredCache = app.state.tiered_cache
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            served = [await client.get("/openapi.json") for _ in range(2)]
            docs = await client.get("/docs")
    finally:
        await cache.close()

    for response in served:
        assert response.status_code == 200
        assert response.json()["paths"]["/items"]["get"]["x-cache"]["cached"] is True
        assert response.headers["x-cache"] == "BYPASS"  # the schema route is not cached
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text


def test_by_default_the_schema_is_the_apps_own() -> None:
    """Installing the cache must not change an app's contract: snapshot tests of
    ``/openapi.json`` and generated clients see the same schema, byte for byte."""

    def shop() -> FastAPI:
        app = FastAPI()

        @app.get("/items/{item_id}")
        @cache_policy(ttl="5m")
        async def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}

        @app.post("/items")
        async def create() -> dict[str, int]:
            return {"id": 1}

        return app

    cached = shop()
    install(cached, CacheSettings(secret_key=SECRET))
    assert cached.openapi() == shop().openapi()
