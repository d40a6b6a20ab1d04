"""Small tools shared by the tests: a fake clock, a counting origin, a client factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.types import ASGIApp

from fastapi_tiered_cache import CacheSettings, TieredCache, TieredCacheMiddleware

SECRET = "test-secret-key-0123456789abcdef"


class FakeClock:
    """Wall clock and monotonic timer in one, advanced by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_cache(clock: FakeClock | None = None, redis: Any = None, **options: Any) -> TieredCache:
    options.setdefault("secret_key", SECRET)
    settings = CacheSettings(**options)
    clock = clock or FakeClock()
    return TieredCache(settings, redis=redis, clock=clock, l1_timer=clock)


class CacheClient(httpx.AsyncClient):
    """An httpx client for an app behind the cache; closing it also closes the cache
    (its background tasks and Redis connections), so no test leaks them."""

    def __init__(self, app: ASGIApp, cache: TieredCache) -> None:
        self.cache = cache
        wrapped = TieredCacheMiddleware(app, cache=cache)
        super().__init__(transport=httpx.ASGITransport(app=wrapped), base_url="http://test")

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.cache.close()

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            await self.cache.close()


def client_for(app: ASGIApp, cache: TieredCache) -> CacheClient:
    return CacheClient(app, cache)


class Origin:
    """A raw ASGI app answering with what a test configured, counting its calls."""

    def __init__(
        self,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | Callable[[dict[str, Any]], bytes] = b"hello",
        chunks: list[bytes] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers if headers is not None else [("content-type", "text/plain")]
        self.body = body
        self.chunks = chunks
        self.calls = 0
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.calls += 1
        self.scopes.append(scope)
        body = self.body(scope) if callable(self.body) else self.body
        chunks = self.chunks if self.chunks is not None else [body]
        headers = [(k.encode(), v.encode()) for k, v in self.headers]
        if self.chunks is None:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    def request_header(self, name: str, call: int = -1) -> str | None:
        for key, value in self.scopes[call]["headers"]:
            if key.decode().lower() == name:
                return str(value.decode())
        return None
