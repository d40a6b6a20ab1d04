"""``status`` and ``heuristic``: which statuses are stored with explicit or heuristic
freshness (RFC 9111 §3, §4.2.2; RFC 9110 §15.1), and ``must-understand`` (§5.2.2.3)."""

from __future__ import annotations

from typing import Any

from ..templates import fresh, http_content, stale

Case = dict[str, Any]
NO_BODY = {204}


def _body(code: int, body: str | None = None) -> str | None:
    return None if code in NO_BODY else (body or http_content(str(code)))


def _status(code: int) -> list[Case]:
    body = _body(code)
    common = {"response_status": (code, "Whatever"), "response_body": body, "redirect": "manual"}
    return [
        {
            "id": f"status-{code}-fresh",
            "kind": "optimal",
            "depends_on": ["freshness-max-age"],
            "requests": [fresh(common), {"expected_type": "cached", **common}],
        },
        {
            "id": f"status-{code}-stale",
            "depends_on": [f"status-{code}-fresh"],
            "requests": [
                stale(common),
                {"expected_type": "not_cached", "redirect": "manual", "response_body": body},
            ],
        },
    ]


_CODES = (200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599)

STATUS: list[Case] = [
    *(case for code in _CODES for case in _status(code)),
    {
        "id": "status-599-must-understand",
        "depends_on": ["status-599-fresh"],
        "requests": [
            {
                "response_status": (599, "Whatever"),
                "response_headers": [("Cache-Control", "max-age=3600, no-store, must-understand")],
                "setup": True,
            },
            {"expected_type": "not_cached"},
        ],
    },
    {
        "id": "status-200-must-understand",
        "kind": "optimal",
        "depends_on": ["status-200-fresh", "cc-resp-no-store-fresh"],
        "requests": [
            {
                "response_status": (200, "OK"),
                "response_headers": [("Cache-Control", "max-age=3600, no-store, must-understand")],
                "setup": True,
            },
            {"expected_type": "cached"},
        ],
    },
]


def _heuristic(stored: bool, code: int, extra: tuple[str, str] | None = None) -> Case:
    expected = "cached" if stored else "not_cached"
    headers: list[tuple[Any, ...]] = [("Last-Modified", -24 * 60 * 60), ("Date", 0)]
    if extra:
        headers.append(extra)
    body = _body(code)
    status = (code, "Whatever")
    return {
        "id": f"heuristic-{code}-{expected}",
        "kind": "optimal" if stored else "required",
        "requests": [
            {
                "response_status": status,
                "response_headers": headers,
                "response_body": body,
                "setup": True,
            },
            {"expected_type": expected, "response_status": status, "response_body": body},
        ],
    }


HEURISTIC: list[Case] = [
    *(
        _heuristic(stored, code)
        for stored, code in (
            (True, 200),
            (False, 201),
            (False, 202),
            (True, 203),
            (True, 204),
            (False, 403),
            (True, 404),
            (True, 405),
            (True, 410),
            (True, 414),
            (True, 501),
            (False, 502),
            (False, 503),
            (False, 504),
            (False, 599),
        )
    ),
    _heuristic(True, 599, ("Cache-Control", "public")),
    *(
        {
            "id": f"heuristic-delta-{delta}",
            "kind": "check",
            "requests": [
                {
                    "response_headers": [("Last-Modified", -delta), ("Date", 0)],
                    "setup": True,
                    "pause_after": True,
                },
                {"expected_type": "cached"},
            ],
        }
        for delta in (5, 10, 30, 60, 300, 600, 1200, 1800, 3600, 3600 * 12, 3600 * 24)
    ),
]

CASES = [*STATUS, *HEURISTIC]
