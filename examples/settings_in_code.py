from fastapi import FastAPI

from fastapi_tiered_cache import CacheSettings, RouteRule, install

settings = CacheSettings(
    default_ttl=30,  # seconds
    rules=[
        RouteRule(path="/products/**", ttl=300),
        RouteRule(path="/admin/**", cache=False),
    ],
    vary_on=["accept-language"],
)
app = FastAPI()
cache = install(app, settings)  # the same object is app.state.tiered_cache


@app.get("/products/{product_id}")
async def get_product(product_id: int) -> dict[str, object]:
    return {"id": product_id, "name": "Laptop"}


@app.get("/admin/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
