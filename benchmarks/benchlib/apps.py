"""The applications under test, one per variant, shared by the in-process and HTTP modes.

Every variant serves the same JSON document at ``/items`` from an origin that costs
nothing or awaits ``origin_ms``; the document is a list of small objects, ~1 KB or
~100 KB once serialised, returned as a ``dict`` so FastAPI serialises it as a real
endpoint would. ``raw`` is the floor: a bare ASGI callable sending the same bytes.

A ``Spec`` is plain data (it crosses into the uvicorn subprocess as JSON); ``build(spec)``
returns a ``Built``: the ASGI app plus the handles a benchmark needs (origin call counter,
our ``TieredCache``, a hook run before each batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import Response  # module level: endpoint annotations are resolved from here

KINDS = (
    "raw",  # raw ASGI app, constant body: the floor
    "bare",  # FastAPI endpoint, no cache
    "ours-l1",  # fastapi-tiered-cache, L1 + L2, served from L1
    "ours-l1-outer",  # same, TieredCacheMiddleware wrapping the FastAPI app from outside
    "ours-l1-ident",  # same, Authorization + tenant header + Vary (vary_on) in the key
    "ours-l1-reqid",  # same, plus a unique X-Request-ID per request (as proxies add)
    "ours-l1-vptr",  # same, origin answers Vary: Accept-Language (a Vary pointer is followed)
    "ours-l2",  # fastapi-tiered-cache, L1 disabled (l1_max_entries=0): served from Redis
    "ours-miss",  # fastapi-tiered-cache, L1 + L2, unique URL per request: always a miss
    "fc2-mem",  # fastapi-cache2 @cache, InMemoryBackend
    "fc2-redis",  # fastapi-cache2 @cache, RedisBackend
    "cashews-mem",  # cashews @cache, mem://
    "cashews-redis",  # cashews @cache, redis://
)

LABELS = {
    "raw": "raw ASGI (floor)",
    "stack": "FastAPI stack + constant middleware",
    "bare": "bare FastAPI (no cache)",
    "ours-l1": "ours: L1 hit",
    "ours-l1-outer": "ours: L1 hit, middleware outside FastAPI",
    "ours-l1-ident": "ours: L1 hit, auth+tenant+Vary",
    "ours-l1-reqid": "ours: L1 hit, unique X-Request-ID each",
    "ours-l1-vptr": "ours: L1 hit via Vary pointer",
    "ours-l2": "ours: L2 hit (L1 off)",
    "ours-miss": "ours: miss (store included)",
    "fc2-mem": "fastapi-cache2: in-memory hit",
    "fc2-redis": "fastapi-cache2: Redis hit",
    "cashews-mem": "cashews: mem:// hit",
    "cashews-redis": "cashews: redis:// hit",
    "redis-get": "raw redis.asyncio GET (L2 floor)",
}

PATH = "/items"
SECRET = "bench-secret-key-0123456789abcdef"
# Extra request headers of the identity variant (also sent by the HTTP load generator).
IDENT_HEADERS = (
    ("authorization", "Bearer bench-user-42.token-0123456789abcdef"),
    ("x-tenant-id", "acme"),
    ("accept-language", "en-GB,en;q=0.9"),
)
LONG_TTL = 3600  # hits must stay fresh for the whole run (and in L1: l1_max_ttl)


def payload_object(target_bytes: int) -> dict[str, Any]:
    """A JSON document of ~``target_bytes`` once serialised: ``{"items": [...], ...}``."""
    items: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"page": 1, "total": 0, "items": items}
    i = 0
    while True:
        item = {
            "id": i,
            "sku": f"SKU-{i:06d}",
            "name": f"Product number {i}",
            "price": round(9.99 + i * 0.37, 2),
            "in_stock": i % 3 != 0,
            "tags": ["blue", "cotton"] if i % 2 else ["red"],
        }
        items.append(item)
        doc["total"] = len(items)
        if len(dumps(doc)) >= target_bytes:
            items.pop()
            doc["total"] = len(items)
            if not items:  # smaller than one item (e.g. 100 B): pad to the target instead
                doc["note"] = ""
                doc["note"] = "x" * max(0, target_bytes - len(dumps(doc)))
            return doc
        i += 1


def dumps(obj: Any) -> bytes:
    """Serialise as Starlette's JSONResponse does."""
    return json.dumps(
        obj, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


_PAYLOADS: dict[int, tuple[dict[str, Any], bytes]] = {}


def payload(size: int) -> tuple[dict[str, Any], bytes]:
    if size not in _PAYLOADS:
        obj = payload_object(size)
        _PAYLOADS[size] = (obj, dumps(obj))
    return _PAYLOADS[size]


@dataclass
class Spec:
    """One variant of one configuration (plain data: it is sent to subprocesses as JSON)."""

    kind: str
    size: int = 1024
    origin_ms: float = 0.0
    redis_url: str | None = None  # L2 of ours; backend of the peers' redis variants
    namespace: str = "bench"  # keeps variants apart in a shared Redis
    settings: dict[str, Any] = field(default_factory=dict)  # extra CacheSettings fields
    response_headers: dict[str, str] = field(default_factory=dict)  # added by the origin

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))

    @property
    def unique_urls(self) -> bool:
        return self.kind == "ours-miss"

    @property
    def unique_header(self) -> str | None:
        """A request header whose value differs on every request (None: no such header)."""
        return "x-request-id" if self.kind == "ours-l1-reqid" else None

    @property
    def request_headers(self) -> tuple[tuple[str, str], ...]:
        return IDENT_HEADERS if self.kind in ("ours-l1-ident", "ours-l1-vptr") else ()


@dataclass
class Built:
    app: Callable[..., Awaitable[None]]
    spec: Spec
    calls: list[int]  # [origin calls]
    cache: Any = None  # our TieredCache, when the variant uses it
    before_batch: Callable[[], None] = lambda: None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def origin_calls(self) -> int:
        return self.calls[0]

    async def aclose(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                await close()


def outcomes(cache: Any) -> dict[str, int]:
    """Our cache's outcome counters as ``{"hit:l1": n, "miss:miss": n, ...}`` ({} if none)."""
    try:
        counters = cache.stats.counters
        return {f"{event}:{detail}": int(n) for (event, detail), n in counters.items()}
    except Exception:
        return {}


def raw_app(body: bytes) -> Callable[..., Awaitable[None]]:
    """The floor: a bare ASGI app sending a constant body."""
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    done = {"type": "http.response.body", "body": body, "more_body": False}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send(start)
        await send(done)

    return app


def _our_settings(spec: Spec) -> Any:
    from fastapi_tiered_cache import CacheSettings

    options: dict[str, Any] = {
        "default_ttl": LONG_TTL,
        "l1_max_ttl": LONG_TTL,
        "namespace": spec.namespace,
        "redis_url": spec.redis_url,
    }
    if spec.kind == "ours-l2":
        options["l1_max_entries"] = 0
    if spec.kind in ("ours-l1-ident", "ours-l1-vptr"):
        options["secret_key"] = SECRET
    if spec.kind == "ours-l1-ident":
        options["vary_on"] = ["accept-language"]
    options.update(spec.settings)
    return CacheSettings(**options)


def build(spec: Spec) -> Built:
    """The ASGI app of a variant (imports the peers only when the variant needs them)."""
    obj, body = payload(spec.size)
    if spec.kind == "raw":
        return Built(raw_app(body), spec, [0])

    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    calls = [0]
    delay = spec.origin_ms / 1000.0

    async def origin() -> dict[str, Any]:
        calls[0] += 1
        if delay:
            await asyncio.sleep(delay)
        return obj

    built = Built(app, spec, calls)

    plain = (
        "bare", "ours-l1", "ours-l1-outer", "ours-l1-ident", "ours-l1-reqid", "ours-l2", "ours-miss"
    )  # fmt: skip
    extra = dict(spec.response_headers)
    if spec.kind == "ours-l1-vptr":
        extra["vary"] = "Accept-Language"
    if spec.kind in plain and not extra:

        @app.get(PATH)
        async def items():  # type: ignore[no-untyped-def]  # no annotation: no response model
            return await origin()

    elif spec.kind in (*plain, "ours-l1-vptr"):

        @app.get(PATH)
        async def items_with_headers(response: Response):  # type: ignore[no-untyped-def]
            response.headers.update(extra)
            return await origin()

    elif spec.kind == "stack":
        # What any middleware added with app.add_middleware pays before it runs:
        # FastAPI.__call__ and Starlette's outer middleware stack (install() answers
        # repeated requests before both).
        answer = raw_app(body)

        class ConstantMiddleware:
            def __init__(self, app: Any) -> None:
                self.app = app

            async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
                if scope["type"] == "http" and scope["path"] == PATH:
                    await answer(scope, receive, send)
                else:
                    await self.app(scope, receive, send)

        app.add_middleware(ConstantMiddleware)
    elif spec.kind in ("fc2-mem", "fc2-redis"):
        _fastapi_cache2(app, spec, origin, built)
    elif spec.kind in ("cashews-mem", "cashews-redis"):
        _cashews(app, spec, origin, built)
    else:
        raise ValueError(f"unknown variant kind {spec.kind!r}")

    if spec.kind == "ours-l1-outer":
        # The middleware wrapping the app by hand: a hit never enters FastAPI.__call__,
        # but there is no answer from the app's own __call__ as with install().
        from fastapi_tiered_cache import TieredCache, TieredCacheMiddleware

        built.cache = TieredCache(_our_settings(spec))
        built.app = TieredCacheMiddleware(app, cache=built.cache)
        built.closers.append(built.cache.close)
    elif spec.kind.startswith("ours-"):
        from fastapi_tiered_cache import install

        built.cache = install(app, _our_settings(spec))  # the documented way
        built.closers.append(built.cache.close)
    return built


def _fastapi_cache2(app: Any, spec: Spec, origin: Any, built: Built) -> None:
    from fastapi_cache import FastAPICache
    from fastapi_cache.decorator import cache

    if spec.kind == "fc2-redis":
        from fastapi_cache.backends.redis import RedisBackend
        from redis.asyncio import Redis

        client = Redis.from_url(spec.redis_url or "redis://127.0.0.1:6379/0")
        backend: Any = RedisBackend(client)
        built.closers.append(client.aclose)
    else:
        from fastapi_cache.backends.inmemory import InMemoryBackend

        backend = InMemoryBackend()

    def activate() -> None:
        # FastAPICache is a process-wide singleton: point it at this variant's backend.
        FastAPICache.reset()
        FastAPICache.init(backend, prefix=f"fc2-{spec.namespace}", expire=LONG_TTL)

    activate()
    built.before_batch = activate

    @app.get(PATH)
    @cache(expire=LONG_TTL, namespace=spec.namespace)
    async def items():  # type: ignore[no-untyped-def]
        return await origin()


def _cashews(app: Any, spec: Spec, origin: Any, built: Built) -> None:
    from cashews import Cache

    cache = Cache(name=f"bench-{spec.namespace}")
    if spec.kind == "cashews-redis":
        cache.setup(spec.redis_url or "redis://127.0.0.1:6379/0")
    else:
        cache.setup("mem://", size=1_000_000)
    built.closers.append(cache.close)

    @app.get(PATH)
    @cache(ttl=LONG_TTL, key=f"cashews:{spec.namespace}:items")
    async def items():  # type: ignore[no-untyped-def]
        return await origin()
