"""``expires`` and ``expires-parse``: lifetimes from ``Expires`` (RFC 9111 §5.3, RFC 9110
§5.6.7)."""

from __future__ import annotations

from typing import Any

Case = dict[str, Any]
MONTH = 30 * 24 * 60 * 60


def _case(
    case_id: str,
    headers: list[tuple[Any, ...]],
    expected: str,
    *,
    kind: str = "required",
    depends: str = "freshness-expires-future",
    pause: bool = True,
) -> Case:
    first: dict[str, Any] = {"response_headers": headers, "setup": True}
    if pause:
        first["pause_after"] = True
    return {
        "id": case_id,
        "kind": kind,
        "depends_on": [depends],
        "requests": [first, {"expected_type": expected}],
    }


EXPIRES: list[Case] = [
    _case(
        "freshness-expires-future",
        [("Expires", MONTH), ("Date", 0)],
        "cached",
        kind="optimal",
        depends="freshness-none",
    ),
    _case("freshness-expires-past", [("Expires", -MONTH), ("Date", 0)], "not_cached"),
    _case(
        "freshness-expires-present",
        [("Expires", 0), ("Date", 0)],
        "not_cached",
        depends="freshness-none",
        pause=False,
    ),
    _case("freshness-expires-old-date", [("Expires", 300), ("Date", 400)], "not_cached"),
    _case("freshness-expires-invalid", [("Expires", "0", False), ("Date", 0)], "not_cached"),
    _case(
        "freshness-expires-invalid-date",
        [("Date", "foo", False), ("Expires", 10)],
        "cached",
        kind="optimal",
        pause=False,
    ),
    _case(
        "freshness-expires-age-slow-date",
        [("Date", -10), ("Expires", 10), ("Age", "25")],
        "not_cached",
        pause=False,
    ),
    _case(
        "freshness-expires-age-fast-date",
        [("Date", 10), ("Expires", 20), ("Age", "15")],
        "not_cached",
        pause=False,
    ),
]


def _parse(case_id: str, expires: list[str], expected: str, kind: str, pause: bool = True) -> Case:
    headers: list[tuple[Any, ...]] = [("Expires", value, False) for value in expires]
    return _case(case_id, [*headers, ("Date", 0)], expected, kind=kind, pause=pause)


EXPIRES_PARSE: list[Case] = [
    _parse("freshness-expires-32bit", ["Tue, 19 Jan 2038 14:14:08 GMT"], "cached", "optimal"),
    _parse("freshness-expires-far-future", ["Sun, 21 Nov 2286 04:46:39 GMT"], "cached", "optimal"),
    _parse("freshness-expires-rfc850", ["Thursday, 18-Aug-50 02:01:18 GMT"], "cached", "optimal"),
    _parse("freshness-expires-ansi-c", ["Thu Aug  8 02:01:18 2050"], "cached", "optimal"),
    _parse(
        "freshness-expires-wrong-case-weekday",
        ["THU, 18 Aug 2050 02:01:18 GMT"],
        "cached",
        "optimal",
    ),
    _parse(
        "freshness-expires-wrong-case-month", ["Thu, 18 AUG 2050 02:01:18 GMT"], "cached", "optimal"
    ),
    _parse(
        "freshness-expires-wrong-case-tz", ["Thu, 18 Aug 2050 02:01:18 gMT"], "cached", "optimal"
    ),
    _parse(
        "freshness-expires-invalid-utc", ["Thu, 18 Aug 2050 02:01:18 UTC"], "not_cached", "required"
    ),
    _parse(
        "freshness-expires-invalid-aest",
        ["Thu, 18 Aug 2050 02:01:18 AEST"],
        "not_cached",
        "required",
    ),
    _parse(
        "freshness-expires-invalid-2-digit-year",
        ["Thu, 18 Aug 50 02:01:18 GMT"],
        "not_cached",
        "required",
    ),
    _parse(
        "freshness-expires-invalid-no-comma",
        ["Thu 18 Aug 2050 02:01:18 GMT"],
        "not_cached",
        "required",
    ),
    _parse(
        "freshness-expires-invalid-multiple-spaces",
        ["Thu, 18  Aug  2050 02:01:18 GMT"],
        "not_cached",
        "required",
        pause=False,
    ),
    _parse(
        "freshness-expires-invalid-date-dashes",
        ["Thu, 18-Aug-2050 02:01:18 GMT"],
        "not_cached",
        "required",
        pause=False,
    ),
    _parse(
        "freshness-expires-invalid-time-periods",
        ["Thu, 18 Aug 2050 02.01.18 GMT"],
        "not_cached",
        "required",
        pause=False,
    ),
    _parse(
        "freshness-expires-invalid-1-digit-hour",
        ["Thu, 18 Aug 2050 2:01:18 GMT"],
        "not_cached",
        "required",
        pause=False,
    ),
    _parse(
        "freshness-expires-invalid-multiple-lines",
        ["Thu, 18 Aug 2050 2:01:18 GMT", "Thu, 18 Aug 2050 2:01:19 GMT"],
        "not_cached",
        "required",
        pause=False,
    ),
]

CASES = [*EXPIRES, *EXPIRES_PARSE]
