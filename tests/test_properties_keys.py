"""Property tests of cache keys: what separates two requests, and what never leaks into a key.

Requests are built as raw ASGI scopes and keyed exactly as the middleware keys them:
``RequestInfo.from_scope``, then ``TieredCache.identify``, then ``TieredCache.key_for``.

The model of "the same request" used below: GET and HEAD are the same; the tenant is the
``X-Tenant-ID`` value stripped of surrounding whitespace (absent or blank = no tenant); the
identity is the exact ``Authorization`` value and ``session`` cookie value; the path is the
raw path *as sent*; the query is its pairs grouped by name, the order of one name's values
kept and the order of distinct names ignored. Header values are what an HTTP server can
deliver (no control characters, RFC 9110 §5.5).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastapi_tiered_cache import CacheSettings, TieredCache
from fastapi_tiered_cache.identity import Identity
from fastapi_tiered_cache.policy import Reason
from fastapi_tiered_cache.request import RequestInfo

SECRET = "s" * 32
T = TypeVar("T")
CACHE = TieredCache(CacheSettings(secret_key=SECRET))
MAX_KEY_LENGTH = 200
PLAIN_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
HEX = "[0-9a-f]"
# namespace : generations : tenant label : identity scope : digest
KEY_SHAPE = re.compile(
    rf"ftc:(?P<gen>g\d+\.\d+\.\d+|gx):(?P<tenant>[^:]*):(?P<scope>pub|u\.{HEX}{{32}}):"
    rf"(?P<digest>{HEX}{{40}})",
    re.DOTALL,
)

# --------------------------------------------------------------------------- strategies

# Characters a header value may carry once UTF-8 encoded: no C0/C1 controls, no surrogates.
visible = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
header_text = st.text(visible, max_size=24)
# Cookie values as a cookie parser returns them: no ';', no surrounding whitespace.
cookie_value = st.text(
    st.characters(
        codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters=";"
    ),
    min_size=1,
    max_size=24,
)
plain_tenant = st.from_regex(PLAIN_TENANT, fullmatch=True)
odd_tenant = st.sampled_from(["_", "-x", "a b", "ACME", "acme.corp", "a:b", "é", "租户", "_h00"])
tenant = st.one_of(st.none(), plain_tenant, odd_tenant, header_text)
authorization = st.one_of(
    st.none(),
    st.builds("Bearer {}".format, header_text),
    st.builds("Basic {}".format, header_text),
    header_text,
)
session = st.one_of(st.none(), cookie_value)

_segment_bytes = st.one_of(
    # literal characters, non-ASCII ones as raw UTF-8 bytes
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="/?#% "),
        max_size=6,
    ).map(lambda s: s.encode()),
    # percent-encodings of any byte, either case (%2f and %2F are both kept as sent)
    st.tuples(st.integers(0, 255), st.booleans()).map(
        lambda t: (f"%{t[0]:02X}" if t[1] else f"%{t[0]:02x}").encode()
    ),
    st.sampled_from([b"%2F", b"%3F", b"%23", b"%25", b"%20", b".", b"..", b""]),
)
segment = st.lists(_segment_bytes, max_size=4).map(b"".join)
raw_path = st.lists(segment, min_size=1, max_size=5).map(lambda parts: b"/" + b"/".join(parts))

param_name = st.one_of(
    st.sampled_from(["a", "b", "c", "a[]", "%61", "A"]),
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="&=#"),
        min_size=1,
        max_size=5,
    ),
)
param_value = st.one_of(
    st.none(),  # "name" without "="
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="&#"),
        max_size=6,
    ),
)
query_pairs = st.lists(st.tuples(param_name, param_value), max_size=6)

Pairs = Sequence[tuple[str, str | None]]


def encode_pair(name: str, value: str | None) -> bytes:
    return name.encode() if value is None else f"{name}={value}".encode()


def query_bytes(pairs: Pairs) -> bytes:
    return b"&".join(encode_pair(name, value) for name, value in pairs)


@dataclass(frozen=True)
class Req:
    """A generated request; ``scope()`` is what an ASGI server would hand the app."""

    method: str = "GET"
    raw_path: bytes = b"/"
    pairs: tuple[tuple[str, str | None], ...] = ()
    tenant: str | None = None
    authorization: str | None = None
    session: str | None = None
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()

    def scope(self) -> dict[str, Any]:
        headers: list[tuple[bytes, bytes]] = [(b"host", b"testserver")]
        if self.tenant is not None:
            headers.append((b"x-tenant-id", self.tenant.encode()))
        if self.authorization is not None:
            headers.append((b"authorization", self.authorization.encode()))
        if self.session is not None:
            headers.append((b"cookie", f"theme=dark; session={self.session}".encode()))
        headers.extend(self.extra_headers)
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": urllib.parse.unquote_to_bytes(self.raw_path).decode("utf-8", "replace"),
            "raw_path": self.raw_path,
            "query_string": query_bytes(self.pairs),
            "headers": headers,
        }

    # The model: what makes two requests "the same" for a cache.

    def seen_tenant(self) -> str | None:
        if self.tenant is None:
            return None
        # the server hands over bytes; the app sees them latin-1 decoded, then stripped
        return self.tenant.encode().decode("latin-1").strip() or None

    def seen_session(self) -> str | None:
        if self.session is None:
            return None
        # as a cookie parser returns it: latin-1 decoded, stripped (UTF-8 "à" ends in 0xA0)
        return self.session.encode().decode("latin-1").strip()

    def model(self) -> tuple[object, ...]:
        groups: dict[str, list[bytes]] = {}
        for name, value in self.pairs:
            groups.setdefault(decoded(name), []).append(encode_pair(name, value))
        query = tuple(sorted(groups.items()))
        return (self.seen_tenant(), self.authorization, self.seen_session(), self.raw_path, query)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (no I/O with L1 only) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise AssertionError("the coroutine suspended: use asyncio.run")


def identify(info: RequestInfo, cache: TieredCache = CACHE) -> Identity:
    identity = run(cache.identify(info))
    assert isinstance(identity, Identity), identity
    return identity


def key_of(req: Req, cache: TieredCache = CACHE) -> str:
    info = RequestInfo.from_scope(req.scope())
    identity = identify(info, cache)
    generation = run(cache.generation(identity))  # L1 only: counters live in memory
    return cache.key_for(info, identity, (), generation)


requests = st.builds(
    Req,
    method=st.sampled_from(["GET", "HEAD"]),
    raw_path=raw_path,
    pairs=query_pairs.map(tuple),
    tenant=tenant,
    authorization=authorization,
    session=session,
)


@st.composite
def related_requests(draw: st.DrawFn) -> list[Req]:
    """Requests drawn from small pools of parts, so that some share parts and some all."""
    tenants = draw(st.lists(tenant, min_size=1, max_size=3))
    auths = draw(st.lists(authorization, min_size=1, max_size=3))
    sessions = draw(st.lists(session, min_size=1, max_size=2))
    paths = draw(st.lists(raw_path, min_size=1, max_size=3))
    queries = draw(st.lists(query_pairs, min_size=1, max_size=3))
    out = []
    for _ in range(draw(st.integers(2, 6))):
        pairs = draw(st.sampled_from(queries))
        if draw(st.booleans()):
            pairs = draw(reorder_distinct(pairs))
        out.append(
            Req(
                method=draw(st.sampled_from(["GET", "HEAD"])),
                raw_path=draw(st.sampled_from(paths)),
                pairs=tuple(pairs),
                tenant=draw(st.sampled_from(tenants)),
                authorization=draw(st.sampled_from(auths)),
                session=draw(st.sampled_from(sessions)),
            )
        )
    return out


def reorder_distinct(pairs: Pairs) -> st.SearchStrategy[list[tuple[str, str | None]]]:
    """Any order of ``pairs`` in which each name's values keep their relative order."""

    def fill(names: Sequence[str]) -> list[tuple[str, str | None]]:
        queues: dict[str, list[tuple[str, str | None]]] = {}
        for pair in pairs:
            queues.setdefault(decoded(pair[0]), []).append(pair)
        return [queues[name].pop(0) for name in names]

    return st.permutations([decoded(name) for name, _ in pairs]).map(fill)


def decoded(name: str) -> str:
    """A parameter name as the app reads it (Starlette: latin-1, then ``parse_qsl``)."""
    return urllib.parse.unquote_plus(name.encode().decode("latin-1"))


# --------------------------------------------------------------------------- (1) and (2)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(related_requests())
def test_keys_are_equal_exactly_when_requests_are_the_same(reqs: list[Req]) -> None:
    """Distinct (tenant, identity, path, normalised query) <=> distinct keys (GET = HEAD)."""
    keys = [key_of(req) for req in reqs]
    for i, first in enumerate(reqs):
        for j in range(i + 1, len(reqs)):
            second = reqs[j]
            same = first.model() == second.model()
            event(f"same={same}")
            assert (keys[i] == keys[j]) == same, (first, second, keys[i], keys[j])


@given(requests, st.data())
def test_order_of_distinct_parameters_does_not_matter(req: Req, data: st.DataObject) -> None:
    reordered = data.draw(reorder_distinct(req.pairs))
    other = replace(req, pairs=tuple(reordered))
    assert key_of(other) == key_of(req)


@given(requests, param_name, st.lists(param_value, min_size=2, max_size=4, unique=True), st.data())
def test_order_of_a_repeated_parameters_values_matters(
    req: Req, name: str, values: list[str | None], data: st.DataObject
) -> None:
    """``?a=1&a=2`` and ``?a=2&a=1`` are different requests (apps read ``getlist``)."""
    base = [pair for pair in req.pairs if pair[0] != name]
    permuted = data.draw(st.permutations(values).filter(lambda p: list(p) != values))
    first = replace(req, pairs=(*base, *((name, v) for v in values)))
    second = replace(req, pairs=(*base, *((name, v) for v in permuted)))
    assert key_of(first) != key_of(second)


def test_examples_of_query_normalisation() -> None:
    def key(query: bytes) -> str:
        return _raw(b"/", query)

    assert key(b"a=1&b=2") == key(b"b=2&a=1")
    assert key(b"a=1&a=2&b=3") == key(b"b=3&a=1&a=2") == key(b"a=1&b=3&a=2")
    assert key(b"a=1&a=2") != key(b"a=2&a=1")
    assert key(b"a=1&b=2") != key(b"a=1&b=3")
    assert key(b"a=1") != key(b"a=1&a=1")
    # Names are compared as the app decodes them: both of these are two values of q.
    assert key(b"q=1&%71=2") != key(b"%71=2&q=1")
    assert key(b"q=1&%71=2&b=3") == key(b"b=3&q=1&%71=2")
    assert key(b"a+b=1&c=2") == key(b"c=2&a+b=1")
    assert key(b"a+b=1&a%20b=2") != key(b"a%20b=2&a+b=1")


# --------------------------------------------------------------------------- (3) and (4)

secret_text = st.text(visible, min_size=10, max_size=40)
secret_cookie = st.text(
    st.characters(
        codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters=";"
    ),
    min_size=10,
    max_size=40,
)


@given(
    req=requests,
    token=secret_text,
    scheme=st.sampled_from(["Bearer ", "Basic ", "Token ", ""]),
    cookie=st.one_of(st.none(), secret_cookie),
    the_tenant=st.one_of(st.none(), plain_tenant, odd_tenant, st.text(visible, max_size=80)),
)
def test_no_credential_or_unplain_tenant_appears_in_the_key(
    req: Req, token: str, scheme: str, cookie: str | None, the_tenant: str | None
) -> None:
    req = replace(req, authorization=scheme + token, session=cookie, tenant=the_tenant)
    key = key_of(req)
    match = KEY_SHAPE.fullmatch(key)
    assert match is not None, key
    assert match["scope"].startswith("u.")
    tenant_field = match["tenant"]
    seen = req.seen_tenant()
    if seen is None:
        assert tenant_field == "_"
    elif PLAIN_TENANT.fullmatch(seen):
        assert tenant_field == seen
    else:
        assert re.fullmatch(f"_h{HEX}{{24}}", tenant_field), (seen, key)
        if len(seen) >= 8:  # shorter ones could match hex digits or ":pub:" by chance
            assert seen not in key
    # The key is "ftc:<gen>:<tenant>:<scope>:<digest>": a plain tenant label is public by
    # design, so a secret may only be found inside it (when the generator drew overlapping text).
    public = f"ftc:{match['gen']}:{tenant_field}:"
    for secret in (token, scheme + token, cookie):
        if secret is not None:
            assert secret not in key[len(public) :]
            assert secret not in key or secret in public, (secret, key)


@settings(max_examples=50)
@given(
    req=requests,
    repeat=st.integers(0, 3000),
    filler=st.sampled_from([b"a", b"%2F", b"\xc3\xa9", b"/x"]),
    # up to the 256 characters (as received, latin-1) a tenant may have: longer bypasses
    the_tenant=st.one_of(st.none(), plain_tenant, st.text(visible, min_size=60, max_size=64)),
)
def test_keys_are_bounded_however_long_the_url(
    req: Req, repeat: int, filler: bytes, the_tenant: str | None
) -> None:
    long = replace(
        req,
        raw_path=req.raw_path + filler * repeat,
        pairs=(*req.pairs, *((f"p{i}", "v" * i) for i in range(repeat // 50))),
        tenant=the_tenant,
    )
    short = replace(long, raw_path=b"/", pairs=())
    assert len(key_of(long)) <= MAX_KEY_LENGTH
    assert len(key_of(long)) == len(key_of(short))  # the URL never changes the key's length


class _TenantIs:
    """A tenant resolver returning a fixed tenant (as a path- or host-based one might)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def __call__(self, request: object) -> str:
        return self.tenant


resolved_tenant = st.one_of(
    st.text(min_size=1),
    plain_tenant.flatmap(
        lambda t: st.sampled_from([t, t + "\n", t + " ", " " + t, t + "\r\n", t + ".", t + ":"])
    ),
)


@given(the_tenant=resolved_tenant)
def test_a_resolved_tenant_is_shown_only_when_it_is_a_plain_label(the_tenant: str) -> None:
    """A tenant from any resolver is either exactly a plain label or a keyed hash."""
    cache = TieredCache(CacheSettings(secret_key=SECRET), tenant_resolver=_TenantIs(the_tenant))
    key = key_of(Req(), cache)
    match = KEY_SHAPE.fullmatch(key)
    assert match is not None, key
    if PLAIN_TENANT.fullmatch(the_tenant):
        assert match["tenant"] == the_tenant
    else:
        assert re.fullmatch(f"_h{HEX}{{24}}", match["tenant"]), (the_tenant, key)


def test_a_tenant_with_a_trailing_newline_is_hashed() -> None:
    """``re.match(r"...$")`` also matches before a final newline: it must not count as plain."""
    cache = TieredCache(CacheSettings(secret_key=SECRET), tenant_resolver=_TenantIs("acme\n"))
    key = key_of(Req(), cache)
    assert "\n" not in key
    assert key.split(":")[2].startswith("_h")


# --------------------------------------------------------------------------- (5)

credential_header = st.sampled_from(
    [b"authorization", b"proxy-authorization", b"x-api-key", b"x-auth-token"]
)
credential_cookie = st.sampled_from(
    ["session", "SESSION", "sessionid", "sid", "connect.sid", "PHPSESSID", "jwt", "token"]
)


@given(
    req=requests,
    header=st.one_of(st.none(), st.tuples(credential_header, header_text)),
    cookie=st.one_of(st.none(), st.tuples(credential_cookie, cookie_value)),
)
def test_anonymous_and_any_credential_get_different_keys(
    req: Req, header: tuple[bytes, str] | None, cookie: tuple[str, str] | None
) -> None:
    anonymous = replace(req, authorization=None, session=None)
    extra: list[tuple[bytes, bytes]] = []
    if header is not None:
        extra.append((header[0], header[1].encode()))
    if cookie is not None:
        extra.append((b"cookie", f"{cookie[0]}={cookie[1]}".encode()))
    if not extra:
        extra.append((b"authorization", b""))  # even an empty credential is a credential
    credentialed = replace(anonymous, extra_headers=tuple(extra))

    anon_info = RequestInfo.from_scope(anonymous.scope())
    cred_info = RequestInfo.from_scope(credentialed.scope())
    assert identify(anon_info).is_anonymous
    assert not identify(cred_info).is_anonymous
    assert key_of(anonymous) != key_of(credentialed)


def test_credentials_bypass_when_identities_are_not_cached() -> None:
    """Without a secret key a credentialed request never gets a (shared) key at all."""
    cache = TieredCache(CacheSettings())
    info = RequestInfo.from_scope(Req(authorization="Bearer abc").scope())
    assert run(cache.identify(info)) is Reason.AUTHENTICATED


# --------------------------------------------------------------------------- (6)


def _raw(raw_path: bytes, query: bytes = b"") -> str:
    pairs = []
    for pair in query.decode().split("&") if query else []:
        name, sep, value = pair.partition("=")
        pairs.append((name, value if sep else None))
    req = Req(raw_path=raw_path, pairs=tuple(pairs))
    assert req.scope()["query_string"] == query
    return key_of(req)


def test_encoded_slash_is_another_resource() -> None:
    assert _raw(b"/a%2Fb") != _raw(b"/a/b")
    assert _raw(b"/a%2fb") != _raw(b"/a%2Fb")  # kept as sent: no decoding, no case folding


def test_encoded_question_mark_is_not_a_query() -> None:
    assert _raw(b"/a%3Fb=c") != _raw(b"/a", b"b=c")
    assert _raw(b"/a%3Fb=c") != _raw(b"/a%3F", b"b=c")


def test_path_and_query_cannot_shift_into_each_other() -> None:
    assert _raw(b"/a", b"b=c&d=e") != _raw(b"/ab", b"=c&d=e")
    assert _raw(b"/%C3%A9") != _raw("/é".encode())


def test_keys_depend_on_the_secret() -> None:
    other = TieredCache(CacheSettings(secret_key="t" * 32))
    req = Req(authorization="Bearer abc", tenant="a b")
    assert key_of(req) != key_of(req, other)
    assert key_of(Req()).rsplit(":", 1)[1] != key_of(Req(), other).rsplit(":", 1)[1]
