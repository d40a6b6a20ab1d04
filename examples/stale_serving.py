"""Serve a stale response while it is refreshed, or while the origin is failing.

Both routes call a slow upstream (a price feed, an exchange-rate provider) that is
sometimes down. Their stale windows come from a route rule and from @cache_policy; an
origin can also send them itself (Cache-Control: stale-while-revalidate=60). The same
rule from the environment:

    TIERED_CACHE_RULES='[{"path": "/prices", "ttl": 10,
                          "stale_while_revalidate": 60, "stale_if_error": 600}]'
    TIERED_CACHE_ORIGIN_TIMEOUT=2
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

from fastapi_tiered_cache import CacheSettings, RouteRule, cache_policy, install


class Upstream:
    """Stands in for a slow third-party API; set ``down`` to make it fail."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = 0  # how many times it has been asked
        self.down = False

    async def fetch(self) -> dict[str, object]:
        self.version += 1
        if self.down:
            raise ConnectionError(f"{self.name} is unreachable")
        return {"source": self.name, "version": self.version}


prices = Upstream("price feed")
rates = Upstream("rates provider")

settings = CacheSettings(
    rules=[
        # Fresh for 10 s; then served stale for up to 60 s more while one refresh runs,
        # and for up to 600 s more if the refresh fails.
        RouteRule(path="/prices", ttl=10, stale_while_revalidate=60, stale_if_error=600),
    ],
    origin_timeout=2.0,  # seconds: past this, a request with a stale fallback gets it
)
app = FastAPI()
cache = install(app, settings)


@app.get("/prices")
async def get_prices() -> dict[str, object]:
    try:
        return await prices.fetch()
    except ConnectionError as exc:
        raise HTTPException(status_code=502, detail=str(exc)) from None


@app.get("/rates")
@cache_policy(ttl=60, stale_if_error=3600)  # no stale-while-revalidate: refreshed in line
async def get_rates() -> dict[str, object]:
    return await rates.fetch()  # an exception here is answered with the stale entry too
