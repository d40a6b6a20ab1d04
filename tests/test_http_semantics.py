"""RFC 9111 details: targeted fields, outgoing Cache-Control, client directives, ranges,
heuristic and negative freshness, strict mode, and the Django 2026 privacy regressions."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_tiered_cache.cache_control import parse_cache_control
from fastapi_tiered_cache.http_date import format_http_date

from .helpers import FakeClock, Origin, client_for, make_cache


async def test_cdn_cache_control_is_forwarded_untouched_and_not_obeyed_by_default() -> None:
    """RFC 9213 §2: CDN-Cache-Control targets the CDN in front, not this cache."""
    origin = Origin(headers=[("cache-control", "no-store"), ("cdn-cache-control", "max-age=30")])
    async with client_for(origin, make_cache()) as c:
        first = await c.get("/")
        second = await c.get("/")
    assert first.headers["cdn-cache-control"] == "max-age=30"
    assert (
        second.headers["x-cache"] == "MISS" and "detail=no-store" in second.headers["cache-status"]
    )


async def test_own_targeted_field_steers_this_cache_alone_and_is_not_forwarded() -> None:
    """RFC 9213 §2.2: the cache's own field (Tiered-Cache-Control) wins over Cache-Control."""
    clock = FakeClock()
    origin = Origin(
        headers=[
            ("cache-control", "no-store"),
            ("tiered-cache-control", "max-age=30"),
            ("cdn-cache-control", "max-age=5"),
        ]
    )
    async with client_for(origin, make_cache(clock)) as c:
        first = await c.get("/")
        hit = await c.get("/")
        clock.advance(31)
        expired = await c.get("/")
    assert hit.headers["x-cache"] == "HIT" and expired.headers["x-cache"] == "MISS"
    assert "tiered-cache-control" not in first.headers and "tiered-cache-control" not in hit.headers
    assert hit.headers["cdn-cache-control"] == "max-age=5"


async def test_cdn_cache_control_takes_precedence_when_configured_and_is_not_forwarded() -> None:
    clock = FakeClock()
    origin = Origin(headers=[("cache-control", "no-store"), ("cdn-cache-control", "max-age=30")])
    async with client_for(origin, make_cache(clock, targeted_headers="cdn-cache-control")) as c:
        first = await c.get("/")
        hit = await c.get("/")
        clock.advance(31)
        expired = await c.get("/")
    assert hit.headers["x-cache"] == "HIT"
    assert "cdn-cache-control" not in first.headers and "cdn-cache-control" not in hit.headers
    assert hit.headers["cache-control"] == "no-store"  # the browser still gets the origin's word
    assert expired.headers["x-cache"] == "MISS"


async def test_own_targeted_field_wins_over_cdn_cache_control() -> None:
    origin = Origin(headers=[("cdn-cache-control", "max-age=60"), ("app-cache", "no-store")])
    cache = make_cache(targeted_headers="App-Cache,CDN-Cache-Control")
    async with client_for(origin, cache) as c:
        first = await c.get("/")
        await c.get("/")
    assert origin.calls == 2 and "detail=no-store" in first.headers["cache-status"]


async def test_targeted_fields_can_be_forwarded() -> None:
    origin = Origin(headers=[("cdn-cache-control", "max-age=60")])
    cache = make_cache(targeted_headers="cdn-cache-control", forward_targeted_headers=True)
    async with client_for(origin, cache) as c:
        assert (await c.get("/")).headers["cdn-cache-control"] == "max-age=60"


@pytest.mark.parametrize(
    "targeted",
    ["max-age=10000, &&&&&", 'max-age=10000, no-store="', "Max-Age=10000", "max-age =10000", ""],
)
async def test_rfc_9213_section_2_1_an_invalid_targeted_field_is_ignored_as_a_whole(
    targeted: str,
) -> None:
    """RFC 9213 §2.1: a targeted field that fails to parse (RFC 9651) falls back to
    Cache-Control, here no-store; it is never obeyed in part."""
    origin = Origin(headers=[("cdn-cache-control", targeted), ("cache-control", "no-store")])
    async with client_for(origin, make_cache(targeted_headers="cdn-cache-control")) as c:
        await c.get("/")
        second = await c.get("/")
    assert origin.calls == 2 and "detail=no-store" in second.headers["cache-status"]


async def test_rfc_9213_an_invalid_first_targeted_field_falls_back_to_the_next() -> None:
    origin = Origin(headers=[("app-cache", "max-age=60, ???"), ("cdn-cache-control", "no-store")])
    cache = make_cache(targeted_headers="App-Cache,CDN-Cache-Control")
    async with client_for(origin, cache) as c:
        first = await c.get("/")
    assert "detail=no-store" in first.headers["cache-status"]


async def test_rule_outgoing_cache_control_never_outlives_the_entry() -> None:
    clock = FakeClock()
    rules = [{"path": "/**", "ttl": 100, "cache_control": "public, max-age=600"}]
    origin = Origin(headers=[("cache-control", "max-age=5")])
    async with client_for(origin, make_cache(clock, rules=rules, l1_max_ttl=1000)) as c:
        first = await c.get("/")
        clock.advance(2)
        hit = await c.get("/")
    assert first.headers["cache-control"] == "public, max-age=5"
    assert hit.headers["cache-control"] == "public, max-age=3"
    assert "expires" in hit.headers


async def test_rule_outgoing_cache_control_never_loosens_private_or_no_store() -> None:
    rules = [{"path": "/**", "cache_control": "public, max-age=60", "cache_private": True}]
    origin = Origin(headers=[("cache-control", "private, max-age=60")])
    async with client_for(origin, make_cache(rules=rules)) as c:
        await c.get("/", headers={"authorization": "Bearer a"})
        hit = await c.get("/", headers={"authorization": "Bearer a"})
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["cache-control"] == "private, max-age=60"


async def test_browser_revalidation_while_the_server_caches() -> None:
    rules = [{"path": "/**", "cache_control": "no-cache"}]
    async with client_for(Origin(), make_cache(rules=rules)) as c:
        await c.get("/")
        hit = await c.get("/")
    assert hit.headers["cache-control"] == "no-cache" and hit.headers["x-cache"] == "HIT"


@pytest.mark.parametrize(
    ("request_cc", "advance", "expected"),
    [
        ("no-cache", 0, "MISS"),
        ("max-age=0", 1, "MISS"),
        ("max-age=100", 1, "HIT"),
        ("min-fresh=100", 1, "MISS"),
        ("min-fresh=10", 1, "HIT"),
    ],
)
async def test_client_directives_are_honoured_only_when_enabled(
    request_cc: str, advance: float, expected: str
) -> None:
    for honour, outcome in ((True, expected), (False, "HIT")):
        clock = FakeClock()
        async with client_for(
            Origin(), make_cache(clock, honour_request_cache_control=honour)
        ) as c:
            await c.get("/")
            clock.advance(advance)
            response = await c.get("/", headers={"cache-control": request_cc})
        assert response.headers["x-cache"] == outcome, (honour, request_cc)


async def test_only_if_cached_gives_504_on_a_miss() -> None:
    async with client_for(Origin(), make_cache(honour_request_cache_control=True)) as c:
        miss = await c.get("/", headers={"cache-control": "only-if-cached"})
        await c.get("/")
        hit = await c.get("/", headers={"cache-control": "only-if-cached"})
    assert miss.status_code == 504
    assert hit.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "body", "content_range"),
    [
        ({"range": "bytes=0-3"}, 206, b"0123", "bytes 0-3/10"),
        ({"range": "bytes=7-"}, 206, b"789", "bytes 7-9/10"),
        ({"range": "bytes=-2"}, 206, b"89", "bytes 8-9/10"),
        ({"range": "bytes=5-100"}, 206, b"56789", "bytes 5-9/10"),
        ({"range": "bytes=20-"}, 416, b"", "bytes */10"),
        ({"range": "bytes=0-1,3-4"}, 200, b"0123456789", None),
        ({"range": "items=0-1"}, 200, b"0123456789", None),
        ({"range": "bytes=0-3", "if-range": '"stale"'}, 200, b"0123456789", None),
        ({"range": "bytes=0-3", "if-range": "{etag}"}, 206, b"0123", "bytes 0-3/10"),
    ],
)
async def test_ranges_are_answered_from_a_stored_full_response(
    headers: dict[str, str], status: int, body: bytes, content_range: str | None
) -> None:
    origin = Origin(body=b"0123456789")
    async with client_for(origin, make_cache()) as c:
        etag = (await c.get("/")).headers["etag"]
        response = await c.get("/", headers={k: v.format(etag=etag) for k, v in headers.items()})
    assert origin.calls == 1
    assert (response.status_code, response.content) == (status, body)
    assert response.headers.get("content-range") == content_range
    assert response.headers["content-length"] == str(len(body))


async def test_range_request_on_a_miss_goes_to_the_origin_and_206_is_not_stored() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-range", b"bytes 0-1/10"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 206, "headers": headers})
        await send({"type": "http.response.body", "body": b"01"})

    async with client_for(app, make_cache()) as c:
        first = await c.get("/", headers={"range": "bytes=0-1"})
        second = await c.get("/")
    assert first.status_code == 206 and second.headers["x-cache"] == "MISS"


async def test_heuristic_freshness_only_when_enabled() -> None:
    clock = FakeClock(start=1_000_000_000.0)
    headers = [("last-modified", "Sat, 08 Sep 2001 01:46:40 GMT")]  # one day earlier
    for enabled, outcome in ((True, "HIT"), (False, "MISS")):
        cache = make_cache(clock, default_ttl=0, heuristic_freshness=enabled, l1_max_ttl=10**5)
        async with client_for(Origin(headers=headers), cache) as c:
            await c.get("/")
            clock.advance(8000)  # within 10% of a day (8640 s)
            assert (await c.get("/")).headers["x-cache"] == outcome


async def test_negative_caching_with_its_own_ttl() -> None:
    clock = FakeClock()
    origin = Origin(status=404)
    async with client_for(origin, make_cache(clock, negative_ttl=5)) as c:
        await c.get("/gone")
        hit = await c.get("/gone")
        clock.advance(6)
        miss = await c.get("/gone")
    assert hit.status_code == 404 and hit.headers["x-cache"] == "HIT"
    assert miss.headers["x-cache"] == "MISS"


@pytest.mark.parametrize(
    ("status", "cache_control", "stored"),
    [
        (301, "max-age=60", True),
        (404, "max-age=60", True),
        (410, "max-age=60", True),
        (204, "max-age=60", True),
        (203, "s-maxage=60", True),
        (303, "max-age=60", True),
        (501, "max-age=60", True),
        (503, "max-age=60", True),  # explicitly fresh: the origin's word (RFC 9111 §3)
        (599, "max-age=60", True),
        (201, "max-age=60", True),
        (503, "", False),  # no freshness: never
        (404, "", False),
        (206, "max-age=60", False),  # never stored as a complete response
    ],
)
async def test_rfc_9111_section_3_strict_mode_stores_any_explicitly_fresh_final_status(
    status: int, cache_control: str, stored: bool
) -> None:
    headers = [("cache-control", cache_control)] if cache_control else []
    if status == 206:
        headers.append(("content-range", "bytes 0-0/1"))
    origin = Origin(status=status, headers=headers, body=b"")
    async with client_for(origin, make_cache(default_ttl=0)) as c:
        await c.get("/")
        second = await c.get("/")
    assert (second.headers["x-cache"] == "HIT") is stored


@pytest.mark.parametrize(("strict", "stored"), [(None, True), (True, True), (False, False)])
async def test_strict_mode_is_an_explicit_setting_defaulting_to_default_ttl_0(
    strict: bool | None, stored: bool
) -> None:
    origin = Origin(status=404, headers=[("cache-control", "max-age=60")])
    async with client_for(origin, make_cache(default_ttl=0, strict=strict)) as c:
        await c.get("/")
        second = await c.get("/")
    assert (second.headers["x-cache"] == "HIT") is stored


@pytest.mark.parametrize(
    ("status", "stored"), [(200, True), (404, True), (599, False), (206, False)]
)
async def test_rfc_9111_section_5_2_2_3_must_understand(status: int, stored: bool) -> None:
    """must-understand overrides no-store for a status the cache understands, and keeps
    any other status out of the cache."""
    cache_control = "max-age=3600, no-store, must-understand"
    origin = Origin(status=status, headers=[("cache-control", cache_control)])
    async with client_for(origin, make_cache(default_ttl=0)) as c:
        await c.get("/")
        second = await c.get("/")
    assert (second.headers["x-cache"] == "HIT") is stored


@pytest.mark.parametrize(
    ("status", "headers", "stored"),
    [
        (200, [], True),
        (203, [], True),
        (404, [], True),
        (410, [], True),
        (501, [], True),
        (201, [], False),
        (503, [], False),
        (599, [], False),
        (599, [("cache-control", "public")], True),
    ],
)
async def test_rfc_9111_section_4_2_2_heuristic_freshness_in_strict_mode(
    status: int, headers: list[tuple[str, str]], stored: bool
) -> None:
    """Last-Modified a day old: fresh for 10% of that, on heuristically cacheable statuses
    (RFC 9110 §15.1) or with public."""
    clock = FakeClock(start=1_000_000_000.0)
    headers = [("last-modified", "Sat, 08 Sep 2001 01:46:40 GMT"), *headers]
    origin = Origin(status=status, headers=headers)
    async with client_for(origin, make_cache(clock, default_ttl=0, l1_max_ttl=10**5)) as c:
        await c.get("/")
        clock.advance(8000)
        second = await c.get("/")
    assert (second.headers["x-cache"] == "HIT") is stored


async def test_heuristic_lifetime_is_capped_by_heuristic_max_ttl() -> None:
    clock = FakeClock(start=1_000_000_000.0)
    origin = Origin(headers=[("last-modified", "Sat, 08 Sep 2001 01:46:40 GMT")])
    cache = make_cache(clock, default_ttl=0, heuristic_max_ttl=60, l1_max_ttl=10**5)
    async with client_for(origin, cache) as c:
        await c.get("/")
        clock.advance(59)
        hit = await c.get("/")
        clock.advance(2)
        after = await c.get("/")
    assert hit.headers["x-cache"] == "HIT" and after.headers["x-cache"] != "HIT"


@pytest.mark.parametrize(
    ("cache_control", "stored"),
    [
        ("max-age=60", False),
        ("public, max-age=60", True),
        ("s-maxage=60", True),
        ("max-age=60, must-revalidate", True),
    ],
)
async def test_strict_mode_applies_rfc_9111_section_3_5_to_authorization(
    cache_control: str, stored: bool
) -> None:
    origin = Origin(headers=[("cache-control", cache_control)])
    async with client_for(origin, make_cache(default_ttl=0)) as c:
        await c.get("/", headers={"authorization": "Bearer a"})
        second = await c.get("/", headers={"authorization": "Bearer a"})
    assert (second.headers["x-cache"] == "HIT") is stored


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH", "PURGEX"])
@pytest.mark.parametrize(("status", "purged"), [(200, True), (303, True), (404, False)])
async def test_unsafe_and_unknown_methods_invalidate_on_non_error_status(
    method: str, status: int, purged: bool
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        code = 200 if scope["method"] == "GET" else status
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    async with client_for(app, make_cache()) as c:
        await c.get("/r")
        await c.request(method, "/r")
        again = await c.get("/r")
    assert (again.headers["x-cache"] == "MISS") is purged


# -- Django's 2026 cache-middleware privacy CVEs, each a regression test ------------------


async def test_cve_2026_6907_vary_star_is_never_stored() -> None:
    origin = Origin(headers=[("vary", "Accept-Encoding, *")])
    async with client_for(origin, make_cache()) as c:
        await c.get("/")
        assert (await c.get("/")).headers["x-cache"] == "MISS"


@pytest.mark.parametrize("value", ["NO-STORE", "Private", "No-Store, max-age=60", "pRiVaTe=x"])
async def test_cve_2026_8404_directives_are_case_insensitive(value: str) -> None:
    origin = Origin(headers=[("Cache-Control", value)])
    async with client_for(origin, make_cache()) as c:
        await c.get("/")
        assert (await c.get("/")).headers["x-cache"] == "MISS"
    assert parse_cache_control(value).no_store or parse_cache_control(value).private


async def test_cve_2026_48587_vary_whitespace_is_stripped() -> None:
    origin = Origin(
        body=lambda scope: dict(scope["headers"]).get(b"x-user", b"-"),
        headers=[("vary", "  X-User ,Accept ")],
    )
    async with client_for(origin, make_cache()) as c:
        await c.get("/", headers={"x-user": "alice"})
        bob = await c.get("/", headers={"x-user": "bob"})
    assert bob.content == b"bob"


async def test_cve_2026_35193_authorization_without_vary_is_not_shared() -> None:
    origin = Origin(body=lambda scope: dict(scope["headers"]).get(b"authorization", b"-"))
    async with client_for(origin, make_cache()) as c:
        await c.get("/", headers={"authorization": "Bearer alice"})
        bob = await c.get("/", headers={"authorization": "Bearer bob"})
        anon = await c.get("/")
    assert bob.content == b"Bearer bob" and anon.content == b"-"


async def test_cve_2026_48588_unrelated_cookies_with_vary_cookie() -> None:
    origin = Origin(
        body=lambda scope: dict(scope["headers"]).get(b"cookie", b"-"),
        headers=[("vary", "Cookie")],
    )
    async with client_for(origin, make_cache()) as c:
        await c.get("/", headers={"cookie": "theme=dark; user=alice"})
        other = await c.get("/", headers={"cookie": "theme=dark; user=bob"})
    assert other.content == b"theme=dark; user=bob"


async def test_cve_2026_113593_absent_and_empty_header_differ() -> None:
    origin = Origin(
        body=lambda scope: repr(dict(scope["headers"]).get(b"x-flag")).encode(),
        headers=[("vary", "X-Flag")],
    )
    async with client_for(origin, make_cache()) as c:
        await c.get("/", headers={"x-flag": ""})
        absent = await c.get("/")
    assert absent.content == b"None"


async def test_ticket_36560_no_store_response_is_not_cached() -> None:
    origin = Origin(headers=[("cache-control", "no-store, max-age=60")])
    async with client_for(origin, make_cache()) as c:
        await c.get("/")
        assert (await c.get("/")).headers["x-cache"] == "MISS"


# -- Stale windows and validators (RFC 5861, RFC 9111 §4.3.2) ---------------------------------


async def test_rfc_5861_section_3_max_age_0_is_served_stale_while_revalidating() -> None:
    """A response with max-age=0 is stale from its first second (RFC 9111 §4.2), so its
    stale-while-revalidate window applies at once."""
    origin = Origin(headers=[("cache-control", "max-age=0, stale-while-revalidate=60")])
    async with client_for(origin, make_cache(default_ttl=0)) as c:
        await c.get("/")
        second = await c.get("/")
    assert second.headers["x-cache"] == "STALE"


async def test_max_age_0_without_a_window_is_never_served_stale() -> None:
    origin = Origin(headers=[("cache-control", "max-age=0"), ("etag", '"v1"')])
    async with client_for(origin, make_cache(default_ttl=0)) as c:
        await c.get("/")
        second = await c.get("/")
    assert second.headers["x-cache"] != "STALE" and origin.calls == 2


async def test_rfc_5861_section_4_a_response_stale_on_arrival_is_kept_for_stale_if_error() -> None:
    calls = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        status = 200 if calls == 1 else 500
        headers = [(b"cache-control", b"max-age=0, stale-if-error=3600")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"first" if calls == 1 else b"oops"})

    async with client_for(app, make_cache(default_ttl=0)) as c:
        await c.get("/")
        second = await c.get("/")
    assert (second.status_code, second.content) == (200, b"first")
    assert "detail=stale-if-error" in second.headers["cache-status"]


@pytest.mark.parametrize(("offset", "status"), [(0, 304), (60, 304), (-3000, 200)])
async def test_rfc_9111_section_4_3_2_if_modified_since_against_the_stored_date(
    offset: int, status: int
) -> None:
    """Without Last-Modified, the stored Date is the latest the representation changed."""
    clock = FakeClock()
    date = format_http_date(clock.now)
    origin = Origin(headers=[("cache-control", "max-age=3600"), ("date", date)])
    async with client_for(origin, make_cache(clock)) as c:
        await c.get("/")
        since = format_http_date(clock.now + offset)
        response = await c.get("/", headers={"if-modified-since": since})
    assert response.status_code == status and origin.calls == 1
