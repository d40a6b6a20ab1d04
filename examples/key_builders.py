"""A per-route key builder: key a route on what the automatic keys cannot know.

Prices depend on the visitor's region, which the endpoint derives from the country header
a CDN adds (``CF-IPCountry``). The endpoint reads the raw ``Request``, so the cache cannot
see what it reads and would not cache it. ``vary=["cf-ipcountry"]`` would cache it, with
one copy per country (about 250). The key builder keys it on the region instead, so all of
Europe shares one entry. The cache still adds the namespace, tenant and identity scope
around the digest, and a key builder never decides who may share an entry.

The same builder can be named in a rule instead of the decorator:

    TIERED_CACHE_RULES='[{"path": "/prices", "ttl": "10m",
                          "key_builder": "examples.key_builders:by_region"}]'
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from fastapi_tiered_cache import cache_policy, install
from fastapi_tiered_cache.keys import VaryValues, build_key
from fastapi_tiered_cache.request import RequestInfo

REGIONS = {"DE": "eu", "FR": "eu", "IT": "eu", "ES": "eu", "US": "us", "CA": "us"}
PRICES = {"eu": {"laptop": "999 EUR"}, "us": {"laptop": "1049 USD"}, "other": {}}


def region_of(country: str | None) -> str:
    """The one function that maps a country to a region: the endpoint and the key share it."""
    return REGIONS.get((country or "").strip().upper(), "other")


def by_region(info: RequestInfo, vary: VaryValues, *, secret: bytes) -> str:
    """The default digest (method, host, path, query, what the route reads), with the
    region in place of the country.

    Read the request exactly as the endpoint does: ``request.headers.get`` returns the first
    field of a repeated header, and ``info.app_headers`` lists the fields as Starlette hands
    them to the app, in order.
    """
    fields = info.app_headers("cf-ipcountry")
    region = region_of(fields[0] if fields else None)
    return build_key(info, (*vary, ("region", region)), secret=secret)


app = FastAPI()
install(app)  # TIERED_CACHE_* variables; no rule needed: the decorator opts the route in


@app.get("/prices")
@cache_policy(ttl="10m", key_builder=by_region)
async def prices(request: Request) -> dict[str, object]:
    region = region_of(request.headers.get("cf-ipcountry"))
    return {"region": region, "prices": PRICES[region]}
