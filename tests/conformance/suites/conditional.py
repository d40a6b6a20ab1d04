"""``conditional``: ``If-None-Match`` and ``If-Modified-Since`` answered by the cache, and
the validators it sends to revalidate (RFC 9110 §13, RFC 9111 §4.3)."""

from __future__ import annotations

from typing import Any

from ..templates import become_stale, fresh

Case = dict[str, Any]
FRESH = [("Expires", 100000), ("Date", 0)]


def _etag(
    case_id: str, etag: str, if_none_match: str, *, kind: str = "optimal", **checks: Any
) -> Case:
    return {
        "id": case_id,
        "kind": kind,
        "requests": [
            {"response_headers": [*FRESH[:1], ("ETag", etag), FRESH[1]], "setup": True},
            {
                "request_headers": [("If-None-Match", if_none_match)],
                "expected_type": "cached",
                "expected_status": 304,
                **checks,
            },
        ],
    }


def _generate(case_id: str, etag: str, sent: str, kind: str = "optimal") -> Case:
    return {
        "id": case_id,
        "kind": kind,
        "requests": [
            {"response_headers": [("Expires", 0), ("ETag", etag), ("Date", 0)], "setup": True},
            {
                "expected_request_headers": [("If-None-Match", sent)],
                "expected_type": "etag_validated",
            },
        ],
    }


ETAG: list[Case] = [
    _etag(
        "conditional-etag-strong-respond",
        '"abcdef"',
        '"abcdef"',
        expected_response_headers=[("ETag", '"abcdef"')],
    ),
    _etag("conditional-etag-strong-respond-obs-text", '"abcdef\u00fc"', '"abcdef\u00fc"'),
    _etag("conditional-etag-strong-respond-unquote", "abcdef", "abcdef"),
    _etag("conditional-etag-weak-respond", 'W/"abcdef"', 'W/"abcdef"'),
    _etag("conditional-etag-weak-respond-lowercase", 'w/"abcdef"', 'w/"abcdef"', kind="check"),
    _etag("conditional-etag-weak-respond-backslash", 'W\\"abcdef"', 'W\\"abcdef"', kind="check"),
    _etag("conditional-etag-weak-respond-omit-slash", 'W"abcdef"', 'W"abcdef"', kind="check"),
    _etag("conditional-etag-strong-quote-mismatch", '"abcdef"', "abcdef", kind="check"),
    _etag("conditional-etag-strong-respond-multiple-first", '"abcdef"', '"abcdef", "1234", "5678"'),
    _etag(
        "conditional-etag-strong-respond-multiple-second", '"abcdef"', '"1234", "abcdef", "5678"'
    ),
    _etag("conditional-etag-strong-respond-multiple-last", '"abcdef"', '"1234", "5678", "abcdef"'),
    _generate("conditional-etag-strong-generate", '"abcdef"', '"abcdef"'),
    _generate("conditional-etag-weak-generate-weak", 'W/"abcdef"', 'W/"abcdef"'),
    _generate("conditional-etag-strong-generate-unquoted", "abcdef", '"abcdef"', kind="check"),
]

_IMS = {"request_headers": [("If-Modified-Since", -3000)], "magic_ims": True}

LAST_MODIFIED: list[Case] = [
    {
        "id": "conditional-lm-fresh",
        "kind": "optimal",
        "depends_on": ["freshness-max-age"],
        "requests": [
            fresh(response_headers=[("Last-Modified", -3000)]),
            {**_IMS, "expected_type": "cached", "expected_status": 304},
        ],
    },
    {
        "id": "conditional-lm-fresh-earlier",
        "kind": "optimal",
        "depends_on": ["freshness-max-age"],
        "requests": [
            fresh(response_headers=[("Last-Modified", -3000)]),
            {
                "request_headers": [("If-Modified-Since", -2000)],
                "magic_ims": True,
                "expected_type": "cached",
                "expected_status": 304,
            },
        ],
    },
    {
        "id": "conditional-lm-stale",
        "kind": "optimal",
        "depends_on": ["freshness-max-age-stale"],
        "requests": [
            become_stale(response_headers=[("Last-Modified", -3000)]),
            {**_IMS, "expected_type": "lm_validated", "expected_status": 304},
        ],
    },
    {
        "id": "conditional-lm-fresh-no-lm",
        "kind": "optimal",
        "depends_on": ["freshness-max-age"],
        "requests": [
            fresh(),
            {
                **_IMS,
                "expected_type": "cached",
                "expected_status": 304,
                "setup_tests": ["expected_type"],
            },
        ],
    },
    {
        "id": "conditional-lm-fresh-rfc850",
        "kind": "optimal",
        "depends_on": ["freshness-max-age"],
        "requests": [
            fresh(response_headers=[("Last-Modified", -3000)]),
            {
                **_IMS,
                "rfc850date": ["if-modified-since"],
                "expected_type": "cached",
                "expected_status": 304,
                "setup_tests": ["expected_type"],
            },
        ],
    },
]

CASES = [*ETAG, *LAST_MODIFIED]
