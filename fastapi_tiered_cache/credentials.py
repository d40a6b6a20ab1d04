"""Which parts of a request are credentials: configured, declared, or shaped like one.

The identity scope of a request is made of every credential it carries: the headers and
cookies configured (``TIERED_CACHE_IDENTITY_HEADERS``/``IDENTITY_COOKIES``), those its
route's security schemes declare, and, failing closed, those that merely look like one: a
name containing ``token``, ``auth``, ``session``, ... (``TIERED_CACHE_CREDENTIAL_NAME_PARTS``)
or a value shaped like a bearer token or a JWT. Standard browser headers
(``PLAIN_HEADERS``) are not screened, so ordinary page views still share entries.

Policy only: nothing here touches a store.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from fnmatch import fnmatchcase

from .request import RequestInfo

__all__ = [
    "PLAIN_HEADERS",
    "CredentialRules",
    "credentials_of",
    "looks_like_credential",
    "looks_like_credential_bytes",
    "plain_header",
]


class CredentialRules:
    """Which request headers and cookies carry credentials, configured and guessed.

    A name is a credential when it is configured (``identity_headers``/``identity_cookies``,
    a route's security scheme) or when it contains one of ``parts`` (``token``, ``auth``,
    ``session``, ...) and matches none of ``ignore`` (``user-agent``, ``sec-fetch-user``,
    analytics cookies). A value is one when it is shaped like a credential wherever it
    appears (``Bearer ...``, ``Basic ...``, a JWT). Cookie names compare case-insensitively
    here: seeing more credentials only ever splits or bypasses, never shares.
    """

    __slots__ = ("_fields", "_names", "cookies", "headers", "ignore", "parts")

    MAX_REMEMBERED = 4096  # names whose verdict is cached
    MAX_REMEMBERED_NAME = 256  # longer names (the client's to choose) are judged each time

    def __init__(
        self,
        headers: Iterable[str] = (),
        cookies: Iterable[str] = (),
        parts: Iterable[str] = (),
        ignore: Iterable[str] = (),
    ) -> None:
        self.headers = frozenset(name.lower() for name in headers)
        self.cookies = frozenset(name.lower() for name in cookies)
        self.parts = tuple(part.lower() for part in parts if part)
        self.ignore = tuple(pattern.lower() for pattern in ignore if pattern)
        self._names: dict[str, bool] = {}
        self._fields: dict[bytes, tuple[str, int]] = {}

    # What a raw header name is, once known (``field``): how its values are judged.
    COOKIE, NAMED, SCREENED, PLAIN = 0, 1, 2, 3

    def field(self, raw_name: bytes) -> tuple[str, int]:
        """``(lower-case name, kind)`` of a raw header name, remembered (bounded)."""
        known = self._fields.get(raw_name)
        if known is None:
            name = raw_name.decode("latin-1").lower()
            if name == "cookie":
                kind = self.COOKIE
            elif name in self.headers or self.guessed(name):
                kind = self.NAMED
            elif plain_header(name):
                kind = self.PLAIN
            else:
                kind = self.SCREENED
            known = (name, kind)
            if len(raw_name) <= self.MAX_REMEMBERED_NAME:
                if len(self._fields) >= self.MAX_REMEMBERED:
                    self._fields.clear()
                self._fields[raw_name] = known
        return known

    def guessed(self, name: str) -> bool:
        """Whether a lower-case name looks like a credential's (by its parts)."""
        known = self._names.get(name)
        if known is None:
            known = any(part in name for part in self.parts) and not any(
                fnmatchcase(name, pattern) for pattern in self.ignore
            )
            if len(name) <= self.MAX_REMEMBERED_NAME:
                if len(self._names) >= self.MAX_REMEMBERED:
                    self._names.clear()
                self._names[name] = known
        return known

    def header(self, name: str, value: str, declared: Collection[str] = ()) -> bool:
        """Whether a header (lower-case name) carries a credential."""
        return (
            name in self.headers
            or name in declared
            or self.guessed(name)
            or (not plain_header(name) and looks_like_credential(value))
        )

    def cookie(self, name: str, value: str, declared: Collection[str] = ()) -> bool:
        """Whether a cookie (name as sent) carries a credential."""
        lowered = name.lower()
        return (
            lowered in self.cookies
            or lowered in declared
            or self.guessed(lowered)
            or looks_like_credential(value)
        )


# Standard request headers whose grammar leaves no room for a credential and that no app
# authenticates with: their values are not screened for credential shapes (a browser
# sends them on every request; the memo then skips them as before).
PLAIN_HEADERS = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "b3",
        "cache-control",
        "cf-connecting-ip",
        "cf-ipcountry",
        "cf-ray",
        "connection",
        "content-length",
        "content-type",
        "device-memory",
        "dnt",
        "downlink",
        "ect",
        "host",
        "keep-alive",
        "origin",
        "pragma",
        "priority",
        "purpose",
        "referer",
        "rtt",
        "save-data",
        "sec-gpc",
        "sec-purpose",
        "sentry-trace",
        "te",
        "traceparent",
        "tracestate",
        "true-client-ip",
        "upgrade-insecure-requests",
        "user-agent",
        "via",
        "viewport-width",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
        "x-correlation-id",
        "x-forwarded-for",
        "x-real-ip",
        "x-request-id",
        "x-requested-with",
    }
)
_PLAIN_PREFIXES = ("sec-ch-", "sec-fetch-", "x-b3-")


def plain_header(name: str) -> bool:
    """Whether a (lower-case) request header is one of ``PLAIN_HEADERS``."""
    return name in PLAIN_HEADERS or name.startswith(_PLAIN_PREFIXES)


# A JWT (JWS or JWE): base64url JSON header ("eyJ" is '{"'), a dot, a payload, a dot; or
# a signed JSON blob in standard base64 ('+', '/', '=' padding), a dot, a timestamp, a dot
# (itsdangerous, so Starlette's SessionMiddleware cookie, whatever its name).
_JWT = r"eyJ[A-Za-z0-9_+/-]{2,}={0,2}\.[A-Za-z0-9_-]{2,}\."
# An Authorization-style value: a credential scheme, whitespace, then the credential.
_SCHEME = r"\s*(?:bearer|basic|digest|token|jwt|apikey|api-key)\s+\S"
# ASCII semantics in both forms, so the memo's byte screen and this agree exactly.
_JWT_STR = re.compile(_JWT, re.ASCII)
_SCHEME_STR = re.compile(_SCHEME, re.ASCII | re.IGNORECASE)
_JWT_BYTES = re.compile(_JWT.encode(), re.ASCII)
_SCHEME_BYTES = re.compile(_SCHEME.encode(), re.ASCII | re.IGNORECASE)
_SCHEME_FIRST = frozenset(b" \t\n\r\x0b\x0cAaBbDdJjTt")


def looks_like_credential(value: str) -> bool:
    """Whether a header or cookie value is shaped like a bearer token or a JWT."""
    return ("eyJ" in value and _JWT_STR.search(value) is not None) or (
        _SCHEME_STR.match(value) is not None
    )


def looks_like_credential_bytes(value: bytes) -> bool:
    """``looks_like_credential`` of a raw (latin-1) value, cheap when it says no."""
    if b"eyJ" in value and _JWT_BYTES.search(value) is not None:
        return True
    return bool(value) and value[0] in _SCHEME_FIRST and _SCHEME_BYTES.match(value) is not None


def credentials_of(
    info: RequestInfo,
    rules: CredentialRules,
    headers: Collection[str] = (),
    cookies: Collection[str] = (),
) -> list[str]:
    """Every credential the request carries, as ``"kind:name=value"`` strings (sorted).

    ``headers``/``cookies`` are the names a route's security schemes read (lower-case).
    Every field of a repeated header counts, each cookie of every ``Cookie`` field too.
    """
    found = []
    field = rules.field
    for raw_name, raw_value in info.scope["headers"]:
        name, kind = field(raw_name)
        if (
            kind == rules.NAMED
            or (kind == rules.SCREENED and looks_like_credential_bytes(raw_value))
            or (kind != rules.COOKIE and name in headers)
        ):
            found.append(f"h:{name}={raw_value.decode('latin-1')}")
    if "cookie" in info.headers:
        lowered = {name.lower() for name in cookies}
        found.extend(
            f"c:{name}={value}"
            for name, value in info.cookie_pairs
            if rules.cookie(name, value, lowered)
        )
    return sorted(found)
