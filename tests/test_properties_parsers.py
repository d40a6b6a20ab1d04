"""Fuzzing what the cache parses itself (issue 14, item 8): headers, cookies, host, tenant,
identity and query. Large and malformed values never raise, and each parser agrees with
the app's own where the key depends on it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import QueryParams
from starlette.requests import Request

from fastapi_tiered_cache import CacheSettings, TieredCache
from fastapi_tiered_cache.credentials import (
    CredentialRules,
    credentials_of,
    looks_like_credential,
    looks_like_credential_bytes,
)
from fastapi_tiered_cache.identity import (
    Identity,
    tenant_from_header,
    tenant_from_path_prefix,
    tenant_from_subdomain,
)
from fastapi_tiered_cache.keys import (
    _query_name,
    build_key,
    filter_query,
    normalize_query,
    vary_values,
)
from fastapi_tiered_cache.request import RequestInfo
from fastapi_tiered_cache.verdicts import Refusal

from .helpers import SECRET

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.one_of(
    st.sampled_from(
        [b"host", b"cookie", b"authorization", b"x-tenant-id", b"x-api-key", b"X-Token", b""]
    ),
    st.binary(max_size=40),
)
values = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"Bearer ", b"eyJ.", b"eyJa.b.", b"=;=;", b";;;", b"\xff\xfe", b"9" * 5000]),
    # Large values built cheaply (hypothesis draws big binaries slowly).
    st.builds(
        lambda unit, n: unit * n, st.binary(min_size=1, max_size=4), st.integers(5000, 12000)
    ),
)
header_lists = st.lists(st.tuples(names, values), max_size=12)
queries = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.tuples(
            st.sampled_from(["q", "%71", "a+b", "a%20b", "%zz", "é", "%C3%A9", "", "="]),
            st.sampled_from(["1", "2", "", "%ff", "a=b"]),
        ),
        max_size=8,
    ).map(lambda pairs: "&".join(f"{n}={v}" for n, v in pairs).encode()),
)


def scope_of(headers: list[tuple[bytes, bytes]], query: bytes = b"", path: str = "/") -> Any:
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "server": ("test", 80),
    }


CACHE = TieredCache(CacheSettings(secret_key=SECRET))
RULES = CACHE.credentials


@FUZZ
@given(header_lists, queries)
def test_request_parsing_never_raises(headers: list[tuple[bytes, bytes]], query: bytes) -> None:
    info = RequestInfo.from_scope(scope_of(headers, query))
    info.cookie_pairs  # noqa: B018 - parsed on first use
    credentials_of(info, RULES, ("x-key",), ("Sess",))
    names = ["header:x-token", "cookie:theme", "accept-language", "~overrides.1"]
    build_key(info, vary_values(info, names), secret=SECRET.encode())
    normalize_query(info.query)
    filter_query(info.query, ["q"], ["utm_*"], lambda name: "token" in name)


@FUZZ
@given(header_lists)
def test_identity_and_tenants_never_raise(headers: list[tuple[bytes, bytes]]) -> None:
    info = RequestInfo.from_scope(scope_of(headers))
    identity = _run(CACHE.identify(info))  # an exception would come back as RESOLVER
    assert isinstance(identity, Identity) or identity is Refusal.OVERSIZED, identity
    request = Request(info.scope)
    for resolver in (tenant_from_header, tenant_from_subdomain, tenant_from_path_prefix):
        resolver(request)


def _run(coroutine: Any) -> Any:
    """Run a coroutine that never suspends (no resolver, no Redis) without a loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("suspended")


@FUZZ
@given(st.binary(max_size=300))
def test_the_memo_screen_agrees_with_the_credential_shapes(value: bytes) -> None:
    assert looks_like_credential_bytes(value) == looks_like_credential(value.decode("latin-1"))


@FUZZ
@given(queries, st.randoms(use_true_random=False))
def test_normalised_queries_are_read_alike_by_the_app(query: bytes, rnd: Any) -> None:
    """Two queries with one normal form give the app the same values for every name."""
    pairs = query.split(b"&")
    rnd.shuffle(pairs)
    other = b"&".join(pairs)
    if normalize_query(query) == normalize_query(other):
        assert _read(query) == _read(other)


def _read(query: bytes) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in QueryParams(query).multi_items():
        grouped.setdefault(name, []).append(value)
    return grouped


@FUZZ
@given(queries)
def test_the_sort_names_are_the_names_the_app_decodes(query: bytes) -> None:
    for pair in query.split(b"&"):
        parsed = parse_qsl(pair.decode("latin-1"), keep_blank_values=True)
        if parsed:
            assert _query_name(pair) == QueryParams(pair).multi_items()[0][0] == parsed[0][0]


@FUZZ
@given(st.text(max_size=60))
def test_credential_rules_never_raise_and_are_case_insensitive(name: str) -> None:
    rules = CredentialRules(parts=["token", "sess"], ignore=["x-*-ignored"])
    lowered = name.lower()
    expected = ("token" in lowered or "sess" in lowered) and not (
        lowered.startswith("x-") and lowered.endswith("-ignored")
    )
    assert rules.guessed(lowered) == expected
    assert (
        rules.cookie(name, "v")
        == rules.cookie(name.upper(), "v")
        == (expected or rules.guessed(name.upper().lower()))
    )
    assert rules.header(lowered, name) == (expected or looks_like_credential(name))
