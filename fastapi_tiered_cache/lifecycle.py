"""The life of a ``TieredCache`` in its event loops: start-up (what is active, the bus,
the fleet reports, the first connection), shutdown, background refreshes, and what the
invalidation bus says.

Functions of a ``TieredCache`` (its methods of the same names call them), kept apart from
its composition (``cache.py``) because they are about time and event loops, not about
what the cache is made of: everything here belongs to the loop that runs it, and a
process may run several loops one after the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .announcements import RESET
from .fleet import read_fleet, summarize
from .logs import announce
from .stores import RedisStore, direct
from .stores.loops import asyncio_running, running_client, warn_not_asyncio
from .stores.wire import wire_of
from .tasks import finish, within

if TYPE_CHECKING:
    from .cache import TieredCache

__all__ = [
    "close",
    "ensure_started",
    "fleet_stats",
    "gauges",
    "on_bus_change",
    "on_bus_message",
    "publish",
    "run_in_background",
    "start_background",
    "startup",
    "tiers",
    "warm_up",
]

logger = logging.getLogger("fastapi_tiered_cache")


def tiers(cache: TieredCache) -> str:
    """Human-readable description of the active tiers."""
    tiers = (("L1", cache.store.l1), ("L2", cache.store.l2))
    names = [name for name, tier in tiers if tier is not None]
    return " + ".join(names) or "none"


def startup(cache: TieredCache) -> None:
    """Say once which tiers are active (called at application start-up)."""
    if cache.announced:
        return
    cache.announced = True
    if not cache.settings.enabled:
        announce("fastapi-tiered-cache disabled (TIERED_CACHE_ENABLED=false)")
    elif cache.store.l2 is None:
        announce("fastapi-tiered-cache: no TIERED_CACHE_REDIS_URL, running L1 only")
    else:
        announce("fastapi-tiered-cache: tiers %s", tiers(cache))
    if not cache.settings.caches_identities:
        announce(
            "fastapi-tiered-cache: responses to requests with credentials are not cached"
            " (set TIERED_CACHE_SECRET_KEY to cache them per identity)"
        )


def start_background(cache: TieredCache) -> None:
    """Start the invalidation bus and open the L2 connection (idempotent). Called at
    application start-up, in the loop that will serve: both belong to it. Outside
    asyncio (trio) there is no L2, so nothing to start."""
    if cache.store.l2 is None:
        return
    if not asyncio_running():
        warn_not_asyncio()
        return
    cache.bus_loop = asyncio.get_running_loop()
    if cache.bus is not None:
        cache.bus.start()
    if cache.reporter is not None:
        cache.reporter.start()
    task = cache.bus_loop.create_task(warm_up(cache))
    cache.background.add(task)
    task.add_done_callback(cache.background.discard)


def ensure_started(cache: TieredCache) -> None:
    """``start_background`` on first use in an event loop that no lifespan started
    (``uvicorn --lifespan off``, a bare ``httpx.ASGITransport``): without the bus, L1
    cannot be trusted and every hit takes the slow path. Costs one comparison when
    started already; outside asyncio (trio) nothing starts."""
    loop = asyncio._get_running_loop()
    if loop is cache.bus_loop or loop is None or cache.store.l2 is None:
        return
    if not cache.start_on_first_use:
        return
    if not cache.said_lazy:
        cache.said_lazy = True
        announce(
            "fastapi-tiered-cache: started the invalidation bus on first use (the app"
            " runs without lifespan events); hits are served from L1 once it is heard"
        )
    start_background(cache)


async def warm_up(cache: TieredCache) -> bool:
    """Connect to L2 (and learn a cluster's slots) within the connect timeout, not the
    per-request budget, so the first requests do not pay for a slow handshake."""
    l2 = cache.store.l2
    if not isinstance(l2, RedisStore):
        return False
    client = running_client(l2.client)
    try:
        await within(client.ping(), 2 * cache.settings.redis_connect_timeout)
        if wire_of(client) is not None:  # and the wire, which the hot commands share
            await within(direct.send(client, "PING"), 2 * cache.settings.redis_connect_timeout)
    except Exception as exc:  # Redis down at start-up is a degraded start, not a failure
        logger.warning("L2 not reachable at start-up: %s", exc, extra={"event": "warm_up"})
        return False
    return True


async def close(cache: TieredCache) -> None:
    """Stop the bus, close the Redis connections and drop L1 (at application shutdown).

    Only this loop's tasks and connections are touched: another loop's died with it,
    or will be closed by it. The cache stays usable, as a test suite that starts the
    app again (a new ``with TestClient(app)``) expects. Every background task (bus,
    pings, lease renewals and wake-ups, refreshes) is given about a second to end, all
    at once, Redis reachable or not; then the connections are closed, within another
    second at most.
    """
    cache.refreshing.clear()
    if not asyncio_running():  # trio: nothing but L1 was used
        cache.background.clear()
        if cache.store.l1 is not None:
            await cache.store.l1.close()
        return
    loop = asyncio.get_running_loop()
    if cache.bus_loop is loop:
        cache.bus_loop = None  # used again in this loop: started again on first use
    tasks = [task for task in cache.background if task.get_loop() is loop]
    cache.background.clear()
    stopping = [finish(tasks)]
    fleet = cache.renew_fleet()  # a closed lease never works again
    if fleet is not None:
        stopping.append(fleet.close())
    if cache.bus is not None:
        stopping.append(cache.bus.close())
    if cache.reporter is not None:
        stopping.append(cache.reporter.close())
    await asyncio.gather(*stopping)
    for exporter in cache.exporters:
        close = getattr(exporter, "close", None)
        if close is not None:
            close()
    cache.background.clear()
    await cache.invalidator.close()
    closing = asyncio.ensure_future(cache.store.close())
    done, _ = await asyncio.wait({closing}, timeout=1.0)
    if not done:  # a connection that cannot even be closed: abandon it, never hang
        await finish([closing], timeout=0.1)


def gauges(cache: TieredCache) -> dict[str, int]:
    l1 = cache.store.l1
    return {
        "l1_entries": 0 if l1 is None else len(l1),
        "l1_bytes": 0 if l1 is None else l1.current_bytes,
        "l2_faults": cache.store.faults,
    }


async def fleet_stats(cache: TieredCache) -> dict[str, Any]:
    """Every process's counters summed, through Redis (``fleet.read_fleet``); without
    Redis (or reports), this process's own. Raises ``StoreUnavailable``."""
    reporter = cache.reporter
    own = {**cache.stats.export(), **gauges(cache)}
    if reporter is None:
        return summarize([own])
    await reporter.report()  # ours as of now, whatever the interval
    return await read_fleet(
        reporter.client, cache.settings.namespace, cache.store.run_unguarded, reporter.every
    )


def run_in_background(cache: TieredCache, key: str, work: Callable[[], Awaitable[None]]) -> bool:
    """Run one refresh of ``key`` in the background, bounded per process; False if not."""
    if key in cache.refreshing or len(cache.refreshing) >= cache.settings.max_background_refreshes:
        return False
    if not asyncio_running():  # no task outlives a request under trio: no refresh
        warn_not_asyncio()
        return False
    cache.refreshing.add(key)

    async def run() -> None:
        try:
            await work()
        except Exception as exc:  # a failed refresh leaves the stale entry in place
            logger.warning("background refresh failed: %s", exc, extra={"event": "refresh"})
        finally:
            cache.refreshing.discard(key)

    task = asyncio.get_running_loop().create_task(run())
    cache.background.add(task)
    task.add_done_callback(cache.background.discard)
    return True


# -- what the bus says -------------------------------------------------------------


def on_bus_change(cache: TieredCache) -> None:
    # Whatever we held may have been purged while we could not hear: start over.
    if cache.store.l1 is not None:
        cache.store.l1.clear()
    cache.invalidator.reset()
    cache.generations.forget()


def on_bus_message(cache: TieredCache, kind: str, data: Any) -> None:
    if kind == "purge":
        cache.invalidator.on_purge_message(data)
    elif kind == RESET:  # another process's purges went unannounced too long
        on_bus_change(cache)
    elif kind == "gen" and isinstance(data, list) and len(data) == 2:
        name, value = data
        if isinstance(name, str) and isinstance(value, int):
            cache.generations.apply(name, value)


async def publish(cache: TieredCache, kind: str, data: Any) -> None:
    """A bus message, when there is a bus and this is asyncio (raises its errors)."""
    if cache.bus is not None and asyncio_running():
        await cache.bus.publish(kind, data)
