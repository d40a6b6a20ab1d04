"""Answer what the lookup found: replay a fresh entry (and remember the request in the
memo), serve a stale one while it refreshes, revalidate it, or go to the origin.

The order of the checks is RFC 9111's: a stored response is reused only when its Vary
members match (§4.1) and it is fresh (§4.2), or stale within what the origin allowed
(RFC 5861); otherwise it is revalidated when it has validators (§4.3), and the origin
answers in every other case.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from .cache import TieredCache
from .cache_control import EMPTY
from .entry import CachedResponse, VaryPointer
from .keys import vary_values
from .memo import is_plain
from .metrics import Event
from .miss import miss
from .origin import Fetch, NoBody, discard, route_template
from .policy import request_allows, should_refresh_early
from .stores import Tier

if TYPE_CHECKING:
    from .responder import Responder

__all__ = ["answer", "gateway_timeout", "refresh", "refresh_due"]


async def answer(
    responder: Responder,
    fetch: Fetch,
    record: CachedResponse | VaryPointer | None,
    tier: Tier | None,
    version: int,
    started: float,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Serve what the lookup found (fresh, stale, revalidated) or go to the origin."""
    cache = responder.cache
    info, rule, identity, generation = fetch.info, fetch.rule, fetch.identity, fetch.generation
    key, names = fetch.key, fetch.names
    honour = cache.settings.honour_request_cache_control and fetch.request_cc is not EMPTY
    if isinstance(record, CachedResponse):
        now = cache.clock()
        if not record.matches(vary_values(info, [name for name, _ in record.vary])):
            fetch.forward = "vary-miss"
        elif record.is_fresh(now) and (not honour or request_allows(fetch.request_cc, record, now)):
            memo = responder.memo
            if memo is not None and generation is not None and is_plain(info, rule, cache):
                learnt = (*names, *fetch.credential_headers, *(n for n, _ in record.vary))
                memo.remember(scope, key, version, identity.tenant, learnt)
            await responder.replay(info, record, tier, send, rule=rule, tenant=identity.tenant)
            if started:
                cache.observe(perf_counter() - started, route=record.route, outcome="hit")
            if cache.settings.early_refresh and refresh_due(cache, record, now):
                refresh(cache, fetch, scope)
            return
        else:
            staleness = -record.ttl(now)
            swr = record.stale_while_revalidate
            if not record.revalidate and swr and 0 <= staleness <= swr:
                params = ("hit", "fwd=stale", f"ttl={-int(staleness)}")
                await responder.replay(
                    info, record, tier, send, rule=rule, x_cache="STALE", params=params
                )
                cache.record(
                    Event.STALE,
                    reason="while-revalidate",
                    route=record.route,
                    tenant=identity.tenant,
                )
                if started:
                    cache.observe(perf_counter() - started, route=record.route, outcome="stale")
                refresh(cache, fetch, scope)
                return
            if staleness <= record.stale_if_error:
                fetch.fallback = record
            if honour and fetch.request_cc.only_if_cached:
                await gateway_timeout(responder, send)
                return
            if record.can_revalidate:
                await fetch.revalidate(record, scope, receive, send)
                return
            fetch.forward = "stale"
    if honour and fetch.request_cc.only_if_cached:
        await gateway_timeout(responder, send)  # RFC 9111 §5.2.1.7
        return
    await miss(responder, fetch, scope, receive, send)
    if started:  # time in the cache on a miss: everything but the app itself
        spent = perf_counter() - started - fetch.app_seconds
        cache.observe(spent, route=route_template(scope), outcome="miss")


def refresh_due(cache: TieredCache, record: CachedResponse, now: float) -> bool:
    """XFetch: refresh a hot entry early, more likely the closer it is to expiry."""
    delta = cache.compute_seconds.get(record.route, 0.05)
    beta = cache.settings.early_refresh
    return should_refresh_early(record.age(now), record.fresh_for, delta, beta)


def refresh(cache: TieredCache, fetch: Fetch, scope: Scope) -> None:
    """Refresh an entry in the background, once per key in this process (and, with a
    lease, once across the fleet), with the original request's scope."""
    background = {**scope, "headers": list(scope["headers"])}

    async def work() -> None:
        lease = await cache.fleet.acquire(fetch.key) if cache.fleet is not None else None
        if cache.fleet is not None and lease is None:
            return  # another process is refreshing it
        try:
            await fetch.app_through(background, NoBody(), discard, None)
        finally:
            if lease is not None and cache.fleet is not None:
                await cache.fleet.release(lease)

    cache.run_in_background(fetch.key, work)


async def gateway_timeout(responder: Responder, send: Send) -> None:
    """``only-if-cached`` and nothing usable stored: 504 (RFC 9111 §5.2.1.7)."""
    headers = [
        (b"content-length", b"0"),
        *responder.marks("MISS", "fwd=miss", "detail=only-if-cached"),
    ]
    await send({"type": "http.response.start", "status": 504, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
