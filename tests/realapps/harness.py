"""The realistic-app harness: one app test, run in every environment, compared to itself
without the cache.

An app test is a plain function ``check(client, env)``. It builds nothing itself: the
runner makes the app (``create_app()`` of its module), installs the cache or not, and
hands the test a ``Client`` speaking through Starlette's ``TestClient`` or through
``httpx.ASGITransport``, on asyncio or trio, with the ASGI lifespan run around it or not.
Every response is written down (status, body, headers but the cache's own), and each
environment's transcript must equal the one without the cache, except for tests that
declare ``counts_origin`` (they assert on hits themselves).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.from_thread
import httpx
from fastapi import FastAPI
from starlette.testclient import TestClient

from fastapi_tiered_cache import CacheSettings, install

SECRET = "realapps-secret-key-0123456789abcdef"
# What the cache legitimately adds to a response: never compared.
CACHE_HEADERS = frozenset({"cache-status", "x-cache", "age", "etag", "date", "server"})

Cache = Literal["off", "l1", "redis"]
Transport = Literal["testclient", "asgi"]
Backend = Literal["asyncio", "trio"]


@dataclass(frozen=True)
class Env:
    """Where one app test runs."""

    cache: Cache
    transport: Transport
    backend: Backend
    lifespan: bool

    @property
    def cached(self) -> bool:
        return self.cache != "off"

    @property
    def baseline(self) -> Env:
        return Env("off", self.transport, self.backend, self.lifespan)

    def __str__(self) -> str:
        life = "lifespan" if self.lifespan else "no-lifespan"
        return f"{self.cache}/{self.transport}/{self.backend}/{life}"


ENVS = [
    Env(cache, transport, backend, lifespan)
    for transport, backend, lifespan, cache in itertools.product(
        ("testclient", "asgi"), ("asyncio", "trio"), (True, False), ("off", "l1", "redis")
    )
]


@dataclass
class Check:
    """An app test: ``run(client, env)``, the module's ``create_app``, and its options."""

    name: str
    run: Callable[[Client, Env], None]
    create_app: Callable[[], FastAPI]
    counts_origin: bool = False
    root_path: str = ""
    transports: tuple[Transport, ...] = ("testclient", "asgi")


def check(
    *, counts_origin: bool = False, transports: tuple[Transport, ...] = ("testclient", "asgi")
) -> Callable[[Callable[[Client, Env], None]], Callable[[Client, Env], None]]:
    """Mark a function of an app module as an app test."""

    def mark(function: Callable[[Client, Env], None]) -> Callable[[Client, Env], None]:
        function.__realapps__ = {  # type: ignore[attr-defined]
            "counts_origin": counts_origin,
            "transports": transports,
        }
        return function

    return mark


def checks_of(module: Any) -> list[Check]:
    found = []
    for name, function in vars(module).items():
        options = getattr(function, "__realapps__", None)
        if options is not None:
            found.append(
                Check(
                    name=f"{module.__name__.rsplit('.', 1)[-1]}::{name}",
                    run=function,
                    create_app=module.create_app,
                    root_path=getattr(module, "ROOT_PATH", ""),
                    **options,
                )
            )
    return found


@dataclass
class Client:
    """What an app test talks to: ``request``/``get``/... return ``httpx.Response``s, and
    every exchange is written to ``transcript``."""

    send: Callable[..., httpx.Response]
    websocket: Callable[[str], Any] | None
    app: FastAPI
    transcript: list[tuple[Any, ...]] = field(default_factory=list)

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        try:
            response = self.send(method, url, **options)
        except Exception as exc:  # the app raised: the same with and without the cache
            self.transcript.append((method, url, "raised", type(exc).__name__, str(exc)))
            raise
        headers = sorted(
            (name, value)
            for name, value in response.headers.multi_items()
            if name not in CACHE_HEADERS
        )
        content = response.content  # /openapi.json too: the cache leaves it alone by default
        self.transcript.append((method, url, response.status_code, content, tuple(headers)))
        return response

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def head(self, url: str, **options: Any) -> httpx.Response:
        return self.request("HEAD", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Any) -> httpx.Response:
        return self.request("PUT", url, **options)

    def delete(self, url: str, **options: Any) -> httpx.Response:
        return self.request("DELETE", url, **options)

    def websocket_connect(self, url: str) -> Any:
        assert self.websocket is not None, "websockets need the TestClient transport"
        return self.websocket(url)


def settings_for(env: Env, redis_url: str | None, namespace: str) -> CacheSettings:
    return CacheSettings(
        secret_key=SECRET,
        redis_url=redis_url if env.cache == "redis" else None,
        namespace=namespace,
        redis_timeout=1.0,  # a loaded CI machine is not a Redis fault
    )


@contextlib.contextmanager
def open_client(check: Check, env: Env, app: FastAPI) -> Iterator[Client]:
    if env.transport == "testclient":
        with _test_client(check, env, app) as client:
            yield client
    else:
        with _asgi_client(check, env, app) as client:
            yield client


@contextlib.contextmanager
def _test_client(check: Check, env: Env, app: FastAPI) -> Iterator[Client]:
    test_client = TestClient(app, backend=env.backend, root_path=check.root_path)
    if env.lifespan:
        with test_client:
            yield Client(test_client.request, test_client.websocket_connect, app)
    else:  # every request in an event loop of its own
        yield Client(test_client.request, test_client.websocket_connect, app)


@contextlib.contextmanager
def _asgi_client(check: Check, env: Env, app: FastAPI) -> Iterator[Client]:
    with anyio.from_thread.start_blocking_portal(env.backend) as portal:
        state: dict[str, Any] = {}
        lifespan = _Lifespan(app, state) if env.lifespan else None
        running = None
        if lifespan is not None:
            running = portal.start_task_soon(lifespan.run)
            portal.call(lifespan.startup)

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            # Starlette's TestClient hands requests the lifespan state; httpx does not.
            if lifespan is not None and scope["type"] in ("http", "websocket"):
                scope["state"] = dict(state)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state, root_path=check.root_path)
        http = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", follow_redirects=True
        )

        def send(method: str, url: str, **options: Any) -> httpx.Response:
            async def call() -> httpx.Response:
                return await http.request(method, url, **options)

            return portal.call(call)

        try:
            yield Client(send, None, app)
        finally:
            portal.call(http.aclose)
            if lifespan is not None and running is not None:
                portal.call(lifespan.shutdown)
                running.result()


class _Lifespan:
    """The ASGI lifespan around an ``httpx.ASGITransport`` client (as asgi-lifespan does)."""

    def __init__(self, app: FastAPI, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.to_app, self.app_inbox = anyio.create_memory_object_stream[dict[str, Any]](4)
        self.app_outbox, self.from_app = anyio.create_memory_object_stream[dict[str, Any]](4)

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        await self.app(scope, self.app_inbox.receive, self.app_outbox.send)

    async def startup(self) -> None:
        await self.to_app.send({"type": "lifespan.startup"})
        message = await self.from_app.receive()
        assert message["type"] == "lifespan.startup.complete", message

    async def shutdown(self) -> None:
        await self.to_app.send({"type": "lifespan.shutdown"})
        message = await self.from_app.receive()
        assert message["type"] == "lifespan.shutdown.complete", message
        for stream in (self.to_app, self.app_inbox, self.app_outbox, self.from_app):
            await stream.aclose()


def run_check(check: Check, env: Env, redis_url: str | None, namespace: str) -> Client:
    """Build the app, install the cache (or not), run the test; returns its client."""
    app = check.create_app()
    if env.cached:
        install(app, settings_for(env, redis_url, namespace))
    with open_client(check, env, app) as client:
        check.run(client, env)
    return client
