"""Metrics exporters: Prometheus (``prometheus`` extra) and OpenTelemetry (``otel`` extra).

Both implement the ``Metrics`` protocol, so the wiring is one line:
``cache.exporters.append(PrometheusMetrics(cache=cache))``. Counters are fed by the events
the middleware reports; the state of the cache (L1 size, evictions, breaker, tiers up) is
read from the cache when metrics are collected, so the hit path pays nothing for it.

Labels stay bounded: a route template (never a raw path), a tier, a reason code, and a
tenant that is folded into ``other`` unless allow-listed (``TIERED_CACHE_METRICS_TENANTS``).
The client libraries are imported when an exporter is built, never at import time.

**Several worker processes** (gunicorn, ``uvicorn --workers``): with prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the workers start), every
worker writes its counters to files there and any worker's ``/metrics`` serves the sum.
The state gauges then are multiprocess gauges too (L1 entries and bytes summed over live
workers, the worst breaker state), refreshed at most once a second as events come, and at
each scrape; a worker's gauges are dropped when it shuts down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from .gauges import BREAKER_STATES, Gauges, breaker_state, read_gauges
from .instruments import BUCKETS, COUNTERS, TenantFold, series
from .metrics import Event
from .multiprocess import SharedState, multiprocess_dir, multiprocess_registry
from .otel import OpenTelemetryMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .cache import TieredCache

__all__ = [
    "BREAKER_STATES",
    "Gauges",
    "MetricsEndpoint",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "breaker_state",
    "metrics_endpoint",
    "multiprocess_dir",
    "read_gauges",
]

PROMETHEUS_HINT = (
    "PrometheusMetrics needs prometheus-client."
    " Install it with 'pip install fastapi-tiered-cache[prometheus]'."
)


class PrometheusMetrics:
    """Cache metrics for Prometheus, with prometheus-client (the ``prometheus`` extra).

    - ``registry``: where the metrics live; a private ``CollectorRegistry`` when omitted
      (pass ``prometheus_client.REGISTRY`` to join the process-wide one). In multiprocess
      mode (``PROMETHEUS_MULTIPROC_DIR``), when omitted: a registry collecting every
      worker's files, which ``metrics_endpoint`` serves.
    - ``tenants_allow``: tenants labelled by name; any other is counted as ``other``.
    - ``cache``: read at each scrape for the L1 size, evictions, breaker state and tiers up.

    Example::

        metrics = PrometheusMetrics(cache=cache, tenants_allow=settings.metrics_tenants)
        cache.exporters.append(metrics)
        app.add_route("/metrics", metrics_endpoint(metrics.registry))
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        tenants_allow: Iterable[str] = (),
        cache: TieredCache | None = None,
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            raise ImportError(PROMETHEUS_HINT) from None
        self.multiprocess = registry is None and multiprocess_dir() is not None
        # In multiprocess mode the values live in files, summed by a collector at scrape
        # time: the metrics themselves are registered nowhere.
        home = None if self.multiprocess else registry or CollectorRegistry()
        self.registry = home if home is not None else multiprocess_registry()
        self.fold = TenantFold(tenants_allow)
        self.counters = {
            name: Counter(f"tiered_cache_{name}", doc, labels, registry=home)
            for name, (doc, labels) in COUNTERS.items()
        }
        self._children: dict[tuple[str, ...], Counter] = {}
        self.seconds = Histogram(
            "tiered_cache_seconds",
            "Seconds spent in the cache per request (the application's time excluded).",
            ("outcome",),
            buckets=BUCKETS,
            registry=home,
        )
        self.cache = cache
        self.state: SharedState | None = None
        if cache is not None and self.multiprocess:
            self.state = SharedState(cache)
        elif cache is not None:
            self.registry.register(_StateCollector(cache))

    def record(
        self,
        event: Event,
        *,
        route: str = "",
        tenant: str = "",
        tier: str = "",
        reason: str = "",
    ) -> None:
        found = series(event, route=route, tenant=self.fold(tenant), tier=tier, reason=reason)
        if found is not None:
            name, labels = found
            key = (name, *labels.values())
            child = self._children.get(key)
            if child is None:  # labels() validates and locks: once per series, not per event
                child = self._children[key] = self.counters[name].labels(**labels)
            child.inc()
        if self.state is not None:
            self.state.refresh_now_and_then()

    def observe(self, seconds: float, *, route: str = "", outcome: str = "") -> None:
        self.seconds.labels(outcome=outcome).observe(seconds)

    def close(self) -> None:
        """At shutdown, in multiprocess mode: drop this worker's live gauges."""
        if self.state is not None:
            self.state.close()


class _StateCollector:
    """A prometheus-client collector reading the cache's state at each scrape."""

    def __init__(self, cache: TieredCache) -> None:
        self.cache = cache

    def describe(self) -> Iterator[Metric]:
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(read_gauges(self.cache.store))

    def _families(self, now: Gauges | None) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        entries = GaugeMetricFamily("tiered_cache_l1_entries", "Entries held in L1.")
        size = GaugeMetricFamily("tiered_cache_l1_bytes", "Bytes held in L1.")
        evictions = CounterMetricFamily(
            "tiered_cache_evictions", "Entries evicted for room.", labels=("tier",)
        )
        breaker = GaugeMetricFamily(
            "tiered_cache_breaker_state", "L2 circuit breaker: 0 closed, 1 open, 2 half-open."
        )
        up = GaugeMetricFamily(
            "tiered_cache_tier_up", "1 when a tier is configured and in use.", labels=("tier",)
        )
        if now is not None:
            if now.l1_entries is not None and now.l1_bytes is not None:
                entries.add_metric((), now.l1_entries)
                size.add_metric((), now.l1_bytes)
            if now.l1_evictions is not None:
                evictions.add_metric(("l1",), now.l1_evictions)
            if now.breaker is not None:
                breaker.add_metric((), BREAKER_STATES[now.breaker])
            for tier, value in now.tiers_up.items():
                up.add_metric((tier,), value)
        yield from (entries, size, evictions, breaker, up)


class MetricsEndpoint:
    """An ASGI app serving a registry in the Prometheus text (or OpenMetrics) format.

    - ``refresh``: called before each scrape (the scraping worker's state gauges)."""

    def __init__(
        self, registry: CollectorRegistry, refresh: Callable[[], None] | None = None
    ) -> None:
        self.registry = registry
        self.refresh = refresh

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from prometheus_client.exposition import choose_encoder

        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, b"method not allowed\n", "text/plain", [(b"allow", b"GET")])
            return
        accept = ""
        for name, value in scope["headers"]:
            if name.lower() == b"accept":
                accept = value.decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        if self.refresh is not None:
            self.refresh()
        body = encoder(self.registry)
        await _send(send, 200, b"" if scope["method"] == "HEAD" else body, content_type)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def metrics_endpoint(
    registry: CollectorRegistry, metrics: PrometheusMetrics | None = None
) -> MetricsEndpoint:
    """An ASGI endpoint for ``app.add_route(path, ...)``: the registry's text exposition
    (with ``metrics`` in multiprocess mode, its worker's state refreshed at each scrape).

    Raises ``ImportError`` with the install hint when prometheus-client is missing.
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ImportError(PROMETHEUS_HINT) from None
    state = metrics.state if metrics is not None else None
    return MetricsEndpoint(registry, state.refresh if state is not None else None)
