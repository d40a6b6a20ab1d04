"""Look up: L1 (a dictionary read, no await), then L2 (one round trip shared by every
request of the process asking for the same key at the same moment).

A miss in both tiers has already tried to take the fleet lease on its key, in the same
round trip as the lookup, so that a miss costs one round trip before the origin is
called. A Vary pointer at the primary key is followed at most once.
"""

from __future__ import annotations

from typing import Literal

from .cache import TieredCache
from .entry import CachedResponse, VaryPointer
from .flights import LeaderFailed
from .identity import Identity
from .keys import vary_values
from .leases import Lease
from .memo import ASKED_L2
from .request import RequestInfo
from .stores import Tier
from .stores.tiered import Lookup

__all__ = ["Early", "Found", "look_up", "look_up_one"]

# The fleet lease as a lookup left it: ours (a ``Lease``), held by another process
# (``False``), or not asked (``None``).
Early = Lease | Literal[False] | None
# What ``look_up`` found: the key and Vary names it ended on, the entry and its tier (or
# None), the fleet lease, and the last lookup (its time is the start of a fill).
Found = tuple[str, tuple[str, ...], CachedResponse | VaryPointer | None, Tier | None, Early, Lookup]


async def look_up(
    cache: TieredCache,
    info: RequestInfo,
    identity: Identity,
    generation: str | None,
    key: str,
    names: tuple[str, ...],
) -> Found:
    """Find the entry for a request, following a Vary pointer at most once.

    When it is in neither tier, the fleet lease on its key was tried in the same round
    trip (see ``Early``), so that a miss costs one round trip before the origin. The
    ``Lookup`` says when the (last) lookup was made: the start of a fill.
    """
    looked, early = await look_up_one(cache, key, generation)
    if looked.found is None:
        return key, names, None, None, early, looked
    record, tier = looked.found
    if isinstance(record, VaryPointer):
        names = tuple(sorted(set(names) | set(record.names)))
        key = cache.key_for(info, identity, vary_values(info, names), generation)
        looked, early = await look_up_one(cache, key, generation)
        if looked.found is None or isinstance(looked.found[0], VaryPointer):
            return key, names, None, None, early, looked
        record, tier = looked.found
    return key, names, record, tier, None, looked


async def look_up_one(cache: TieredCache, key: str, generation: str | None) -> tuple[Lookup, Early]:
    """L1, else one L2 lookup shared by every request of this process looking for
    ``key`` at the same moment (a burst of a fresh process costs Redis one round trip
    and one connection per key, not one per request). The lookup also tries to take
    the fleet lease when the entry is absent; only the request that made it holds it.
    """
    store = cache.store
    local = store.lookup_local(key)
    if local is not None:
        return Lookup((local, Tier.L1)), None
    if ASKED_L2.get() == key:  # the memo found nothing in L2 a moment ago
        return Lookup(None, read_at=store.coherence.timer()), None
    fleet = cache.fleet
    token = None
    if (
        fleet is not None
        and generation is not None
        and cache.settings.coalesce
        and key not in cache.hit_for_miss
        and cache.l2_usable
    ):
        token = fleet.new_token()

    async def look() -> Lookup:
        lease = None if fleet is None or token is None else fleet.lease_request(key, token)
        return await store.find(key, lease)

    try:
        looked, leader = await cache.lookups.run(key, look)
    except LeaderFailed:
        looked, leader = await look(), True
    if looked.found is not None or looked.lease is None:
        return looked, None
    if not looked.lease:
        return looked, False
    return looked, Lease(key, token) if leader and token is not None else None
