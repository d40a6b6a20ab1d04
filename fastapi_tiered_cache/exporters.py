"""Metrics exporters: Prometheus (``prometheus`` extra) and OpenTelemetry (``otel`` extra).

Both implement the ``Metrics`` protocol, so the wiring is one line:
``cache.exporters.append(PrometheusMetrics(cache=cache))``. Counters are fed by the events
the middleware reports; the state of the cache (L1 size, evictions, breaker, tiers up) is
read from the cache when metrics are collected, so the hit path pays nothing for it.

Labels stay bounded: a route template (never a raw path), a tier, a reason code, and a
tenant that is folded into ``other`` unless allow-listed (``TIERED_CACHE_METRICS_TENANTS``).
The client libraries are imported when an exporter is built, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from .identity import DEFAULT_TENANT
from .metrics import Event

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .cache import TieredCache
    from .stores import TieredStore

__all__ = [
    "BREAKER_STATES",
    "MetricsEndpoint",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "breaker_state",
    "metrics_endpoint",
    "read_gauges",
]

PROMETHEUS_HINT = (
    "PrometheusMetrics needs prometheus-client."
    " Install it with 'pip install fastapi-tiered-cache[prometheus]'."
)
OTEL_HINT = (
    "OpenTelemetryMetrics needs opentelemetry-api."
    " Install it with 'pip install fastapi-tiered-cache[otel]'."
)
OTHER_TENANT = "other"
BREAKER_STATES = {"closed": 0, "open": 1, "half-open": 2}
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


def breaker_state(store: TieredStore) -> str | None:
    """The L2 circuit breaker's state (``closed``, ``open``, ``half-open``), None if unknown.

    Read defensively: the breaker is optional and its state may be a string, an enum or an int.
    """
    state = getattr(getattr(store, "breaker", None), "state", None)
    if state is None or callable(state):
        return None
    value = getattr(state, "value", state)
    if isinstance(value, int) and not isinstance(value, bool):
        names = {number: name for name, number in BREAKER_STATES.items()}
        return names.get(value)
    text = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    text = "half-open" if text == "halfopen" else text
    return text if text in BREAKER_STATES else None


@dataclass(frozen=True, slots=True)
class Gauges:
    """The state of a cache at one moment (``None`` where a tier is absent or unknown)."""

    l1_entries: int | None
    l1_bytes: int | None
    l1_evictions: int | None
    breaker: str | None
    tiers_up: dict[str, int]


def read_gauges(store: TieredStore) -> Gauges:
    """Read the tiers' current state; a tier counts as up when configured and not cut off."""
    l1, l2 = store.l1, store.l2
    breaker = breaker_state(store) if l2 is not None else None  # it guards L2 only
    tiers_up: dict[str, int] = {}
    if l1 is not None:
        tiers_up["l1"] = 1
    if l2 is not None:
        tiers_up["l2"] = 0 if breaker == "open" else 1
    return Gauges(
        l1_entries=None if l1 is None else len(l1),
        l1_bytes=None if l1 is None else l1.current_bytes,
        l1_evictions=None if l1 is None else l1.evictions,
        breaker=breaker,
        tiers_up=tiers_up,
    )


class PrometheusMetrics:
    """Cache metrics for Prometheus, with prometheus-client (the ``prometheus`` extra).

    - ``registry``: where the metrics live; a private ``CollectorRegistry`` when omitted
      (pass ``prometheus_client.REGISTRY`` to join the process-wide one).
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
        self.registry = registry if registry is not None else CollectorRegistry()
        self.fold = TenantFold(tenants_allow)
        self.counters = {
            name: Counter(f"tiered_cache_{name}", doc, labels, registry=self.registry)
            for name, (doc, labels) in COUNTERS.items()
        }
        self._children: dict[tuple[str, ...], Counter] = {}
        self.seconds = Histogram(
            "tiered_cache_seconds",
            "Seconds spent in the cache per request (the application's time excluded).",
            ("outcome",),
            buckets=BUCKETS,
            registry=self.registry,
        )
        if cache is not None:
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

    def observe(self, seconds: float, *, route: str = "", outcome: str = "") -> None:
        self.seconds.labels(outcome=outcome).observe(seconds)


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
    """An ASGI app serving a registry in the Prometheus text (or OpenMetrics) format."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

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


def metrics_endpoint(registry: CollectorRegistry) -> MetricsEndpoint:
    """An ASGI endpoint for ``app.add_route(path, ...)``: the registry's text exposition.

    Raises ``ImportError`` with the install hint when prometheus-client is missing.
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ImportError(PROMETHEUS_HINT) from None
    return MetricsEndpoint(registry)


class OpenTelemetryMetrics:
    """Cache metrics as OpenTelemetry instruments (the ``otel`` extra: opentelemetry-api).

    The instruments match ``PrometheusMetrics`` (``tiered_cache.hits``, ...; the histogram is
    ``tiered_cache.duration`` in seconds), with the same attributes and tenant folding.

    - ``meter_provider``: the provider to use; the global one when omitted.
    - ``tenants_allow``: tenants named in attributes; any other is ``other``.
    - ``cache``: observed by the gauge callbacks (L1 size, evictions, breaker, tiers up).

    Example::

        cache.exporters.append(OpenTelemetryMetrics(cache=cache))
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        tenants_allow: Iterable[str] = (),
        cache: TieredCache | None = None,
    ) -> None:
        try:
            from opentelemetry.metrics import get_meter
        except ImportError:
            raise ImportError(OTEL_HINT) from None
        from . import __version__

        meter = get_meter("fastapi_tiered_cache", __version__, meter_provider=meter_provider)
        self.fold = TenantFold(tenants_allow)
        self.counters = {
            name: meter.create_counter(f"tiered_cache.{name}", unit="1", description=doc)
            for name, (doc, _) in COUNTERS.items()
        }
        self.duration = meter.create_histogram(
            "tiered_cache.duration",
            unit="s",
            description="Seconds spent in the cache per request (the application's time excluded).",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        if cache is not None:
            _observe_state(meter, cache)

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
            name, attributes = found
            self.counters[name].add(1, attributes)

    def observe(self, seconds: float, *, route: str = "", outcome: str = "") -> None:
        self.duration.record(seconds, {"outcome": outcome})


Readings = list[tuple[int | None, dict[str, str] | None]]  # (value, attributes)

# name, unit, description, what to read; all gauges except the evictions counter.
_OBSERVED: tuple[tuple[str, str, str, Callable[[Gauges], Readings]], ...] = (
    ("tiered_cache.l1.entries", "1", "Entries held in L1.", lambda g: [(g.l1_entries, None)]),
    ("tiered_cache.l1.bytes", "By", "Bytes held in L1.", lambda g: [(g.l1_bytes, None)]),
    (
        "tiered_cache.evictions",
        "1",
        "Entries evicted from L1 for room.",
        lambda g: [(g.l1_evictions, {"tier": "l1"})],
    ),
    (
        "tiered_cache.breaker.state",
        "1",
        "L2 circuit breaker: 0 closed, 1 open, 2 half-open.",
        lambda g: [(None if g.breaker is None else BREAKER_STATES[g.breaker], None)],
    ),
    (
        "tiered_cache.tier.up",
        "1",
        "1 when a tier is configured and in use.",
        lambda g: [(value, {"tier": tier}) for tier, value in g.tiers_up.items()],
    ),
)


def _observe_state(meter: Meter, cache: TieredCache) -> None:
    for name, unit, description, pick in _OBSERVED:
        callback = _callback(cache, pick)
        if name == "tiered_cache.evictions":
            meter.create_observable_counter(name, [callback], unit, description)
        else:
            meter.create_observable_gauge(name, [callback], unit, description)


def _callback(
    cache: TieredCache, pick: Callable[[Gauges], Readings]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        readings = pick(read_gauges(cache.store))
        return [Observation(value, attrs) for value, attrs in readings if value is not None]

    return observe
