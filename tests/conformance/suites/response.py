"""``cc-response``, ``cc-request`` and ``pragma``: directives other than freshness (RFC 9111
§5.2.1, §5.2.2, §5.4). Cases for browser caches only are left out."""

from __future__ import annotations

from typing import Any

from ..templates import fresh, http_content

Case = dict[str, Any]
FRESH_10000 = [("Cache-Control", "max-age=10000"), ("Expires", 10000), ("Date", 0)]


def _two(
    case_id: str,
    headers: list[tuple[Any, ...]],
    expected: str,
    *,
    kind: str = "required",
    depends: tuple[str, ...] = (),
    pause: bool = False,
    **second: Any,
) -> Case:
    first: dict[str, Any] = {"response_headers": headers, "setup": True}
    if pause:
        first["pause_after"] = True
    return {
        "id": case_id,
        "kind": kind,
        "depends_on": list(depends),
        "requests": [first, {"expected_type": expected, **second}],
    }


def _old_new(case_id: str, newer: str) -> Case:
    return {
        "id": case_id,
        "depends_on": ["cc-resp-no-store"],
        "requests": [
            {"response_headers": [*FRESH_10000, ("A", "1")], "setup": True, "pause_after": True},
            {
                "response_headers": [("Cache-Control", newer), ("Date", 0), ("A", "2")],
                "setup": True,
                "pause_after": True,
            },
            {"expected_type": "cached", "expected_response_headers": [("a", "1")]},
        ],
    }


def _omit(case_id: str, listed: str, kept: tuple[str, str], omitted: list[str]) -> Case:
    extra = [("c", "3")] if kept[0] == "c" else []
    return {
        "id": case_id,
        "kind": "check",
        "depends_on": ["cc-resp-no-cache-revalidate"],
        "requests": [
            {
                "response_headers": [
                    ("Cache-Control", f'no-cache="{listed}"'),
                    ("a", "1"),
                    ("b", "2"),
                    *extra,
                    ("Cache-Control", "max-age=3600"),
                    ("Date", 0),
                ],
                "setup": True,
                "pause_after": True,
            },
            {
                "expected_type": "cached",
                "expected_response_headers": [kept],
                "expected_response_headers_missing": omitted,
                "setup_tests": ["expected_type"],
            },
        ],
    }


CC_RESPONSE: list[Case] = [
    _two("cc-resp-private-shared", [("Cache-Control", "private, max-age=3600")], "not_cached"),
    _two("cc-resp-no-store", [("Cache-Control", "no-store")], "not_cached"),
    _two(
        "cc-resp-no-store-case-insensitive",
        [("Cache-Control", "No-StOrE")],
        "not_cached",
        depends=("cc-resp-no-store",),
    ),
    _two(
        "cc-resp-no-store-fresh",
        [("Cache-Control", "max-age=10000, no-store"), ("Expires", 10000), ("Date", 0)],
        "not_cached",
        depends=("cc-resp-no-store",),
    ),
    _old_new("cc-resp-no-store-old-new", "no-store"),
    _old_new("cc-resp-no-store-old-max-age", "no-store, max-age=0"),
    _two(
        "cc-resp-no-cache",
        [("Cache-Control", "max-age=10000, no-cache"), ("Expires", 10000), ("Date", 0)],
        "not_cached",
    ),
    _two(
        "cc-resp-no-cache-case-insensitive",
        [("Cache-Control", "max-age=10000, No-CaChE"), ("Expires", 10000), ("Date", 0)],
        "not_cached",
        depends=("cc-resp-no-cache",),
    ),
    _two(
        "cc-resp-no-cache-revalidate",
        [("Cache-Control", "no-cache"), ("ETag", '"abcd"')],
        "etag_validated",
        kind="optimal",
        depends=("cc-resp-no-cache",),
    ),
    _two(
        "cc-resp-no-cache-revalidate-fresh",
        [
            ("Cache-Control", "max-age=10000, no-cache"),
            ("Expires", 10000),
            ("Date", 0),
            ("ETag", '"abcd"'),
        ],
        "etag_validated",
        kind="optimal",
        depends=("cc-resp-no-cache",),
    ),
    _omit("headers-omit-headers-listed-in-Cache-Control-no-cache-single", "a", ("b", "2"), ["a"]),
    _omit("headers-omit-headers-listed-in-Cache-Control-no-cache", "a, b", ("c", "3"), ["a", "b"]),
    _two(
        "cc-resp-must-revalidate-fresh",
        [("Cache-Control", "max-age=10000, must-revalidate"), ("ETag", '"abcd"')],
        "cached",
        kind="optimal",
        depends=("freshness-none",),
    ),
    {
        "id": "cc-resp-must-revalidate-stale",
        "depends_on": ["freshness-none"],
        "requests": [
            {
                "response_headers": [
                    ("Cache-Control", "max-age=2, must-revalidate"),
                    ("ETag", '"abcd"'),
                ],
                "setup": True,
            },
            {
                "expected_type": "cached",
                "setup": True,
                "pause_after": True,
                "response_headers": [
                    ("Cache-Control", "max-age=2, must-revalidate"),
                    ("ETag", '"abcd"'),
                ],
            },
            {"expected_type": "etag_validated"},
        ],
    },
]

CC_REQUEST: list[Case] = [
    {
        "id": "ccreq-ma0",
        "kind": "check",
        "requests": [
            fresh(),
            {"request_headers": [("Cache-Control", "max-age=0")], "expected_type": "not_cached"},
        ],
    },
    {
        "id": "ccreq-ma1",
        "kind": "check",
        "requests": [
            fresh(),
            {"request_headers": [("Cache-Control", "max-age=1")], "expected_type": "not_cached"},
        ],
    },
    _two(
        "ccreq-magreaterage",
        [("Cache-Control", "max-age=3600"), ("Age", "1800")],
        "not_cached",
        kind="check",
        request_headers=[("Cache-Control", "max-age=600")],
    ),
    _two(
        "ccreq-max-stale",
        [("Cache-Control", "max-age=1")],
        "cached",
        kind="check",
        pause=True,
        request_headers=[("Cache-Control", "max-stale=1000")],
    ),
    _two(
        "ccreq-max-stale-age",
        [("Cache-Control", "max-age=1500"), ("Age", "2000")],
        "cached",
        kind="check",
        request_headers=[("Cache-Control", "max-stale=1000")],
    ),
    _two(
        "ccreq-min-fresh",
        [("Cache-Control", "max-age=1500")],
        "not_cached",
        kind="check",
        request_headers=[("Cache-Control", "min-fresh=2000")],
    ),
    _two(
        "ccreq-min-fresh-age",
        [("Cache-Control", "max-age=1500"), ("Age", "1000")],
        "not_cached",
        kind="check",
        request_headers=[("Cache-Control", "min-fresh=1000")],
    ),
    _two(
        "ccreq-no-cache",
        [("Cache-Control", "max-age=3600")],
        "not_cached",
        kind="check",
        request_headers=[("Cache-Control", "no-cache")],
    ),
    _two(
        "ccreq-no-cache-lm",
        [("Cache-Control", "max-age=3600"), ("Last-Modified", -10000), ("Date", 0)],
        "lm_validated",
        kind="check",
        request_headers=[("Cache-Control", "no-cache")],
    ),
    _two(
        "ccreq-no-cache-etag",
        [("Cache-Control", "max-age=3600"), ("ETag", f'"{http_content("abc")}"')],
        "etag_validated",
        kind="check",
        request_headers=[("Cache-Control", "no-cache")],
    ),
    _two(
        "ccreq-no-store",
        [("Cache-Control", "max-age=3600")],
        "not_cached",
        kind="check",
        request_headers=[("Cache-Control", "no-store")],
    ),
    {
        "id": "ccreq-oic",
        "kind": "check",
        "requests": [
            {
                "request_headers": [("Cache-Control", "only-if-cached")],
                "expected_status": 504,
                "expected_response_text": None,
            }
        ],
    },
]

PRAGMA: list[Case] = [
    _two(
        "pragma-request-no-cache",
        [("Cache-Control", "max-age=3600")],
        "cached",
        kind="check",
        request_headers=[("Pragma", "no-cache")],
    ),
    _two(
        "pragma-request-extension",
        [("Cache-Control", "max-age=3600")],
        "cached",
        kind="check",
        request_headers=[("Pragma", "unrecognised-extension")],
    ),
    _two(
        "pragma-response-no-cache",
        [("Cache-Control", "max-age=3600"), ("Pragma", "no-cache")],
        "cached",
        kind="check",
    ),
    _two(
        "pragma-response-no-cache-heuristic",
        [("Date", 0), ("Last-Modified", -10000), ("Pragma", "no-cache")],
        "cached",
        kind="check",
        depends=("heuristic-200-cached",),
    ),
    _two(
        "pragma-response-extension",
        [("Cache-Control", "max-age=3600"), ("Pragma", "unrecognised-extension")],
        "cached",
        kind="check",
    ),
]

CASES = [*CC_RESPONSE, *CC_REQUEST, *PRAGMA]
