"""The cache inside real applications' test suites: many event loops in one process, trio,
a start message followed by an exception, and the app's own lifespan state.

Against a real redis-server: a connection used from a loop it does not belong to is what
broke (``Event loop is closed``, ``attached to a different loop``), and fakeredis has no
connections to break.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import StreamingResponse

from fastapi_tiered_cache import CacheSettings, TieredCache, install
from fastapi_tiered_cache.stores.connect import build_client
from fastapi_tiered_cache.stores.loops import PerLoopClient

from .helpers import SECRET, Origin, client_for, make_cache


def _items_app(redis_url: str | None) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    calls: list[int] = []

    @app.get("/items/{item}")
    def read(item: int) -> dict[str, int]:
        calls.append(item)
        return {"item": item, "version": calls.count(item)}

    @app.put("/items/{item}")
    def write(item: int) -> dict[str, bool]:
        return {"ok": True}

    install(app, CacheSettings(redis_url=redis_url, secret_key=SECRET))
    return app, calls


def _client_count(redis_url: str) -> int:
    async def count() -> int:
        admin = aioredis.Redis.from_url(redis_url)
        try:
            return len(await admin.client_list()) - 1  # not this one
        finally:
            await admin.aclose()

    return asyncio.run(count())


@pytest.mark.parametrize("rounds", [3])
def test_test_client_with_and_without_with_over_many_loops(redis_url: str, rounds: int) -> None:
    """Each TestClient ``with`` block, and each request outside one, runs its own loop."""
    app, calls = _items_app(redis_url)
    for _ in range(rounds):
        loose = TestClient(app)  # every request: a new event loop
        assert loose.get("/items/1").json()["item"] == 1
        assert loose.put("/items/1").status_code == 200  # purges: a miss next
        with TestClient(app) as client:  # one loop for the block, with the lifespan
            first = client.get("/items/1")
            again = client.get("/items/1")
            assert first.status_code == again.status_code == 200
            statuses = (first.headers["cache-status"], again.headers["cache-status"])
            assert again.headers["x-cache"] == "HIT", statuses
            assert client.put("/items/1").status_code == 200
        assert loose.get("/items/2").status_code == 200
    assert calls.count(2) == 1  # stored in Redis by one loop, found there by the next ones
    cache: TieredCache = app.state.tiered_cache
    assert cache.store.faults == 0  # no Redis operation failed
    assert _client_count(redis_url) == 0  # every loop closed its connections as it ended


def test_asyncio_run_twice_shares_redis_entries(redis_url: str) -> None:
    app, calls = _items_app(redis_url)

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path)

    first = asyncio.run(get("/items/5"))
    app.state.tiered_cache.store.l1.clear()  # the second loop must ask Redis
    second = asyncio.run(get("/items/5"))
    assert first.json() == second.json() == {"item": 5, "version": 1}
    assert second.headers["cache-status"].endswith("detail=l2")
    assert calls == [5]
    assert app.state.tiered_cache.store.faults == 0


def test_per_loop_client_one_client_per_loop_closed_with_its_loop(redis_url: str) -> None:
    made: list[Any] = []

    def factory() -> Any:
        made.append(build_client(redis_url))
        return made[-1]

    client = PerLoopClient(factory)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    assert isinstance(client, Redis) and len(made) == 1  # the first is never connected

    async def use() -> tuple[Any, int]:
        pipe = client.pipeline(transaction=False)
        pipe.incr("n")
        await pipe.execute()
        return client.current(), int(await script(keys=["n"]))

    first, n1 = asyncio.run(use())
    second, n2 = asyncio.run(use())
    assert (n1, n2) == (2, 4)
    assert first is made[1] and second is made[2]
    assert client.loops == 0  # both loops ended, and each closed its client
    assert _client_count(redis_url) == 0


def test_per_loop_client_two_loops_at_once_each_use_their_own(redis_url: str) -> None:
    client = PerLoopClient(lambda: build_client(redis_url))
    seen: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        async def main() -> None:
            await client.set(name, name)
            barrier.wait()  # both loops alive at once, each with a client
            for _ in range(20):
                assert await client.get(name) == name.encode()
                await asyncio.sleep(0)
            seen[name] = client.current()

        asyncio.run(main())

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen["a"] is not seen["b"]


# Its connection cannot be closed without its loop: Python warns when it is collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_loop_closed_without_shutdown_is_dropped_untouched(redis_url: str) -> None:
    client = PerLoopClient(lambda: build_client(redis_url))

    async def ping() -> bool:
        return bool(await client.ping())

    loop = asyncio.new_event_loop()
    loop.run_until_complete(ping())
    assert client.loops == 1  # nothing ran shutdown_asyncgens: the loop still holds a client
    loop.close()

    assert asyncio.run(ping())  # a new loop: a new client; the closed loop is not touched
    assert client.loops == 0
    gc.collect()  # the abandoned connection goes now, in this test


async def test_an_unexpected_l2_exception_is_a_logged_miss(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Redis):
        async def get(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("Task got Future attached to a different loop")

        async def evalsha(self, *args: Any, **kwargs: Any) -> Any:  # the lookup's script
            raise RuntimeError("Task got Future attached to a different loop")

        async def eval(self, *args: Any, **kwargs: Any) -> Any:  # the same, on first use
            raise RuntimeError("Task got Future attached to a different loop")

    origin = Origin(body=b"fine")
    broken = Broken.from_url(redis_url)
    cache = make_cache(redis=broken, redis_timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="fastapi_tiered_cache"):
        async with client_for(origin, cache) as http:
            responses = [await http.get("/p") for _ in range(2)]
    await broken.aclose()
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.content for r in responses] == [b"fine", b"fine"]
    assert "different loop" in caplog.text
    assert cache.store.faults >= 1


async def _started_then_raises(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/plain"), (b"x-app", b"1")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    raise RuntimeError("boom after the start")


async def _messages(app: Any) -> tuple[list[dict[str, Any]], BaseException | None]:
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/p",
        "raw_path": b"/p",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t")],
        "server": ("t", 80),
        "client": ("127.0.0.1", 1),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except RuntimeError as exc:
        return sent, exc
    return sent, None


async def test_a_start_then_an_exception_reaches_the_client_as_without_the_cache() -> None:
    from fastapi_tiered_cache import TieredCacheMiddleware

    plain, plain_error = await _messages(_started_then_raises)
    cached_app = TieredCacheMiddleware(_started_then_raises, cache=make_cache())
    cached, cached_error = await _messages(cached_app)
    assert plain_error is not None and cached_error is not None  # the server sees it
    assert [m["type"] for m in cached] == [m["type"] for m in plain] == ["http.response.start"]
    assert cached[0]["status"] == 200
    assert dict(cached[0]["headers"])[b"x-app"] == b"1"
    again, _ = await _messages(cached_app)  # nothing was stored
    assert again[0]["status"] == 200 and b"stored" not in dict(again[0]["headers"]).get(
        b"cache-status", b""
    )


def test_a_start_then_an_exception_through_uvicorn_style_server_errors() -> None:
    """Through FastAPI (ServerErrorMiddleware inside the cache): the 200 start goes out."""
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> Any:
        async def body() -> AsyncIterator[bytes]:
            raise RuntimeError("the generator fails before its first chunk")
            yield b""  # pragma: no cover

        return StreamingResponse(body(), headers={"x-app": "1"})

    install(app, CacheSettings(secret_key=SECRET))
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/stream")
    assert response.status_code == 200  # was 500: the held start was lost
    assert response.headers["x-app"] == "1"


def test_lifespan_state_is_the_apps_own() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"db": "conn"}

    app = FastAPI(lifespan=lifespan)

    @app.get("/keys")
    def keys(request: Request) -> list[str]:
        return sorted(request.scope["state"])

    cache = install(app, CacheSettings(secret_key=SECRET))
    with TestClient(app) as client:
        assert client.get("/keys").json() == ["db"]
    assert app.state.tiered_cache is cache


def test_the_fleet_lease_works_again_after_a_shutdown(redis_url: str) -> None:
    app, _ = _items_app(redis_url)
    cache: TieredCache = app.state.tiered_cache
    with TestClient(app) as client:
        client.get("/items/7")
    with TestClient(app) as client:

        async def take() -> bool:
            assert cache.fleet is not None
            lease = await cache.fleet.acquire("k")
            assert lease is not None
            await cache.fleet.release(lease)
            return lease.fleet

        assert client.portal is not None
        assert client.portal.call(take)  # a real fleet lease, not a closed one's local lease


# -- trio -------------------------------------------------------------------------------


def _run_trio(app: Any, paths: list[str], concurrent: bool = False) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            if not concurrent:
                return [await client.get(path) for path in paths]
            results: list[httpx.Response] = []

            async def one(path: str) -> None:
                results.append(await client.get(path))

            async with anyio.create_task_group() as group:
                for path in paths:
                    group.start_soon(one, path)
            return results

    return anyio.run(main, backend="trio")


@pytest.mark.parametrize("with_redis", [False, True], ids=["l1", "redis-configured"])
def test_trio_serves_and_caches_in_l1(
    with_redis: bool, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    url = request.getfixturevalue("redis_url") if with_redis else None
    app, calls = _items_app(url)
    with caplog.at_level(logging.WARNING, logger="fastapi_tiered_cache"):
        first, second = _run_trio(app, ["/items/3", "/items/3"])
        written = _run_trio(app, ["/items/3"])
    assert first.json() == second.json() == written[0].json() == {"item": 3, "version": 1}
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert second.headers["cache-status"].endswith("detail=l1")
    assert calls == [3]
    cache: TieredCache = app.state.tiered_cache
    assert cache.store.faults == 0 and cache.store.breaker.state.value == "closed"
    if with_redis:  # said once, and Redis never touched from trio
        assert caplog.text.count("running outside asyncio") <= 1


def test_trio_coalesces_concurrent_misses() -> None:
    app = FastAPI()
    calls: list[int] = []

    @app.get("/slow")
    async def slow() -> dict[str, int]:
        calls.append(1)
        await anyio.sleep(0.05)
        return {"n": len(calls)}

    install(app, CacheSettings(secret_key=SECRET))
    responses = _run_trio(app, ["/slow"] * 5, concurrent=True)
    assert [r.json() for r in responses] == [{"n": 1}] * 5
    assert calls == [1]


def test_trio_lifespan_starts_and_stops(redis_url: str) -> None:
    app, _ = _items_app(redis_url)

    async def main() -> None:
        from contextlib import AsyncExitStack

        startup = anyio.Event()
        events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            if events[0]["type"] == "lifespan.shutdown":
                await startup.wait()
            return events.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                startup.set()

        async with AsyncExitStack():
            await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    anyio.run(main, backend="trio")
