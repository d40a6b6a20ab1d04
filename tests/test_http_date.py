"""The strict HTTP-date parser (RFC 9110 §5.6.7): the three forms, and nothing else."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tiered_cache.http_date import format_http_date, parse_http_date

NOW = 1_700_000_000.0  # 2023-11-14
SUNDAY = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", SUNDAY),
        ("Sunday, 06-Nov-94 08:49:37 GMT", SUNDAY),
        ("Sun Nov  6 08:49:37 1994", SUNDAY),
        ("Sun Nov 06 08:49:37 1994", SUNDAY),
        ("  Sun, 06 Nov 1994 08:49:37 GMT\t", SUNDAY),  # surrounding OWS
        ("SUN, 06 NOV 1994 08:49:37 gmt", SUNDAY),  # names are matched case-insensitively
        ("Tue, 19 Jan 2038 14:14:08 GMT", 2147523248.0),
        ("Sun, 21 Nov 2286 04:46:39 GMT", 10000000000.0 + 39600.0 - 1.0),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Wed, 31 Dec 1969 23:59:59 GMT", -1.0),
        ("Sat, 31 Dec 2016 23:59:60 GMT", 1483228800.0),  # a leap second
    ],
)
def test_rfc_9110_section_5_6_7_valid_forms(value: str, expected: float) -> None:
    assert parse_http_date(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        "Thu, 18 Aug 2050 02:01:18 UTC",  # zone other than GMT
        "Thu, 18 Aug 2050 02:01:18 AEST",
        "Thu, 18 Aug 2050 02:01:18 +0000",
        "Thu, 18 Aug 2050 02:01:18 -0000",
        "Thu, 18 Aug 50 02:01:18 GMT",  # two-digit year outside RFC 850
        "Thu 18 Aug 2050 02:01:18 GMT",  # missing comma
        "Thu, 18  Aug  2050 02:01:18 GMT",  # multiple spaces
        "Thu, 18-Aug-2050 02:01:18 GMT",  # dashes in IMF-fixdate
        "Thu, 18 Aug 2050 02.01.18 GMT",  # "." time separators
        "Thu, 18 Aug 2050 2:01:18 GMT",  # one-digit hour
        "Thu, 8 Aug 2050 02:01:18 GMT",  # one-digit day in IMF-fixdate
        "Thu, 18 Aug 2050 02:01:18",  # no zone
        "Thursday, 18-Aug-2050 02:01:18 GMT",  # four-digit year in RFC 850
        "Thu, 18-Aug-50 02:01:18 GMT",  # short day name in RFC 850
        "Thursday, 18 Aug 2050 02:01:18 GMT",  # long day name in IMF-fixdate
        "Thu Aug 18 02:01:18 2050 GMT",  # asctime with a zone
        "Thu Aug 8 02:01:18 2050",  # asctime day without its padding space
        "Thu, 18 Aug 2050 02:01:18 GMT, Thu, 18 Aug 2050 02:01:19 GMT",  # two field lines
        "Thu, 31 Feb 2050 02:01:18 GMT",  # no such day
        "Thu, 18 Aug 2050 24:00:00 GMT",
        "Thu, 18 Aug 2050 23:60:00 GMT",
        "Thu, 18 Aug 2050 23:59:61 GMT",
        "Sat, 01 Jan 0000 00:00:00 GMT",
        "Thu, 18 Aug 2050 02:01:18 GMT x",
        "Thu, \uff11\uff18 Aug 2050 02:01:18 GMT",  # non-ASCII digits
        "0",
        "-1",
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 GMT" + " " * 100,
    ],
)
def test_rfc_9110_section_5_6_7_anything_else_is_not_a_date(value: str) -> None:
    assert parse_http_date(value, now=NOW) is None


def test_absent_is_none() -> None:
    assert parse_http_date(None, now=NOW) is None


@pytest.mark.parametrize(
    ("value", "year"),
    [
        ("Thursday, 18-Aug-50 02:01:18 GMT", 2050),  # 27 years ahead of NOW: the future
        ("Friday, 18-Aug-73 02:01:18 GMT", 2073),  # 49.8 years ahead: still the future
        ("Saturday, 18-Dec-73 02:01:18 GMT", 1973),  # more than 50 years ahead: the past
        ("Friday, 18-Aug-74 02:01:18 GMT", 1974),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 1994),
    ],
)
def test_rfc_9110_section_5_6_7_rfc_850_years_are_at_most_50_years_ahead(
    value: str, year: int
) -> None:
    parsed = parse_http_date(value, now=NOW)
    assert parsed is not None
    assert datetime.fromtimestamp(parsed, tz=timezone.utc).year == year


moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=0, tzinfo=timezone.utc))


def _stamp(moment: datetime) -> float:
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()


@given(moments)
def test_imf_fixdate_round_trip(moment: datetime) -> None:
    text = (
        f"{DAYS[moment.weekday()]}, {moment.day:02d} {MONTHS[moment.month - 1]} "
        f"{moment.year:04d} {moment:%H:%M:%S} GMT"
    )
    assert parse_http_date(text, now=NOW) == _stamp(moment)


@given(moments)
def test_asctime_round_trip(moment: datetime) -> None:
    text = (
        f"{DAYS[moment.weekday()]} {MONTHS[moment.month - 1]} {moment.day:2d} "
        f"{moment:%H:%M:%S} {moment.year:04d}"
    )
    assert parse_http_date(text, now=NOW) == _stamp(moment)


@given(
    st.datetimes(min_value=datetime(1974, 1, 1), max_value=datetime(2073, 11, 14)).map(
        lambda d: d.replace(microsecond=0, tzinfo=timezone.utc)
    )
)
def test_rfc_850_round_trip_within_the_50_year_window(moment: datetime) -> None:
    text = (
        f"{LONG_DAYS[moment.weekday()]}, {moment.day:02d}-{MONTHS[moment.month - 1]}-"
        f"{moment.year % 100:02d} {moment:%H:%M:%S} GMT"
    )
    assert parse_http_date(text, now=NOW) == _stamp(moment)


@given(st.integers(min_value=-62135596800, max_value=253402300799))
def test_format_http_date_round_trip(timestamp: int) -> None:
    assert parse_http_date(format_http_date(timestamp), now=NOW) == timestamp


@given(st.text(max_size=80))
def test_fuzz_never_raises(value: str) -> None:
    result = parse_http_date(value, now=NOW)
    assert result is None or isinstance(result, float)


_MUTATIONS = [
    (" GMT", " UTC"),
    (" GMT", " EST"),
    (", ", " "),
    (" ", "  "),
    (":", "."),
    ("GMT", ""),
]


@given(moments, st.sampled_from(_MUTATIONS))
def test_fuzz_mutated_imf_fixdates_are_rejected(
    moment: datetime, mutation: tuple[str, str]
) -> None:
    text = format_http_date(_stamp(moment))
    old, new = mutation
    assert parse_http_date(text.replace(old, new, 1), now=NOW) is None


@given(moments)
def test_fuzz_two_digit_years_and_one_digit_hours_are_rejected_in_imf(moment: datetime) -> None:
    text = format_http_date(_stamp(moment))
    two_digit_year = text.replace(f" {moment.year:04d} ", f" {moment.year % 100:02d} ")
    one_digit_hour = text.replace(f" {moment:%H}:", f" {moment.hour % 10}:")
    assert parse_http_date(two_digit_year, now=NOW) is None
    assert parse_http_date(one_digit_hour, now=NOW) is None


@given(st.text(alphabet="0123456789:, -GMTSunNovabc", min_size=1, max_size=5000))
def test_fuzz_long_and_digit_heavy_values_never_raise(value: str) -> None:
    assert parse_http_date(value, now=NOW) is None or len(value.strip(" \t")) <= 40
