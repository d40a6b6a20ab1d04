"""Cache-Control, Vary and date parsing (RFC 9111 §5.2, §4.1; RFC 9110 §5.6.7)."""

from __future__ import annotations

import pytest

from fastapi_tiered_cache.cache_control import (
    MAX_DELTA_SECONDS,
    parse_cache_control,
    parse_http_date,
    parse_vary,
)


@pytest.mark.parametrize(
    ("header", "field", "expected"),
    [
        ("max-age=60", "max_age", 60),
        ("MAX-AGE=60", "max_age", 60),
        (" max-age = 60 ", "max_age", 60),
        ('max-age="60"', "max_age", 60),
        ("max-age=60, max-age=60", "max_age", 60),
        ("max-age=60, max-age=30", "max_age", 0),
        ("max-age=abc", "max_age", 0),
        ("max-age=-5", "max_age", 0),
        ("max-age=", "max_age", 0),
        ("max-age=99999999999", "max_age", MAX_DELTA_SECONDS),
        ("s-maxage=10", "s_maxage", 10),
        ("No-Store", "no_store", True),
        ("private", "private", True),
        ('private="set-cookie"', "private", True),
        ('no-cache="set-cookie, x"', "no_cache", True),
        ('no-cache="a,b", max-age=5', "max_age", 5),
        ("public", "public", True),
        ("must-revalidate", "must_revalidate", True),
        ("proxy-revalidate", "proxy_revalidate", True),
        ("stale-while-revalidate=30", "stale_while_revalidate", 30),
        ("stale-if-error=60", "stale_if_error", 60),
        ("max-stale", "max_stale", MAX_DELTA_SECONDS),
        ("", "no_store", False),
        (",,, max-age=3", "max_age", 3),
        (";; no-store", "no_store", True),
        ("max-age=5 private", "private", True),
        ('x="a,no-store"', "no_store", False),
        ("unknown-ext=1, max-age=4", "max_age", 4),
    ],
)
def test_parse_cache_control(header: str, field: str, expected: object) -> None:
    assert getattr(parse_cache_control(header), field) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ()),
        ("", ()),
        ("Accept-Encoding", ("accept-encoding",)),
        (" Accept ,  accept-language ,ACCEPT", ("accept", "accept-language")),
        ("*", None),
        ("accept, *", None),
        (",,", ()),
    ],
)
def test_parse_vary(header: str | None, expected: object) -> None:
    assert parse_vary(header) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),
        ("Sun Nov  6 08:49:37 1994", 784111777.0),
        ("0", None),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parse_http_date(value: str | None, expected: float | None) -> None:
    assert parse_http_date(value) == expected
