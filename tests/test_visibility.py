"""What the cache knows of the middleware under it: stock middleware that answer by a request
header vary on it, whether or not their release says so in ``Vary`` (``IMPLIED_VARY``).

Older Starlette releases (the lowest this package supports among them) added
``Vary: Origin`` / ``Vary: Accept-Encoding`` only to the responses CORS / GZip changed. The
fixtures below give the current classes that older behaviour, so these tests fail without
the cache's own Vary on every release, not only under ``tox -e lowest``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Receive, Scope, Send

from fastapi_tiered_cache import CacheSettings, install
from fastapi_tiered_cache.visibility import implied_vary

from .helpers import SECRET


def _older(middleware: type[Any], acts_on: Callable[[Headers], bool]) -> Any:
    """``middleware.__call__`` as in older releases: a request it does not act on goes
    straight to the app, so the response says nothing of the header it was judged by."""
    current = middleware.__call__

    async def call(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not acts_on(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        await current(self, scope, receive, send)

    return call


@pytest.fixture
def older_cors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette before encode/starlette#3516: no Origin, no CORS headers and no Vary."""
    call = _older(CORSMiddleware, lambda headers: "origin" in headers)
    monkeypatch.setattr(CORSMiddleware, "__call__", call)


@pytest.fixture
def older_gzip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette's GZip before its identity responder: no gzip accepted, no Vary."""
    call = _older(GZipMiddleware, lambda headers: "gzip" in headers.get("accept-encoding", ""))
    monkeypatch.setattr(GZipMiddleware, "__call__", call)


def _app(cached: bool, *middleware: tuple[type[Any], dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.get("/data")
    def data() -> dict[str, str]:
        return {"payload": "x" * 600}

    for cls, options in middleware:
        app.add_middleware(cls, **options)
    if cached:  # after the middleware: the cache is in front of them
        install(app, CacheSettings(secret_key=SECRET))
    return app


CORS = (CORSMiddleware, {"allow_origins": ["https://ok.example"]})
GZIP = (GZipMiddleware, {"minimum_size": 100})


def _answers(app: FastAPI, requests: list[dict[str, str]]) -> list[tuple[Any, ...]]:
    client = TestClient(app)
    seen = []
    for headers in requests:
        response = client.get("/data", headers=headers)
        kept = {k: v for k, v in response.headers.items() if k.startswith("access-control-")}
        seen.append((response.headers.get("content-encoding"), kept))
    return seen


@pytest.mark.usefixtures("older_cors")
def test_an_answer_without_origin_is_not_shared_with_an_allowed_origin() -> None:
    requests = [{}, {"origin": "https://ok.example"}, {}, {"origin": "https://ok.example"}]
    expected = _answers(_app(False, CORS), requests)
    assert expected[1][1]["access-control-allow-origin"] == "https://ok.example"
    assert _answers(_app(True, CORS), requests) == expected


@pytest.mark.usefixtures("older_gzip")
def test_an_identity_answer_is_not_shared_with_a_gzip_client() -> None:
    requests = [{"accept-encoding": "identity"}, {"accept-encoding": "gzip"}] * 2
    expected = _answers(_app(False, GZIP), requests)
    assert [encoding for encoding, _ in expected] == [None, "gzip", None, "gzip"]
    assert _answers(_app(True, GZIP), requests) == expected


def test_the_headers_implied_are_those_of_the_middleware_under_the_cache() -> None:
    app = _app(False, CORS, GZIP)
    assert implied_vary(app, app) == ("accept-encoding", "origin")  # as it will be built
    app.middleware_stack = app.build_middleware_stack()
    assert implied_vary(app, app) == ("accept-encoding", "origin")
    assert implied_vary(app.middleware_stack.app, app) == ("accept-encoding", "origin")
    only_cors = _app(False, CORS)
    only_cors.middleware_stack = only_cors.build_middleware_stack()
    assert implied_vary(only_cors, only_cors) == ("origin",)
    bare = _app(False)
    bare.middleware_stack = bare.build_middleware_stack()
    assert implied_vary(bare, bare) == ()


def test_the_headers_implied_under_a_cache_blind_to_the_routes() -> None:
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("never called")

    assert implied_vary(CORSMiddleware(raw, allow_origins=["*"]), None) == ("origin",)
    assert implied_vary(raw, None) == ()
