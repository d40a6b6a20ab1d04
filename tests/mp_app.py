"""The app that ``tests/test_multiprocess.py`` serves with ``uvicorn --workers 4``.

Configured by ``TIERED_CACHE_*`` variables like any app. Its "database" is Redis itself
(keys ``mp:data:<name>``, in the same deployment as the cache), so every worker sees the
same versions. A read answers ``{"resource", "version", "identity", "pid"}`` where ``pid`` is
the worker that *computed* it; the ``x-worker-pid`` header, added outside the cache, is the
worker that *served* it (a hit replays the computing worker's body).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tiered_cache import install, load_settings
from fastapi_tiered_cache.stores.connect import build_client_from_settings

TOKENS = {"token-alice": "alice", "token-bob": "bob", "token-carol": "carol"}
ANONYMOUS = "anonymous"


def identity_of(authorization: str | None) -> str:
    if not authorization:
        return ANONYMOUS
    return TOKENS.get(authorization.removeprefix("Bearer ").strip(), "unknown")


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


settings = load_settings()
data = build_client_from_settings(settings)  # the same Redis deployment as the cache
if data is None:
    raise RuntimeError("set TIERED_CACHE_REDIS_URL: the app keeps its data in Redis")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await data.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/resources/{name}")
async def read(
    name: str, authorization: Annotated[str | None, Header()] = None
) -> dict[str, str | int]:
    version = int(await data.get(f"mp:data:{name}") or 0)
    return {
        "resource": name,
        "version": version,
        "identity": identity_of(authorization),
        "pid": os.getpid(),
    }


@app.post("/resources/{name}")
@app.put("/resources/{name}")
async def write(name: str) -> dict[str, int]:
    return {"version": int(await data.incr(f"mp:data:{name}"))}


install(app, settings)
app.add_middleware(ServedBy)  # added last, so outermost: it sees hits too
