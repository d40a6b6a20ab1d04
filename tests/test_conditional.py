"""Validators and ranges answered from a stored entry (RFC 9110 §13, §14; RFC 9111 §4.3.2),
with every request field bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tiered_cache.conditional import etag_matches, is_not_modified, select_range
from fastapi_tiered_cache.entry import CachedResponse
from fastapi_tiered_cache.http_date import format_http_date

STORED = 1_700_000_000.0


def entry(last_modified: float | None = None, date: float | None = None) -> CachedResponse:
    headers = [(b"etag", b'"abc"')]
    if date is not None:
        headers.append((b"date", format_http_date(date).encode()))
    return CachedResponse(
        status=200,
        headers=tuple(headers),
        body=b"0123456789",
        stored_at=STORED,
        fresh_for=60,
        last_modified=last_modified,
    )


@pytest.mark.parametrize(
    ("last_modified", "date", "since", "expected"),
    [
        (STORED - 3000, STORED, STORED - 3000, True),  # Last-Modified wins over Date
        (STORED - 3000, STORED, STORED - 4000, False),
        (None, STORED, STORED, True),  # no Last-Modified: the stored Date
        (None, STORED, STORED + 10, True),
        (None, STORED, STORED - 3000, False),  # changed, for all we know, after IMS
        (None, None, STORED, False),  # neither: never a 304 from a guess
    ],
)
def test_rfc_9111_section_4_3_2_if_modified_since_against_last_modified_else_date(
    last_modified: float | None, date: float | None, since: float, expected: bool
) -> None:
    headers = {"if-modified-since": format_http_date(since)}
    assert is_not_modified(headers, entry(last_modified, date)) is expected


def test_rfc_9110_section_13_1_3_an_invalid_if_modified_since_is_ignored() -> None:
    headers = {"if-modified-since": "Thu, 18 Aug 2050 02:01:18 UTC"}
    assert is_not_modified(headers, entry(STORED - 10, STORED)) is False


def test_rfc_9110_section_13_2_2_if_none_match_takes_precedence() -> None:
    headers = {"if-none-match": '"other"', "if-modified-since": format_http_date(STORED)}
    assert is_not_modified(headers, entry(STORED - 10)) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-" + "9" * 200, (0, 9)),  # a huge last position: to the end
        ("bytes=" + "9" * 200 + "-", False),  # a huge first position: unsatisfiable
        ("bytes=-" + "9" * 200, (0, 9)),  # a huge suffix: the whole body
        ("bytes=" + "0" * 200 + "1-2", (1, 2)),
        ("bytes=0-" + "9" * 5000, None),  # over-long: ignored, the whole response
        ("bytes=0-1" + " " * 300, None),  # over-long: ignored, the whole response
        ("bytes=\u0663-5", None),  # non-ASCII digits are not digits here
    ],
)
def test_rfc_9110_section_14_range_positions_are_bounded(
    value: str, expected: tuple[int, int] | bool | None
) -> None:
    assert select_range({"range": value}, entry()) == expected


def test_a_huge_if_none_match_list_matches_nothing() -> None:
    header = ", ".join(f'"tag{i}"' for i in range(2000)) + ', "abc"'
    assert etag_matches(header, b'"abc"') is False
    assert etag_matches('"x", "abc"', b'"abc"') is True


@given(
    st.dictionaries(
        st.sampled_from(["if-none-match", "if-modified-since", "range", "if-range"]),
        st.text(alphabet='bytes=0123456789-,; "W/*GMTSunNov:', max_size=6000),
    )
)
def test_fuzz_conditional_fields_never_raise(headers: dict[str, str]) -> None:
    stored = entry(STORED - 100, STORED)
    assert isinstance(is_not_modified(headers, stored), bool)
    result = select_range(headers, stored)
    assert result is None or isinstance(result, (bool, tuple))
