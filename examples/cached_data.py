"""Cache data, not only responses: a function's results and values by key, in both tiers.

The product loader stands for a slow query or a call to another service. Its results are
shared by every worker through Redis, purged by tag together with the pages that show the
product, and each caller gets its own copy of the model (change it freely).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from fastapi_tiered_cache import TieredCache, cached, get_cache, install


class Product(BaseModel):
    id: int
    name: str
    price: float
    stock: int


DATABASE = {1: Product(id=1, name="Laptop", price=999.0, stock=3)}  # your database goes here
queries = 0


@cached(ttl=300, tags=["product:{product_id}"])
async def load_product(product_id: int) -> Product:
    global queries
    queries += 1
    return DATABASE[product_id].model_copy()


app = FastAPI()
install(app)  # the same cache as get_cache(): configured by TIERED_CACHE_* variables


@app.get("/products/{product_id}/price")
async def price(product_id: int) -> dict[str, float]:
    product = await load_product(product_id)
    return {"price": product.price}


@app.post("/products/{product_id}/sale")
async def sale(
    product_id: int, cache: Annotated[TieredCache, Depends(get_cache)]
) -> dict[str, int]:
    DATABASE[product_id].stock -= 1
    # Both the cached loader result and every page tagged with the product go.
    await cache.invalidate_tags(f"product:{product_id}")
    return {"stock": DATABASE[product_id].stock}


async def exchange_rate(currency: str) -> float:
    """A value by key, computed once per cold key across every worker."""

    async def fetch() -> float:
        return {"EUR": 0.92, "GBP": 0.79}[currency]  # imagine a call to another service

    rate: float = await get_cache().get_or_set(f"rate:{currency}", fetch, ttl=60)
    return rate
