"""``Residents``: keys this process saw in L2 moments ago, so that their next lookup can be
a plain ``GET``.

An L2 lookup is normally one script: the entry, the server's time and, when the entry is
absent, the fleet lease, all in one round trip, so a miss needs nothing more before the
origin. For a hit that script is wasted work: redis-py spends about 1.3 times a ``GET``'s CPU
on it, and Redis runs Lua. Yet most L2 hits are predictable: L1 keeps an entry at most
``l1_max_ttl`` seconds (30 by default), usually less than its life in Redis, so a key this
process stored or found in L2 a moment ago is, when L1 misses it, almost always still in
L2. Its lookup goes by ``GET``; if the guess is wrong (purged, evicted, expired early), the
full lookup follows: one more round trip, on a path that goes to the origin anyway.

Only a hint: a wrong one costs a round trip, never a wrong answer. Keys are held by their
hash (``hash(str)``, computed once per string), so a collision too is a wrong guess; at
most ``max_keys`` are remembered, the oldest forgotten first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Residents"]


class Residents:
    """Keys held in L2, by hash, with when they leave it (on ``clock``).

    - ``max_keys``: most keys remembered (about 100 bytes each).
    - ``clock``: wall-clock seconds, as entries count their life.
    """

    def __init__(self, max_keys: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._until: dict[int, float] = {}  # insertion order: the oldest first

    def __len__(self) -> int:
        return len(self._until)

    def note(self, key: str, life: float) -> None:
        """``key`` is in L2 for ``life`` more seconds."""
        if life <= 0 or self.max_keys <= 0:
            return
        until = self._until
        digest = hash(key)
        if until.pop(digest, None) is None and len(until) >= self.max_keys:
            del until[next(iter(until))]
        until[digest] = self.clock() + life

    def likely(self, key: str) -> bool:
        """Whether ``key`` was in L2 a moment ago and should still be."""
        until = self._until.get(hash(key))
        return until is not None and until > self.clock()

    def forget(self, key: str) -> None:
        """``key`` left L2 (deleted, or found missing)."""
        self._until.pop(hash(key), None)
