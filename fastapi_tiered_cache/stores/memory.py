"""``MemoryStore``: the process-local L1, bounded by entry count *and* bytes.

A ``cachetools.TLRUCache`` gives per-entry expiry (an entry's L1 life never exceeds what
it has left in L2) with LRU eviction; its ``maxsize`` is the byte budget, and a second
bound on the number of entries keeps many tiny entries from costing unbounded overhead.
Entries are held decoded, so a hit does no work but a dictionary lookup.

That lookup is a plain ``dict`` beside the ``TLRUCache`` (``_fast``: key -> record and L1
expiry), kept in step with it on every store and every removal the cache reports: the
``TLRUCache`` get costs a microsecond of Python bookkeeping, a quarter of a whole hit. LRU
order is therefore refreshed on a sample of hits (one in ``TOUCH_EVERY``), as Redis
approximates LRU: an entry in steady use is touched, a cold one is not.

One tenant must not be able to flush everyone else out of L1, so a named tenant may hold
at most ``tenant_share`` of the entries and of the bytes. When a store would take it past
its share, its *own* oldest entries make room. The order is by storing, not by use: keeping
a per-tenant use order would cost work on every hit, and the hit path stays a lookup.
Accounting happens only on stores and removals (the cache reports every removal, be it an
eviction, an expiry or a delete).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from cachetools import Cache, TLRUCache

from ..entry import Record

__all__ = ["MemoryStore"]

_Slot = tuple[Record, float]  # (record, seconds it may live in L1)
EXEMPT_TENANT = "_"  # identity.DEFAULT_TENANT: requests that name no tenant share L1 freely


def _expires(_key: str, slot: _Slot, now: float) -> float:
    return now + slot[1]


_count = Cache.__len__  # entries held, without looking for expired ones first
_holds = Cache.__contains__  # the same for one key


def _size(slot: _Slot) -> int:
    return slot[0].size


def _no_tenant(_key: str) -> str | None:
    return None


class _Entries(TLRUCache[str, _Slot]):
    """A ``TLRUCache`` that tells its owner about every key it drops."""

    def __init__(
        self,
        maxsize: int,
        timer: Callable[[], float],
        on_remove: Callable[[str], None],
    ) -> None:
        super().__init__(maxsize=maxsize, ttu=_expires, timer=timer, getsizeof=_size)
        self.on_remove = on_remove

    def __delitem__(self, key: str) -> None:
        try:
            super().__delitem__(key)
        finally:
            self.on_remove(key)

    def expire(self, time: float | None = None) -> list[tuple[str, _Slot]]:
        expired = super().expire(time)
        for key, _ in expired:
            self.on_remove(key)
        return expired


class _Usage:
    """What one tenant holds: its keys in storing order (with sizes) and their bytes."""

    __slots__ = ("bytes", "keys")

    def __init__(self) -> None:
        self.keys: OrderedDict[str, int] = OrderedDict()
        self.bytes = 0


_TOUCH_EVERY = 16
_TOUCH_MASK = _TOUCH_EVERY - 1


class MemoryStore:
    """An in-process store; ``max_bytes`` counts body, headers and a fixed overhead per entry.

    - ``max_entries``: most entries held; the least recently used go first.
    - ``max_bytes``: most bytes held; an entry larger than this is not stored.
    - ``timer``: a monotonic clock in seconds (injected by tests).
    - ``tenant_share``: the largest fraction (0 < share <= 1) of ``max_entries`` and of
      ``max_bytes`` that one named tenant may hold; 1 turns the accounting off.
    - ``tenant_of``: the tenant label of a key, or None; the label ``_`` is exempt.

    Example::

        l1 = MemoryStore(10_000, 64 * 1024 * 1024, tenant_share=0.5,
                         tenant_of=lambda key: key.split(":")[2])
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        timer: Callable[[], float] = time.monotonic,
        *,
        tenant_share: float = 1.0,
        tenant_of: Callable[[str], str | None] = _no_tenant,
    ) -> None:
        if not 0 < tenant_share <= 1:
            raise ValueError("tenant_share must be in (0, 1]")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.tenant_share = tenant_share
        self.tenant_of = tenant_of
        self.tenant_max_entries = int(tenant_share * max_entries)
        self.tenant_max_bytes = int(tenant_share * max_bytes)
        self._accounting = tenant_share < 1
        self.evictions = 0
        self.tenant_evictions = 0  # of those, made to keep a tenant within its share
        self._tenants: dict[str, _Usage] = {}
        self._timer = timer
        self._fast: dict[str, _Slot] = {}  # key -> (record, expiry on ``timer``)
        self._hits = 0
        self._cache = _Entries(max(max_bytes, 1), timer, self._forget)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held (and unexpired), without refreshing its LRU position."""
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def current_bytes(self) -> int:
        return int(self._cache.currsize)

    def tenant_usage(self, tenant: str) -> tuple[int, int]:
        """``(entries, bytes)`` held by a named tenant (zeros when not accounted)."""
        usage = self._tenants.get(tenant)
        return (0, 0) if usage is None else (len(usage.keys), usage.bytes)

    TOUCH_EVERY = _TOUCH_EVERY  # hits per LRU refresh (a power of two)

    def lookup(self, key: str) -> Record | None:
        """Synchronous get: the L1 hit path never awaits."""
        slot = self._fast.get(key)
        if slot is None:
            return None
        if slot[1] <= self._timer():
            self._cache.expire()  # drops it (and every other expired entry) everywhere
            return None
        hits = self._hits = self._hits + 1
        if not hits & _TOUCH_MASK:
            self._cache.get(key)  # refresh its LRU position
        return slot[0]

    def put(self, key: str, record: Record, ttl: float) -> None:
        """Synchronous set; a record too large for the byte budget is simply not kept."""
        tenant = self._label(key) if self._accounting else None
        if (
            ttl <= 0
            or record.size > self.max_bytes
            or self.max_entries <= 0
            or (tenant is not None and not self._make_room(tenant, key, record.size))
        ):
            self.discard(key)
            return
        cache = self._cache
        # Expired entries go first, once; after that the counts are the plain dict's (the
        # TLRUCache's len() and `in` would each look for expired entries again).
        cache.expire()
        before = _count(cache) + (0 if _holds(cache, key) else 1)
        expires = self._timer() + ttl  # never later than the TLRUCache's own expiry
        cache[key] = (record, ttl)
        stored = _holds(cache, key)
        if stored:
            self._fast[key] = (record, expires)
        count = _count(cache)
        self.evictions += max(0, before - count)
        while count > self.max_entries:
            cache.popitem()
            self.evictions += 1
            count = _count(cache)
        if tenant is not None and stored:
            usage = self._tenants.setdefault(tenant, _Usage())
            usage.keys[key] = record.size
            usage.bytes += record.size

    def _label(self, key: str) -> str | None:
        tenant = self.tenant_of(key)
        return None if tenant is None or tenant == EXEMPT_TENANT else tenant

    def _make_room(self, tenant: str, key: str, size: int) -> bool:
        """Evict the tenant's oldest entries so that ``key`` (``size`` bytes) fits its share.

        False when it can never fit.
        """
        if size > self.tenant_max_bytes or self.tenant_max_entries < 1:
            return False
        self._forget(key)  # the entry it replaces no longer counts
        usage = self._tenants.get(tenant)
        while usage is not None and (
            len(usage.keys) + 1 > self.tenant_max_entries
            or usage.bytes + size > self.tenant_max_bytes
        ):
            self._drop(next(iter(usage.keys)))
            self.evictions += 1
            self.tenant_evictions += 1
            usage = self._tenants.get(tenant)
        return True

    def _drop(self, key: str) -> None:
        try:
            del self._cache[key]  # reports the removal through _forget
        except KeyError:
            self._forget(key)  # already expired: make sure it is not counted any more

    def _forget(self, key: str) -> None:
        """The cache dropped ``key``: stop serving it and counting it against its tenant."""
        self._fast.pop(key, None)
        if not self._tenants:
            return
        tenant = self._label(key)
        usage = None if tenant is None else self._tenants.get(tenant)
        if tenant is None or usage is None:
            return
        size = usage.keys.pop(key, None)
        if size is not None:
            usage.bytes -= size
            if not usage.keys:
                del self._tenants[tenant]

    def discard(self, key: str) -> None:
        self._cache.pop(key, None)
        self._fast.pop(key, None)  # also when the cache no longer counts it (expired)

    def clear(self) -> None:
        self._cache.clear()
        self._fast.clear()
        self._tenants.clear()

    async def get(self, key: str) -> Record | None:
        return self.lookup(key)

    async def set(self, key: str, record: Record, ttl: float) -> None:
        self.put(key, record, ttl)

    async def delete(self, key: str) -> None:
        self.discard(key)

    async def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.discard(key)

    async def close(self) -> None:
        self.clear()
