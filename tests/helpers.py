"""Small tools shared by the tests: a fake clock, a counting origin, a client factory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from starlette.types import ASGIApp

from fastapi_tiered_cache import CacheSettings, TieredCache, TieredCacheMiddleware

SECRET = "test-secret-key-0123456789abcdef"
# A raw ASGI app (``Origin`` below) has no routes the cache can read, so the cache must not
# cache by URL in front of it (``detail=opaque-app``) unless a rule covers the request. The
# tests built on ``Origin`` opt in exactly as a user would: with a catch-all rule, last.
CATCH_ALL = {"path": "/**"}


class FakeClock:
    """Wall clock and monotonic timer in one, advanced by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_cache(
    clock: FakeClock | None = None, redis: Any = None, *, catch_all: bool = True, **options: Any
) -> TieredCache:
    """A cache with a fake clock; ``catch_all`` appends ``CATCH_ALL`` to the rules, which
    tests of a raw ``Origin`` need (pass False in front of a FastAPI app: a rule replaces
    its routes' ``@cache_policy`` and opts in the routes the cache cannot see through)."""
    options.setdefault("secret_key", SECRET)
    if catch_all:
        options["rules"] = [*options.get("rules", []), CATCH_ALL]
    settings = CacheSettings(**options)
    clock = clock or FakeClock()
    return TieredCache(settings, redis=redis, clock=clock, l1_timer=clock)


async def healthy(*caches: TieredCache, timeout: float = 5.0) -> None:
    """Until every cache's invalidation bus delivers (its L1 is then trusted)."""
    deadline = time.monotonic() + timeout
    while not all(c.bus is not None and c.bus.healthy for c in caches):
        assert time.monotonic() < deadline, "the bus did not come up"
        await asyncio.sleep(0.01)


async def seen_within(cache: TieredCache, key: str, expected: Any, bound: float) -> float:
    """Seconds until ``cache.get(key)`` gives ``expected`` (polled every millisecond);
    fails once ``bound`` seconds have passed without it."""
    started = time.monotonic()
    while (found := await cache.get(key)) != expected:
        elapsed = time.monotonic() - started
        assert elapsed < bound, f"still {found!r} after {elapsed:.3f}s"
        await asyncio.sleep(0.001)
    return time.monotonic() - started


class CacheClient(httpx.AsyncClient):
    """An httpx client for an app behind the cache; closing it also closes the cache
    (its background tasks and Redis connections), so no test leaks them."""

    def __init__(self, app: ASGIApp, cache: TieredCache) -> None:
        self.cache = cache
        wrapped = TieredCacheMiddleware(app, cache=cache)
        super().__init__(transport=httpx.ASGITransport(app=wrapped), base_url="http://test")

    async def __aenter__(self) -> CacheClient:
        await super().__aenter__()
        await hear_the_bus(self.cache)
        return self

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


async def hear_the_bus(cache: TieredCache, wait: float = 1.0) -> None:
    """Start the cache's bus (as its first request would, without a lifespan) and wait, a
    second at most, until L1 is trusted. A bus first heard in the middle of a test drops
    L1 once (rightly: purges before it may have been missed), which made tests that count
    L1 hits depend on timing; with Redis unreachable the bus is not waited for."""
    cache.ensure_started()
    if cache.bus is None or cache.bus_loop is not asyncio.get_running_loop():
        return
    for _ in range(int(wait / 0.005)):
        if cache.store.coherence.trusted():
            return
        await asyncio.sleep(0.005)


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
