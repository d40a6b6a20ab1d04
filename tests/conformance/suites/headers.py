"""``headers`` and ``update304``: which header fields are stored, and how a ``304``
freshens them (RFC 9111 §3.1, §4.3.4)."""

from __future__ import annotations

from typing import Any

from ..templates import fresh, http_content

Case = dict[str, Any]

# tests/header-list.mjs: name and options.
HEADER_LIST: list[dict[str, Any]] = [
    {"name": "Test-Header", "reqUpdate": True},
    {"name": "X-Test-Header", "reqUpdate": True},
    {"name": "Content-Foo", "reqUpdate": True},
    {"name": "X-Content-Foo", "reqUpdate": True},
    {"name": "Cache-Control", "valA": "max-age=1", "valB": "max-age=3600", "reqUpdate": True},
    {"name": "Connection", "noStore": True},
    {"name": "Content-Encoding"},
    {"name": "Content-Length", "valA": "5", "valB": "10", "noUpdate": True, "checkBody": False},
    {"name": "Content-Location", "valA": "/foo", "valB": "/bar"},
    {"name": "Content-MD5", "valA": "rL0Y20zC+Fzt72VPzMSk2A==", "valB": "N7UdGUp1E+RbVvZSTy1R8g=="},
    {"name": "Content-Range"},
    {
        "name": "Content-Security-Policy",
        "valA": "default-src 'self'",
        "valB": "default-src 'self' cdn.example.com",
    },
    {"name": "Content-Type", "valA": "text/plain", "valB": "text/plain;charset=utf-8"},
    {"name": "Clear-Site-Data", "valA": "cache", "valB": "cookies"},
    {"name": "ETag", "valA": '"abcdef"', "valB": '"ghijkl"'},
    {
        "name": "Expires",
        "valA": "Fri, 01 Jan 2038 01:01:01 GMT",
        "valB": "Mon, 11 Jan 2038 11:11:11 GMT",
    },
    {"name": "Keep-Alive", "noStore": True},
    {"name": "Proxy-Authenticate", "noStore": True},
    {"name": "Proxy-Authentication-Info", "noStore": True},
    {"name": "Proxy-Authorization", "noStore": True},
    {"name": "Proxy-Connection", "noStore": True},
    {"name": "Public-Key-Pins"},
    {"name": "Set-Cookie", "valA": "a=b", "valB": "a=c"},
    {"name": "Set-Cookie2", "valA": "a=b", "valB": "a=c"},
    {"name": "TE", "noStore": True},
    {"name": "Transfer-Encoding", "noStore": True},
    {"name": "Upgrade", "noStore": True},
    {"name": "X-Frame-Options", "valA": "deny", "valB": "sameorigin"},
    {"name": "X-XSS-Protection", "valA": "1", "valB": "1; mode=block"},
]


def _store(config: dict[str, Any]) -> Case:
    name = config["name"]
    value = config.get("valB", http_content(f"{name}-store-value"))
    stored = not config.get("noStore", False)
    headers: list[tuple[Any, ...]] = [("Date", 0), (name, value, stored)]
    if name != "Cache-Control":
        headers.append(("Cache-Control", "max-age=3600"))
    check_body = config.get("checkBody", True)
    return {
        "id": f"headers-store-{name}",
        "depends_on": ["freshness-max-age"],
        "requests": [
            {
                "response_headers": headers,
                "setup": True,
                "pause_after": True,
                "check_body": check_body,
            },
            {
                "expected_type": "cached",
                "expected_response_headers": [(name, value)] if stored else [],
                "expected_response_headers_missing": [] if stored else [(name, value)],
                "setup_tests": ["expected_type"],
                "check_body": check_body,
            },
        ],
    }


HEADERS: list[Case] = [
    {
        "id": "headers-omit-headers-listed-in-Connection",
        "depends_on": ["freshness-max-age"],
        "requests": [
            fresh(
                response_headers=[
                    ("Connection", "a, b", False),
                    ("a", "1", False),
                    ("b", "2", False),
                    ("c", "3", False),
                ]
            ),
            {
                "expected_type": "cached",
                "expected_response_headers": [("c", "3")],
                "expected_response_headers_missing": ["a", "b"],
                "setup_tests": ["expected_type", "expected_response_headers"],
            },
        ],
    },
    *(_store(config) for config in HEADER_LIST),
]

_LM = "Wed, 01 Jan 2020 00:00:00 GMT"


def _response(
    config: dict[str, Any], value: str, validator: tuple[str, str] | None
) -> list[tuple[Any, ...]]:
    name = config["name"]
    headers: list[tuple[Any, ...]] = [("Date", 0), (name, value, not config.get("noUpdate"))]
    if name != "Cache-Control":
        headers.append(("Cache-Control", "max-age=2"))
    if validator is not None and validator[0] != name:
        headers.append(validator)
    return headers


def _update(config: dict[str, Any]) -> Case:
    name = config["name"]
    value_a = config.get("valA") or http_content(f"{name}-value-A")
    value_b = config.get("valB") or http_content(f"{name}-value-B")
    if config.get("noUpdate"):
        expected, kind = value_a, "required"
    elif config.get("reqUpdate"):
        expected, kind = value_b, "required"
    else:
        expected, kind = value_b, "check"
    validator = ("ETag", f'"{http_content(f"{name}-etag-1")}"')
    check_body = config.get("checkBody", True)
    return {
        "id": f"304-etag-update-response-{name}",
        "kind": kind,
        "depends_on": ["304-lm-use-stored-Test-Header"],
        "requests": [
            {
                "response_headers": _response(config, value_a, validator),
                "setup": True,
                "pause_after": True,
                "check_body": check_body,
            },
            {
                "response_headers": _response(config, value_b, validator),
                "expected_type": "etag_validated",
                "setup_tests": ["expected_type"],
                "expected_response_headers": [(name, expected)],
                "check_body": check_body,
            },
            {
                "response_headers": _response(config, expected, None),
                "expected_type": "cached",
                "setup_tests": ["expected_type"],
                "expected_response_headers": [(name, expected)],
                "check_body": check_body,
            },
        ],
    }


UPDATE304: list[Case] = [
    {
        "id": "304-lm-use-stored-Test-Header",
        "requests": [
            {
                "response_headers": [
                    ("Cache-Control", "max-age=2"),
                    ("Last-Modified", _LM),
                    ("Date", 0),
                    ("Test-Header", http_content("Test-Header-value-A")),
                ],
                "setup": True,
                "pause_after": True,
            },
            {
                "response_headers": [("Last-Modified", _LM), ("Date", 0)],
                "expected_type": "lm_validated",
                "expected_response_headers": [("Test-Header", http_content("Test-Header-value-A"))],
                "setup_tests": ["expected_type"],
            },
        ],
    },
    *(_update(config) for config in HEADER_LIST if not config.get("noStore")),
]

CASES = [*HEADERS, *UPDATE304]
