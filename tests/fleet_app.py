"""The app each process of ``tests/support/fleet.py`` serves (one uvicorn process per port).

Configured by ``TIERED_CACHE_*`` variables like any app. Its "database" is a Redis of its
own (``FLEET_DATA_URL``, never behind the proxy that cuts a process off from the cache's
Redis), so every process sees the same versions:

- ``GET /items/{name}``: ``{"name", "version", "pid"}``; each call of the origin is counted
  in ``fleet:calls:{name}``, and takes ``FLEET_ORIGIN_DELAY`` seconds *after* reading the
  version (a read-through that read the old version before a write lands after it).
- ``PUT``, ``PATCH``, ``POST``, ``DELETE /items/{name}``: a new version, ``{"version"}``.

``x-worker-pid``, added outside the cache, names the process that served the response.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tiered_cache import install, load_settings

DELAY = float(os.environ.get("FLEET_ORIGIN_DELAY", "0"))
data = aioredis.Redis.from_url(os.environ["FLEET_DATA_URL"])


class ServedBy:
    """Adds ``x-worker-pid`` to every response, hits included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-worker-pid", self.pid)]
            await send(message)

        await self.app(scope, receive, send_with_pid)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await data.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz(response: Response) -> dict[str, int | bool]:
    """The worker's pid, and whether its invalidation bus is heard yet (until then its L1
    entries are held only as long as the coherence bound allows)."""
    response.headers["cache-control"] = "no-store"
    bus = cache.bus
    return {"pid": os.getpid(), "bus": bus is not None and bus.healthy}


@app.get("/items/{name}")
async def read(name: str) -> dict[str, str | int]:
    version = int(await data.get(f"fleet:data:{name}") or 0)
    await data.incr(f"fleet:calls:{name}")
    if DELAY:
        await asyncio.sleep(DELAY)
    return {"name": name, "version": version, "pid": os.getpid()}


@app.put("/items/{name}")
@app.patch("/items/{name}")
@app.post("/items/{name}")
@app.delete("/items/{name}")
async def write(name: str) -> dict[str, int]:
    return {"version": int(await data.incr(f"fleet:data:{name}"))}


cache = install(app, load_settings())
app.add_middleware(ServedBy)  # added last, so outermost: it sees hits too
