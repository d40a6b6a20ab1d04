"""``TieredStore``: L1 in front of L2, read-through with promotion.

A read tries L1 synchronously, then L2 (one round trip); an L2 hit is promoted into L1
for what is left of its life, capped by ``l1_max_ttl`` (and, while the invalidation bus is
not heard, by the coherence bound: see ``bus.Coherence``). L1 is not read at all while
the bus cannot vouch for it. A hit is not promoted when a purge was heard while the
lookup was in flight: its reply may predate the purge that the bus message announced.

This is the *only* place that catches ``StoreUnavailable``: a failing L2 is counted and
answered as a miss, so a Redis fault can slow nothing but the origin. Every L2 operation
goes through a ``CircuitBreaker``: after ``threshold`` consecutive failures L2 is not asked
at all for ``cooldown`` seconds (reads are L1 misses, writes go to L1 only), then one probe
decides whether it is back. ``Overloaded`` (a busy event loop, a full pool) is a miss that
the breaker does not count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from ..bus import Coherence
from ..entry import CachedResponse, Record
from ..exceptions import Overloaded, StoreTimeout, StoreUnavailable
from ..metrics import Event
from .base import Store, TimeoutRunner
from .breaker import CircuitBreaker
from .loops import asyncio_running, warn_not_asyncio
from .memory import MemoryStore
from .redis import RedisStore
from .residents import Residents

__all__ = ["Lookup", "Tier", "TieredStore"]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")

# Within one request (set by the middleware; None outside requests): whether an L2
# operation already failed. After one fault the request asks L2 nothing more, so a slow or
# hung Redis costs a request one budget, not one per command (lookup, lease, store...).
# A context variable, not an argument: the request's own code counts too (a data-API call
# in the endpoint), and between the middleware and that code lie the app's middleware and
# FastAPI, which the cache cannot pass a value through.
L2_FAULTED: ContextVar[bool | None] = ContextVar("tiered_cache_l2_faulted", default=None)


def _unexpected(exc: Exception) -> StoreUnavailable:
    logger.warning(
        "L2 failed unexpectedly: %s: %s",
        type(exc).__name__,
        exc,
        extra={"event": "l2_unexpected"},
    )
    return StoreUnavailable(f"L2: {type(exc).__name__}: {exc}")


class Tier(str, Enum):
    """Where a hit came from; also a metrics label."""

    L1 = "l1"
    L2 = "l2"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found, and when it was made (a fill's start: ``markers.FillStart``).

    - ``found``: the record and the tier it came from, or None.
    - ``lease``: the fleet lease asked with it: True (ours), False (another process holds
      it), None (not asked).
    - ``server_us``: Redis ``TIME`` of the L2 lookup, in microseconds, when it said.
    - ``read_at``: the coherence timer just before the lookup.
    """

    found: tuple[Record, Tier] | None
    lease: bool | None = None
    server_us: int | None = None
    read_at: float = 0.0


class TieredStore:
    """Two tiers behaving as one store.

    - ``l1``: a ``MemoryStore`` or ``None`` (L2 only).
    - ``l2``: any ``Store`` (normally ``RedisStore``) or ``None`` (L1 only).
    - ``l1_max_ttl``: most seconds an entry may live in L1.
    - ``clock``: wall-clock seconds, to compute what is left of an entry's life.
    - ``coherence``: when L1 may be read and how long an entry may stay there (the
      cache's; by default L1 is always trusted, as for a single process).
    - ``breaker``: guards L2; a default ``CircuitBreaker()`` (5 failures, 5 s) when omitted.
    - ``report``: called once per L2 fault with ``(Event.REDIS_TIMEOUT, "timeout")`` or
      ``(Event.REDIS_ERROR, reason)``, reason ``error``, ``overloaded`` or ``breaker_open``
      (an operation skipped while the breaker is open).

    Counters: ``faults`` (L2 operations that failed), ``short_circuits`` (skipped while open).
    ``purges`` is moved on by every purge heard (``Invalidator.note``).
    """

    def __init__(
        self,
        l1: MemoryStore | None,
        l2: Store | None,
        *,
        l1_max_ttl: float = 30.0,
        clock: Callable[[], float] = time.time,
        breaker: CircuitBreaker | None = None,
        report: Callable[[Event, str], None] | None = None,
        coherence: Coherence | None = None,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.coherence = coherence or Coherence(l1_max_ttl, l1_max_ttl, shared=False)
        self.clock = clock
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.report = report
        self.faults = 0
        self.short_circuits = 0
        self.purges = 0
        self.residents = Residents(clock=clock)  # keys seen in L2: looked up by GET

    @property
    def l1_max_ttl(self) -> float:
        """Most seconds an entry may live in L1 (while the bus is heard)."""
        return self.coherence.l1_max_ttl

    def _fault(self, exc: StoreUnavailable) -> None:
        self.faults += 1
        if L2_FAULTED.get() is not None:
            L2_FAULTED.set(True)
        if isinstance(exc, Overloaded):
            self.breaker.release()
            event, reason = Event.REDIS_ERROR, "overloaded"
        else:
            self.breaker.failure()
            timeout = isinstance(exc, StoreTimeout)
            event = Event.REDIS_TIMEOUT if timeout else Event.REDIS_ERROR
            reason = "timeout" if timeout else "error"
        if self.report is not None:
            self.report(event, reason)
        logger.debug("L2 unavailable: %s", exc, extra={"event": "l2_fault"})

    async def _remote(self, operation: Callable[[Store], Awaitable[T]], default: T) -> T:
        """Run one L2 operation through the breaker; a fault or an open breaker gives default."""
        l2 = self.l2
        if l2 is None or L2_FAULTED.get():
            return default
        if not asyncio_running():  # redis.asyncio cannot run here (trio): L1 only
            warn_not_asyncio()
            return default
        if not self.breaker.allow():
            self.short_circuits += 1
            if self.report is not None:
                self.report(Event.REDIS_ERROR, "breaker_open")
            return default
        try:
            result = await operation(l2)
        except StoreUnavailable as exc:
            self._fault(exc)
            return default
        except Exception as exc:  # a store's bug: a logged miss, never the request's error
            self._fault(_unexpected(exc))
            return default
        except BaseException:  # cancelled: says nothing about L2
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    async def run(
        self, operation: Callable[[], Awaitable[T]], what: str, budgets: float = 1.0
    ) -> T:
        """The cache's ``Runner``: any other Redis command (generation counters, indexes,
        fleet leases) under L2's budget and breaker. Raises ``StoreUnavailable`` when it
        failed, or at once while the breaker is open or after a fault in this request."""
        if L2_FAULTED.get():
            raise StoreUnavailable(f"redis {what}: skipped after a fault in this request")
        if not asyncio_running():  # redis.asyncio cannot run here (trio): not a fault
            warn_not_asyncio()
            raise StoreUnavailable(f"redis {what}: L2 is asyncio-only")
        if not self.breaker.allow():
            self.short_circuits += 1
            raise StoreUnavailable(f"redis {what}: circuit breaker open")
        try:
            result = await self.run_unguarded(operation, what, budgets)
        except StoreUnavailable as exc:
            self._fault(exc)
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    async def run_unguarded(
        self, operation: Callable[[], Awaitable[T]], what: str, budgets: float = 1.0
    ) -> T:
        """As ``run``, without the breaker: for purges, which must always be tried."""
        if not asyncio_running():  # redis.asyncio cannot run here (trio)
            warn_not_asyncio()
            raise StoreUnavailable(f"redis {what}: L2 is asyncio-only")
        l2 = self.l2
        runner = getattr(l2, "run", None)
        if runner is None:  # an L2 without a budget of its own (tests): a plain deadline
            runner = TimeoutRunner(0.05)
        try:
            result: T = await runner(operation, what, budgets)
        except StoreUnavailable:
            raise
        except Exception as exc:  # a runner's or client's bug: a fault, never a 500
            raise _unexpected(exc) from exc
        return result

    def _l1_ttl(self, record: Record, ttl: float | None, read_at: float | None) -> float:
        if ttl is None:
            ttl = (
                record.remaining_life(self.clock())
                if isinstance(record, CachedResponse)
                else self.coherence.l1_max_ttl
            )
        return self.coherence.l1_ttl(ttl, read_at)

    def lookup_local(self, key: str) -> Record | None:
        """L1 only, without awaiting: the fast path (nothing while L1 cannot be trusted)."""
        l1 = self.l1
        if l1 is None or not self.coherence.l1_usable():
            return None
        return l1.lookup(key)

    async def lookup_remote(self, key: str) -> Record | None:
        """L2 only; a hit is promoted into L1. A fault, or an open breaker, is a miss."""
        read_at, purges = self.coherence.timer(), self.purges
        record = await self._remote(lambda l2: l2.get(key), None)
        return self._looked_up(key, record, read_at, purges)

    def _looked_up(
        self, key: str, record: Record | None, read_at: float, purges: int
    ) -> Record | None:
        """Promote an L2 hit into L1, unless a purge was heard meanwhile: the reply may
        have left Redis before the purge while its bus message was handled first."""
        if record is None:
            return None
        life = (
            record.remaining_life(self.clock())
            if isinstance(record, CachedResponse)
            else self.coherence.l1_max_ttl  # a Vary pointer lives as long as its entries
        )
        self.residents.note(key, life)
        if self.l1 is not None and self.purges == purges:
            ttl = self._l1_ttl(record, None, read_at)
            if ttl > 0:
                self.l1.put(key, record, ttl)
        return record

    async def get(self, key: str) -> tuple[Record, Tier] | None:
        return (await self.find(key)).found

    async def find(self, key: str, lease: tuple[str, str, int] | None = None) -> Lookup:
        """L1, then L2; with ``lease = (lease key, token, ms)``, an attempt to take the fleet
        lease on a miss in the same round trip (where L2 can: not on a cluster). Off a
        cluster the lookup also says the Redis time (a fill's start)."""
        read_at = self.coherence.timer()
        record = self.lookup_local(key)
        if record is not None:
            return Lookup((record, Tier.L1), read_at=read_at)
        return await self.find_remote(key, lease, read_at)

    async def find_remote(
        self, key: str, lease: tuple[str, str, int] | None = None, read_at: float | None = None
    ) -> Lookup:
        """``find`` without looking in L1 (whose copy the caller found stale)."""
        if read_at is None:
            read_at = self.coherence.timer()
        l2, purges = self.l2, self.purges
        if not isinstance(l2, RedisStore) or (l2.timed_lookups and self.residents.likely(key)):
            # Seen in L2 a moment ago: most likely a hit, which a plain GET answers (on a
            # cluster the lookup is a plain GET already).
            failed = self.faults + self.short_circuits
            record = await self._remote(lambda store: store.get(key), None)
            found = self._looked_up(key, record, read_at, purges)
            if (
                found is not None
                or not isinstance(l2, RedisStore)
                or self.faults + self.short_circuits != failed  # L2 failed: a miss
            ):
                return Lookup(None if found is None else (found, Tier.L2), read_at=read_at)
            self.residents.forget(key)  # gone: the full lookup (time, lease) follows
            read_at, purges = self.coherence.timer(), self.purges
        answer = await self._remote(lambda _: l2.lookup(key, lease), None)
        record, won, server_us = answer if answer is not None else (None, None, None)
        found = self._looked_up(key, record, read_at, purges)
        if found is not None:
            return Lookup((found, Tier.L2), None, server_us, read_at)
        return Lookup(None, won, server_us, read_at)

    def set_local(self, key: str, record: Record, ttl: float, read_at: float | None = None) -> None:
        """Put ``record`` in L1 for at most ``ttl`` seconds (its data read at ``read_at``)."""
        if self.l1 is not None:
            ttl = self._l1_ttl(record, ttl, read_at)
            if ttl > 0:
                self.l1.put(key, record, ttl)

    async def set_remote(self, key: str, record: Record, ttl: float) -> None:
        async def stored(l2: Store) -> bool:
            await l2.set(key, record, ttl)
            return True

        if await self._remote(stored, False):
            self.residents.note(key, ttl)

    async def set(self, key: str, record: Record, ttl: float) -> None:
        self.set_local(key, record, ttl)
        await self.set_remote(key, record, ttl)

    async def delete(self, key: str) -> None:
        await self.delete_many((key,))

    async def delete_many(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        for key in batch:
            self.residents.forget(key)
            if self.l1 is not None:
                self.l1.discard(key)
        if batch:
            await self._remote(lambda l2: l2.delete_many(batch), None)

    async def close(self) -> None:
        if self.l1 is not None:
            await self.l1.close()
        if self.l2 is not None:
            await self.l2.close()
