"""``cc-stale``: serving stale responses (RFC 5861, RFC 9111 §4.2.4)."""

from __future__ import annotations

from typing import Any

Case = dict[str, Any]

CASES: list[Case] = [
    {
        "id": "stale-while-revalidate",
        "kind": "optimal",
        "requests": [
            {
                "setup": True,
                "response_headers": [
                    ("Cache-Control", "max-age=0, stale-while-revalidate=3600"),
                    ("ETag", '"abc"'),
                ],
            },
            {
                "pause_after": True,
                "expected_response_headers": [
                    ("Cache-Control", "max-age=0, stale-while-revalidate=3600"),
                    ("ETag", '"abc"'),
                ],
                "response_headers": [
                    ("Cache-Control", "max-age=3600", False),
                    ("ETag", '"def"', False),
                ],
            },
            {
                "expected_type": "cached",
                "expected_response_headers": [("Cache-Control", "max-age=3600"), ("ETag", '"def"')],
            },
        ],
    },
    {
        "id": "stale-if-error-cc-response",
        "kind": "check",
        "requests": [
            {
                "setup": True,
                "response_headers": [("Cache-Control", "max-age=0, stale-if-error=3600")],
            },
            {"response_status": (500, "Internal Server Error"), "expected_status": 200},
        ],
    },
    {
        "id": "stale-if-error-cc-response-expired",
        "requests": [
            {
                "setup": True,
                "response_headers": [("Cache-Control", "max-age=0, stale-if-error=1")],
                "pause_after": True,
            },
            {"response_status": (500, "Internal Server Error")},
        ],
    },
    {
        "id": "stale-if-error-cc-request",
        "kind": "check",
        "requests": [
            {"setup": True, "response_headers": [("Cache-Control", "max-age=0")]},
            {
                "request_headers": [("Cache-Control", "stale-if-error=3600")],
                "response_status": (500, "Internal Server Error"),
                "expected_status": 200,
            },
        ],
    },
    {
        "id": "stale-if-error-cc-request-expired",
        "requests": [
            {
                "setup": True,
                "response_headers": [("Cache-Control", "max-age=0")],
                "pause_after": True,
            },
            {
                "request_headers": [("Cache-Control", "stale-if-error=1")],
                "response_status": (500, "Internal Server Error"),
            },
        ],
    },
]
