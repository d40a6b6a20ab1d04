"""Storing a fill, after the last byte was handed to the server (the client never waits
for Redis): to Redis unless a purge raced the fill, then to L1 unless this process heard
such a purge, then the indexes of its path and tags.

A response that varies on headers the primary key does not cover is stored under a key
that does, with a Vary pointer left at the primary key for later lookups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .entry import CachedResponse, VaryPointer
from .exceptions import StoreUnavailable
from .invalidation import index_names
from .metrics import Event

if TYPE_CHECKING:
    from .origin import Fetch

__all__ = ["store_fill", "store_remote"]


async def store_fill(fetch: Fetch, record: CachedResponse) -> bool:
    """Store in Redis unless a purge raced this fill (``markers``), then in L1 unless
    this process heard such a purge. True when stored (in Redis, or in L1 alone while
    Redis is not usable): then waiters on the fill are answered with ``record``."""
    cache = fetch.cache
    store = cache.store
    ttl = record.remaining_life(cache.clock())
    start = fetch.start
    if ttl <= 0 or start is None:
        return False
    names = tuple(name for name, _ in record.vary)
    key, pointer = fetch.primary, None
    if names != fetch.config_names:
        # The response varies on headers the primary key does not cover: store it under
        # a key that does, and leave a pointer at the primary key for later lookups.
        key = cache.key_for(fetch.keyed, fetch.identity, record.vary, fetch.generation)
        pointer = VaryPointer(names)
    invalidator = cache.invalidator
    index = index_names(fetch.identity.tenant, fetch.info.path, record.tags)
    if invalidator.heard_since(index, start.sequence):
        return False  # purged while we fetched: what we hold may be the old version
    entries: list[tuple[str, CachedResponse | VaryPointer, float]] = [(key, record, ttl)]
    if pointer is not None:
        entries.append((fetch.primary, pointer, ttl))
    if fetch.generation is not None and not await store_remote(fetch, entries, key, index):
        return False
    cache.record(Event.STORE, route=record.route, tenant=fetch.identity.tenant)
    if invalidator.seen_since(index, start.sequence):
        # A purge heard while storing, or the bus lost or back since the fill began
        # (purges may have gone unheard): Redis judged the fill by its markers, L1
        # cannot tell, so it keeps nothing.
        return True
    for entry_key, entry, entry_ttl in entries:
        store.set_local(entry_key, entry, entry_ttl, start.read_at)
    invalidator.record_local(key, index)
    return True


async def store_remote(
    fetch: Fetch,
    entries: list[tuple[str, CachedResponse | VaryPointer, float]],
    key: str,
    index: list[str],
) -> bool:
    """The entries and their indexes to Redis, the fleet lease released in the same
    round trip where it can be; False when a purge raced the fill (nothing stored).
    True too when Redis is not usable now: L1 alone keeps it, as coherent as its bus."""
    cache = fetch.cache
    invalidator = cache.invalidator
    start = fetch.start
    info = fetch.info
    host = info.headers.get("host", "").strip().lower()
    origin = f"{info.scope.get('scheme', 'http')}://{host}" if host else None
    if invalidator.client is None:
        invalidator.fills.origin_commands(origin)  # without Redis, this process's are all
    if invalidator.client is None or not cache.l2_usable or start is None:
        return True
    then = []
    fleet, lease = cache.fleet, fetch.lease
    if lease is not None and fleet is not None and invalidator.fills.atomic(start):
        release = fleet.release_command(lease)
        if release is not None:
            then.append(release)
            fetch.lease_released = True
    try:
        return await invalidator.fills.fill(entries, key, index, start, then, origin)
    except StoreUnavailable:
        fetch.lease_released = False  # the pipeline did not run: release it apart
        invalidator.fills.recorded.discard(origin or "")  # nor did the origin's recording
        return True  # counted by the store; L1 only
