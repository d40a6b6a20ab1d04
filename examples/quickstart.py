from fastapi import FastAPI

from fastapi_tiered_cache import install

app = FastAPI()
install(app)  # configured by the TIERED_CACHE_* environment variables


@app.get("/products")
async def list_products() -> list[dict[str, object]]:
    return [{"id": 1, "name": "Laptop", "price": 999.99}]  # imagine a slow query here
