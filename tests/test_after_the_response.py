"""The cache's work after the app has answered adds no checkpoint to the request's task.

FastAPI answers without a checkpoint once its endpoint returns, and code that calls an app
in-process relies on it: a request cancelled from inside its endpoint (a test's cancel
scope around ``httpx.ASGITransport``) still returns its response. With Redis, storing the
entry and releasing the fleet lease await Redis after the last byte: shielded, they must
neither lose that response nor be cut short (found with FastAPI's own test suite).
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings, install

from .helpers import SECRET


def _app(cancel: anyio.CancelScope, redis_url: str | None, namespace: str) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def endpoint() -> dict[str, bool]:
        cancel.cancel()  # the caller's scope: it fires at the caller's next checkpoint
        return {"ok": True}

    install(app, CacheSettings(secret_key=SECRET, redis_url=redis_url, namespace=namespace))
    return app


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "l1-only"])
async def test_a_request_cancelled_from_its_endpoint_still_gets_its_response(
    redis_url: str, with_redis: bool
) -> None:
    cancel = anyio.CancelScope()
    app = _app(cancel, redis_url if with_redis else None, "after-response")
    response = None
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            with cancel:
                response = await client.get("/")
            assert cancel.cancel_called
            assert not cancel.cancelled_caught
            assert response is not None and response.status_code == 200
            assert response.json() == {"ok": True}
            assert response.headers["x-cache"] == "MISS"
            # The store ran to its end, shielded: the next request is a hit.
            again = await client.get("/")
            assert again.headers["x-cache"] == "HIT"
            assert again.json() == {"ok": True}
    finally:
        await app.state.tiered_cache.close()
