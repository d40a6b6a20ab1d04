"""``vary`` and ``vary-parse``: selecting stored responses (RFC 9111 §4.1)."""

from __future__ import annotations

from typing import Any

from ..templates import http_content, make_template

Case = dict[str, Any]
STORED = [("Cache-Control", "max-age=5000"), ("Last-Modified", -3000), ("Date", 0)]
vary_setup = make_template(
    {
        "request_headers": [("Foo", "1")],
        "response_headers": [*STORED, ("Vary", "Foo")],
        "setup": True,
    }
)
vary2_setup = make_template(
    {
        "request_headers": [("Foo", "1"), ("Bar", "abc")],
        "response_headers": [*STORED, ("Vary", "Foo, Bar", False)],
        "setup": True,
    }
)
vary3_setup = make_template(
    {
        "request_headers": [("Foo", "1"), ("Bar", "abc"), ("Baz", "789")],
        "response_headers": [*STORED, ("Vary", "Foo, Bar, Baz", False)],
        "setup": True,
    }
)


def _case(
    case_id: str,
    first: dict[str, Any],
    second: dict[str, Any],
    *,
    kind: str = "required",
    depends: str = "vary-match",
) -> Case:
    return {"id": case_id, "kind": kind, "depends_on": [depends], "requests": [first, second]}


def _normalise(
    case_id: str,
    name: str,
    stored: list[tuple[str, str]],
    presented: list[tuple[str, str]],
    extra: list[tuple[str, str]] | None = None,
) -> Case:
    first = {
        "request_headers": stored,
        "response_headers": [*STORED, ("Vary", name), *(extra or [])],
        "setup": True,
    }
    return _case(
        case_id, first, {"request_headers": presented, "expected_type": "cached"}, kind="optimal"
    )


VARY: list[Case] = [
    _case(
        "vary-match",
        vary_setup(),
        {"request_headers": [("Foo", "1")], "expected_type": "cached"},
        kind="optimal",
        depends="freshness-max-age",
    ),
    _case(
        "vary-no-match",
        vary_setup(),
        {"request_headers": [("Foo", "2")], "expected_type": "not_cached"},
    ),
    _case(
        "vary-omit-stored",
        {"response_headers": [*STORED, ("Vary", "Foo")], "setup": True},
        {"request_headers": [("Foo", "1")], "expected_type": "not_cached"},
    ),
    _case("vary-omit", vary_setup(), {"expected_type": "not_cached"}),
    {
        "id": "vary-invalidate",
        "kind": "optimal",
        "depends_on": ["vary-match"],
        "requests": [
            vary_setup(response_body=http_content("foo_1")),
            {
                "request_headers": [("Foo", "2")],
                "response_headers": [*STORED, ("Vary", "Foo")],
                "expected_type": "not_cached",
                "response_body": http_content("foo_2"),
                "setup": True,
            },
            {
                "request_headers": [("Foo", "1")],
                "response_body": http_content("foo_1"),
                "expected_type": "cached",
            },
        ],
    },
    _case(
        "vary-cache-key",
        vary_setup(request_headers=[("Other", "2")]),
        {"request_headers": [("Foo", "1"), ("Other", "3")], "expected_type": "cached"},
        kind="optimal",
    ),
    _case(
        "vary-2-match",
        vary2_setup(),
        {"request_headers": [("Foo", "1"), ("Bar", "abc")], "expected_type": "cached"},
        kind="optimal",
    ),
    _case(
        "vary-2-no-match",
        vary2_setup(),
        {"request_headers": [("Foo", "2"), ("Bar", "abc")], "expected_type": "not_cached"},
        depends="vary-2-match",
    ),
    _case(
        "vary-2-match-omit", vary2_setup(), {"expected_type": "not_cached"}, depends="vary-2-match"
    ),
    _case(
        "vary-3-match",
        vary3_setup(),
        {
            "request_headers": [("Foo", "1"), ("Bar", "abc"), ("Baz", "789")],
            "expected_type": "cached",
        },
        kind="optimal",
        depends="vary-2-match",
    ),
    _case(
        "vary-3-no-match",
        vary3_setup(),
        {
            "request_headers": [("Foo", "2"), ("Bar", "abc"), ("Baz", "789")],
            "expected_type": "not_cached",
        },
        depends="vary-3-match",
    ),
    _case(
        "vary-3-order",
        vary3_setup(),
        {
            "request_headers": [("Foo", "1"), ("Baz", "789"), ("Bar", "abcde")],
            "expected_type": "not_cached",
        },
        depends="vary-3-match",
    ),
    _case(
        "vary-3-omit",
        {
            "request_headers": [("Foo", "1"), ("Baz", "789")],
            "response_headers": [*STORED, ("Vary", "Foo, Bar, Baz", False)],
            "setup": True,
        },
        {"request_headers": [("Foo", "1"), ("Baz", "789")], "expected_type": "cached"},
        kind="optimal",
        depends="vary-3-match",
    ),
    {
        "id": "vary-star",
        "requests": [
            {
                "request_headers": [("Foo", "1"), ("Baz", "789")],
                "response_headers": [*STORED, ("Vary", "*")],
                "setup": True,
            },
            {"request_headers": [("Foo", "1"), ("Baz", "789")], "expected_type": "not_cached"},
        ],
    },
    _normalise("vary-normalise-combine", "Foo", [("Foo", "1, 2")], [("Foo", "1"), ("Foo", "2")]),
    _normalise(
        "vary-normalise-lang-order",
        "Accept-Language",
        [("Accept-Language", "en, de")],
        [("Accept-Language", "de, en")],
    ),
    _normalise(
        "vary-normalise-lang-case",
        "Accept-Language",
        [("Accept-Language", "en, de")],
        [("Accept-Language", "eN, De")],
    ),
    _normalise(
        "vary-normalise-lang-space",
        "Accept-Language",
        [("Accept-Language", "en, de")],
        [("Accept-Language", " en ,   de")],
    ),
    _normalise(
        "vary-normalise-lang-select",
        "Accept-Language",
        [("Accept-Language", "en, de")],
        [("Accept-Language", "fr;q=0.5, de;q=1.0")],
        [("Content-Language", "de")],
    ),
    _normalise("vary-normalise-space", "Foo", [("Foo", "1,2")], [("Foo", " 1, 2 ")]),
]


def _syntax(case_id: str, vary: list[str]) -> Case:
    headers = [("Foo", "1"), ("Baz", "789")]
    return _case(
        case_id,
        {
            "request_headers": headers,
            "response_headers": [*STORED, *(("Vary", v, False) for v in vary)],
            "setup": True,
        },
        {"request_headers": headers, "expected_type": "not_cached"},
    )


VARY_PARSE: list[Case] = [
    _syntax("vary-syntax-star", ["*"]),
    _syntax("vary-syntax-star-star", ["*, *"]),
    _syntax("vary-syntax-star-star-lines", ["*", "*"]),
    _syntax("vary-syntax-empty-star", [", *"]),
    _syntax("vary-syntax-empty-star-lines", ["", "*"]),
    _syntax("vary-syntax-star-foo", ["*, Foo"]),
    _syntax("vary-syntax-foo-star", ["Foo, *"]),
]

CASES = [*VARY, *VARY_PARSE]
