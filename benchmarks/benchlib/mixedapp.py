"""The application of the mixed-workload benchmark: ``GET`` and ``PUT /items/{item_id}``.

One FastAPI app per variant, the same endpoints and the same origin in each:

- ``bare``: no cache;
- ``ours``: ``install(app)`` with the defaults (read from ``TIERED_CACHE_*``, as in
  production) plus ``TIERED_CACHE_REDIS_URL`` and ``TIERED_CACHE_SECRET_KEY``; a successful
  ``PUT`` purges the item (and its collection) by itself;
- ``fc2``: fastapi-cache2's ``@cache`` with its ``RedisBackend``; the ``PUT`` deletes the
  item's key (through the backend: ``FastAPICache.clear(key=...)`` always adds the
  namespace and then scans with ``KEYS`` instead of deleting the key);
- ``cashews``: cashews' ``@cache`` on ``redis://``; the ``PUT`` deletes the item's key.

The peers get the same lifetime as our default (60 s). The origin is ``await
asyncio.sleep(origin_ms)`` (no CPU: the worst case for a cache, whose own CPU is then the
only cost it adds) or, with ``origin="postgres"``, one ``SELECT`` by primary key through an
asyncpg pool (see ``pg.py``). Each response is a ~1 KB JSON document, returned as a
``dict`` (no response model) so that bare FastAPI is as fast as it can be.

Every worker process counts requests by method (an outer ASGI wrapper, ~0.2 µs) and origin
calls, and serves them, with our cache's outcome counters, on a control port of its own
that it announces in ``BENCH_CONTROL_DIR/<pid>.port``: with ``--workers 4`` the harness
sums the four, and nothing it reads ever passes through the app under test.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .apps import outcomes

VARIANTS = ("bare", "ours", "fc2", "cashews")
LABELS = {
    "bare": "bare FastAPI (no cache)",
    "ours": "ours: install(), L1 + Redis",
    "fc2": "fastapi-cache2 (RedisBackend)",
    "cashews": "cashews (redis://)",
}
TTL = 60  # seconds: our default_ttl, given to the peers too
SECRET = "bench-mixed-secret-0123456789abcdef"
_DESCRIPTION = (
    "A sturdy, everyday product made of recycled materials, tested for durability and "
    "designed to last. Machine washable at 30 degrees; do not tumble dry. Ships in plastic-"
    "free packaging from our warehouse within two working days. Each unit is inspected by "
    "hand before it leaves; returns are accepted within 30 days. Sizes run true to fit. "
    "Colours may vary slightly from the photographs because of screen settings. Spare parts "
    "are available for five years after the end of sale. Contact support for bulk orders."
)


def item(item_id: int) -> dict[str, Any]:
    """The document of one item (~1 KB once serialised), the same in every variant."""
    return {
        "id": item_id,
        "sku": f"SKU-{item_id:06d}",
        "name": f"Product number {item_id}",
        "price": round(5 + (item_id % 997) * 0.37, 2),
        "currency": "EUR",
        "in_stock": item_id % 7 != 0,
        "stock": (item_id * 37) % 500,
        "tags": ["blue", "cotton", "sale"] if item_id % 2 else ["red", "wool"],
        "attributes": {"weight_g": 120 + item_id % 400, "origin": "PT", "warranty_years": 2},
        "description": _DESCRIPTION,
    }


class ItemUpdate(BaseModel):
    name: str
    price: float


class Counters:
    """Requests by method, origin calls and garbage-collector pauses of one worker process.

    The collector's pauses are timed (``gc.callbacks``) because a full collection walks
    every live object, and an in-process cache keeps many alive: a tail-latency suspect."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.origin_get = 0
        self.origin_put = 0
        self.cache: Any = None  # our TieredCache in the ``ours`` variant
        self.gc_runs = [0, 0, 0]  # collections per generation
        self.gc_seconds = [0.0, 0.0, 0.0]
        self.gc_longest = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        generation = info.get("generation", 0)
        self.gc_runs[generation] += 1
        self.gc_seconds[generation] += took
        self.gc_longest = max(self.gc_longest, took)

    def snapshot(self) -> dict[str, Any]:
        """The counters; the longest pause is since the previous snapshot (then reset)."""
        longest, self.gc_longest = self.gc_longest, 0.0
        return {
            "pid": os.getpid(),
            "requests": dict(self.requests),
            "origin_get": self.origin_get,
            "origin_put": self.origin_put,
            "outcomes": outcomes(self.cache) if self.cache is not None else {},
            "gc_runs": list(self.gc_runs),
            "gc_seconds": list(self.gc_seconds),
            "gc_longest": longest,
            "gc_tracked_objects": len(gc.get_objects()),
        }


class Counted:
    """Outermost ASGI wrapper: counts requests by method, then calls the app."""

    def __init__(self, app: Any, counters: Counters) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            requests = self.counters.requests
            method = scope["method"]
            requests[method] = requests.get(method, 0) + 1
        await self.app(scope, receive, send)


Origin = Callable[[int], Awaitable[None]]


def build(variant: str, redis_url: str, origin: Origin, counters: Counters, **app: Any) -> Any:
    """The app of ``variant`` (``app`` options go to ``FastAPI(...)``, e.g. a lifespan)."""
    from fastapi import FastAPI

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, **app)

    async def load(item_id: int) -> dict[str, Any]:
        counters.origin_get += 1
        await origin(item_id)
        return item(item_id)

    async def save(item_id: int, update: ItemUpdate) -> dict[str, Any]:
        counters.origin_put += 1
        await origin(item_id)
        return {**item(item_id), "name": update.name, "price": update.price}

    if variant == "fc2":
        _fc2_routes(api, redis_url, load, save)
    elif variant == "cashews":
        _cashews_routes(api, redis_url, load, save)
    else:
        _plain_routes(api, load, save)
    if variant == "ours":
        from fastapi_tiered_cache import install

        # The documented way, settings from the environment (set by the harness):
        # TIERED_CACHE_REDIS_URL and TIERED_CACHE_SECRET_KEY, everything else default.
        counters.cache = install(api)
    return Counted(api, counters)


def _plain_routes(api: Any, load: Any, save: Any) -> None:
    @api.get("/items/{item_id}")
    async def get_item(item_id: int):  # type: ignore[no-untyped-def]
        return await load(item_id)

    @api.put("/items/{item_id}")
    async def put_item(item_id: int, update: ItemUpdate):  # type: ignore[no-untyped-def]
        return await save(item_id, update)


def _fc2_routes(api: Any, redis_url: str, load: Any, save: Any) -> None:
    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.redis import RedisBackend
    from fastapi_cache.decorator import cache
    from redis.asyncio import Redis

    prefix, namespace = "fc2", "items"
    backend = RedisBackend(Redis.from_url(redis_url))
    FastAPICache.init(backend, prefix=prefix, expire=TTL)

    def key_builder(func: Any, namespace: str = "", **kwargs: Any) -> str:
        return f"{namespace}:item:{kwargs['kwargs']['item_id']}"

    @api.get("/items/{item_id}")
    @cache(expire=TTL, namespace=namespace, key_builder=key_builder)
    async def get_item(item_id: int):  # type: ignore[no-untyped-def]
        return await load(item_id)

    @api.put("/items/{item_id}")
    async def put_item(item_id: int, update: ItemUpdate):  # type: ignore[no-untyped-def]
        answer = await save(item_id, update)
        await backend.clear(key=f"{prefix}:{namespace}:item:{item_id}")
        return answer


def _cashews_routes(api: Any, redis_url: str, load: Any, save: Any) -> None:
    from cashews import Cache

    cache = Cache(name="bench-mixed")
    cache.setup(redis_url)

    @api.get("/items/{item_id}")
    @cache(ttl=TTL, key="item:{item_id}")
    async def get_item(item_id: int):  # type: ignore[no-untyped-def]
        return await load(item_id)

    @api.put("/items/{item_id}")
    async def put_item(item_id: int, update: ItemUpdate):  # type: ignore[no-untyped-def]
        answer = await save(item_id, update)
        await cache.delete(f"item:{item_id}")
        return answer


def sleep_origin(origin_ms: float) -> Origin:
    delay = origin_ms / 1000.0

    async def origin(_item_id: int) -> None:
        await asyncio.sleep(delay)

    return origin


def serve_control(counters: Counters, directory: str) -> None:
    """Serve ``counters`` as JSON on a free loopback port, announced in ``directory``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(counters.snapshot()).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="bench-control", daemon=True).start()
    port = server.server_address[1]
    target = Path(directory) / f"{os.getpid()}.port"
    partial = target.with_suffix(".tmp")
    partial.write_text(str(port))
    partial.replace(target)  # atomic: the harness never reads half a file


def create() -> Any:
    """``uvicorn benchlib.mixedapp:create --factory``, configured by ``BENCH_MIXED`` (JSON)."""
    spec = json.loads(os.environ["BENCH_MIXED"])
    counters = Counters()
    lifespan = None
    if spec.get("origin") == "postgres":
        from .pg import pg_origin

        origin, lifespan = pg_origin(spec["dsn"], int(spec.get("pool_size", 4)))
    else:
        origin = sleep_origin(float(spec.get("origin_ms", 2.0)))
    options: dict[str, Any] = {}
    if lifespan is not None:
        options["lifespan"] = lifespan
    app = build(spec["variant"], spec["redis_url"], origin, counters, **options)
    serve_control(counters, os.environ["BENCH_CONTROL_DIR"])
    return app
