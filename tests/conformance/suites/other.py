"""``other``, ``invalidation`` and ``partial``: ``Age`` and ``Date`` on hits, query keys,
invalidation by unsafe methods (RFC 9111 §4.4), and ranges (§3.4)."""

from __future__ import annotations

from typing import Any

from ..templates import fresh, http_content, make_template

Case = dict[str, Any]
MONTH = 30 * 24 * 60 * 60


def _case(
    case_id: str,
    requests: list[dict[str, Any]],
    *,
    kind: str = "required",
    depends: tuple[str, ...] = ("freshness-max-age",),
) -> Case:
    return {"id": case_id, "kind": kind, "depends_on": list(depends), "requests": requests}


_EXPIRES_FRESH = {
    "response_headers": [("Expires", MONTH), ("Date", 0)],
    "pause_after": True,
    "setup": True,
}

OTHER: list[Case] = [
    _case(
        "other-age-gen",
        [fresh(), {"expected_type": "cached", "expected_response_headers": [("Age", ">", 2)]}],
    ),
    _case(
        "other-age-update-expires",
        [
            {
                **_EXPIRES_FRESH,
                "response_headers": [*_EXPIRES_FRESH["response_headers"], ("Age", "30")],
            },
            {"expected_type": "cached", "expected_response_headers": [("Age", ">", 32)]},
        ],
        depends=("freshness-expires-future",),
    ),
    _case(
        "other-age-update-max-age",
        [
            fresh(response_headers=[("Age", "30")]),
            {"expected_type": "cached", "expected_response_headers": [("Age", ">", 32)]},
        ],
    ),
    _case(
        "other-date-update",
        [fresh(), {"expected_type": "cached", "expected_response_headers": [("Date", 0)]}],
    ),
    _case(
        "other-date-update-expires",
        [_EXPIRES_FRESH, {"expected_type": "cached", "expected_response_headers": [("Date", 0)]}],
        depends=("freshness-expires-future",),
    ),
    _case(
        "other-date-update-expires-update",
        [
            _EXPIRES_FRESH,
            {"expected_type": "cached", "expected_response_headers": [("Expires", MONTH)]},
        ],
        kind="check",
        depends=("freshness-expires-future",),
    ),
    _case(
        "query-args-different",
        [
            fresh(query_arg="test=" + http_content("query-args-different-1")),
            {
                "query_arg": "test=" + http_content("query-args-different-2"),
                "expected_type": "not_cached",
            },
        ],
    ),
    _case(
        "query-args-same",
        [
            fresh(query_arg="test=" + http_content("query-args-same")),
            {"query_arg": "test=" + http_content("query-args-same"), "expected_type": "cached"},
        ],
        kind="optimal",
    ),
    _case(
        "other-heuristic-content-disposition-attachment",
        [
            {
                "response_headers": [
                    ("Last-Modified", -100000),
                    ("Date", 0),
                    ("Content-Disposition", "attachment; filename=example.txt"),
                ],
                "setup": True,
            },
            {"expected_type": "cached"},
        ],
        kind="check",
        depends=("heuristic-200-cached",),
    ),
    _case(
        "other-fresh-content-disposition-attachment",
        [
            fresh(response_headers=[("Content-Disposition", "attachment; filename=example.txt")]),
            {"expected_type": "cached"},
        ],
        kind="check",
    ),
    _case(
        "other-set-cookie",
        [fresh(response_headers=[("Set-Cookie", "a=b")]), {"expected_type": "cached"}],
        kind="optimal",
    ),
    _case(
        "other-cookie",
        [fresh(), {"request_headers": [("Cookie", "a=b")], "expected_type": "cached"}],
        kind="optimal",
    ),
]

_TARGET = [("Cache-Control", "max-age=100000"), ("Last-Modified", 0), ("Date", 0)]
content_location = make_template(
    {"filename": "content_location_target", "response_headers": _TARGET}
)
location = make_template({"filename": "location_target", "response_headers": _TARGET})
lcl_response = make_template(
    {
        "response_headers": [
            ("Location", "location_target"),
            ("Content-Location", "content_location_target"),
        ],
        "magic_locations": True,
    }
)
_METHODS = ("POST", "PUT", "DELETE", "M-SEARCH")
_UNSAFE = {"request_body": "abc", "setup": True}

INVALIDATION: list[Case] = [
    *(
        case
        for method in _METHODS
        for case in (
            _case(
                f"invalidate-{method}",
                [fresh(), {"request_method": method, **_UNSAFE}, {"expected_type": "not_cached"}],
            ),
            _case(
                f"invalidate-{method}-failed",
                [
                    fresh(),
                    {
                        "request_method": method,
                        **_UNSAFE,
                        "response_status": (500, "Internal Server Error"),
                    },
                    {"expected_type": "cached"},
                ],
                kind="optimal",
                depends=(f"invalidate-{method}",),
            ),
            _case(
                f"invalidate-{method}-location",
                [
                    location(setup=True),
                    lcl_response(request_method=method, **_UNSAFE),
                    location(expected_type="not_cached"),
                ],
                kind="check",
                depends=(f"invalidate-{method}",),
            ),
            _case(
                f"invalidate-{method}-cl",
                [
                    content_location(setup=True),
                    lcl_response(request_method=method, **_UNSAFE),
                    content_location(expected_type="not_cached"),
                ],
                kind="check",
                depends=(f"invalidate-{method}",),
            ),
        )
    )
]

_PARTIAL = {
    "request_headers": [("Range", "bytes=-5")],
    "response_status": (206, "Partial Content"),
    "response_headers": [("Cache-Control", "max-age=3600"), ("Content-Range", "bytes 4-9/10")],
    "response_body": "01234",
    "setup": True,
}
_COMPLETE = {
    "response_headers": [("Cache-Control", "max-age=3600")],
    "response_body": "01234567890",
    "setup": True,
}


def _range(value: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_headers": [("Range", value)],
        "expected_type": "cached",
        "expected_status": 206,
        "expected_response_text": text,
        **extra,
    }


PARTIAL: list[Case] = [
    _case(
        "partial-store-partial-reuse-partial",
        [
            {**_PARTIAL, "expected_request_headers": [("Range", "bytes=-5")]},
            _range("bytes=-5", "01234"),
        ],
        kind="optimal",
    ),
    _case(
        "partial-store-complete-reuse-partial",
        [_COMPLETE, _range("bytes=0-1", "01")],
        kind="optimal",
    ),
    _case(
        "partial-store-complete-reuse-partial-no-last",
        [_COMPLETE, _range("bytes=1-", "1234567890")],
        kind="optimal",
    ),
    _case(
        "partial-store-complete-reuse-partial-suffix",
        [{**_COMPLETE, "response_body": "0123456789A"}, _range("bytes=-1", "A")],
        kind="optimal",
    ),
    _case(
        "partial-store-partial-reuse-partial-byterange",
        [_PARTIAL, _range("bytes=6-8", "234")],
        kind="optimal",
    ),
    _case(
        "partial-store-partial-reuse-partial-absent",
        [_PARTIAL, _range("bytes=6-", "234")],
        kind="optimal",
    ),
    _case(
        "partial-store-partial-reuse-partial-suffix",
        [_PARTIAL, _range("bytes=-1", "4")],
        kind="optimal",
    ),
    _case(
        "partial-store-partial-complete",
        [
            {
                **_PARTIAL,
                "response_headers": [
                    ("Cache-Control", "max-age=3600"),
                    ("Content-Range", "bytes 0-4/10"),
                ],
            },
            {"expected_request_headers": [("range", "bytes=5-")]},
        ],
        kind="optimal",
    ),
    _case(
        "partial-use-headers",
        [
            {**_COMPLETE, "response_headers": [("Cache-Control", "max-age=3600"), ("A", "1")]},
            _range(
                "bytes=0-1",
                "01",
                response_headers=[("A", "2")],
                setup_tests=["expected_type", "expected_status", "expected_response_text"],
            ),
        ],
        depends=("partial-store-complete-reuse-partial",),
    ),
    _case(
        "partial-use-stored-headers",
        [
            {**_COMPLETE, "response_headers": [("Cache-Control", "max-age=3600"), ("A", "1")]},
            _range(
                "bytes=0-1",
                "01",
                expected_response_headers=[("A", "1")],
                setup_tests=["expected_type", "expected_status", "expected_response_text"],
            ),
        ],
        depends=("partial-store-complete-reuse-partial",),
    ),
]

CASES = [*OTHER, *INVALIDATION, *PARTIAL]
