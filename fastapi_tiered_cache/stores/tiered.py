"""``TieredStore``: L1 in front of L2, read-through with promotion.

A read tries L1 synchronously, then L2 (one round trip); an L2 hit is promoted into L1
for what is left of its life, capped by ``l1_max_ttl`` (which bounds how long a worker can
serve a copy that another worker has invalidated). A write goes to both tiers.

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
from enum import Enum
from typing import TypeVar

from ..entry import CachedResponse, Record
from ..exceptions import Overloaded, StoreTimeout, StoreUnavailable
from ..metrics import Event
from .base import Store, TimeoutRunner
from .breaker import CircuitBreaker
from .memory import MemoryStore
from .redis import Command, RedisStore

__all__ = ["Tier", "TieredStore"]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")

# Within one request (set by the middleware; None outside requests): whether an L2
# operation already failed. After one fault the request asks L2 nothing more, so a slow or
# hung Redis costs a request one budget, not one per command (lookup, lease, store...).
L2_FAULTED: ContextVar[bool | None] = ContextVar("tiered_cache_l2_faulted", default=None)


class Tier(str, Enum):
    """Where a hit came from; also a metrics label."""

    L1 = "l1"
    L2 = "l2"

    def __str__(self) -> str:
        return self.value


class TieredStore:
    """Two tiers behaving as one store.

    - ``l1``: a ``MemoryStore`` or ``None`` (L2 only).
    - ``l2``: any ``Store`` (normally ``RedisStore``) or ``None`` (L1 only).
    - ``l1_max_ttl``: most seconds an entry may live in L1.
    - ``clock``: wall-clock seconds, to compute what is left of an entry's life.
    - ``breaker``: guards L2; a default ``CircuitBreaker()`` (5 failures, 5 s) when omitted.
    - ``report``: called once per L2 fault with ``(Event.REDIS_TIMEOUT, "timeout")`` or
      ``(Event.REDIS_ERROR, reason)``, reason ``error``, ``overloaded`` or ``breaker_open``
      (an operation skipped while the breaker is open).

    Counters: ``faults`` (L2 operations that failed), ``short_circuits`` (skipped while open).
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
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.l1_max_ttl = l1_max_ttl
        self.clock = clock
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.report = report
        self.faults = 0
        self.short_circuits = 0
        # Share of recent L2 lookups that found nothing (moving average): where most
        # lookups miss, taking the fleet lease with the lookup saves a round trip per
        # miss; where most hit, a plain GET is cheaper (no script, no copy of the value).
        self.l2_miss_rate = 0.5

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
        except BaseException:  # cancelled, or a bug: says nothing about L2
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
        l2 = self.l2
        runner = getattr(l2, "run", None)
        if runner is None:  # an L2 without a budget of its own (tests): a plain deadline
            runner = TimeoutRunner(0.05)
        result: T = await runner(operation, what, budgets)
        return result

    def _l1_ttl(self, record: Record, ttl: float | None = None) -> float:
        if ttl is None:
            ttl = (
                record.remaining_life(self.clock())
                if isinstance(record, CachedResponse)
                else self.l1_max_ttl
            )
        return min(ttl, self.l1_max_ttl)

    def lookup_local(self, key: str) -> Record | None:
        """L1 only, without awaiting: the fast path."""
        return None if self.l1 is None else self.l1.lookup(key)

    async def lookup_remote(self, key: str) -> Record | None:
        """L2 only; a hit is promoted into L1. A fault, or an open breaker, is a miss."""
        return self._looked_up(key, await self._remote(lambda l2: l2.get(key), None))

    def _looked_up(self, key: str, record: Record | None) -> Record | None:
        """Count an L2 lookup's outcome (a fault is a miss) and promote a hit into L1."""
        self.l2_miss_rate += ((1.0 if record is None else 0.0) - self.l2_miss_rate) / 16
        if record is not None and self.l1 is not None:
            self.l1.put(key, record, self._l1_ttl(record))
        return record

    @property
    def misses_likely(self) -> bool:
        """Whether most recent L2 lookups found nothing."""
        return self.l2_miss_rate > 0.5

    async def get(self, key: str) -> tuple[Record, Tier] | None:
        record = self.lookup_local(key)
        if record is not None:
            return record, Tier.L1
        record = await self.lookup_remote(key)
        return None if record is None else (record, Tier.L2)

    async def get_or_lease(
        self, key: str, lease_key: str, token: str, lease_ms: int
    ) -> tuple[tuple[Record, Tier] | None, bool | None]:
        """``get(key)``, and on a miss in both tiers the answer of an attempt to take the
        fleet lease ``lease_key`` in the same round trip: True (ours), False (another holds
        it), None (not asked: L2 cannot do both at once, faulted, or the breaker is open)."""
        record = self.lookup_local(key)
        if record is not None:
            return (record, Tier.L1), None
        l2 = self.l2
        if not isinstance(l2, RedisStore) or not l2.leases_with_lookups:
            found = await self.lookup_remote(key)
            return (None if found is None else (found, Tier.L2)), None
        answer = await self._remote(
            lambda _: l2.get_or_lease(key, lease_key, token, lease_ms), None
        )
        record, won = answer if answer is not None else (None, None)
        found = self._looked_up(key, record)
        return (None, won) if found is None else ((found, Tier.L2), None)

    def set_local(self, key: str, record: Record, ttl: float) -> None:
        if self.l1 is not None:
            self.l1.put(key, record, self._l1_ttl(record, ttl))

    async def set_remote(self, key: str, record: Record, ttl: float) -> None:
        await self._remote(lambda l2: l2.set(key, record, ttl), None)

    @property
    def pipelines(self) -> bool:
        """Whether ``set_remote_many`` runs its ``then`` commands (L2 is Redis)."""
        return isinstance(self.l2, RedisStore)

    async def set_remote_many(
        self, entries: list[tuple[str, Record, float]], then: list[Command] | None = None
    ) -> None:
        """Entries (and ``then``, single-key commands such as index updates) to L2 in one
        pipeline when it can, else one by one (``then`` is dropped where L2 is not Redis)."""
        l2 = self.l2
        if isinstance(l2, RedisStore):
            await self._remote(lambda _: l2.set_many(entries, then or ()), None)
            return
        for key, record, ttl in entries:
            await self.set_remote(key, record, ttl)

    async def set(self, key: str, record: Record, ttl: float) -> None:
        self.set_local(key, record, ttl)
        await self.set_remote(key, record, ttl)

    async def delete(self, key: str) -> None:
        await self.delete_many((key,))

    async def delete_many(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        if self.l1 is not None:
            for key in batch:
                self.l1.discard(key)
        if batch:
            await self._remote(lambda l2: l2.delete_many(batch), None)

    async def close(self) -> None:
        if self.l1 is not None:
            await self.l1.close()
        if self.l2 is not None:
            await self.l2.close()
