"""Pure caching decisions: may this request use the cache, may this response be stored.

Nothing here reads the clock, touches a store or raises for an ordinary outcome; the
middleware passes ``now`` in and acts on the returned ``Decision``. Rules follow RFC 9111
§3 (storing), §4.2 (freshness and age) and §5.2 (Cache-Control), read as a *shared* cache
except in an identity's own scope, which behaves as that identity's private cache.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .cache_control import (
    CacheControl,
    parse_age,
    parse_cache_control,
    parse_http_date,
    parse_targeted,
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
    "heuristically_fresh",
    "is_worth_storing",
    "lifetime_without_freshness",
    "outgoing_cache_control",
    "request_allows",
    "response_cache_control",
    "should_refresh_early",
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
    NOT_OPTED_IN = "not-opted-in"
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
    BODY_EXTENSION = "body-extension"

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
    """Freshness lifetime and initial age of a response received at ``now``.

    RFC 9111 §4.2.1 (lifetime: ``s-maxage``, ``max-age``, then ``Expires`` minus ``Date``)
    and §4.2.3 (initial age: the larger of the apparent age and the first ``Age`` value).
    """
    date = parse_http_date(headers.get("date"), now=now)
    explicit = True
    if shared and cc.s_maxage is not None:
        lifetime: float = cc.s_maxage
    elif cc.max_age is not None:
        lifetime = cc.max_age
    elif "expires" in headers:
        # An invalid Expires (such as "0", or two of them) means already expired (§5.3).
        expires = parse_http_date(headers["expires"], now=now)
        lifetime = 0.0 if expires is None else max(0.0, expires - (now if date is None else date))
    else:
        lifetime, explicit = float(default_ttl), False
    age_value = parse_age(headers.get("age"))
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


# Final statuses whose caching requirements RFC 9110 §15 defines and this cache meets, for
# must-understand (RFC 9111 §5.2.2.3). 206 is absent (partial responses are never stored as
# complete ones), as is 304 (it freshens an entry; it is never one).
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308}
    | {400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415}
    | {416, 417, 421, 422, 426, 500, 501, 502, 503, 504, 505}
)
# Statuses that may be given a heuristic lifetime (RFC 9110 §15.1), 206 aside.
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
_NOT_STORED_AS_FINAL = frozenset({206, 304})


def response_cache_control(headers: Mapping[str, str], targeted: Sequence[str]) -> CacheControl:
    """The directives this cache obeys: the first targeted field present and valid
    (RFC 9213 §2.2; one that fails to parse is ignored, §2.1), else ``Cache-Control``."""
    for name in targeted:
        parsed = parse_targeted(headers.get(name))
        if parsed is not None:
            return parsed
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
    heuristic: bool = False,
    authorization: bool = False,
) -> Decision:
    """May this response be stored? (RFC 9111 §3; freshness is judged by the caller.)

    ``shared`` is false only in an identity's own scope, where ``private`` is allowed.
    ``strict`` also stores any final status (206 aside) that has explicit freshness, or,
    with ``heuristic``, a heuristic lifetime (§4.2.2); and applies §3.5 to requests with
    ``Authorization``. ``must-understand`` limits storing to understood statuses, and
    then overrides ``no-store`` (§5.2.2.3).
    """
    if not _status_storable(status, headers, cc, statuses, strict=strict, heuristic=heuristic):
        return _skip(Reason.STATUS)
    if cc.must_understand and status not in UNDERSTOOD_STATUSES:
        return _skip(Reason.STATUS)
    if "content-range" in headers:
        return _skip(Reason.CONTENT_RANGE)
    if request_cc.no_store:
        return _skip(Reason.REQUEST_NO_STORE)
    if cc.no_store and not cc.must_understand:
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


def _status_storable(
    status: int,
    headers: Mapping[str, str],
    cc: CacheControl,
    statuses: Collection[int],
    *,
    strict: bool,
    heuristic: bool,
) -> bool:
    """The configured statuses; in strict mode, any final status the origin made fresh."""
    if status in statuses:
        return True
    if not strict or not 200 <= status <= 599 or status in _NOT_STORED_AS_FINAL:
        return False
    if has_explicit_freshness(headers, cc):
        return True
    return heuristic and heuristically_fresh(status, headers, cc)


def heuristically_fresh(status: int, headers: Mapping[str, str], cc: CacheControl) -> bool:
    """Whether RFC 9111 §4.2.2 lets this response have a heuristic lifetime: no explicit
    freshness, a ``Last-Modified``, and a heuristically cacheable status or ``public``."""
    return (
        "last-modified" in headers
        and not has_explicit_freshness(headers, cc)
        and (status in HEURISTICALLY_CACHEABLE or cc.public)
    )


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


def heuristic_lifetime(
    headers: Mapping[str, str],
    now: float,
    *,
    status: int = 200,
    cc: CacheControl | None = None,
    cap: float | None = None,
) -> float | None:
    """10% of the time since ``Last-Modified`` (RFC 9111 §4.2.2), at most ``cap`` seconds;
    None when the response may not have a heuristic lifetime (see ``heuristically_fresh``)
    or its ``Last-Modified`` is not an HTTP-date."""
    if not heuristically_fresh(status, headers, cc or parse_cache_control(None)):
        return None
    modified = parse_http_date(headers.get("last-modified"), now=now)
    if modified is None:
        return None
    date = parse_http_date(headers.get("date"), now=now)
    lifetime = max(0.0, ((now if date is None else date) - modified) / 10)
    return lifetime if cap is None else min(lifetime, cap)


def lifetime_without_freshness(
    *,
    rule_ttl: int | None,
    status: int,
    negative_ttl: int,
    heuristic: float | None,
    default_ttl: int,
) -> float:
    """Lifetime of a response whose origin gave none: the rule's ``ttl``, negative caching
    for 404/410, the heuristic (RFC 9111 §4.2.2), else the default. The middleware and the
    CLI both use it, so ``routes`` shows what a request would get."""
    if rule_ttl is not None:
        return float(rule_ttl)
    if status in (404, 410) and negative_ttl:
        return float(negative_ttl)
    if heuristic is not None:
        return heuristic
    return float(default_ttl)


def is_worth_storing(freshness: Freshness, has_validators: bool) -> Decision:
    """A response that is neither fresh nor revalidatable would never be reused."""
    if freshness.revalidate and not has_validators:
        return _skip(Reason.NO_CACHE)
    if freshness.fresh_for - freshness.initial_age <= 0 and not has_validators:
        # Stale on arrival: still useful within the origin's RFC 5861 windows.
        windows = not freshness.must_revalidate and (
            freshness.stale_while_revalidate > 0 or freshness.stale_if_error > 0
        )
        if not windows:
            return _skip(Reason.STALE)
    return LOOKUP


def should_refresh_early(
    age: float,
    ttl: float,
    delta: float,
    beta: float = 1.0,
    rand: Callable[[], float] = random.random,
) -> bool:
    """The XFetch test: refresh now, before expiry, with a chance rising as expiry nears.

    True when ``age - delta * beta * ln(u) >= ttl``, ``u`` uniform in (0, 1], with ``delta``
    the seconds the last computation took and ``beta`` > 1 favouring earlier refreshes.
    See Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
    Prevention", VLDB 2015, which shows this spreads refreshes optimally.
    """
    u = 1.0 - rand()  # random() is in [0, 1); ln needs (0, 1]
    return age - delta * beta * math.log(u) >= ttl
