"""Cache keys: ``{namespace}:g{generations}:{tenant}:{scope}:{digest}``.

The cache composes the key; a ``KeyBuilder`` (the default one here, or a plug-in) only
computes the digest of the request, so no plug-in can drop the tenant or the identity
scope from a key. The default digest is a keyed BLAKE2b over everything that selects a
response: method, scheme, host, ``root_path``, the raw path *as sent* (``%2F`` and ``/``
are different resources), the path the router sees when a middleware rewrote it, the
query with its parameters sorted by *decoded* name (every value of one name keeps its
order, so the app always sees the same values), the proxy headers that steer frameworks,
and the request parts the response varies on. Each part is length-prefixed, so no two
different requests can produce the same input, and the key stays bounded in length
however long the URL is.

What a route reads is keyed exactly as the app's parser reads it (``vary_values``): every
field of a declared header in order and unfolded, a declared cookie by its case-sensitive
name. Only the headers named by ``Vary`` and the settings are normalised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Protocol
from urllib.parse import unquote_plus

from .cache_control import NORMALIZED_VARY_FIELDS, normalize_vary_value
from .request import RequestInfo

__all__ = [
    "COOKIE",
    "HEADER",
    "KEY_HEADERS",
    "SYNTHETIC",
    "KeyBuilder",
    "VaryValues",
    "build_key",
    "filter_query",
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


# Prefixes of the names in a key's Vary list: a route's cookie (``cookie:theme``), a
# route's header read exactly (``header:x-token``), a value-less marker (``~overrides.3``).
# Any other name is a header named by ``Vary`` or the settings.
COOKIE = "cookie:"
HEADER = "header:"
SYNTHETIC = "~"


def _query_name(pair: bytes) -> str:
    """A parameter's name as the app decodes it (Starlette: latin-1, then ``parse_qsl``)."""
    return unquote_plus(pair.partition(b"=")[0].decode("latin-1"))


def normalize_query(query: bytes) -> bytes:
    """Sort parameters by *decoded* name, keeping the order of each name's values.

    The sort is stable and keeps the raw bytes: ``?a=1&b=2`` and ``?b=2&a=1`` share a form,
    but ``?q=1&%71=2`` and ``?%71=2&q=1`` do not (both names are ``q``: the app reads
    ``q=1`` from one and ``q=2`` from the other). Nothing is decoded in the result or
    dropped: two queries get the same form only if the app sees the same parameters.
    """
    if not query or b"&" not in query:
        return query
    pairs = query.split(b"&")
    if b"%" in query or b"+" in query:
        pairs.sort(key=_query_name)
    else:  # nothing to decode: latin-1 names sort as their bytes do
        pairs.sort(key=lambda pair: pair.partition(b"=")[0])
    return b"&".join(pairs)


def filter_query(
    query: bytes,
    allow: Sequence[str] | None,
    deny: Sequence[str],
    keep: Callable[[str], bool] | None = None,
) -> bytes:
    """Keep only the parameters a route reads (``allow``) or drop junk ones (``deny``).

    Names are compared decoded, with ``*`` wildcards (``utm_*``). ``keep`` names what may
    never be dropped whatever the lists say: the parameters the route declares, and those
    named like credentials (``api_key``, ``token``), which must keep requests apart.
    """
    if not query:
        return query
    kept = []
    for pair in query.split(b"&"):
        name = _query_name(pair)
        if keep is None or not keep(name):
            if allow is not None and not any(fnmatchcase(name, p) for p in allow):
                continue
            if any(fnmatchcase(name, p) for p in deny):
                continue
        kept.append(pair)
    return b"&".join(kept)


def vary_value(name: str, fields: Sequence[str]) -> str:
    """The keyed form of a ``Vary``/``vary_on`` header's field lines.

    Fields whose grammar RFC 9110 defines as a list of case-insensitive tokens
    (``Accept-Encoding``, ``Accept-Language``, ``Accept-Charset``) are normalised, so that
    spellings with the same meaning share an entry (``normalize_vary_value`` proves it);
    every other field is keyed exactly, every line in order, as the app receives it (it may
    read only the first line, or the value raw). A route's own inputs never come here.
    """
    if name in NORMALIZED_VARY_FIELDS:
        return normalize_vary_value(name, ", ".join(fields))
    return _exact(fields)


def _exact(values: Sequence[str]) -> str:
    """Several header fields as one string no other list of fields gives (length-framed)."""
    return "".join(f"{len(value)}:{value}" for value in values)


def vary_values(info: RequestInfo, names: Sequence[str]) -> VaryValues:
    """The request's values of ``names``; ``None`` (absent) differs from ``""`` (empty).

    - ``cookie:<name>``: that cookie as the app's parser reads it (case-sensitive name);
    - ``header:<name>``: every field of that header as the app receives them, in order,
      unfolded (``Header()`` reads the first, a list parameter all of them);
    - ``~...``: a marker that is part of the key by its name alone;
    - any other name: a header named by ``Vary`` or the settings, normalised.
    """
    headers = info.headers
    values: list[tuple[str, str | None]] = []
    for name in names:
        value: str | None
        if name.startswith(COOKIE):
            value = info.app_cookies().get(name[7:]) if "cookie" in headers else None
        elif name.startswith(HEADER):
            fields = info.app_headers(name[7:])
            value = _exact(fields) if fields else None
        elif name.startswith(SYNTHETIC):
            value = ""
        else:
            value = vary_value(name, info.app_headers(name)) if name in headers else None
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
        for part in (method, scope.get("scheme", "http"), host, scope.get("root_path", ""))
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
    # The path the router sees, when it is not the raw path decoded: a middleware in front
    # of the cache rewrote it (routing by a header, say). Last, after a marker no Vary
    # value starts with, so keys of unrewritten requests stay as they were.
    path = scope.get("path")
    if path is not None:
        routed = path.encode("utf-8", "surrogateescape")
        if routed != info.raw_path:
            parts += [b"--path--", routed]
    # One update of the framed parts: the same digest as one update per part, in one call.
    digest = hashlib.blake2b(_framed(parts), key=secret[:64], digest_size=20)
    return digest.hexdigest()
