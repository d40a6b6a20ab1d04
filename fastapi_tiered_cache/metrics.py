"""In-process counters: cheap enough for the hit path, always on.

``Stats.count(event, label)`` adds one to a counter such as ``("hit", "l1")`` or
``("bypass", "set-cookie")``; ``snapshot()`` gives a JSON-able view with hit ratios.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["Stats"]


class Stats:
    """Counters of what the cache did, by event and label."""

    def __init__(self) -> None:
        self.counters: Counter[tuple[str, str]] = Counter()

    def count(self, event: str, label: str) -> None:
        self.counters[event, label] += 1

    def total(self, event: str) -> int:
        return sum(n for (name, _), n in self.counters.items() if name == event)

    def snapshot(self) -> dict[str, object]:
        """Counts by event and label, and the hit ratio over cacheable requests."""
        by_event: dict[str, dict[str, int]] = {}
        for (event, label), n in sorted(self.counters.items()):
            by_event.setdefault(event, {})[label or "all"] = n
        hits, misses = self.total("hit"), self.total("miss")
        lookups = hits + misses
        return {"counts": by_event, "hit_ratio": round(hits / lookups, 4) if lookups else None}
