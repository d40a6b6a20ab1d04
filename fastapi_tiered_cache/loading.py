"""The read-through beyond L1: L2, the fleet lease, one computation, stale serving.

``DataCache.load`` answers fresh L1 hits itself; everything else comes here. The order
mirrors the HTTP miss path (``miss.miss``):

1. Ask L2, trying the fleet lease in the same round trip (the lookup also says the Redis
   time: when the fill started, for ``fills``).
2. A fresh entry is decoded for the caller. A stale one inside ``stale_while_revalidate``
   is returned while one background refresh runs (once per key in the process, and once
   across the fleet); inside ``stale_if_error`` it is kept as the fallback of step 3.
3. Concurrent callers in this process share one computation (``SingleFlight``); across
   processes, the holder of the fleet lease computes and the others wait for its wake-up
   and read what it stored. Waiters decode their own copy of the leader's value.
4. The result is stored (L2, its indexes and the lease's release in one round trip, then L1)
   unless a ``set``, ``delete`` or purge of its key or tags followed the fill's start, in
   this process or any other (``fills``: the purge markers in Redis).

Redis being down changes none of this but the cost: every step that needs it is a miss,
the lease is local, and the value is computed and returned.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .entry import DataEntry
from .exceptions import DecodeError
from .flights import LeaderFailed
from .leases import Lease
from .markers import FillStart
from .metrics import Event
from .stores.tiered import Lookup
from .values import dump, load

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from .data import DataCache

__all__ = ["Filled", "Load", "load_beyond_l1", "refresh_in_background", "written"]

logger = logging.getLogger("fastapi_tiered_cache")
Early = Lease | bool | None  # a lease taken with the lookup; False: another holds it


class Load:
    """One read-through: where, what to compute, and how to store and return it."""

    __slots__ = (
        "adapter",
        "compute",
        "early_refresh",
        "immutable",
        "key",
        "label",
        "refresh",
        "shared",
        "stale_if_error",
        "stale_while_revalidate",
        "tags",
        "tenant",
        "ttl",
    )

    def __init__(
        self,
        key: str,
        shared: bool,
        compute: Callable[[], Awaitable[Any]],
        *,
        tenant: str,
        ttl: float,
        tags: tuple[str, ...] = (),
        adapter: TypeAdapter[Any] | None = None,
        immutable: bool = False,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        early_refresh: float = 0.0,
        label: str = "data",
        refresh: bool = False,
    ) -> None:
        self.key = key
        self.shared = shared  # generations known: L2 may be used
        self.compute = compute
        self.tenant = tenant
        self.ttl = ttl
        self.tags = tags
        self.adapter = adapter
        self.immutable = immutable
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.early_refresh = early_refresh
        self.label = label
        self.refresh = refresh


class Filled:
    """What a computation produced: the stored form (for waiters to decode) and the
    value itself (for the caller that computed it)."""

    __slots__ = ("entry", "value")

    def __init__(self, entry: DataEntry, value: Any) -> None:
        self.entry = entry
        self.value = value


def written(key: str) -> str:
    """The purge-log name of one data key (set, deleted or purged)."""
    return f"d:{key}"


async def load_beyond_l1(data: DataCache, job: Load, local: DataEntry | None) -> Any:
    """``job``'s value when L1 has no fresh copy (``local``: its stale copy, if any).

    Concurrent callers in this process share one resolution, the L2 lookup included: only
    the leader asks Redis, so only it can hold the fleet lease (a lease taken by a caller
    that then waits on another here would hold up every process until it expired).
    """
    if not data.cache.settings.coalesce:
        return (await _resolve(data, job, local)).value
    flight_key = job.key if not job.refresh else f"{job.key}\0refresh"
    try:
        filled, leader = await data.flight.run(flight_key, lambda: _resolve(data, job, local))
    except LeaderFailed:  # its error is not ours to inherit: resolve on our own
        filled, leader = await _resolve(data, job, local, coordinate=False), True
    if leader:
        return filled.value
    data.cache.record(Event.COALESCED, route=job.label, tenant=job.tenant)
    return data.value_of(filled.entry, job.adapter, job.immutable)


async def _resolve(
    data: DataCache, job: Load, local: DataEntry | None, *, coordinate: bool = True
) -> Filled:
    early: Early = None
    looked: Lookup | None = None
    entry = None if job.refresh else local
    if not job.refresh and job.shared:
        # L2 may hold a fresher copy; without one (or without L2), the stale local copy
        # is still good for the stale windows within its L1 life.
        remote, early, looked = await _lookup(data, job, lease=coordinate)
        entry = remote if remote is not None else entry
    if entry is not None:
        staleness = -entry.ttl(data.cache.clock())
        if staleness < 0 or staleness <= entry.stale_while_revalidate:
            try:
                value = data.value_of(entry, job.adapter, job.immutable)
            except DecodeError as exc:
                await data.drop(job.key, exc)
                entry = None
            else:
                if isinstance(early, Lease) and data.cache.fleet is not None:
                    await data.cache.fleet.release(early)  # taken with the lookup, unused
                _count(data, job, Event.HIT if staleness < 0 else Event.STALE)
                if staleness >= 0:
                    data.refresh_later(job)
                return Filled(entry, value)
    fallback = None
    if entry is not None and -entry.ttl(data.cache.clock()) <= entry.stale_if_error:
        fallback = entry
    return await _compute(data, job, early, fallback, looked, coordinate=coordinate)


def _count(data: DataCache, job: Load, event: Event) -> None:
    if event is Event.HIT:
        data.cache.record(event, tier="l2", route=job.label, tenant=job.tenant)
    elif event is Event.STALE:
        data.cache.record(event, reason="while-revalidate", route=job.label, tenant=job.tenant)
    else:
        data.cache.record(event, reason="miss", route=job.label, tenant=job.tenant)


async def _lookup(
    data: DataCache, job: Load, *, lease: bool
) -> tuple[DataEntry | None, Early, Lookup]:
    """L2 (L1's copy, if any, was stale), trying the fleet lease in the same round trip."""
    cache = data.cache
    fleet = cache.fleet
    token = None
    if lease and fleet is not None and cache.settings.coalesce and cache.l2_usable:
        token = fleet.new_token()
    request = None if fleet is None or token is None else fleet.lease_request(job.key, token)
    looked = await cache.store.find_remote(job.key, request)
    if looked.found is not None:
        record = looked.found[0]
        return (record if isinstance(record, DataEntry) else None), None, looked
    if looked.lease is None or token is None:
        return None, None, looked
    return None, (Lease(job.key, token) if looked.lease else False), looked


async def _compute(
    data: DataCache,
    job: Load,
    early: Early,
    fallback: DataEntry | None,
    looked: Lookup | None,
    *,
    coordinate: bool = True,
) -> Filled:
    cache = data.cache
    fleet = cache.fleet if coordinate and job.shared and cache.settings.coalesce else None
    if fleet is not None and not (cache.l2_usable or isinstance(early, Lease)):
        fleet = None  # the breaker is open: coalesce in this process only
    lease: Lease | None = None
    if fleet is not None:
        if isinstance(early, Lease):
            lease = fleet.adopt(early)
        elif early is None:
            lease = await fleet.acquire(job.key)
        # Woken by the holder, or the lease was taken after our lookup (so its last holder
        # may have stored the value since): look again first.
        again = lease is None or (early is None and not job.refresh)
        if again and (lease is not None or await fleet.wait_for(job.key)):
            found = await _fresh_remote(data, job)
            if found is not None:
                if lease is not None:
                    await fleet.release(lease)
                return found
            looked = None  # the fill starts now, after that second look
    released = False
    try:
        filled, released = await _run_and_store(data, job, lease, fallback, looked)
    finally:
        if lease is not None and fleet is not None and not released:
            await fleet.release(lease)
    return filled


async def _fresh_remote(data: DataCache, job: Load) -> Filled | None:
    found = await data.cache.store.lookup_remote(job.key)
    if not isinstance(found, DataEntry) or not found.is_fresh(data.cache.clock()):
        return None
    try:
        return Filled(found, data.value_of(found, job.adapter, job.immutable))
    except DecodeError:
        return None


async def fill_start(data: DataCache, looked: Lookup | None) -> FillStart:
    """When a fill starts reading: its lookup's Redis time, else asked now (``fills``)."""
    fills = data.cache.invalidator.fills
    if looked is not None and looked.server_us is not None:
        return fills.start(looked.read_at, looked.server_us)
    return await fills.begin(data.cache.store.coherence.timer())


async def _run_and_store(
    data: DataCache,
    job: Load,
    lease: Lease | None,
    fallback: DataEntry | None,
    looked: Lookup | None,
) -> tuple[Filled, bool]:
    """Compute the value and store it; returns it and whether the store released the lease."""
    cache = data.cache
    start = await fill_start(data, looked) if job.shared else None
    started = cache.invalidator.timer()
    _count(data, job, Event.MISS)
    try:
        value = await job.compute()
    except Exception as exc:
        if fallback is None:
            raise
        logger.warning(
            "computing %s failed (%s); serving stale",
            job.label,
            type(exc).__name__,
            extra={"event": "sie"},
        )
        cache.record(Event.STALE, reason="if-error", route=job.label, tenant=job.tenant)
        return Filled(fallback, data.value_of(fallback, job.adapter, job.immutable)), False
    seconds = cache.invalidator.timer() - started
    entry = data.entry(
        dump(value, job.adapter),
        job.ttl,
        job.tags,
        stale_while_revalidate=job.stale_while_revalidate,
        stale_if_error=job.stale_if_error,
        compute_seconds=seconds,
        label=job.label,
    )
    if job.adapter is None:  # untyped: every caller gets plain data, this one too
        value = load(entry.body, None)
    if job.ttl <= 0:
        return Filled(entry, value), False
    released = await data.write(job.key, job.tenant, entry, start, lease)
    return Filled(entry, value), released


def refresh_in_background(data: DataCache, job: Load) -> None:
    """Recompute ``job`` once in the background (per key in this process; with the fleet
    lease, once across the fleet). A failure leaves the entry as it was."""
    cache = data.cache

    async def work() -> None:
        fleet = cache.fleet if job.shared and cache.l2_usable else None
        lease = await fleet.acquire(job.key) if fleet is not None else None
        if fleet is not None and lease is None:
            return  # another process is refreshing it
        released = False
        try:
            _, released = await _run_and_store(data, job, lease, None, None)
        finally:
            if lease is not None and fleet is not None and not released:
                await fleet.release(lease)

    cache.run_in_background(job.key, work)
