"""Purge cached pages from application code when the data behind them changes.

A successful write through the middleware already purges its own path and its parent:
PUT /products/2 purges /products/2 and /products, with no cache code at all. Other changes
must say what they changed. A delivery (a POST to /deliveries) restocks a product shown on
other pages, and a price feed changes prices with no HTTP request at all. Both purge by
tag: every page that shows a product carries the tag product:{id}.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Response
from pydantic import BaseModel

from fastapi_tiered_cache import TieredCache, cache_policy, get_cache, install


class Product(BaseModel):
    id: int
    name: str
    price: float
    stock: int


class PriceChange(BaseModel):
    price: float


class Delivery(BaseModel):
    product_id: int
    quantity: int


PRODUCTS = {  # your database goes here
    1: Product(id=1, name="Laptop", price=999.0, stock=3),
    2: Product(id=2, name="Mouse", price=25.0, stock=40),
}

app = FastAPI()
install(app)


def find(product_id: int) -> Product:
    if product_id not in PRODUCTS:
        raise HTTPException(status_code=404, detail="no such product")
    return PRODUCTS[product_id]


@app.get("/products")
async def list_products(response: Response) -> list[Product]:
    # Tag the stored list with every product on it (the header is not sent to the client).
    response.headers["Surrogate-Key"] = " ".join(f"product:{id_}" for id_ in PRODUCTS)
    return list(PRODUCTS.values())


@app.get("/products/{product_id}")
@cache_policy(tags=["product:{product_id}"])
async def get_product(product_id: int) -> Product:
    return find(product_id)


@app.put("/products/{product_id}")
async def change_price(product_id: int, change: PriceChange) -> Product:
    find(product_id).price = change.price
    return find(product_id)  # the write itself purges /products/{product_id} and /products


@app.post("/deliveries", status_code=201)
async def receive_delivery(
    delivery: Delivery, cache: Annotated[TieredCache, Depends(get_cache)]
) -> dict[str, int]:
    find(delivery.product_id).stock += delivery.quantity
    # This write purges /deliveries by itself; the product's pages go by their tag.
    purged = await cache.invalidate_tags(f"product:{delivery.product_id}")
    return {"purged": purged}


async def apply_price_feed(prices: dict[int, float]) -> None:
    """Run by a background consumer, outside any request: the cache is on the app state."""
    for product_id, price in prices.items():
        find(product_id).price = price
    cache: TieredCache = app.state.tiered_cache
    await cache.invalidate_tags(*(f"product:{product_id}" for product_id in prices))
