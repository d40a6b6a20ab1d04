"""JSON routes, parameters, ``response_model`` filtering, HEAD, redirects, errors the
framework makes (404, 405, 422), and the OpenAPI and docs routes."""

from __future__ import annotations

from fastapi import FastAPI, Query
from pydantic import BaseModel

from ..harness import Client, Env, check


class Item(BaseModel):
    id: int
    name: str


class Stored(Item):
    secret: str


ITEMS = {1: Stored(id=1, name="one", secret="s1"), 2: Stored(id=2, name="two", secret="s2")}


def create_app() -> FastAPI:
    app = FastAPI(title="basics")
    app.state.reads = 0

    @app.get("/items/{item_id}", response_model=Item)
    def read(item_id: int) -> Stored:
        app.state.reads += 1
        return ITEMS[item_id]

    @app.get("/search")
    def search(q: str = Query(min_length=2), limit: int = 10) -> dict[str, object]:
        return {"q": q, "limit": limit}

    @app.get("/list/")
    def listing() -> list[int]:
        return sorted(ITEMS)

    @app.post("/items", status_code=201)
    def create(item: Item) -> Item:
        return item

    @app.get("/reads")
    def reads() -> dict[str, int]:
        return {"reads": app.state.reads}

    return app


@check()
def response_model_filters_the_stored_fields(client: Client, env: Env) -> None:
    for _ in range(2):
        response = client.get("/items/1")
        assert response.status_code == 200
        assert response.json() == {"id": 1, "name": "one"}  # "secret" filtered out


@check()
def query_parameters_and_validation(client: Client, env: Env) -> None:
    assert client.get("/search?q=ab&limit=3").json() == {"q": "ab", "limit": 3}
    assert client.get("/search?limit=3&q=ab").json() == {"q": "ab", "limit": 3}
    invalid = client.get("/search?q=a")
    assert invalid.status_code == 422
    assert client.get("/search?q=a").json() == invalid.json()


@check()
def head_on_a_get_only_route(client: Client, env: Env) -> None:
    assert client.get("/items/1").status_code == 200
    head = client.head("/items/1")  # FastAPI's APIRoute answers HEAD with 405
    assert head.status_code == 405 and head.headers["allow"] == "GET"


@check()
def not_found_method_not_allowed_and_redirects(client: Client, env: Env) -> None:
    assert client.get("/items/1").status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert client.get("/nowhere").status_code == 404
    assert client.delete("/items/1").status_code == 405
    assert client.get("/list").json() == [1, 2]  # redirected to /list/


@check()
def a_post_body_is_validated_and_echoed(client: Client, env: Env) -> None:
    assert client.post("/items", json={"id": 3, "name": "three"}).status_code == 201
    assert client.post("/items", json={"id": "x"}).status_code == 422


@check()
def openapi_and_docs(client: Client, env: Env) -> None:
    schema = client.get("/openapi.json")
    assert schema.json()["info"]["title"] == "basics"
    assert "/items/{item_id}" in client.get("/openapi.json").json()["paths"]
    assert "swagger-ui" in client.get("/docs").text
    assert "redoc" in client.get("/redoc").text.lower()


@check(counts_origin=True)
def repeated_reads_reach_the_origin_once_when_cached(client: Client, env: Env) -> None:
    for _ in range(3):
        client.get("/items/2")
    reads = client.app.state.reads
    assert reads == (1 if env.cached else 3)
    assert client.get("/reads").json() == {"reads": reads}
