"""``cdn-cache-control``: a targeted field (RFC 9213), with the cache configured as the CDN
(``TIERED_CACHE_TARGETED_HEADERS=cdn-cache-control``) and forwarding it, as the engine
checks that the origin's fields reach the client."""

from __future__ import annotations

from typing import Any

Case = dict[str, Any]
AS_THE_CDN = {"targeted_headers": ["cdn-cache-control"], "forward_targeted_headers": True}


def _cdn(
    case_id: str,
    headers: list[tuple[Any, ...]],
    expected: str | None,
    *,
    kind: str = "required",
    depends: tuple[str, ...] = ("cdn-max-age",),
    pause: bool = True,
    **second: Any,
) -> Case:
    first: dict[str, Any] = {"response_headers": headers, "setup": True}
    if pause:
        first["pause_after"] = True
    if expected is not None:
        second["expected_type"] = expected
    return {
        "id": case_id,
        "kind": kind,
        "depends_on": list(depends),
        "settings": AS_THE_CDN,
        "requests": [first, second],
    }


CASES: list[Case] = [
    _cdn(
        "cdn-max-age",
        [("CDN-Cache-Control", "max-age=3600", False)],
        "cached",
        kind="optimal",
        depends=("freshness-none",),
    ),
    _cdn(
        "cdn-max-age-max",
        [("CDN-Cache-Control", "max-age=2147483648", False)],
        "cached",
        kind="optimal",
        depends=("freshness-none",),
    ),
    _cdn(
        "cdn-max-age-max-plus",
        [("CDN-Cache-Control", "max-age=99999999999", False)],
        "cached",
        kind="optimal",
        depends=("freshness-none",),
    ),
    _cdn(
        "cdn-max-age-age",
        [("Date", 0), ("CDN-Cache-Control", "max-age=3600", False), ("Age", "7200")],
        "not_cached",
    ),
    _cdn(
        "cdn-max-age-space-before-equals",
        [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age =100", False)],
        "not_cached",
        kind="check",
    ),
    _cdn(
        "cdn-max-age-space-after-equals",
        [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age= 100", False)],
        "not_cached",
        kind="check",
    ),
    _cdn("cdn-max-age-0", [("CDN-Cache-Control", "max-age=0", False)], "not_cached"),
    _cdn(
        "cdn-max-age-extension",
        [("CDN-Cache-Control", "foobar, max-age=3600", False)],
        "cached",
        kind="optimal",
    ),
    _cdn(
        "cdn-max-age-case-insensitive",
        [("CDN-Cache-Control", "MaX-aGe=3600", False)],
        "cached",
        kind="check",
    ),
    _cdn(
        "cdn-max-age-expires",
        [("CDN-Cache-Control", "max-age=3600", False), ("Expires", -10000), ("Date", 0)],
        "cached",
        kind="optimal",
    ),
    _cdn(
        "cdn-max-age-cc-max-age-invalid-expires",
        [("CDN-Cache-Control", "max-age=3600", False), ("Expires", "0", False), ("Date", 0)],
        "cached",
        kind="optimal",
    ),
    _cdn(
        "cdn-max-age-0-expires",
        [("CDN-Cache-Control", "max-age=0", False), ("Expires", 10000), ("Date", 0)],
        "not_cached",
    ),
    _cdn(
        "cdn-max-age-short-cc-max-age",
        [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=3600", False)],
        "cached",
        kind="optimal",
    ),
    _cdn(
        "cdn-max-age-long-cc-max-age",
        [("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=1", False)],
        "not_cached",
    ),
    _cdn(
        "cdn-private",
        [
            ("CDN-Cache-Control", "private"),
            ("Cache-Control", "max-age=10000"),
            ("Expires", 10000),
            ("Date", 0),
        ],
        "not_cached",
        depends=(),
        pause=False,
    ),
    _cdn(
        "cdn-no-cache",
        [
            ("CDN-Cache-Control", "no-cache"),
            ("Cache-Control", "max-age=10000"),
            ("Expires", 10000),
            ("Date", 0),
        ],
        "not_cached",
        depends=(),
        pause=False,
    ),
    _cdn(
        "cdn-no-store-cc-fresh",
        [
            ("Cache-Control", "max-age=10000"),
            ("CDN-Cache-Control", "no-store", False),
            ("Expires", 10000),
            ("Date", 0),
        ],
        "not_cached",
        depends=("freshness-none",),
    ),
    _cdn(
        "cdn-fresh-cc-nostore",
        [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000", False)],
        "cached",
        depends=("freshness-none",),
    ),
    _cdn(
        "cdn-cc-invalid-sh-type-unknown",
        [("CDN-Cache-Control", "max-age=10000, &&&&&", False), ("Cache-Control", "no-store")],
        "not_cached",
    ),
    _cdn(
        "cdn-cc-invalid-sh-type-wrong",
        [("CDN-Cache-Control", 'max-age="10000"', False), ("Cache-Control", "no-store")],
        "not_cached",
    ),
    {
        "id": "cdn-remove-header",
        "kind": "check",
        "settings": {"targeted_headers": ["cdn-cache-control"]},
        "requests": [
            {
                "response_headers": [
                    ("Cache-Control", "max-age=10000"),
                    ("CDN-Cache-Control", "foo", False),
                    ("Expires", 10000),
                    ("Date", 0),
                ],
                "expected_response_headers": [("CDN-Cache-Control", "foo")],
            },
        ],
    },
    _cdn(
        "cdn-remove-age-exceed",
        [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=10000"), ("Date", 0)],
        None,
        kind="check",
        expected_response_headers=["Age"],
    ),
    _cdn(
        "cdn-date-update-exceed",
        [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=10000"), ("Date", 0)],
        None,
        kind="check",
        expected_response_headers=[("Date", 0)],
    ),
    _cdn(
        "cdn-expires-update-exceed",
        [
            ("Cache-Control", "max-age=1"),
            ("Expires", 1),
            ("CDN-Cache-Control", "max-age=10000"),
            ("Date", 0),
        ],
        None,
        kind="check",
        expected_response_headers=[("Expires", 1)],
    ),
]
