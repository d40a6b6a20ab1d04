"""The key's reading of Vary-named request headers (``keys.vary_values``)."""

from __future__ import annotations

import pytest

from fastapi_tiered_cache.keys import vary_values
from fastapi_tiered_cache.request import RequestInfo


def info(*fields: tuple[str, str]) -> RequestInfo:
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
    return RequestInfo.from_scope(
        {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": raw}
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([("accept-language", "en, de")], [("accept-language", " eN ,  De")]),
        ([("accept-language", "en, de")], [("accept-language", "en"), ("accept-language", "de")]),
        ([("accept-encoding", "gzip, br")], [("accept-encoding", "GZIP,br;q=1.000")]),
    ],
    ids=["language-case-space", "language-lines", "encoding-case-weight"],
)
def test_token_list_fields_share_a_key_when_they_mean_the_same(
    first: list[tuple[str, str]], second: list[tuple[str, str]]
) -> None:
    """RFC 9110 §12.5.3/§12.5.4: codings and language ranges are case-insensitive lists."""
    name = first[0][0]
    assert vary_values(info(*first), [name]) == vary_values(info(*second), [name])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([("accept-language", "en, de")], [("accept-language", "de, en")]),
        ([("x-flavour", "a b")], [("x-flavour", "a  b")]),
        ([("x-flavour", "1, 2")], [("x-flavour", "1"), ("x-flavour", "2")]),
        ([("x-flavour", "Mint")], [("x-flavour", "mint")]),
    ],
    ids=["language-order", "custom-whitespace", "custom-lines", "custom-case"],
)
def test_anything_else_is_keyed_as_the_app_receives_it(
    first: list[tuple[str, str]], second: list[tuple[str, str]]
) -> None:
    """A custom header may be read raw, or only its first line (Starlette's
    ``headers[name]``): its spellings never share a key."""
    name = first[0][0]
    assert vary_values(info(*first), [name]) != vary_values(info(*second), [name])


def test_an_absent_header_differs_from_an_empty_one() -> None:
    assert vary_values(info(), ["x-flavour"]) != vary_values(info(("x-flavour", "")), ["x-flavour"])
