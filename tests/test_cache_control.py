"""Cache-Control, Vary and date parsing (RFC 9111 §5.2, §4.1; RFC 9110 §5.6.7)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tiered_cache.cache_control import (
    MAX_DELTA_SECONDS,
    MAX_FIELD_LENGTH,
    CacheControl,
    normalize_vary_value,
    parse_age,
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
    parse_targeted,
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
    assert parse_http_date(value, now=1_700_000_000.0) == expected


# -- Bounded parsing (issue 14 item 8) -------------------------------------------------------


@pytest.mark.parametrize("digits", [11, 4301, 5000, 50_000])
def test_rfc_9111_section_1_2_2_huge_delta_seconds_are_capped_without_int_overflow(
    digits: int,
) -> None:
    assert parse_delta_seconds("9" * digits) == MAX_DELTA_SECONDS
    assert parse_cache_control(f"max-age={'9' * digits}").max_age in (MAX_DELTA_SECONDS, 0)
    assert parse_age("9" * digits) == MAX_DELTA_SECONDS


def test_leading_zeros_are_not_digits_of_magnitude() -> None:
    assert parse_delta_seconds("0" * 5000 + "3600") == 3600


def test_an_over_long_cache_control_forbids_storing_and_reuse() -> None:
    cc = parse_cache_control("max-age=60, " + "x" * MAX_FIELD_LENGTH)
    assert cc.no_store and cc.no_cache and cc.max_age == 0


def test_an_over_long_vary_is_as_unstorable_as_star() -> None:
    assert parse_vary(", ".join(f"x-h{i}" for i in range(1000))) is None


@given(st.text(max_size=300))
def test_fuzz_parsers_never_raise(value: str) -> None:
    assert isinstance(parse_cache_control(value), CacheControl)
    parse_delta_seconds(value)
    parse_age(value)
    parse_vary(value)
    result = parse_targeted(value)
    assert result is None or isinstance(result, CacheControl)
    for name in ("accept-encoding", "accept-language", "x-custom"):
        assert isinstance(normalize_vary_value(name, value), str)


@given(st.text(alphabet='0123456789,;= -"max-agestorq.', max_size=6000))
def test_fuzz_digit_heavy_values_never_raise(value: str) -> None:
    parse_cache_control(value)
    parse_age(value)
    parse_targeted(value)
    normalize_vary_value("accept-encoding", value)


# -- Age (RFC 9111 §5.1) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7200", 7200),
        ("7200, 0", 7200),  # a list: the first value
        ("0, 7200", 0),
        (" 30 ", 30),
        ("003600", 3600),
        ("abc", None),
        ("-7200", None),
        ("7200.0", None),
        ("7200;foo=bar", None),
        ("", None),
        (None, None),
        ("2147483648", MAX_DELTA_SECONDS),
        ("99999999999", MAX_DELTA_SECONDS),
    ],
)
def test_rfc_9111_section_5_1_age(value: str | None, expected: int | None) -> None:
    assert parse_age(value) == expected


# -- Targeted fields (RFC 9213, RFC 9651) ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=60", CacheControl(max_age=60)),
        ("max-age=60, no-store", CacheControl(max_age=60, no_store=True)),
        ("s-maxage=99999999999", CacheControl(s_maxage=MAX_DELTA_SECONDS)),
        ("no-store;foo=1", CacheControl(no_store=True)),  # parameters are ignored
        ('private="set-cookie", no-cache="a"', CacheControl(private=True, no_cache=True)),
        ("public, must-understand", CacheControl(public=True, must_understand=True)),
        ("public=?0", CacheControl()),  # a permissive directive only when true
        ("no-store=?0", CacheControl(no_store=True)),  # a restrictive one always counts
        ('max-age="60"', CacheControl(max_age=0)),  # wrong type: invalid freshness, stale
        ("max-age=1.5", CacheControl(max_age=0)),
        ("max-age=-1", CacheControl(max_age=0)),
        ("max-age=?1", CacheControl(max_age=0)),
        ("stale-while-revalidate=abc, max-age=5", CacheControl(max_age=5)),
        ("stale-if-error=30", CacheControl(stale_if_error=30)),
        ("max-age=1, max-age=60", CacheControl(max_age=60)),  # RFC 9651: the last one wins
        ("none", CacheControl()),  # valid, so it replaces Cache-Control (RFC 9213 §3.1)
        ("min-fresh=5, only-if-cached", CacheControl()),  # request directives mean nothing
    ],
)
def test_rfc_9213_section_2_1_targeted_fields_are_structured_dictionaries(
    value: str, expected: CacheControl
) -> None:
    assert parse_targeted(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "max-age=10000, &&&&&",  # unknown type
        "MaX-AgE=3600",  # keys are lower-case
        "max-age =100",  # no space before "="
        "max-age= 100",
        "max-age=9999999999999999",  # beyond RFC 9651 Integers
        "max-age=60,",  # trailing comma
        "max-age=60, " + "a" * MAX_FIELD_LENGTH,
        "caf\u00e9=1",
    ],
)
def test_rfc_9213_section_2_1_a_field_that_fails_to_parse_is_ignored(value: str | None) -> None:
    assert parse_targeted(value) is None


# -- Vary normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        ("accept-encoding", "gzip, br", " GZIP ,, br "),
        ("accept-encoding", "gzip;q=0.5", "gzip ; Q=0.500"),
        ("accept-encoding", "gzip", "gzip;q=1.000"),  # q=1 is the default weight
        ("accept-encoding", "gzip, br", "gzip,\tbr"),
        ("accept-language", "en-us, de;q=0.5", "EN-US , De;Q=0.5"),
        ("Accept-Language", "en, de", " en ,   de"),
        ("accept-charset", "utf-8, *;q=0.1", "UTF-8,*;q=0.100"),
    ],
)
def test_equivalent_spellings_normalise_alike(name: str, a: str, b: str) -> None:
    assert normalize_vary_value(name, a) == normalize_vary_value(name, b)


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        ("accept-language", "en, de", "de, en"),  # order may break ties: never merged
        ("accept-encoding", "gzip", "gzip, gzip"),
        ("accept-encoding", "gzip;q=0", "gzip"),  # q=0 means "not acceptable"
        ("accept-encoding", "gzip;q=0.5", "gzip;q=0.6"),
        ("accept-encoding", "gzip;level=1", "gzip"),  # not the grammar: kept raw
        ("x-custom", "A", "a"),  # an unknown field is never folded
        ("x-custom", "1,2", " 1, 2 "),
        ("accept", "text/html", "TEXT/HTML"),  # media types have case-sensitive parameters
    ],
)
def test_values_that_may_differ_in_meaning_stay_apart(name: str, a: str, b: str) -> None:
    assert normalize_vary_value(name, a) != normalize_vary_value(name, b)


_TOKENS = st.sampled_from(["gzip", "br", "deflate", "identity", "*", "x-zip", "zstd"])
_LANGS = st.sampled_from(["en", "en-us", "de", "de-ch", "fr", "*", "zh-hant-tw", "i-klingon"])
_QVALUES = st.sampled_from(["0", "0.1", "0.5", "0.55", "0.555", "0.9", "1"])


def _respell(draw: st.DrawFn, token: str, qvalue: str | None) -> str:
    """One of the many spellings of a member: case, whitespace, qvalue digits."""
    cased = "".join(c.upper() if draw(st.booleans()) else c for c in token)
    if qvalue is None:
        return cased
    if qvalue in ("0", "1"):
        number = qvalue + draw(st.sampled_from(["", ".", ".0", ".00", ".000"]))
    else:
        number = qvalue + "0" * draw(st.integers(0, 4 - len(qvalue.split(".")[1]) - 1))
    ows = st.sampled_from(["", " ", "\t", "  "])
    return f"{cased}{draw(ows)};{draw(ows)}{draw(st.sampled_from('qQ'))}={number}"


@st.composite
def _spellings(draw: st.DrawFn) -> tuple[str, str, str]:
    name = draw(st.sampled_from(["accept-encoding", "accept-language"]))
    items = _LANGS if name == "accept-language" else _TOKENS
    members = draw(st.lists(st.tuples(items, st.none() | _QVALUES), max_size=5))

    def spell() -> str:
        parts = []
        for token, qvalue in members:
            parts.extend([""] * draw(st.integers(0, 1)))  # empty list members
            pad = draw(st.sampled_from(["", " ", "  ", "\t"]))
            parts.append(pad + _respell(draw, token, qvalue) + pad)
        return ",".join(parts)

    return name, spell(), spell()


@given(_spellings())
def test_every_spelling_of_one_list_normalises_alike(case: tuple[str, str, str]) -> None:
    name, a, b = case
    assert normalize_vary_value(name, a) == normalize_vary_value(name, b)


_MEMBER = re.compile(r"[ \t]*([^;, \t]+)[ \t]*(?:;[ \t]*[qQ]=([0-9.]+))?[ \t]*")


def _meaning(name: str, value: str) -> object:
    """An independent reading of RFC 9110 §12.5: the ordered list of (lower-cased item,
    weight) pairs, or the raw value when it is not such a list."""
    members = []
    for raw in value.split(","):
        if not raw.strip(" \t"):
            continue
        match = _MEMBER.fullmatch(raw)
        if match is None:
            return ("raw", value)
        token, qvalue = match.group(1), match.group(2)
        allowed = r"\*|[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*" if "language" in name else None
        valid_token = (
            re.fullmatch(allowed, token)
            if allowed
            else re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", token)
        )
        valid_q = qvalue is None or re.fullmatch(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", qvalue)
        if not (valid_token and valid_q):
            return ("raw", value)
        members.append((token.lower(), Decimal(qvalue) if qvalue else Decimal(1)))
    return ("list", members)


_NOISE = st.text(alphabet="gzipbrENen-de,; \tqQ=0.15*", max_size=30)


@given(st.sampled_from(["accept-encoding", "accept-language"]), _NOISE, _NOISE)
def test_values_normalise_alike_only_when_they_mean_the_same(name: str, a: str, b: str) -> None:
    if normalize_vary_value(name, a) == normalize_vary_value(name, b):
        assert _meaning(name, a) == _meaning(name, b)


@given(st.sampled_from(["accept-encoding", "accept-language"]), _NOISE)
def test_normalisation_is_idempotent(name: str, value: str) -> None:
    once = normalize_vary_value(name, value)
    assert normalize_vary_value(name, once) == once
