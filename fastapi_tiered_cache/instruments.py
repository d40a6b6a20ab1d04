"""The instruments every exporter defines: the counters and their labels, the histogram's
buckets, and the folding of tenants into ``other`` (labels stay bounded: a route template,
never a raw path; a tier; a reason code; an allow-listed tenant)."""

from __future__ import annotations

from collections.abc import Iterable

from .identity import DEFAULT_TENANT
from .metrics import Event

__all__ = ["BUCKETS", "COUNTERS", "OTHER_TENANT", "TenantFold", "series"]

OTHER_TENANT = "other"
# Seconds spent in the cache per request: a hit is well under a millisecond from L1.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# name: (help text, label names); Prometheus appends ``_total`` to each name.
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hits": ("Responses served from the cache.", ("tier", "route", "tenant")),
    "misses": ("Lookups that found nothing usable.", ("route", "tenant", "reason")),
    "stale": ("Stale entries served.", ("route", "tenant", "reason")),
    "bypass": ("Requests that did not use the cache.", ("reason", "route")),
    "stores": ("Responses stored.", ("route", "tenant")),
    "redis_errors": ("Redis operations that failed or were skipped.", ("kind",)),
    "coalesced": ("Requests answered by another request's origin call.", ("route", "tenant")),
    "invalidations": ("Invalidations, by kind.", ("kind",)),
}


def series(
    event: Event, *, route: str, tenant: str, tier: str, reason: str
) -> tuple[str, dict[str, str]] | None:
    """The counter an event adds to and its labels; None for events read from the store."""
    if event is Event.HIT:
        return "hits", {"tier": tier, "route": route, "tenant": tenant}
    if event is Event.MISS:
        return "misses", {"route": route, "tenant": tenant, "reason": reason}
    if event is Event.STALE:
        return "stale", {"route": route, "tenant": tenant, "reason": reason}
    if event is Event.BYPASS:
        return "bypass", {"reason": reason, "route": route}
    if event is Event.STORE:
        return "stores", {"route": route, "tenant": tenant}
    if event is Event.REDIS_ERROR or event is Event.REDIS_TIMEOUT:
        # kind: timeout, error, or the store's finer reason (overloaded, breaker_open).
        return "redis_errors", {
            "kind": reason or ("timeout" if event is Event.REDIS_TIMEOUT else "error")
        }
    if event is Event.COALESCED:
        return "coalesced", {"route": route, "tenant": tenant}
    if event is Event.INVALIDATION:
        return "invalidations", {"kind": reason}
    return None  # EVICTION: MemoryStore counts every eviction itself, read at collection


class TenantFold:
    """Map a tenant to itself when allow-listed (or the default tenant), else ``other``."""

    def __init__(self, allow: Iterable[str]) -> None:
        self.allow = frozenset(allow) | {"", DEFAULT_TENANT}

    def __call__(self, tenant: str) -> str:
        return tenant if tenant in self.allow else OTHER_TENANT
