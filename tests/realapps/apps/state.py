"""An app with a lifespan that yields state, and code that reaches the cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request

from fastapi_tiered_cache import TieredCache, get_cache
from fastapi_tiered_cache.exceptions import StoreUnavailable

from ..harness import Client, Env, check


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        app.state.started = True
        yield {"pool": "db-pool"}
        app.state.started = False

    app = FastAPI(lifespan=lifespan)
    app.state.started = False
    app.state.version = 1

    @app.get("/state-keys")
    def keys(request: Request) -> list[str]:
        return sorted(request.scope.get("state", {}))

    @app.get("/version")
    def version() -> dict[str, int]:
        return {"version": app.state.version}

    @app.put("/version")
    def bump() -> dict[str, int]:
        app.state.version += 1
        return {"version": app.state.version}

    @app.post("/purge")
    async def purge(cache: Annotated[TieredCache, Depends(get_cache)]) -> dict[str, bool]:
        try:
            await cache.invalidate_path("/version")
        except StoreUnavailable:  # Redis could not be told (under trio: never): L1 only
            return {"purged": False}
        return {"purged": True}

    return app


@check()
def the_lifespan_state_is_the_apps_own(client: Client, env: Env) -> None:
    expected = ["pool"] if env.lifespan else []
    assert client.get("/state-keys").json() == expected


@check()
def a_write_is_seen_by_the_next_read(client: Client, env: Env) -> None:
    assert client.get("/version").json() == {"version": 1}
    assert client.get("/version").json() == {"version": 1}
    assert client.put("/version").json() == {"version": 2}
    assert client.get("/version").json() == {"version": 2}


@check(counts_origin=True)
def the_cache_is_reachable_from_a_dependency(client: Client, env: Env) -> None:
    if not env.cached:
        with pytest.raises(RuntimeError, match="no TieredCache installed"):
            client.post("/purge")
        return
    assert client.get("/version").json() == {"version": 1}
    client.app.state.version = 5  # changed behind the cache's back
    assert client.get("/version").json() == {"version": 1}  # still the stored one
    purged = client.post("/purge").json()
    assert purged == {"purged": not (env.cache == "redis" and env.backend == "trio")}
    assert client.get("/version").json() == {"version": 5}
