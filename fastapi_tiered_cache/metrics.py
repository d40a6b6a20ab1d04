"""What the cache did, counted: the ``Metrics`` protocol and the always-on ``Stats``.

The middleware reports each outcome once through ``TieredCache.record`` which fans out to
``Stats`` (in-process counters, cheap enough for the hit path, shown by the demo, the admin
router and the CLI) and to any exporter (Prometheus, OpenTelemetry) the settings enable.
Labels are bounded by construction: a route *template* (never the raw path), a tier, a
reason code, and a tenant that exporters fold into ``other`` unless allow-listed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Protocol

__all__ = ["Event", "Metrics", "Stats", "format_ratio"]


class Event(str, Enum):
    """An outcome the cache reports."""

    HIT = "hit"  # tier: l1 | l2
    MISS = "miss"  # reason: miss | vary-miss | stale | revalidate
    STALE = "stale"  # a stale entry was served; reason: while-revalidate | if-error
    BYPASS = "bypass"  # reason: a policy.Reason value
    STORE = "store"
    EVICTION = "eviction"
    REDIS_ERROR = "redis_error"
    REDIS_TIMEOUT = "redis_timeout"
    COALESCED = "coalesced"  # a request answered by another request's origin call
    INVALIDATION = "invalidation"  # reason: key | path | prefix | tag | tenant | identity | all

    def __str__(self) -> str:
        return self.value


class Metrics(Protocol):
    """A sink for cache outcomes; implementations must be cheap and never raise."""

    def record(
        self,
        event: Event,
        *,
        route: str = "",
        tenant: str = "",
        tier: str = "",
        reason: str = "",
    ) -> None: ...

    def observe(self, seconds: float, *, route: str = "", outcome: str = "") -> None: ...


_L1_HIT = ("hit", "l1")


class Stats:
    """In-process counters by event and detail (tier or reason), and by route.

    L1 hits, the one outcome counted on the fast path, are kept in ``l1_hits`` and
    ``l1_route_hits`` (which the memo adds to directly) and merged into ``counters`` and
    ``routes`` when those are read.
    """

    def __init__(self) -> None:
        self._counters: Counter[tuple[str, str]] = Counter()
        self._route_counts: Counter[tuple[str, str]] = Counter()
        self.l1_hits = 0
        self.l1_route_hits: dict[str, int] = {}

    @property
    def counters(self) -> Counter[tuple[str, str]]:
        """Counts by ``(event, tier or reason)``."""
        merged = Counter(self._counters)
        if self.l1_hits:
            merged[_L1_HIT] += self.l1_hits
        return merged

    @property
    def routes(self) -> Counter[tuple[str, str]]:
        """Counts by ``(route template, event)``."""
        merged = Counter(self._route_counts)
        for route, n in self.l1_route_hits.items():
            merged[route, "hit"] += n
        return merged

    def record(
        self,
        event: Event,
        *,
        route: str = "",
        tenant: str = "",
        tier: str = "",
        reason: str = "",
    ) -> None:
        self._counters[event.value, tier or reason] += 1
        if route:
            self._route_counts[route, event.value] += 1

    def observe(self, seconds: float, *, route: str = "", outcome: str = "") -> None:
        """Timings are left to the exporters; the in-process view stays a set of counters."""

    def export(self) -> dict[str, list[list[Any]]]:
        """The raw counts, as JSON-ready lists (what a process reports to the fleet)."""
        return {
            "counts": [[event, detail, n] for (event, detail), n in sorted(self.counters.items())],
            "route_counts": [
                [route, event, n] for (route, event), n in sorted(self.routes.items())
            ],
        }

    @classmethod
    def merged(cls, exports: Iterable[Mapping[str, Any]]) -> Stats:
        """The sum of several ``export()`` results (malformed rows are skipped)."""
        total = cls()
        for export in exports:
            for row in export.get("counts", ()):
                try:
                    event, detail, n = str(row[0]), str(row[1]), int(row[2])
                except (TypeError, ValueError, IndexError):
                    continue
                total._counters[event, detail] += n
            for row in export.get("route_counts", ()):
                try:
                    route, event, n = str(row[0]), str(row[1]), int(row[2])
                except (TypeError, ValueError, IndexError):
                    continue
                total._route_counts[route, event] += n
        return total

    def total(self, event: Event) -> int:
        return sum(n for (name, _), n in self.counters.items() if name == event.value)

    def snapshot(self) -> dict[str, object]:
        """Counts by event and detail, hit ratios per tier and per route."""
        counters = self.counters
        by_event: dict[str, dict[str, int]] = {}
        for (event, detail), n in sorted(counters.items()):
            by_event.setdefault(event, {})[detail or "all"] = n
        hits, misses = self.total(Event.HIT), self.total(Event.MISS)
        lookups = hits + misses + self.total(Event.STALE)
        per_tier = {
            tier: round(n / lookups, 4) for (event, tier), n in counters.items() if event == "hit"
        }
        return {
            "counts": by_event,
            "hit_ratio": round(hits / lookups, 4) if lookups else None,
            "hit_ratio_by_tier": per_tier if lookups else {},
            "routes": self._routes(),
        }

    def _routes(self) -> dict[str, dict[str, object]]:
        table: dict[str, dict[str, object]] = {}
        for (route, event), n in sorted(self.routes.items()):
            table.setdefault(route, {})[event] = n
        for counts in table.values():
            hits = int(str(counts.get("hit", 0)))
            lookups = hits + int(str(counts.get("miss", 0))) + int(str(counts.get("stale", 0)))
            counts["hit_ratio"] = round(hits / lookups, 4) if lookups else None
        return table


def format_ratio(value: object) -> str:
    """A hit ratio as a percentage, ``-`` when there were no lookups."""
    return f"{value:.1%}" if isinstance(value, (int, float)) else "-"
