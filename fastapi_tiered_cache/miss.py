"""A miss: one origin call per key for concurrent misses, in the process (a flight,
``flights.py``) and across the fleet (a lease in Redis, ``leases.py``).

The lease is elected here rather than in the store because the choice depends on the
request: a lease the lookup already took, an entry stored while this request waited, or
a holder that took longer than ``coalesce_wait`` (then this request calls the origin).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from .cache import TieredCache
from .entry import CachedResponse
from .flights import LeaderFailed
from .keys import vary_values
from .leases import FleetLease, Lease
from .metrics import Event
from .origin import Fetch
from .tasks import after_the_response

if TYPE_CHECKING:
    from .responder import Responder

__all__ = ["elect", "look_again", "miss"]


async def miss(
    responder: Responder, fetch: Fetch, scope: Scope, receive: Receive, send: Send
) -> None:
    """Go to the origin once per key for concurrent misses, in-process and fleet-wide.

    Requests waiting on another's origin call are answered from its stored result
    (same key, so same tenant, identity and variant); when that result is not storable,
    or the other call failed, each goes to the origin itself.
    """
    cache = responder.cache
    key = fetch.key
    if not cache.settings.coalesce or key in cache.hit_for_miss:
        await fetch(scope, receive, send)
        return
    responded = False

    async def compute() -> CachedResponse | None:
        nonlocal responded
        fleet = cache.fleet if cache.l2_usable or isinstance(fetch.early, Lease) else None
        lease: Lease | None = None
        if fleet is not None:  # else: the breaker is open, coalesce in-process only
            outcome = await elect(cache, fleet, fetch)
            if isinstance(outcome, CachedResponse):
                return outcome
            lease = fetch.lease = outcome
        try:
            responded = True
            stored = await fetch(scope, receive, send)
        finally:
            if lease is not None and fleet is not None and not fetch.lease_released:
                with after_the_response():
                    await fleet.release(lease)
        if stored is None:
            cache.hit_for_miss.remember(key)
        return stored

    try:
        entry, _leader = await cache.flight.run(key, compute)
    except LeaderFailed:
        entry = None
    if responded:
        return
    if entry is not None and entry.matches(
        vary_values(fetch.info, [name for name, _ in entry.vary])
    ):
        cache.record(Event.COALESCED, route=entry.route, tenant=fetch.tenant)
        params = ("fwd=miss", "collapsed", f"ttl={max(0, int(entry.ttl(cache.clock())))}")
        await responder.replay(
            fetch.info, entry, None, send, rule=fetch.rule, x_cache="MISS", params=params
        )
        return
    await fetch(scope, receive, send)


async def elect(
    cache: TieredCache, fleet: FleetLease, fetch: Fetch
) -> Lease | CachedResponse | None:
    """Which process calls the origin for ``fetch.key``: a lease to compute under (a
    local one when Redis cannot be asked), the entry another process stored while we
    waited, or None (the holder took longer than ``coalesce_wait``: compute anyway).

    A holder whose store was refused (a purge raced it) or that failed leaves nothing:
    its waiters elect a holder once more rather than all calling the origin.
    """
    key = fetch.key
    early, fetch.early = fetch.early, None
    if isinstance(early, Lease):  # taken atomically with a lookup that missed
        return fleet.adopt(early)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + fleet.wait
    for _ in range(2):
        if early is None:
            lease = await fleet.acquire(key)
            if lease is not None:
                # Taken after our lookup: the previous holder may have stored it since.
                found = await look_again(cache, fetch) if lease.fleet else None
                if found is not None:
                    await fleet.release(lease)
                    return found
                return lease
        early = None
        if not await fleet.wait_for(key, max(0.0, deadline - loop.time())):
            return None  # the holder took too long, or Redis went away: compute
        found = await look_again(cache, fetch)
        if found is not None:
            return found
    return None


async def look_again(cache: TieredCache, fetch: Fetch) -> CachedResponse | None:
    """The entry in L2 if it is fresh now (after a wait, or a lease taken late). The
    lookup is the fill's new start if the origin is called next."""
    looked = await cache.store.find(fetch.key)
    if looked.found is None:
        fetch.looked = looked
        return None
    record = looked.found[0]
    if isinstance(record, CachedResponse) and record.is_fresh(cache.clock()):
        return record
    return None
