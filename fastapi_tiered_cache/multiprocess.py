"""Prometheus metrics summed over worker processes (prometheus_client's multiprocess mode).

With ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start, prometheus_client keeps
every metric's value in files there, one set per worker, and a ``MultiProcessCollector``
sums them at scrape time: any worker's ``/metrics`` shows the whole server. The cache's
counters and histogram need nothing more. Its state (L1 size, evictions, breaker, tiers
up) is read from the cache, which a collector in one worker cannot do for the others: so
each worker sets multiprocess gauges of its own (``SharedState``), at most once a second
as events come and at each scrape it serves; they are dropped when the worker shuts down.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from .gauges import BREAKER_STATES, read_gauges

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .cache import TieredCache

__all__ = ["SharedState", "multiprocess_dir", "multiprocess_registry"]


def multiprocess_dir() -> str | None:
    """prometheus_client's multiprocess directory, when its mode is on (as it decides)."""
    # prometheus_client also reads the lower-case name it once documented.
    legacy = "prometheus_multiproc_dir"
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get(legacy)


def multiprocess_registry() -> CollectorRegistry:
    """A registry that sums every worker's files when collected."""
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class SharedState:
    """The state gauges of one worker in multiprocess mode (summed, or the worst, over the
    live workers by the collector); refreshed at most once a ``period`` as events come."""

    def __init__(self, cache: TieredCache, period: float = 1.0) -> None:
        from prometheus_client import Counter, Gauge

        self.cache = cache
        self.period = period
        self._next = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._evicted = 0
        self.entries = Gauge(
            "tiered_cache_l1_entries",
            "Entries held in L1 (every live worker).",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.bytes = Gauge(
            "tiered_cache_l1_bytes",
            "Bytes held in L1 (every live worker).",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.evictions = Counter(
            "tiered_cache_evictions", "Entries evicted for room.", ("tier",), registry=None
        )
        self.breaker = Gauge(
            "tiered_cache_breaker_state",
            "L2 circuit breaker: 0 closed, 1 open, 2 half-open (the worst live worker's).",
            registry=None,
            multiprocess_mode="livemax",
        )
        self.up: Any = Gauge(
            "tiered_cache_tier_up",
            "1 when a tier is configured and in use (in every live worker).",
            ("tier",),
            registry=None,
            multiprocess_mode="livemin",
        )

    def refresh_now_and_then(self) -> None:
        """Refresh now if the last refresh is a period old, else once that period is over
        (one timer at most), so the gauges end up as the last event left them."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.period
            self.refresh()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._timer = loop.call_later(self._next - now, self._trailing)

    def _trailing(self) -> None:
        self._timer = None
        self._next = time.monotonic() + self.period
        self.refresh()

    def refresh(self) -> None:

        gauges = read_gauges(self.cache.store)
        if gauges.l1_entries is not None and gauges.l1_bytes is not None:
            self.entries.set(gauges.l1_entries)
            self.bytes.set(gauges.l1_bytes)
        if gauges.l1_evictions is not None and gauges.l1_evictions > self._evicted:
            self.evictions.labels(tier="l1").inc(gauges.l1_evictions - self._evicted)
            self._evicted = gauges.l1_evictions
        if gauges.breaker is not None:
            self.breaker.set(BREAKER_STATES[gauges.breaker])
        for tier, value in gauges.tiers_up.items():
            self.up.labels(tier=tier).set(value)

    def close(self) -> None:
        """This worker is going: its live gauges no longer count."""
        if self._timer is not None:
            self._timer.cancel()
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
