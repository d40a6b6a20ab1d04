"""``MemoryStore``: the process-local L1, bounded by entry count *and* bytes.

A ``cachetools.TLRUCache`` gives per-entry expiry (an entry's L1 life never exceeds what
it has left in L2) with LRU eviction; its ``maxsize`` is the byte budget, and a second
bound on the number of entries keeps many tiny entries from costing unbounded overhead.
Entries are held decoded, so a hit does no work but a dictionary lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from cachetools import TLRUCache

from ..entry import Record

__all__ = ["MemoryStore"]

_Slot = tuple[Record, float]  # (record, seconds it may live in L1)


def _expires(_key: str, slot: _Slot, now: float) -> float:
    return now + slot[1]


def _size(slot: _Slot) -> int:
    return slot[0].size


class MemoryStore:
    """An in-process store; ``max_bytes`` counts body, headers and a fixed overhead per entry.

    - ``max_entries``: most entries held; the least recently used go first.
    - ``max_bytes``: most bytes held; an entry larger than this is not stored.
    - ``timer``: a monotonic clock in seconds (injected by tests).
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.evictions = 0
        self._cache: TLRUCache[str, _Slot] = TLRUCache(
            maxsize=max(max_bytes, 1), ttu=_expires, timer=timer, getsizeof=_size
        )

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def current_bytes(self) -> int:
        return int(self._cache.currsize)

    def lookup(self, key: str) -> Record | None:
        """Synchronous get: the L1 hit path never awaits."""
        slot = self._cache.get(key)
        return None if slot is None else slot[0]

    def put(self, key: str, record: Record, ttl: float) -> None:
        """Synchronous set; a record too large for the byte budget is simply not kept."""
        if ttl <= 0 or record.size > self.max_bytes or self.max_entries <= 0:
            self._cache.pop(key, None)
            return
        before = len(self._cache) + (0 if key in self._cache else 1)
        self._cache[key] = (record, ttl)
        self.evictions += max(0, before - len(self._cache))
        while len(self._cache) > self.max_entries:
            self._cache.popitem()
            self.evictions += 1

    def discard(self, key: str) -> None:
        self._cache.pop(key, None)

    def clear(self) -> None:
        self._cache.clear()

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
