"""End-to-end behaviour of TieredCacheMiddleware over an in-process ASGI transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from starlette.testclient import TestClient

from fastapi_tiered_cache import TieredCacheMiddleware

from .helpers import FakeClock, Origin, client_for, make_cache


async def test_miss_then_hit_serves_the_stored_response() -> None:
    origin = Origin(body=b'{"a": 1}', headers=[("content-type", "application/json")])
    async with client_for(origin, make_cache()) as client:
        first = await client.get("/items")
        second = await client.get("/items")
    assert origin.calls == 1
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["cache-status"] == "fastapi-tiered-cache; fwd=miss; stored"
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["cache-status"].startswith("fastapi-tiered-cache; hit; ttl=")
    assert second.headers["cache-status"].endswith("detail=l1")
    assert second.content == first.content == b'{"a": 1}'
    assert second.headers["content-type"] == "application/json"
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["age"] == "0"


async def test_age_and_ttl_follow_the_clock_and_expiry_refetches() -> None:
    clock = FakeClock()
    origin = Origin()
    async with client_for(origin, make_cache(clock, default_ttl=60, l1_max_ttl=100)) as client:
        await client.get("/")
        clock.advance(42)
        hit = await client.get("/")
        clock.advance(20)
        expired = await client.get("/")
    assert hit.headers["age"] == "42"
    assert "ttl=18" in hit.headers["cache-status"]
    assert expired.headers["x-cache"] == "MISS"
    assert origin.calls == 2


async def test_generated_etag_is_deterministic_across_caches() -> None:
    etags = []
    for _ in range(2):
        async with client_for(Origin(body=b"same body"), make_cache()) as client:
            etags.append((await client.get("/")).headers["etag"])
    assert etags[0] == etags[1]
    assert etags[0].startswith('"') and etags[0].endswith('"')


async def test_origin_etag_is_kept() -> None:
    origin = Origin(headers=[("etag", 'W/"v1"')])
    async with client_for(origin, make_cache()) as client:
        await client.get("/")
        hit = await client.get("/")
    assert hit.headers["etag"] == 'W/"v1"'


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("if-none-match", "{etag}", 304),
        ("if-none-match", "W/{etag}", 304),
        ("if-none-match", '"other", {etag}', 304),
        ("if-none-match", "*", 304),
        ("if-none-match", '"other"', 200),
        ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT", 200),
        ("if-modified-since", "Wed, 01 Jan 2031 00:00:00 GMT", 304),
    ],
    ids=["exact", "weak", "list", "star", "no-match", "modified", "not-modified"],
)
async def test_conditional_requests_are_answered_from_the_cache(
    header: str, value: str, expected: int
) -> None:
    origin = Origin(headers=[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")])
    async with client_for(origin, make_cache()) as client:
        etag = (await client.get("/")).headers["etag"]
        response = await client.get("/", headers={header: value.format(etag=etag)})
    assert response.status_code == expected
    assert origin.calls == 1
    if expected == 304:
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert "content-type" not in response.headers


async def test_head_is_answered_from_the_get_entry_without_body() -> None:
    origin = Origin(body=b"0123456789")
    async with client_for(origin, make_cache()) as client:
        await client.get("/")
        head = await client.head("/")
    assert origin.calls == 1
    assert head.headers["x-cache"] == "HIT"
    assert head.headers["content-length"] == "10"
    assert head.content == b""


async def test_head_response_is_never_stored_for_get() -> None:
    origin = Origin(body=b"full body")
    async with client_for(origin, make_cache()) as client:
        await client.head("/")
        get = await client.get("/")
    assert get.headers["x-cache"] == "MISS"
    assert get.content == b"full body"
    assert origin.calls == 2


@pytest.mark.parametrize(
    ("status", "headers", "detail"),
    [
        (200, [("set-cookie", "a=1")], "set-cookie"),
        (200, [("cache-control", "no-store")], "no-store"),
        (200, [("cache-control", "No-Store")], "no-store"),
        (200, [("Cache-Control", "PRIVATE")], "private"),
        (200, [("cache-control", "public, private")], "private"),
        (200, [("vary", "*")], "vary-star"),
        (200, [("vary", "Accept, *")], "vary-star"),
        (404, [], "status"),
        (500, [], "status"),
        (206, [("content-range", "bytes 0-1/10")], "status"),
        (200, [("content-range", "bytes 0-1/10")], "content-range"),
    ],
    ids=[
        "set-cookie",
        "no-store",
        "no-store-case",
        "private-case",
        "public-private",
        "vary-star",
        "vary-list-star",
        "404",
        "500",
        "206",
        "content-range",
    ],
)
async def test_unstorable_responses_are_never_stored(
    status: int, headers: list[tuple[str, str]], detail: str
) -> None:
    origin = Origin(status=status, headers=headers)
    async with client_for(origin, make_cache()) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert origin.calls == 2
    assert second.headers["x-cache"] == "MISS"
    assert f"detail={detail}" in first.headers["cache-status"]
    assert "stored" not in first.headers["cache-status"]


async def test_no_cache_without_validators_is_not_stored_but_with_etag_is_revalidated() -> None:
    plain = Origin(headers=[("cache-control", "no-cache")])
    async with client_for(plain, make_cache()) as client:
        await client.get("/")
        await client.get("/")
    assert plain.calls == 2

    validated = Origin(headers=[("cache-control", "no-cache"), ("etag", '"v1"')])
    async with client_for(validated, make_cache()) as client:
        await client.get("/")
        validated.status, validated.body = 304, b""
        again = await client.get("/")
    assert validated.calls == 2
    assert validated.request_header("if-none-match") == '"v1"'
    assert again.status_code == 200
    assert again.content == b"hello"
    assert again.headers["x-cache"] == "REVALIDATED"


async def test_stale_entry_is_revalidated_and_freshened_by_304() -> None:
    clock = FakeClock()
    origin = Origin(headers=[("cache-control", "max-age=10"), ("etag", '"v1"')])
    async with client_for(origin, make_cache(clock, l1_max_ttl=1000)) as client:
        await client.get("/", headers={"if-none-match": '"client"'})
        clock.advance(11)
        origin.status, origin.body = 304, b""
        origin.headers = [("cache-control", "max-age=100"), ("etag", '"v1"')]
        revalidated = await client.get("/")
        clock.advance(50)
        hit = await client.get("/")
    assert origin.calls == 2
    assert origin.request_header("if-none-match") == '"v1"'
    assert revalidated.status_code == 200 and revalidated.content == b"hello"
    assert "fwd=stale" in revalidated.headers["cache-status"]
    assert hit.headers["x-cache"] == "HIT"
    assert "ttl=50" in hit.headers["cache-status"]


async def test_stale_entry_replaced_when_origin_sends_a_new_version() -> None:
    clock = FakeClock()
    origin = Origin(headers=[("cache-control", "max-age=10"), ("etag", '"v1"')])
    async with client_for(origin, make_cache(clock, l1_max_ttl=1000)) as client:
        await client.get("/")
        clock.advance(11)
        origin.body, origin.headers = b"new", [("cache-control", "max-age=10"), ("etag", '"v2"')]
        changed = await client.get("/")
        hit = await client.get("/")
    assert changed.content == b"new"
    assert hit.content == b"new" and hit.headers["x-cache"] == "HIT"


async def test_body_over_limit_is_not_stored() -> None:
    origin = Origin(body=b"x" * 101)
    async with client_for(origin, make_cache(max_body_bytes=100)) as client:
        first = await client.get("/")
        await client.get("/")
    assert origin.calls == 2
    assert "detail=too-large" in first.headers["cache-status"]


async def test_streamed_body_over_limit_is_not_stored() -> None:
    origin = Origin(chunks=[b"x" * 60, b"y" * 60])
    async with client_for(origin, make_cache(max_body_bytes=100)) as client:
        first = await client.get("/")
        await client.get("/")
    assert first.content == b"x" * 60 + b"y" * 60
    assert origin.calls == 2


async def test_streamed_body_within_limit_is_stored_whole() -> None:
    origin = Origin(chunks=[b"a", b"b", b"c"])
    async with client_for(origin, make_cache()) as client:
        await client.get("/")
        hit = await client.get("/")
    assert hit.content == b"abc"
    assert hit.headers["content-length"] == "3"
    assert origin.calls == 1


async def test_streaming_is_forwarded_before_the_origin_finishes() -> None:
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"last"})

    received: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            received.append(message["body"])
            release.set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"host", b"t")],
        "scheme": "http",
        "root_path": "",
    }
    middleware = TieredCacheMiddleware(app, cache=make_cache())
    await asyncio.wait_for(middleware(scope, receive, send), 2)
    assert received == [b"first", b"last"]


async def test_exception_in_origin_propagates_and_nothing_is_stored() -> None:
    calls = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom")

    cache = make_cache()
    async with client_for(app, cache) as client:
        for _ in range(2):
            with pytest.raises(RuntimeError, match="boom"):
                await client.get("/")
    assert calls == 2
    assert cache.store.l1 is not None and len(cache.store.l1) == 0


async def test_query_order_of_distinct_parameters_shares_an_entry() -> None:
    origin = Origin(body=lambda scope: scope["query_string"])
    async with client_for(origin, make_cache()) as client:
        await client.get("/?a=1&b=2")
        swapped = await client.get("/?b=2&a=1")
        repeated = await client.get("/?a=1&a=2")
        repeated_swapped = await client.get("/?a=2&a=1")
    assert swapped.headers["x-cache"] == "HIT"
    assert repeated.headers["x-cache"] == "MISS"
    assert repeated_swapped.headers["x-cache"] == "MISS"
    assert repeated_swapped.content == b"a=2&a=1"


@pytest.mark.parametrize(
    ("first", "second"),
    [("/a%2Fb", "/a/b"), ("/a%3Fb=c", "/a?b=c"), ("/x", "/X"), ("/%61", "/a")],
)
async def test_raw_paths_are_distinct_resources(first: str, second: str) -> None:
    origin = Origin(body=lambda scope: scope["raw_path"] + b"?" + scope["query_string"])
    async with client_for(origin, make_cache()) as client:
        one = await client.get(first)
        two = await client.get(second)
    assert two.headers["x-cache"] == "MISS"
    assert one.content != two.content


async def test_non_ascii_and_invalid_percent_encoding_do_not_crash() -> None:
    origin = Origin()
    cache = make_cache()
    middleware = TieredCacheMiddleware(origin, cache=cache)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    for raw in (b"/%zz%", "/caf\u00e9".encode(), b"/\xff\xfe", b"/%C3%28"):
        scope = {
            "type": "http",
            "method": "GET",
            "path": raw.decode("latin-1"),
            "raw_path": raw,
            "query_string": b"q=%ff%zz",
            "headers": [(b"host", b"t")],
            "scheme": "http",
        }
        await middleware(scope, receive, send)
        await middleware(scope, receive, send)
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert statuses == [200] * 8
    assert origin.calls == 4


@pytest.mark.parametrize(
    "header",
    [
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-prefix",
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "x-host",
    ],
)
async def test_proxy_headers_are_part_of_the_key(header: str) -> None:
    origin = Origin(body=lambda scope: repr(scope["headers"]).encode())
    async with client_for(origin, make_cache()) as client:
        poisoned = await client.get("/", headers={header: "evil.example"})
        clean = await client.get("/")
    assert clean.headers["x-cache"] == "MISS"
    assert b"evil" not in clean.content
    assert b"evil" in poisoned.content


@pytest.mark.parametrize(
    "headers",
    [
        {"x-http-method-override": "DELETE"},
        {"x-method-override": "PUT"},
        {"x-http-method": "POST"},
    ],
    ids=["override", "method-override", "http-method"],
)
async def test_requests_that_may_change_meaning_bypass(headers: dict[str, str]) -> None:
    origin = Origin()
    async with client_for(origin, make_cache()) as client:
        first = await client.get("/", headers=headers)
        await client.get("/", headers=headers)
        clean = await client.get("/")
    assert origin.calls == 3
    assert first.headers["x-cache"] == "BYPASS"
    assert "fwd=bypass" in first.headers["cache-status"]
    assert clean.headers["x-cache"] == "MISS"


async def test_get_with_a_body_bypasses_and_never_poisons() -> None:
    origin = Origin(body=lambda scope: b"origin")
    async with client_for(origin, make_cache()) as client:
        fat = await client.request("GET", "/", content=b"payload")
        plain = await client.get("/")
    assert "detail=request-body" in fat.headers["cache-status"]
    assert plain.headers["x-cache"] == "MISS"


async def test_unsafe_methods_bypass() -> None:
    origin = Origin()
    async with client_for(origin, make_cache()) as client:
        response = await client.post("/", content=b"x")
    assert response.headers["cache-status"] == "fastapi-tiered-cache; fwd=bypass; detail=method"


async def test_request_no_store_prevents_storing_but_client_no_cache_is_ignored() -> None:
    origin = Origin()
    async with client_for(origin, make_cache()) as client:
        await client.get("/", headers={"cache-control": "no-store"})
        await client.get("/", headers={"cache-control": "no-cache"})
        forced = await client.get("/", headers={"cache-control": "no-cache, max-age=0"})
    assert origin.calls == 2
    assert forced.headers["x-cache"] == "HIT"


async def test_origin_freshness_wins_over_default_ttl() -> None:
    clock = FakeClock()
    origin = Origin(headers=[("cache-control", "public, max-age=5, s-maxage=20")])
    async with client_for(origin, make_cache(clock, default_ttl=1000, l1_max_ttl=1000)) as client:
        await client.get("/")
        clock.advance(19)
        hit = await client.get("/")
        clock.advance(2)
        miss = await client.get("/")
    assert hit.headers["x-cache"] == "HIT"
    assert miss.headers["x-cache"] == "MISS"
    assert hit.headers["cache-control"] == "public, max-age=5, s-maxage=20"


async def test_expires_and_age_from_origin_are_honoured() -> None:
    clock = FakeClock(start=1_000_000_000.0)
    date = "Sun, 09 Sep 2001 01:46:40 GMT"  # == 1_000_000_000
    expires = "Sun, 09 Sep 2001 01:47:40 GMT"  # + 60 s
    origin = Origin(headers=[("date", date), ("expires", expires), ("age", "10")])
    async with client_for(origin, make_cache(clock, l1_max_ttl=1000)) as client:
        await client.get("/")
        clock.advance(45)
        hit = await client.get("/")
        clock.advance(6)
        miss = await client.get("/")
    assert hit.headers["age"] == "55"
    assert miss.headers["x-cache"] == "MISS"


async def test_default_ttl_zero_stores_only_what_the_origin_declares() -> None:
    silent = Origin()
    declared = Origin(headers=[("cache-control", "max-age=30")])
    async with client_for(silent, make_cache(default_ttl=0)) as client:
        first = await client.get("/")
        await client.get("/")
    async with client_for(declared, make_cache(default_ttl=0)) as client:
        await client.get("/")
        hit = await client.get("/")
    assert silent.calls == 2 and "detail=stale" in first.headers["cache-status"]
    assert hit.headers["x-cache"] == "HIT"


async def test_disabled_cache_passes_through_untouched() -> None:
    origin = Origin()
    async with client_for(origin, make_cache(enabled=False)) as client:
        response = await client.get("/")
        await client.get("/")
    assert origin.calls == 2
    assert "x-cache" not in response.headers and "cache-status" not in response.headers


async def test_x_cache_header_can_be_turned_off_and_status_name_set() -> None:
    cache = make_cache(x_cache_header=False, cache_status_name="edge")
    async with client_for(Origin(), cache) as c:
        response = await c.get("/")
    assert "x-cache" not in response.headers
    assert response.headers["cache-status"].startswith("edge; fwd=miss")


def test_lifespan_and_websockets_pass_through_and_shutdown_closes_the_cache() -> None:
    app = FastAPI()
    seen: dict[str, Any] = {}

    @app.get("/state")
    async def state_route() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi " + await websocket.receive_text())
        await websocket.close()

    cache = make_cache()
    closed: list[bool] = []
    original_close = cache.close

    async def close() -> None:
        closed.append(True)
        await original_close()

    cache.close = close  # type: ignore[method-assign]
    app.add_middleware(TieredCacheMiddleware, cache=cache)

    @app.middleware("http")
    async def capture_state(request: Any, call_next: Any) -> Any:
        seen["state"] = dict(request.scope.get("state", {}))
        return await call_next(request)

    with TestClient(app) as client:
        assert client.get("/state").json() == {"ok": True}
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("there")
            assert websocket.receive_text() == "hi there"
    assert seen["state"] == {}  # the lifespan state is the app's: the cache adds nothing
    assert closed == [True]
