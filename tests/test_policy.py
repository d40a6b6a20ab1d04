"""Freshness and storability decisions (RFC 9111 §3, §4.2, §5.1, §5.3), as pure functions."""

from __future__ import annotations

import pytest

from fastapi_tiered_cache.cache_control import parse_cache_control
from fastapi_tiered_cache.http_date import format_http_date
from fastapi_tiered_cache.policy import (
    check_response,
    freshness_of,
    heuristic_lifetime,
    lifetime_without_freshness,
)

NOW = 1_700_000_000.0


def fresh_for(headers: dict[str, str]) -> float:
    cc = parse_cache_control(headers.get("cache-control"))
    freshness = freshness_of(headers, cc, default_ttl=0, shared=True, now=NOW)
    return freshness.fresh_for - freshness.initial_age


@pytest.mark.parametrize(
    "expires",
    [
        "0",
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu 18 Aug 2050 02:01:18 GMT",
        "Thu, 18  Aug  2050 02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02.01.18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
        # Two field lines, joined by the middleware: not one HTTP-date.
        "Thu, 18 Aug 2050 02:01:18 GMT, Thu, 18 Aug 2050 02:01:19 GMT",
        "Thu, 18 Aug 2050 02:01:18 GMT, Thu, 18 Aug 2050 02:01:18 GMT",
    ],
)
def test_rfc_9111_section_5_3_an_invalid_expires_means_already_expired(expires: str) -> None:
    assert fresh_for({"expires": expires, "date": format_http_date(NOW)}) <= 0


@pytest.mark.parametrize(
    "expires", ["Thu, 18 Aug 2050 02:01:18 GMT", "Thursday, 18-Aug-50 02:01:18 GMT"]
)
def test_a_valid_future_expires_is_fresh(expires: str) -> None:
    assert fresh_for({"expires": expires, "date": format_http_date(NOW)}) > 10**8


def test_rfc_9111_section_4_2_1_max_age_wins_over_an_invalid_expires() -> None:
    assert fresh_for({"cache-control": "max-age=3600", "expires": "0"}) == 3600


def test_an_invalid_date_means_the_time_of_receipt() -> None:
    headers = {"expires": format_http_date(NOW + 10), "date": "foo"}
    assert fresh_for(headers) == 10


@pytest.mark.parametrize(
    ("age", "remaining"),
    [
        ("7200, 0", -3600),  # RFC 9111 §5.1: the first value of a list
        ("0, 7200", 3600),
        ("7200", -3600),
        ("abc", 3600),  # invalid: ignored
        ("9" * 5000, 3600 - 2**31),  # huge: capped, stale
    ],
)
def test_rfc_9111_section_5_1_age_lists_use_the_first_value(age: str, remaining: int) -> None:
    assert fresh_for({"cache-control": "max-age=3600", "age": age}) == remaining


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {"last-modified": format_http_date(NOW - 3600)}, 360.0),
        (200, {"last-modified": format_http_date(NOW - 86_400)}, 3600.0),  # the cap
        (200, {"last-modified": "yesterday"}, None),
        (200, {}, None),
        (503, {"last-modified": format_http_date(NOW - 86_400)}, None),
        (200, {"last-modified": format_http_date(NOW - 100), "expires": "0"}, None),
    ],
)
def test_rfc_9111_section_4_2_2_heuristic_lifetime(
    status: int, headers: dict[str, str], expected: float | None
) -> None:
    cc = parse_cache_control(headers.get("cache-control"))
    assert heuristic_lifetime(headers, NOW, status=status, cc=cc, cap=3600) == expected


def test_lifetime_without_freshness_order() -> None:
    common = {"negative_ttl": 5, "heuristic": 7.0, "default_ttl": 60}
    assert lifetime_without_freshness(rule_ttl=9, status=404, **common) == 9
    assert lifetime_without_freshness(rule_ttl=None, status=404, **common) == 5
    assert lifetime_without_freshness(rule_ttl=None, status=200, **common) == 7
    assert (
        lifetime_without_freshness(
            rule_ttl=None, status=200, negative_ttl=0, heuristic=None, default_ttl=60
        )
        == 60
    )


@pytest.mark.parametrize(
    ("status", "cache_control", "strict", "heuristic", "cacheable"),
    [
        (404, "max-age=60", True, False, True),
        (404, "max-age=60", False, False, False),  # not strict: the configured statuses
        (304, "max-age=60", True, False, False),
        (206, "max-age=60", True, False, False),
        (199, "max-age=60", True, False, False),
        (200, "max-age=60, no-store, must-understand", False, False, True),
        (299, "max-age=60, no-store, must-understand", True, False, False),
        (299, "max-age=60", True, False, True),
        (404, "", True, True, True),  # heuristically cacheable, with Last-Modified
        (404, "", True, False, False),
        (503, "", True, True, False),
        (503, "public", True, True, True),
    ],
)
def test_rfc_9111_section_3_storable_statuses(
    status: int, cache_control: str, strict: bool, heuristic: bool, cacheable: bool
) -> None:
    headers = {"cache-control": cache_control, "last-modified": format_http_date(NOW - 100)}
    decision = check_response(
        status,
        headers,
        cc=parse_cache_control(cache_control),
        request_cc=parse_cache_control(None),
        statuses={200},
        shared=True,
        strict=strict,
        heuristic=heuristic,
    )
    assert decision.cacheable is cacheable
