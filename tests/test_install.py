"""``install(app)``: where the middleware goes, and that the app behaves as without it.

By default the cache wraps the whole stack Starlette builds (``placement=outermost``): a
hit is answered before FastAPI's own middleware and every user middleware; a miss goes
through all of them. ``placement=middleware`` adds it with ``app.add_middleware`` instead.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_tiered_cache import CacheSettings, TieredCacheMiddleware, install

from .helpers import SECRET, FakeClock


class Counting:
    """A user middleware that counts the requests it sees and marks their responses."""

    def __init__(self, app: ASGIApp, name: str, seen: dict[str, int]) -> None:
        self.app, self.name, self.seen = app, name, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen[self.name] = self.seen.get(self.name, 0) + 1

        async def marked(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-seen-by", self.name.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, marked)


COUNTING = f"{Counting.__module__}.{Counting.__qualname__}"


def settings(**options: Any) -> CacheSettings:
    """Counting only marks responses: vouched for, so routes under it are cached."""
    return CacheSettings(secret_key=SECRET, trusted_middleware=[COUNTING], **options)


def app_with_middleware(
    placement: str, *, after: bool = True
) -> tuple[FastAPI, dict[str, int], list[int]]:
    app = FastAPI()
    seen: dict[str, int] = {}
    calls = [0]

    @app.get("/items")
    async def items() -> dict[str, int]:
        calls[0] += 1
        return {"calls": calls[0]}

    app.add_middleware(Counting, name="before", seen=seen)
    install(app, settings(placement=placement))
    if after:
        app.add_middleware(Counting, name="after", seen=seen)
    return app, seen, calls


def test_outermost_hits_skip_fastapi_and_the_middleware_added_before() -> None:
    app, seen, calls = app_with_middleware("outermost", after=False)
    with TestClient(app) as client:
        first = client.get("/items")
        assert first.headers["x-cache"] == "MISS"
        assert seen == {"before": 1}
        hits = [client.get("/items") for _ in range(3)]
    assert all(hit.headers["x-cache"] == "HIT" for hit in hits)
    assert all(hit.json() == first.json() == {"calls": 1} for hit in hits)
    assert seen == {"before": 1}  # hits never entered the app's stack
    assert calls == [1]


@pytest.mark.parametrize("placement", ["outermost", "middleware"])
def test_middleware_added_after_install_sees_every_request(placement: str) -> None:
    """As with app.add_middleware: a rate limiter or an access log added after install()
    wraps the cache, whatever the placement."""
    app, seen, calls = app_with_middleware(placement)
    with TestClient(app) as client:
        client.get("/items")
        hits = [client.get("/items") for _ in range(3)]
    assert all(hit.headers["x-cache"] == "HIT" for hit in hits)
    # The stored response carries the mark of the middleware inside; the one outside adds its own.
    assert all(hit.headers["x-seen-by"] == "before, after" for hit in hits)
    assert seen == {"after": 4, "before": 1}
    assert calls == [1]
    listed = [Counting, Counting]  # outermost leaves the app's list as it was
    if placement == "middleware":
        listed.insert(1, TieredCacheMiddleware)
    assert [m.cls for m in app.user_middleware] == listed


def test_an_exception_propagates_as_without_the_cache_and_nothing_is_stored() -> None:
    app = FastAPI()
    calls = [0]

    @app.get("/flaky")
    async def flaky() -> dict[str, int]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("boom")
        return {"calls": calls[0]}

    install(app, settings())
    with TestClient(app) as client, pytest.raises(RuntimeError, match="boom"):
        client.get("/flaky")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/flaky").json() == {"calls": 2}  # the error was not stored
        again = client.get("/flaky")
    assert again.headers["x-cache"] == "HIT"
    assert again.json() == {"calls": 2}


def test_an_exception_is_answered_stale_within_stale_if_error() -> None:
    app = FastAPI()
    clock = FakeClock()
    fail = [False]

    @app.get("/report")
    async def report() -> dict[str, str]:
        if fail[0]:
            raise RuntimeError("database down")
        return {"report": "ok"}

    install(app, settings(default_ttl=10, stale_if_error=60), clock=clock, l1_timer=clock)
    with TestClient(app) as client:
        assert client.get("/report").headers["x-cache"] == "MISS"
        clock.advance(20)  # stale, within the stale-if-error window
        fail[0] = True
        stale = client.get("/report")
    assert stale.status_code == 200
    assert stale.json() == {"report": "ok"}
    assert "detail=stale-if-error" in stale.headers["cache-status"]


def test_install_on_an_app_already_serving_wraps_the_running_stack() -> None:
    app = FastAPI()
    calls = [0]

    @app.get("/late")
    async def late() -> dict[str, int]:
        calls[0] += 1
        return {"calls": calls[0]}

    with TestClient(app) as client:
        assert "x-cache" not in client.get("/late").headers  # the stack is built now
    install(app, settings())
    with TestClient(app) as client:
        client.get("/late")
        hit = client.get("/late")
    assert hit.headers["x-cache"] == "HIT"
    assert calls == [2]


def test_a_plain_starlette_app_is_served_from_the_cache() -> None:
    calls = [0]

    async def home(request: Any) -> PlainTextResponse:
        calls[0] += 1
        return PlainTextResponse(f"call {calls[0]}")

    app = Starlette(routes=[Route("/", home)])
    # An endpoint taking the raw Request could read anything: it needs a rule to be cached.
    install(app, settings(rules=[{"path": "/", "ttl": 60}]))
    with TestClient(app) as client:
        client.get("/")
        hit = client.get("/")
    assert (hit.text, hit.headers["x-cache"], calls) == ("call 1", "HIT", [1])


class Spy:
    """Wraps an app's built stack and counts the requests that reach it: as a layer of its
    own (``__call__``), or as its top layer's class method (``call_through``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.calls = app, 0
        self.original = type(app).__call__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)

    def call_through(self) -> Any:
        """A replacement ``__call__`` for the top layer's class."""

        async def call(layer: Any, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and layer is self.app:
                self.calls += 1
            await self.original(layer, scope, receive, send)

        return call


@pytest.mark.parametrize("root_path", ["", "/api"])
@pytest.mark.filterwarnings("ignore:The `root_path` parameter is deprecated")
def test_repeated_requests_are_answered_before_the_app_runs(
    root_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = FastAPI(root_path=root_path)
    calls = [0]

    @app.get("/items")
    async def items() -> dict[str, int]:
        calls[0] += 1
        return {"calls": calls[0]}

    cache = install(app, settings())
    assert isinstance(app, FastAPI) and type(app).__name__ == "FastAPI"
    with TestClient(app) as client:
        client.get("/items")  # miss
        client.get("/items")  # hit through the stack: remembered
        assert app.middleware_stack is not None
        spy = Spy(app.middleware_stack)
        monkeypatch.setattr(type(app.middleware_stack), "__call__", spy.call_through())
        for _ in range(3):
            hit = client.get("/items", headers={"x-request-id": "anything"})
            assert (hit.json(), hit.headers["x-cache"]) == ({"calls": 1}, "HIT")
        assert spy.calls == 0  # FastAPI's __call__ never reached its stack
        with_auth = client.get("/items", headers={"authorization": "Bearer x"})
        assert with_auth.json() == {"calls": 2}  # another scope: through the stack
        assert spy.calls == 1

        import asyncio

        asyncio.run(cache.invalidate_path("/items"))
        assert client.get("/items").headers["x-cache"] == "MISS"


def test_a_stack_wrapped_after_it_was_built_sees_every_hit() -> None:
    app = FastAPI()

    @app.get("/items")
    async def items() -> dict[str, int]:
        return {"n": 1}

    install(app, settings())
    with TestClient(app) as client:
        client.get("/items")
        client.get("/items")  # remembered by the memo
        assert app.middleware_stack is not None
        spy = app.middleware_stack = Spy(app.middleware_stack)  # as an instrumentation would
        hits = [client.get("/items").headers["x-cache"] for _ in range(3)]
    assert hits == ["HIT", "HIT", "HIT"]
    assert spy.calls == 3  # the front memo stepped aside: the wrapper saw each hit


def test_the_front_class_is_made_once_per_app_class() -> None:
    first, second = FastAPI(), FastAPI()
    install(first, settings())
    install(second, settings())
    assert type(first) is type(second)
    assert type(first).__mro__[1] is FastAPI


def test_a_disabled_cache_leaves_the_app_class_alone() -> None:
    app = FastAPI()
    install(app, settings(enabled=False))
    assert type(app) is FastAPI
