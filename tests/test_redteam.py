"""Red-team findings: each test is an attack that once got an answer the app alone would
not have given (or a collision the cache promised never to make), kept as a regression."""

from __future__ import annotations

import base64
import enum
import gc
import json
import tracemalloc
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Body, FastAPI
from fastapi.responses import FileResponse, PlainTextResponse
from itsdangerous import TimestampSigner
from pydantic import BaseModel
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import Message

from fastapi_tiered_cache import CacheSettings, TieredCache, TieredCacheMiddleware, cached, install

from .helpers import SECRET, Origin, client_for, make_cache


def _scope(app: Any, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
        "app": app,
        **extra,
    }


async def _call(app: Any, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


# -- a server's body extensions (granian advertises http.response.pathsend) ---------------


async def test_a_file_response_under_a_pathsend_server_starts_then_is_cached(
    tmp_path: Path,
) -> None:
    """A miss held the start back until the first body message; ``pathsend`` is not one,
    so the client got a path to send and no response start at all."""
    file = tmp_path / "report.txt"
    file.write_bytes(b"the report")
    app = FastAPI()

    @app.get("/report")
    async def report() -> FileResponse:
        return FileResponse(file)

    install(app, CacheSettings(secret_key=SECRET))
    extensions = {"extensions": {"http.response.pathsend": {}}}
    first = await _call(app, _scope(app, "/report", **extensions))
    assert first[0]["type"] == "http.response.start"
    assert first[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in first if m["type"] == "http.response.body")
    paths = [m["path"] for m in first if m["type"] == "http.response.pathsend"]
    assert body == b"the report" or paths == [str(file)]
    second = await _call(app, _scope(app, "/report", **extensions))
    assert second[0]["type"] == "http.response.start"
    assert dict(second[0]["headers"])[b"x-cache"] == b"HIT"
    assert second[1]["body"] == b"the report"


async def test_an_unknown_message_before_any_body_sends_the_start_first() -> None:
    """Whatever a server extension sends in place of a body, the client sees the start
    before it, and nothing the cache did not see is stored."""
    seen = 0

    async def origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal seen
        seen += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.zerocopysend", "file": 3})

    cache = TieredCache(CacheSettings(secret_key=SECRET, rules=[{"path": "/**"}]))

    app = TieredCacheMiddleware(origin, cache=cache)
    for _ in range(2):
        sent = await _call(app, _scope(None, "/z"))
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.zerocopysend"]
        assert b"detail=body-extension" in dict(sent[0]["headers"])[b"cache-status"]
    assert seen == 2
    await cache.close()


# -- @cached: argument spellings of different types never share an entry --------------------


class Colour(enum.Enum):
    RED = 1


class Size(enum.Enum):
    SMALL = 1


class ProductQuery(BaseModel):
    id: int


class UserQuery(BaseModel):
    id: int


@pytest.mark.parametrize(
    "spellings",
    [
        pytest.param([Colour.RED, Size.SMALL, 1], id="enums-of-two-classes-and-their-value"),
        pytest.param(
            [ProductQuery(id=1), UserQuery(id=1), {"id": 1}], id="models-of-two-classes-and-a-dict"
        ),
        pytest.param([Path("a"), "a"], id="a-path-and-a-string"),
        pytest.param([[Colour.RED], [Size.SMALL], [1]], id="enums-nested-in-a-list"),
    ],
)
async def test_arguments_of_different_types_are_different_keys(spellings: list[Any]) -> None:
    cache = TieredCache(CacheSettings(secret_key=SECRET))
    calls: list[Any] = []

    @cached(cache=cache)
    async def describe(value: object) -> str:
        calls.append(value)
        return repr(value)

    try:
        for value in spellings:
            assert await describe(value) == repr(value)
        assert len(calls) == len(spellings)
        assert await describe(spellings[0]) == repr(spellings[0])  # still cached
        assert len(calls) == len(spellings)
    finally:
        await cache.close()


# -- a path rewritten in front of the cache --------------------------------------------------


async def test_a_path_rewritten_by_an_outer_middleware_is_part_of_the_key() -> None:
    """Middleware added after ``install()`` runs in front of the cache; one that routes by
    a header (API versions, locales) rewrites ``path`` and leaves ``raw_path`` as sent. The
    key held the raw path only, so ``/v1`` callers were served the ``/v2`` entry."""
    app = FastAPI()

    @app.get("/v1/items")
    async def v1() -> dict[str, int]:
        return {"version": 1}

    @app.get("/v2/items")
    async def v2() -> dict[str, int]:
        return {"version": 2}

    install(app, CacheSettings(secret_key=SECRET))

    class Versioning:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/items"):
                version = dict(scope["headers"]).get(b"accept-version", b"1").decode()
                scope = {**scope, "path": f"/v{version}{scope['path']}"}
            await self.app(scope, receive, send)

    app.add_middleware(Versioning)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for version in ("2", "1", "1", "2", "1"):
            response = await client.get("/items", headers={"accept-version": version})
            assert response.json() == {"version": int(version)}
        assert response.headers["x-cache"] == "HIT"


# -- the Host as sent ------------------------------------------------------------------------


async def test_the_host_is_keyed_as_sent_not_lower_cased() -> None:
    """The key lower-cased the Host, a guess: what reads it may not (Starlette's
    ``TrustedHostMiddleware`` before 0.41 compared it case-sensitively and refused
    ``EXAMPLE.COM``; ``url_for`` writes it back as sent). Each spelling gets the app's
    own answer."""

    async def origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
        host = dict(scope["headers"])[b"host"]
        status = 200 if host == b"example.com" else 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": host})

    cache = TieredCache(CacheSettings(secret_key=SECRET, rules=[{"path": "/**"}]))
    app = TieredCacheMiddleware(origin, cache=cache)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for host in ("example.com", "EXAMPLE.COM", "example.com", "Example.Com"):
            response = await client.get("/", headers={"host": host})
            assert response.content == host.encode()
            assert response.status_code == (200 if host == "example.com" else 400)
    await cache.close()


# -- If-Range with a date ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ("Sat, 08 Sep 2001 01:46:40 GMT", 206),  # the stored Last-Modified: the same bytes
        ("Sun, 09 Sep 2001 01:46:40 GMT", 200),  # the client's copy is another (newer) one
        ("Fri, 07 Sep 2001 01:46:40 GMT", 200),
    ],
)
async def test_if_range_with_a_date_must_match_last_modified_exactly(
    if_range: str, status: int
) -> None:
    """RFC 9110 §13.1.5: a date validator in ``If-Range`` holds only when it *exactly*
    matches ``Last-Modified``. Any later date was taken for a match, so a client resuming
    a download of another version got a range of this one spliced into its copy."""

    modified = [("last-modified", "Sat, 08 Sep 2001 01:46:40 GMT")]
    origin = Origin(body=b"0123456789", headers=modified)
    async with client_for(origin, make_cache()) as client:
        await client.get("/")
        response = await client.get("/", headers={"range": "bytes=0-3", "if-range": if_range})
    assert origin.calls == 1
    assert response.status_code == status
    assert response.content == (b"0123" if status == 206 else b"0123456789")


# -- CORS answers that do not say they vary on Origin ----------------------------------------


class OlderCORSMiddleware(CORSMiddleware):
    """``CORSMiddleware`` as older Starlette releases have it (0.37.2, the oldest this
    package supports, among them): a request without ``Origin`` passes through untouched,
    and a refused origin gets no ``Vary: Origin`` either."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = Headers(scope=scope)
        if scope["type"] != "http" or "origin" not in headers:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                origin = headers["origin"]
                if self.is_allowed_origin(origin=origin):
                    response_headers = MutableHeaders(scope=message)
                    response_headers["access-control-allow-origin"] = origin
                    response_headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)


@pytest.mark.parametrize("first", [None, "https://evil.example"])
async def test_cors_answers_are_keyed_on_origin_even_without_vary(first: str | None) -> None:
    """A response to a request without ``Origin`` (curl, a server) or from a refused origin
    carried no ``Vary: Origin``, so it was served to every browser: no
    ``Access-Control-Allow-Origin``, and the allowed site's CORS broke for the entry's life.
    With a ``CORSMiddleware`` behind the cache, ``Origin`` is always in the key."""
    app = FastAPI()

    @app.get("/data")
    async def data() -> dict[str, str]:
        return {"data": "public"}

    app.add_middleware(OlderCORSMiddleware, allow_origins=["https://ok.example"])
    older = f"{OlderCORSMiddleware.__module__}.{OlderCORSMiddleware.__qualname__}"
    install(app, CacheSettings(secret_key=SECRET, trusted_middleware=[older]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/data", headers={} if first is None else {"origin": first})
        for _ in range(2):
            allowed = await client.get("/data", headers={"origin": "https://ok.example"})
            assert allowed.headers.get("access-control-allow-origin") == "https://ok.example"
        plain = await client.get("/data", headers={} if first is None else {"origin": first})
        assert "access-control-allow-origin" not in plain.headers
        assert plain.headers["x-cache"] == "HIT"


# -- Starlette's signed session cookie, under a name that says nothing ------------------------


def _session_cookie(data: dict[str, str]) -> str:
    """What ``SessionMiddleware`` sends: itsdangerous-signed standard base64 of JSON."""
    payload = base64.b64encode(json.dumps(data).encode())
    return TimestampSigner("session-secret").sign(payload).decode()


@pytest.mark.parametrize("user", ["alice", "bob", "mallory"])
async def test_a_session_cookie_is_a_credential_whatever_its_padding(user: str) -> None:
    """Starlette signs standard base64 (``+``, ``/``, ``=`` padding): only the sessions whose
    JSON happened to need no padding looked like a credential. Under a custom cookie name,
    with a gate that reads the session behind the cache, the others were cached as
    anonymous, and the gate's page was served to requests without a session."""
    app = FastAPI()

    @app.get("/members")
    async def members() -> dict[str, str]:
        return {"news": "for members only"}

    class Gate:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and not scope.get("session"):
                await PlainTextResponse("log in", status_code=401)(scope, receive, send)
                return
            await self.app(scope, receive, send)

    app.add_middleware(Gate)
    install(app, CacheSettings(secret_key=SECRET))
    app.add_middleware(SessionMiddleware, secret_key="session-secret", session_cookie="app")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        cookie = {"cookie": f"app={_session_cookie({'user': user})}"}
        assert (await client.get("/members", headers=cookie)).status_code == 200
        client.cookies.clear()  # Starlette before 0.38 sent the session back: httpx kept it
        assert (await client.get("/members")).status_code == 401


async def test_a_message_before_the_start_leaves_the_response_cacheable() -> None:
    """Starlette's templates send ``http.response.debug`` before the start under the
    ``TestClient``: nothing is held then, and the response is stored as usual."""

    async def origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.debug", "info": {}})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"page"})

    cache = TieredCache(CacheSettings(secret_key=SECRET, rules=[{"path": "/**"}]))
    app = TieredCacheMiddleware(origin, cache=cache)
    first = await _call(app, _scope(None, "/page"))
    second = await _call(app, _scope(None, "/page"))
    assert first[0]["type"] == "http.response.debug"
    assert b"stored" in dict(first[1]["headers"])[b"cache-status"]
    assert dict(second[0]["headers"])[b"x-cache"] == b"HIT"
    await cache.close()


# -- memory: what an entry holds counts against L1's bytes ---------------------------------------


async def test_the_vary_values_an_entry_holds_count_against_the_l1_bytes() -> None:
    """An entry keeps the request's values of the headers its response varies on (to check
    them on a hit), up to 32 KiB a field, but its size counted only body and headers:
    distinct 30 KB ``User-Agent`` values against a ``Vary: User-Agent`` page held many
    times the L1 byte budget."""
    budget = 256 * 1024
    origin = Origin(headers=[("content-type", "text/plain"), ("vary", "User-Agent")])
    cache = make_cache(l1_max_bytes=budget)
    async with client_for(origin, cache) as client:
        for n in range(40):
            agent = f"{n:05d}" + "a" * 30_000
            assert (await client.get("/", headers={"user-agent": agent})).status_code == 200
        l1 = cache.store.l1
        assert l1 is not None
        assert len(l1) * 30_000 <= budget


async def test_long_header_names_are_not_remembered() -> None:
    """What a header name is (credential, plain, screened) is remembered per name, up to
    4096 names, and the memo keeps up to 1024 more: names are the client's, and servers
    let them reach 16 KiB or more, so a stream of distinct long names held tens of MB
    for good. Only short names are remembered now."""
    origin = Origin()
    cache = make_cache()
    app = TieredCacheMiddleware(origin, cache=cache)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1500):
            name = f"x-{n:05d}-".encode() + b"n" * 8000
            scope = _scope(None, "/", headers=[(b"host", b"test"), (name, b"1")])
            await _call(app, scope)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        await cache.close()
    assert origin.calls == 1  # a header nothing reads: one shared entry
    assert retained < 4 * 1024 * 1024, retained  # 1500 names are 12 MB (20 MB were kept)


# -- rules match what the router matches ----------------------------------------------------


@pytest.mark.parametrize("rule", ["/admin", "/admin/{section}", "/admin/*"])
async def test_a_no_cache_rule_holds_for_a_path_with_a_trailing_newline(rule: str) -> None:
    """Starlette's route patterns end in ``$``, which also matches before a final newline:
    ``/admin%0A`` is routed to ``/admin``. Rules ended in ``\\Z``, so ``/admin%0A`` slipped
    past ``{"path": "/admin", "cache": false}`` and the admin page was stored."""
    app = FastAPI()
    calls = 0

    @app.get("/admin")
    @app.get("/admin/{section}")
    async def admin() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"call": calls}

    install(app, CacheSettings(secret_key=SECRET, rules=[{"path": rule, "cache": False}]))
    path = "/admin%0A" if rule == "/admin" else "/admin/users%0A"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.get(path)
        second = await client.get(path)
    assert first.status_code == 200
    assert second.json() == {"call": 2}
    assert "detail=rule" in second.headers["cache-status"]


# -- a Vary the cache cannot read --------------------------------------------------------------


@pytest.mark.parametrize("vary", ['"Accept-Language"', "Accept-Language;", "Accept Language"])
async def test_a_vary_member_that_is_not_a_field_name_is_never_shared(vary: str) -> None:
    """A ``Vary`` member that is not a field name (quoted, with a parameter, two words)
    named a header no request has, so every request matched the entry: the French page
    was served to everyone. What cannot be read is treated as ``Vary: *``."""

    def body(scope: dict[str, Any]) -> bytes:
        return dict(scope["headers"]).get(b"accept-language", b"none")

    origin = Origin(headers=[("content-type", "text/plain"), ("vary", vary)], body=body)
    async with client_for(origin, make_cache()) as client:
        french = await client.get("/", headers={"accept-language": "fr"})
        english = await client.get("/", headers={"accept-language": "en"})
    assert french.content == b"fr"
    assert english.content == b"en"
    assert "detail=vary-star" in english.headers["cache-status"]


def _loader(table: str, cache: TieredCache) -> Any:
    """A loader made by a factory, as teams write one per table."""

    @cached(cache=cache)
    async def load(row: int) -> str:
        return f"{table}:{row}"

    return load


async def test_functions_made_by_one_factory_do_not_share_entries() -> None:
    """Two functions made by one factory share a module and qualified name, and the key
    held nothing else: ``orders(1)`` was answered with the cached ``users(1)``. What a
    function captures, when it is a plain value (a table name), is now part of its key."""
    cache = TieredCache(CacheSettings(secret_key=SECRET))
    users, orders = _loader("users", cache), _loader("orders", cache)
    try:
        assert await users(1) == "users:1"
        assert await orders(1) == "orders:1"
        assert await users(1) == "users:1"
    finally:
        await cache.close()


# -- a body on a GET without Content-Length (HTTP/2) ----------------------------------------------


async def test_a_get_whose_body_came_without_content_length_is_not_stored() -> None:
    """HTTP/2 frames a body without ``Content-Length`` (and has no ``Transfer-Encoding``),
    so the request checks saw a body-less GET. An app that reads a GET body (a search API
    opted in by a rule) then stored the attacker's results under the URL, for everyone."""

    async def search(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        body = message.get("body", b"") or b"everything"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"results for " + body})

    cache = TieredCache(CacheSettings(secret_key=SECRET, rules=[{"path": "/**"}]))
    app = TieredCacheMiddleware(search, cache=cache)

    async def call(body: bytes) -> tuple[bytes, dict[bytes, bytes]]:
        sent: list[Message] = []
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        await app(_scope(None, "/search", http_version="2"), receive, send)
        body_sent = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return body_sent, dict(sent[0]["headers"])

    poisoned, headers = await call(b"attacker")
    assert poisoned == b"results for attacker"
    assert b"detail=request-body" in headers[b"cache-status"]
    clean, _ = await call(b"")
    assert clean == b"results for everything"
    await cache.close()


async def test_a_route_that_reads_a_get_body_is_never_answered_from_the_cache() -> None:
    """A hit is answered without reading the request, so a body-less GET's entry answered
    an HTTP/2 GET whose body asked for something else. A route reading the body is one
    the cache cannot key: it bypasses (``detail=opaque-input``)."""
    app = FastAPI()

    @app.get("/search")
    async def search(q: Annotated[str | None, Body(embed=True)] = None) -> dict[str, Any]:
        return {"q": q}

    install(app, CacheSettings(secret_key=SECRET))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.get("/search")
        second = await client.get("/search")
    assert first.json() == second.json() == {"q": None}
    assert "detail=opaque-input" in second.headers["cache-status"]
