"""The entry a captured origin response becomes: its lifetime (the origin's, else the
rule's, negative caching, the heuristic, the default), its stale windows, its tags and
the Vary names it is keyed by; and the entry a ``304`` freshens.

Pure of I/O: the clock is the cache's, the rest is the response and the route's rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .cache import TieredCache
from .cache_control import CacheControl, parse_http_date, parse_vary
from .entry import CachedResponse
from .keys import vary_values
from .policy import (
    Freshness,
    Reason,
    freshness_of,
    heuristic_lifetime,
    is_worth_storing,
    lifetime_without_freshness,
    response_cache_control,
)
from .request import route_template
from .settings import RouteRule
from .tags import fill_tags, rule_params

if TYPE_CHECKING:
    from .origin import Fetch

__all__ = ["build_entry", "default_ttl", "entry_tags", "freshened_entry", "stale_windows"]

_MAX_TAGS = 64


def build_entry(
    fetch: Fetch,
    status: int,
    headers: Mapping[str, str],
    cc: CacheControl,
    raw_headers: Iterable[tuple[bytes, bytes]],
    chunks: Sequence[bytes],
) -> CachedResponse | Reason:
    """The entry for a response (``headers`` joined by name, ``raw_headers`` as sent), or
    the reason it is not worth storing (no lifetime and no validators)."""
    cache = fetch.cache
    now = cache.clock()
    freshness = freshness_of(
        headers,
        cc,
        default_ttl=default_ttl(cache, fetch.rule, status, headers, cc, now),
        shared=True,  # s-maxage applies to us in every scope
        now=now,
    )
    etag = headers.get("etag", "")
    last_modified = parse_http_date(headers.get("last-modified"), now=now)
    worth = is_worth_storing(freshness, bool(etag) or last_modified is not None)
    if not worth.cacheable:
        return worth.reason
    swr, sie = stale_windows(cache, fetch.rule, freshness)
    keep = cache.settings.keep_stale if (etag or last_modified is not None) else 0.0
    said = parse_vary(headers.get("vary")) or ()
    implied = cache.visibility.vary(fetch.info.scope, fetch.responder.app)
    all_names = tuple(sorted(set(fetch.names) | {*said, *implied}))
    return CachedResponse.from_response(
        status,
        raw_headers,
        b"".join(chunks),
        stored_at=now,
        fresh_for=freshness.fresh_for,
        initial_age=freshness.initial_age,
        revalidate=freshness.revalidate,
        etag=etag,
        last_modified=last_modified,
        vary=vary_values(fetch.info, all_names),
        stale_for=max(swr, sie, keep),
        stale_while_revalidate=swr,
        stale_if_error=sie,
        tags=entry_tags(fetch, headers),
        route=route_template(fetch.info.scope),
        hidden=cache.hidden_headers,
    )


def stale_windows(
    cache: TieredCache, rule: RouteRule | None, freshness: Freshness
) -> tuple[float, float]:
    """Seconds the entry may be served stale while refreshing / when the origin fails:
    the origin's RFC 5861 directives, else the rule's, else the settings'. Never for a
    response that must be revalidated."""
    if freshness.must_revalidate or freshness.revalidate:
        return 0.0, 0.0
    settings = cache.settings
    swr = freshness.stale_while_revalidate or (
        rule.stale_while_revalidate
        if rule and rule.stale_while_revalidate is not None
        else settings.stale_while_revalidate
    )
    sie = freshness.stale_if_error or (
        rule.stale_if_error if rule and rule.stale_if_error is not None else settings.stale_if_error
    )
    return float(swr), float(sie)


def default_ttl(
    cache: TieredCache,
    rule: RouteRule | None,
    status: int,
    headers: Mapping[str, str],
    cc: CacheControl,
    now: float,
) -> float:
    """Lifetime when the origin gives none: the rule's, negative caching, the heuristic
    (when enabled), else the default."""
    settings = cache.settings
    heuristic = (
        heuristic_lifetime(headers, now, status=status, cc=cc, cap=settings.heuristic_max_ttl)
        if settings.uses_heuristic
        else None
    )
    return lifetime_without_freshness(
        rule_ttl=rule.ttl if rule is not None else None,
        status=status,
        negative_ttl=settings.negative_ttl,
        heuristic=heuristic,
        default_ttl=settings.default_ttl,
    )


def entry_tags(fetch: Fetch, headers: Mapping[str, str]) -> tuple[str, ...]:
    """Tags from the route's rule (filled from path parameters) and surrogate headers."""
    found: set[str] = set()
    rule = fetch.rule
    if rule is not None and rule.tags:
        scope = fetch.info.scope
        params = scope.get("path_params") or rule_params(rule, fetch.info.path)
        found.update(fill_tags(rule.tags, params))
    for name in fetch.cache.settings.surrogate_key_headers:
        value = headers.get(name)
        if value:
            found.update(part for part in value.replace(",", " ").split() if part)
    return tuple(sorted(found))[:_MAX_TAGS]


def freshened_entry(
    cache: TieredCache, stale: CachedResponse, headers_304: Iterable[tuple[bytes, bytes]]
) -> CachedResponse:
    """A stored entry freshened by a ``304``'s headers (RFC 9111 §4.3.4)."""
    now = cache.clock()
    headers = stale.updated_headers(headers_304)
    merged = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    cc = response_cache_control(merged, cache.settings.targeted_headers)
    freshness = freshness_of(merged, cc, default_ttl=stale.fresh_for, shared=True, now=now)
    hidden = cache.hidden_headers
    return stale.freshened(
        [(name, value) for name, value in headers if name not in hidden],
        stored_at=now,
        fresh_for=freshness.fresh_for,
        initial_age=freshness.initial_age,
        revalidate=freshness.revalidate,
    )
