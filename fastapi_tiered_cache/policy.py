"""Pure caching decisions: may this request use the cache, may this response be stored.

Nothing here reads the clock, touches a store or raises for an ordinary outcome; the
middleware passes ``now`` in and acts on the returned ``Decision``. Rules follow RFC 9111
§3 (storing), §4.2 (freshness and age) and §5.2 (Cache-Control), read as a *shared* cache
except in an identity's own scope, which behaves as that identity's private cache.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .cache_control import (
    CacheControl,
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
    parse_vary,
)
from .request import RequestInfo

__all__ = [
    "Action",
    "Decision",
    "Freshness",
    "Reason",
    "check_request",
    "check_response",
    "freshness_of",
    "heuristic_lifetime",
    "is_worth_storing",
    "outgoing_cache_control",
    "request_allows",
    "response_cache_control",
]

_AGE_DIRECTIVE = re.compile(r"(?i)\b(max-age|s-maxage)\s*=\s*\"?(\d+)\"?")

# A request that asks a framework to treat it as another method must never share an entry.
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


class Action(str, Enum):
    """What the middleware does: use the cache (``STORE``), skip storing, or bypass it."""

    STORE = "store"
    SKIP = "skip"
    BYPASS = "bypass"


class Reason(str, Enum):
    """Why; the value is the ``detail`` of ``Cache-Status`` and a metrics label."""

    CACHEABLE = "cacheable"
    METHOD = "method"
    REQUEST_BODY = "request-body"
    METHOD_OVERRIDE = "method-override"
    RULE = "rule"
    REQUEST_OBJECT = "request-object"
    AUTHENTICATED = "authenticated"
    RESOLVER = "resolver"
    REQUEST_NO_STORE = "request-no-store"
    STATUS = "status"
    SET_COOKIE = "set-cookie"
    NO_STORE = "no-store"
    PRIVATE = "private"
    NO_CACHE = "no-cache"
    VARY_STAR = "vary-star"
    TOO_LARGE = "too-large"
    STALE = "stale"
    CONTENT_RANGE = "content-range"
    AUTHORIZATION = "authorization"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Decision:
    """An action with its reason."""

    action: Action
    reason: Reason

    @property
    def cacheable(self) -> bool:
        return self.action is Action.STORE


LOOKUP = Decision(Action.STORE, Reason.CACHEABLE)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a response may be reused (seconds), per RFC 9111 §4.2."""

    fresh_for: float
    initial_age: float
    explicit: bool
    revalidate: bool
    stale_while_revalidate: float
    stale_if_error: float
    must_revalidate: bool


def _bypass(reason: Reason) -> Decision:
    return Decision(Action.BYPASS, reason)


def _skip(reason: Reason) -> Decision:
    return Decision(Action.SKIP, reason)


def check_request(info: RequestInfo, methods: Collection[str]) -> Decision:
    """May this request be answered from, or stored in, the cache at all?"""
    if info.method not in methods:
        return _bypass(Reason.METHOD)
    headers = info.headers
    if (
        headers.get("content-length", "0").strip() not in ("0", "")
        or "transfer-encoding" in headers
    ):
        return _bypass(Reason.REQUEST_BODY)  # a "fat GET" must never share a body-less entry
    for name in METHOD_OVERRIDE_HEADERS:
        if name in headers:
            return _bypass(Reason.METHOD_OVERRIDE)
    return LOOKUP


def freshness_of(
    headers: Mapping[str, str], cc: CacheControl, *, default_ttl: float, shared: bool, now: float
) -> Freshness:
    """Freshness lifetime and initial age of a response received at ``now``."""
    date = parse_http_date(headers.get("date"))
    explicit = True
    if shared and cc.s_maxage is not None:
        lifetime: float = cc.s_maxage
    elif cc.max_age is not None:
        lifetime = cc.max_age
    elif "expires" in headers:
        expires = parse_http_date(headers["expires"])
        # An invalid Expires (such as "0") means already expired (RFC 9111 §5.3).
        lifetime = 0.0 if expires is None else max(0.0, expires - (date or now))
    else:
        lifetime, explicit = float(default_ttl), False
    age_value = parse_delta_seconds(headers["age"]) if "age" in headers else None
    apparent_age = max(0.0, now - date) if date is not None else 0.0
    return Freshness(
        fresh_for=lifetime,
        initial_age=max(apparent_age, float(age_value or 0)),
        explicit=explicit,
        revalidate=cc.no_cache,
        stale_while_revalidate=float(cc.stale_while_revalidate or 0),
        stale_if_error=float(cc.stale_if_error or 0),
        must_revalidate=cc.must_revalidate or (shared and cc.proxy_revalidate),
    )


# Statuses a strict cache stores when the origin gives explicit freshness (RFC 9110 §15.1,
# plus redirects an origin explicitly marks fresh). Server errors are never shared.
EXPLICITLY_CACHEABLE = frozenset({200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414})


def response_cache_control(headers: Mapping[str, str], targeted: Sequence[str]) -> CacheControl:
    """The directives this cache obeys: the first targeted field present (RFC 9213 §2.2),
    else ``Cache-Control``."""
    for name in targeted:
        if name in headers:
            return parse_cache_control(headers[name])
    return parse_cache_control(headers.get("cache-control"))


def has_explicit_freshness(headers: Mapping[str, str], cc: CacheControl) -> bool:
    return cc.max_age is not None or cc.s_maxage is not None or "expires" in headers


def check_response(
    status: int,
    headers: Mapping[str, str],
    *,
    cc: CacheControl,
    request_cc: CacheControl,
    statuses: Collection[int],
    shared: bool,
    strict: bool = False,
    authorization: bool = False,
) -> Decision:
    """May this response be stored? (RFC 9111 §3; freshness is judged by the caller.)

    ``shared`` is false only in an identity's own scope, where ``private`` is allowed.
    ``strict`` (no default TTL) also stores any explicitly fresh cacheable status, and
    applies §3.5 to requests with ``Authorization``.
    """
    explicit = strict and has_explicit_freshness(headers, cc)
    if status not in statuses and not (explicit and status in EXPLICITLY_CACHEABLE):
        return _skip(Reason.STATUS)
    if "content-range" in headers:
        return _skip(Reason.CONTENT_RANGE)
    if request_cc.no_store:
        return _skip(Reason.REQUEST_NO_STORE)
    if cc.no_store:
        return _skip(Reason.NO_STORE)
    if shared and cc.private:
        return _skip(Reason.PRIVATE)
    if "set-cookie" in headers:
        return _skip(Reason.SET_COOKIE)
    if parse_vary(headers.get("vary")) is None:
        return _skip(Reason.VARY_STAR)
    if (
        strict
        and authorization
        and not (cc.public or cc.s_maxage is not None or cc.must_revalidate)
    ):
        return _skip(Reason.AUTHORIZATION)  # RFC 9111 §3.5
    return LOOKUP


def outgoing_cache_control(configured: str, origin: CacheControl, ttl: float) -> str | None:
    """The ``Cache-Control`` to send instead of the origin's, or None to keep the origin's.

    The origin's ``private``/``no-store`` always win (a downstream cache must never store
    what the origin kept to itself), and no ``max-age`` outlives the entry.
    """
    if origin.private or origin.no_store:
        return None
    remaining = max(0, int(ttl))
    return _AGE_DIRECTIVE.sub(
        lambda m: f"{m.group(1)}={min(int(m.group(2)), remaining)}", configured
    )


class _Aged(Protocol):
    def age(self, now: float) -> float: ...

    def ttl(self, now: float) -> float: ...


def request_allows(request_cc: CacheControl, entry_age: _Aged, now: float) -> bool:
    """Whether a client's own directives let a fresh entry be reused (RFC 9111 §5.2.1)."""
    if request_cc.no_cache:
        return False
    age = entry_age.age(now)
    if request_cc.max_age is not None and age > request_cc.max_age:
        return False
    return not (request_cc.min_fresh is not None and entry_age.ttl(now) < request_cc.min_fresh)


def heuristic_lifetime(headers: Mapping[str, str], now: float) -> float | None:
    """10% of the time since ``Last-Modified`` (RFC 9111 §4.2.2), or None without one."""
    modified = parse_http_date(headers.get("last-modified"))
    if modified is None:
        return None
    date = parse_http_date(headers.get("date")) or now
    return max(0.0, (date - modified) / 10)


def is_worth_storing(freshness: Freshness, has_validators: bool) -> Decision:
    """A response that is neither fresh nor revalidatable would never be reused."""
    if freshness.revalidate and not has_validators:
        return _skip(Reason.NO_CACHE)
    if freshness.fresh_for - freshness.initial_age <= 0 and not has_validators:
        return _skip(Reason.STALE)
    return LOOKUP
