"""Prometheus and OpenTelemetry exporters: traffic through the middleware, read back."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from fastapi_tiered_cache import TieredCache, TieredCacheMiddleware
from fastapi_tiered_cache.exporters import (
    OpenTelemetryMetrics,
    PrometheusMetrics,
    breaker_state,
    metrics_endpoint,
)
from fastapi_tiered_cache.metrics import Event, Metrics
from tests.helpers import SECRET
from tests.support.fleet import Fleet
from tests.support.redis_server import RedisServer

from .helpers import Origin, client_for, make_cache

Labels = dict[str, str]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def prometheus(cache: TieredCache, tenants: list[str] | None = None) -> PrometheusMetrics:
    metrics = PrometheusMetrics(cache=cache, tenants_allow=tenants or [])
    cache.exporters.append(metrics)
    return metrics


def scrape(metrics: PrometheusMetrics) -> dict[str, list[tuple[str, Labels, float]]]:
    """Family name -> samples, parsed from the text exposition of the registry."""
    text = generate_latest(metrics.registry).decode()
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def total(
    families: dict[str, list[tuple[str, Labels, float]]], sample: str, **labels: str
) -> float:
    return sum(
        value
        for samples in families.values()
        for name, found, value in samples
        if name == sample and all(found.get(k) == v for k, v in labels.items())
    )


def label_values(
    families: dict[str, list[tuple[str, Labels, float]]], sample: str, label: str
) -> set[str]:
    return {
        found[label]
        for samples in families.values()
        for name, found, _ in samples
        if name == sample
    }


def items_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


# -- Prometheus, through the middleware ------------------------------------------------


async def test_counts_hits_misses_stores_and_bypasses() -> None:
    cache = make_cache()
    metrics = prometheus(cache)
    async with client_for(Origin(), cache) as client:
        await client.get("/a")
        await client.get("/a")
        await client.get("/a")
        await client.put("/a")
        await client.get("/b", headers={"cache-control": "no-store"})
    families = scrape(metrics)
    assert total(families, "tiered_cache_hits_total", tier="l1") == 2
    assert total(families, "tiered_cache_hits_total", tier="l2") == 0
    assert total(families, "tiered_cache_misses_total", reason="miss") == 2
    assert total(families, "tiered_cache_stores_total") == 1
    assert total(families, "tiered_cache_bypass_total", reason="method") == 1


async def test_gauges_read_the_cache_at_scrape_time() -> None:
    cache = make_cache(l1_max_entries=2)
    metrics = prometheus(cache)
    async with client_for(Origin(), cache) as client:
        for path in ("/a", "/b", "/c"):
            await client.get(path)
        families = scrape(metrics)  # before the client closes the cache (and drops L1)
        l1 = cache.store.l1
        assert l1 is not None
        assert total(families, "tiered_cache_l1_entries") == 2 == len(l1)
        assert total(families, "tiered_cache_l1_bytes") == l1.current_bytes > 0
    assert total(families, "tiered_cache_evictions_total", tier="l1") == 1
    assert total(families, "tiered_cache_tier_up", tier="l1") == 1
    assert label_values(families, "tiered_cache_tier_up", "tier") == {"l1"}  # no L2 configured
    assert "tiered_cache_breaker_state" not in {
        name for samples in families.values() for name, _, _ in samples
    }


class _State(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@pytest.mark.parametrize(
    ("state", "expected", "l2_up"),
    [(_State.CLOSED, 0, 1), ("open", 1, 0), (_State.HALF_OPEN, 2, 1), (2, 2, 1)],
    ids=["closed-enum", "open-str", "half-open-enum", "half-open-int"],
)
async def test_breaker_state_and_l2_up(state: object, expected: int, l2_up: int) -> None:
    cache = make_cache(redis=fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    cache.store.breaker = SimpleNamespace(state=state)
    families = scrape(prometheus(cache))
    assert total(families, "tiered_cache_breaker_state") == expected
    assert total(families, "tiered_cache_tier_up", tier="l2") == l2_up
    await cache.close()


@pytest.mark.parametrize(
    ("breaker", "expected"),
    [
        (None, None),
        (SimpleNamespace(), None),
        (SimpleNamespace(state="HALF-OPEN"), "half-open"),
        (SimpleNamespace(state="melting"), None),
        (SimpleNamespace(state=7), None),
        (SimpleNamespace(state=lambda: "open"), None),
    ],
    ids=["no-breaker", "no-state", "upper-case", "unknown-name", "unknown-int", "method"],
)
def test_breaker_state_is_read_defensively(breaker: object, expected: str | None) -> None:
    assert breaker_state(SimpleNamespace(breaker=breaker)) == expected


@pytest.mark.parametrize("counter", ["stores", "misses", "hits"])
async def test_tenant_labels_are_bounded_by_the_allow_list(counter: str) -> None:
    cache = make_cache(metrics_tenants=["t1", "t2"])
    metrics = prometheus(cache, cache.settings.metrics_tenants)
    async with client_for(Origin(), cache) as client:
        for _ in range(2):  # the second round hits
            for n in range(100):
                await client.get("/a", headers={"x-tenant-id": f"t{n}"})
    families = scrape(metrics)
    sample = f"tiered_cache_{counter}_total"
    assert label_values(families, sample, "tenant") == {"t1", "t2", "other"}
    assert total(families, sample, tenant="t1") == 1
    assert total(families, sample, tenant="other") == 98


async def test_route_label_is_the_route_template() -> None:
    cache = make_cache()
    metrics = prometheus(cache)
    async with client_for(items_app(), cache) as client:
        for item in (1, 2, 1, 2):
            await client.get(f"/items/{item}")
    families = scrape(metrics)
    assert label_values(families, "tiered_cache_stores_total", "route") == {"/items/{item_id}"}
    assert total(families, "tiered_cache_stores_total", route="/items/{item_id}") == 2
    assert total(families, "tiered_cache_hits_total", route="/items/{item_id}") == 2
    assert total(families, "tiered_cache_misses_total", route="/items/{item_id}") == 2


async def test_time_in_the_cache_is_observed_per_outcome() -> None:
    cache = make_cache()
    metrics = prometheus(cache)
    async with client_for(Origin(), cache) as client:
        await client.get("/a")
        await client.get("/a")
    families = scrape(metrics)
    assert total(families, "tiered_cache_seconds_count", outcome="hit") == 1
    assert total(families, "tiered_cache_seconds_count", outcome="miss") == 1


async def test_invalidations_are_counted_by_kind() -> None:
    cache = make_cache()
    metrics = prometheus(cache)
    await cache.invalidate_path("/a")
    await cache.invalidate_tags("x", "y")
    await cache.invalidate_all()
    families = scrape(metrics)
    assert total(families, "tiered_cache_invalidations_total", kind="path") == 1
    assert total(families, "tiered_cache_invalidations_total", kind="tag") == 1
    assert total(families, "tiered_cache_invalidations_total", kind="all") == 1
    await cache.close()


# -- Prometheus, unit ------------------------------------------------------------------


def test_every_event_lands_on_its_counter() -> None:
    metrics = PrometheusMetrics(tenants_allow=["acme"])
    record: Metrics = metrics  # it is a Metrics sink
    record.record(Event.HIT, route="/r", tenant="acme", tier="l2")
    record.record(Event.MISS, route="/r", tenant="zzz", reason="vary-miss")
    record.record(Event.STALE, route="/r", tenant="acme", reason="if-error")
    record.record(Event.BYPASS, route="/r", reason="no-store")
    record.record(Event.STORE, route="/r", tenant="acme")
    record.record(Event.REDIS_ERROR)
    record.record(Event.REDIS_TIMEOUT)
    record.record(Event.REDIS_TIMEOUT)
    record.record(Event.COALESCED, route="/r", tenant="acme")
    record.record(Event.INVALIDATION, reason="tag")
    record.record(Event.EVICTION, tier="l1")  # read from the store instead
    record.observe(0.002, route="/r", outcome="hit")
    families = scrape(metrics)
    assert total(families, "tiered_cache_hits_total", tier="l2", route="/r", tenant="acme") == 1
    assert total(families, "tiered_cache_misses_total", tenant="other", reason="vary-miss") == 1
    assert total(families, "tiered_cache_stale_total", reason="if-error") == 1
    assert total(families, "tiered_cache_bypass_total", reason="no-store", route="/r") == 1
    assert total(families, "tiered_cache_stores_total", tenant="acme") == 1
    assert total(families, "tiered_cache_redis_errors_total", kind="error") == 1
    assert total(families, "tiered_cache_redis_errors_total", kind="timeout") == 2
    assert total(families, "tiered_cache_coalesced_total") == 1
    assert total(families, "tiered_cache_invalidations_total", kind="tag") == 1
    assert "tiered_cache_evictions" not in families  # no cache bound: nothing to read
    assert total(families, "tiered_cache_seconds_count", outcome="hit") == 1
    assert total(families, "tiered_cache_seconds_sum", outcome="hit") == pytest.approx(0.002)
    assert total(families, "tiered_cache_seconds_bucket", outcome="hit", le="0.0025") == 1
    assert total(families, "tiered_cache_seconds_bucket", outcome="hit", le="0.001") == 0


def test_default_tenant_and_unlabelled_events_keep_their_tenant() -> None:
    metrics = PrometheusMetrics()
    metrics.record(Event.STORE, tenant="_")
    metrics.record(Event.STORE)
    metrics.record(Event.STORE, tenant="someone")
    families = scrape(metrics)
    assert label_values(families, "tiered_cache_stores_total", "tenant") == {"_", "", "other"}


def test_each_exporter_has_its_own_registry_by_default() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.record(Event.STORE)
    assert total(scrape(first), "tiered_cache_stores_total") == 1
    assert total(scrape(second), "tiered_cache_stores_total") == 0


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    def hide(*modules: str) -> None:
        for module in modules:
            monkeypatch.setitem(sys.modules, module, None)

    return hide


def test_missing_prometheus_client_says_how_to_install(without: Any) -> None:
    without("prometheus_client")
    hint = r"pip install fastapi-tiered-cache\[prometheus\]"
    with pytest.raises(ImportError, match=hint):
        PrometheusMetrics()
    with pytest.raises(ImportError, match=hint):
        metrics_endpoint(object())


def test_missing_opentelemetry_says_how_to_install(without: Any) -> None:
    without("opentelemetry", "opentelemetry.metrics")
    with pytest.raises(ImportError, match=r"pip install fastapi-tiered-cache\[otel\]"):
        OpenTelemetryMetrics()


# -- the metrics endpoint -------------------------------------------------------------


def metrics_app(metrics: PrometheusMetrics) -> Starlette:
    return Starlette(routes=[Route("/metrics", metrics_endpoint(metrics.registry))])


async def test_endpoint_serves_text_and_openmetrics_and_is_never_stored() -> None:
    cache = make_cache()
    metrics = prometheus(cache)
    async with client_for(metrics_app(metrics), cache) as client:
        first = await client.get("/metrics")
        second = await client.get("/metrics")
        open_metrics = await client.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
        head = await client.head("/metrics")
        post = await client.post("/metrics")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert first.headers["cache-control"] == "no-store"
    assert second.headers["x-cache"] in ("MISS", "BYPASS")  # scraped fresh every time
    assert "tiered_cache_misses_total" in second.text
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")
    assert head.status_code == 200
    assert head.content == b""
    assert post.status_code == 405
    assert post.headers["allow"] == "GET"
    assert len(cache.store.l1 or ()) == 0


# -- OpenTelemetry -------------------------------------------------------------------


class OTel:
    """An SDK meter provider with an in-memory reader, read back as (name, attrs) -> value."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: list(metric.data.data_points)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    @staticmethod
    def value(points: dict[str, list[Any]], name: str, **attrs: str) -> float:
        return sum(
            getattr(point, "value", None) or getattr(point, "count", 0)
            for point in points.get(name, [])
            if all(point.attributes.get(k) == v for k, v in attrs.items())
        )


@pytest.fixture
def otel() -> Iterator[OTel]:
    setup = OTel()
    yield setup
    setup.provider.shutdown()


async def test_opentelemetry_counts_the_same_outcomes(otel: OTel) -> None:
    cache = make_cache(l1_max_entries=2)
    cache.exporters.append(OpenTelemetryMetrics(otel.provider, cache=cache))
    async with client_for(Origin(), cache) as client:
        await client.get("/a")
        await client.get("/a")
        await client.put("/z")
        for path in ("/b", "/c"):
            await client.get(path)
        points = otel.points()  # before the client closes the cache (and drops L1)
        l1_bytes = getattr(cache.store.l1, "current_bytes", -1)
    assert OTel.value(points, "tiered_cache.hits", tier="l1") == 1
    assert OTel.value(points, "tiered_cache.misses", reason="miss") == 3
    assert OTel.value(points, "tiered_cache.stores") == 3
    assert OTel.value(points, "tiered_cache.bypass", reason="method") == 1
    assert OTel.value(points, "tiered_cache.l1.entries") == 2
    assert OTel.value(points, "tiered_cache.l1.bytes") == l1_bytes
    assert OTel.value(points, "tiered_cache.evictions", tier="l1") == 1
    assert OTel.value(points, "tiered_cache.tier.up", tier="l1") == 1
    assert "tiered_cache.breaker.state" not in points or not points["tiered_cache.breaker.state"]


async def test_opentelemetry_tenants_are_bounded(otel: OTel) -> None:
    cache = make_cache()
    cache.exporters.append(OpenTelemetryMetrics(otel.provider, tenants_allow=["t1"]))
    async with client_for(Origin(), cache) as client:
        for n in range(100):
            await client.get("/a", headers={"x-tenant-id": f"t{n}"})
    stores = otel.points()["tiered_cache.stores"]
    assert {point.attributes["tenant"] for point in stores} == {"t1", "other"}
    assert OTel.value(otel.points(), "tiered_cache.stores", tenant="other") == 99


def test_opentelemetry_histogram_and_event_attributes(otel: OTel) -> None:
    metrics = OpenTelemetryMetrics(otel.provider)
    metrics.record(Event.REDIS_TIMEOUT)
    metrics.record(Event.INVALIDATION, reason="prefix")
    metrics.record(Event.EVICTION)
    metrics.observe(0.003, outcome="miss")
    metrics.observe(0.0004, outcome="miss")
    points = otel.points()
    assert OTel.value(points, "tiered_cache.redis_errors", kind="timeout") == 1
    assert OTel.value(points, "tiered_cache.invalidations", kind="prefix") == 1
    assert "tiered_cache.evictions" not in points  # only observed from a bound cache
    (histogram,) = points["tiered_cache.duration"]
    assert histogram.count == 2
    assert histogram.sum == pytest.approx(0.0034)
    assert histogram.attributes == {"outcome": "miss"}
    assert 0.001 in histogram.explicit_bounds  # sub-millisecond buckets, not the ms defaults


async def test_metrics_endpoint_works_behind_install_like_wiring() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, int]:
        return {"x": 1}

    cache = make_cache()
    metrics = prometheus(cache)
    app.add_route("/metrics", metrics_endpoint(metrics.registry), include_in_schema=False)
    wrapped = TieredCacheMiddleware(app, cache=cache)
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/x")
        await client.get("/x")
        scraped = await client.get("/metrics")
    families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
    hits = [s for s in families["tiered_cache_hits"].samples if s.name.endswith("_total")]
    assert sum(s.value for s in hits) == 1


# -- several worker processes ----------------------------------------------------------


def _samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of the samples of ``name`` in a text exposition."""
    found = {}
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            series, _, value = line.rpartition(" ")
            found[series[len(name) :]] = float(value)
    return found


def test_multiprocess_mode_sums_every_worker(
    tmp_path: Path, fresh_redis_server: RedisServer, redis_url: str
) -> None:
    """Two uvicorn processes in prometheus_client's multiprocess mode: either one's
    /metrics shows both workers' counters, and their L1 sizes summed."""
    env = {
        "TIERED_CACHE_REDIS_URL": fresh_redis_server.url,
        "TIERED_CACHE_SECRET_KEY": SECRET,
        "TIERED_CACHE_PROMETHEUS_ENABLED": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "FLEET_DATA_URL": redis_url,
    }
    with Fleet(2, env) as fleet:
        first, second = (
            httpx.Client(base_url=url, headers={"host": "w.test"}, verify=False)
            for url in fleet.urls
        )
        for _ in range(3):
            assert first.get("/items/a").status_code == 200  # a miss, then L1 hits
        for _ in range(2):
            assert second.get("/items/a").status_code == 200  # an L2 hit, then an L1 hit
        time.sleep(1.1)  # the first worker's gauges follow its last event within a second
        text = second.get("/metrics").text
        first.close()
        second.close()
    hits = _samples(text, "tiered_cache_hits_total")
    assert sum(hits.values()) == 4
    assert sum(v for k, v in hits.items() if 'tier="l2"' in k) >= 1  # the second's first
    misses = _samples(text, "tiered_cache_misses_total")
    assert sum(v for k, v in misses.items() if 'route="/items/{name}"' in k) == 1
    assert _samples(text, "tiered_cache_l1_entries") == {"": 2.0}
