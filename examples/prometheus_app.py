"""Prometheus metrics for the cache, served at /metrics.

The settings below are TIERED_CACHE_PROMETHEUS_ENABLED=true and
TIERED_CACHE_METRICS_TENANTS=acme,globex, given in code. They need the `prometheus`
extra. From the repository root:

    pip install -e ".[prometheus,demo]" && uvicorn examples.prometheus_app:app
"""

from __future__ import annotations

from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings, install

settings = CacheSettings(
    prometheus_enabled=True,  # install() serves /metrics (TIERED_CACHE_METRICS_PATH)
    metrics_tenants=["acme", "globex"],  # other tenants are counted as "other"
)
app = FastAPI()
install(app, settings)  # /metrics itself is never cached


@app.get("/products/{product_id}")
async def get_product(product_id: int) -> dict[str, object]:
    return {"id": product_id, "name": "Laptop"}  # labelled route="/products/{product_id}"
