"""OpenTelemetry metrics (the ``otel`` extra: opentelemetry-api), the same instruments as
the Prometheus exporter's. The client library is imported when the exporter is built,
never at import time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .gauges import BREAKER_STATES, Gauges, read_gauges
from .instruments import BUCKETS, COUNTERS, TenantFold, series
from .metrics import Event

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

    from .cache import TieredCache

__all__ = ["OpenTelemetryMetrics"]

OTEL_HINT = (
    "OpenTelemetryMetrics needs opentelemetry-api."
    " Install it with 'pip install fastapi-tiered-cache[otel]'."
)


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
