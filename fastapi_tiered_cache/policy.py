"""Pure caching decisions: may this request use the cache, may this response be stored.

Nothing here reads the clock, touches a store or raises for an ordinary outcome; the
middleware passes ``now`` in and acts on the returned ``Decision``. Rules follow RFC 9111
§3 (storing), §4.2 (freshness and age) and §5.2 (Cache-Control), read as a *shared* cache
except in an identity's own scope, which behaves as that identity's private cache.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

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
    "is_worth_storing",
]

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
    RANGE = "range"
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
    if "range" in headers:
        return _bypass(Reason.RANGE)
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


def check_response(
    status: int,
    headers: Mapping[str, str],
    *,
    request_cc: CacheControl,
    statuses: Collection[int],
    shared: bool,
) -> Decision:
    """May this response be stored? (RFC 9111 §3; freshness is judged by the caller.)

    ``shared`` is false only in an identity's own scope, where ``private`` is allowed.
    """
    if status not in statuses:
        return _skip(Reason.STATUS)
    if "content-range" in headers:
        return _skip(Reason.CONTENT_RANGE)
    if request_cc.no_store:
        return _skip(Reason.REQUEST_NO_STORE)
    cc = parse_cache_control(headers.get("cache-control"))
    if cc.no_store:
        return _skip(Reason.NO_STORE)
    if shared and cc.private:
        return _skip(Reason.PRIVATE)
    if "set-cookie" in headers:
        return _skip(Reason.SET_COOKIE)
    if parse_vary(headers.get("vary")) is None:
        return _skip(Reason.VARY_STAR)
    return LOOKUP


def is_worth_storing(freshness: Freshness, has_validators: bool) -> Decision:
    """A response that is neither fresh nor revalidatable would never be reused."""
    if freshness.revalidate and not has_validators:
        return _skip(Reason.NO_CACHE)
    if freshness.fresh_for - freshness.initial_age <= 0 and not has_validators:
        return _skip(Reason.STALE)
    return LOOKUP
