"""Cache keys: ``{namespace}:g{generations}:{tenant}:{scope}:{digest}``.

The cache composes the key; a ``KeyBuilder`` (the default one here, or a plug-in) only
computes the digest of the request, so no plug-in can drop the tenant or the identity
scope from a key. The default digest is a keyed BLAKE2b over everything that selects a
response: method, scheme, host, ``root_path``, the raw path *as sent* (``%2F`` and ``/``
are different resources),
the query with distinct parameters sorted (a repeated parameter keeps its order), the
proxy headers that steer frameworks, and the request headers the response varies on. Each
part is length-prefixed, so no two different requests can produce the same input, and the
key stays bounded in length however long the URL is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Protocol
from urllib.parse import unquote_plus

from .request import RequestInfo

__all__ = [
    "KEY_HEADERS",
    "KeyBuilder",
    "build_key",
    "filter_query",
    "normalize_header_value",
    "normalize_query",
    "vary_values",
]

# Headers that proxies and frameworks use to rewrite the URL the app sees: a request that
# carries one is keyed on it, so it can never poison the entry of a request without it.
KEY_HEADERS: tuple[str, ...] = (
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
)

VaryValues = tuple[tuple[str, str | None], ...]


class KeyBuilder(Protocol):
    """Digest of what selects a response, given the Vary values; see ``build_key``.

    Must be deterministic across processes and restarts, and different for requests the
    app may answer differently. The cache adds namespace, generations, tenant and scope.
    """

    def __call__(self, info: RequestInfo, vary: VaryValues, *, secret: bytes) -> str: ...


def normalize_query(query: bytes) -> bytes:
    """Sort parameters by raw name, keeping the order of a repeated name's values.

    Nothing is decoded or dropped: two queries get the same form only if the app is
    guaranteed to see the same parameters.
    """
    if not query or b"&" not in query:
        return query
    pairs = query.split(b"&")
    pairs.sort(key=lambda pair: pair.partition(b"=")[0])  # stable: repeated names keep order
    return b"&".join(pairs)


def filter_query(query: bytes, allow: Sequence[str] | None, deny: Sequence[str]) -> bytes:
    """Keep only the parameters a route reads (``allow``) or drop junk ones (``deny``).

    Names are compared decoded, with ``*`` wildcards (``utm_*``). Only for routes whose
    handlers never read the dropped parameters: otherwise two different answers share a key.
    """
    if not query:
        return query
    kept = []
    for pair in query.split(b"&"):
        name = unquote_plus(pair.partition(b"=")[0].decode("latin-1"))
        if allow is not None and not any(fnmatchcase(name, p) for p in allow):
            continue
        if any(fnmatchcase(name, p) for p in deny):
            continue
        kept.append(pair)
    return b"&".join(kept)


def normalize_header_value(value: str) -> str:
    """Fold runs of whitespace to one space and trim, so cosmetic differences share an entry."""
    return " ".join(value.split())


def vary_values(info: RequestInfo, names: Sequence[str]) -> VaryValues:
    """The request's values of ``names``; ``None`` (absent) differs from ``""`` (empty).

    A name ``cookie:<name>`` stands for one cookie's value (read by a route's ``Cookie()``).
    """
    headers = info.headers
    values: list[tuple[str, str | None]] = []
    for name in names:
        if name.startswith("cookie:"):
            value = info.cookies.get(name[7:]) if "cookie" in headers else None
        else:
            value = normalize_header_value(headers[name]) if name in headers else None
        values.append((name, value))
    return tuple(values)


def _framed(parts: list[bytes]) -> bytes:
    """Each part prefixed by its length, so no two part lists frame to the same bytes."""
    return b"".join([len(part).to_bytes(4, "big") + part for part in parts])


def build_key(info: RequestInfo, vary: VaryValues, *, secret: bytes) -> str:
    """The default key builder. HEAD shares the GET key: it is answered from the GET entry."""
    scope = info.scope
    headers = info.headers
    method = "GET" if info.method == "HEAD" else info.method
    host = headers.get("host")
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else ""
    parts = [
        part.encode("utf-8", "surrogateescape")
        for part in (method, scope.get("scheme", "http"), host.lower(), scope.get("root_path", ""))
    ]
    parts.append(info.raw_path)
    parts.append(normalize_query(info.query))
    for name in KEY_HEADERS:
        if name in headers:
            parts.append(f"{name}:{headers[name]}".encode("latin-1", "replace"))
    parts.append(b"--vary--")
    for name, value in vary:
        parts.append(name.encode("latin-1"))
        parts.append(b"\x00" if value is None else b"=" + value.encode("latin-1", "replace"))
    # One update of the framed parts: the same digest as one update per part, in one call.
    digest = hashlib.blake2b(_framed(parts), key=secret[:64], digest_size=20)
    return digest.hexdigest()
