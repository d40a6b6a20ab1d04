"""The data API outside FastAPI: a worker or a script, configured by the same variables.

``get_cache()`` builds the process's cache from ``TIERED_CACHE_*`` on first use. Run it
with ``python -m examples.worker_script``; with ``TIERED_CACHE_REDIS_URL`` set, a second
run finds the report the first one stored.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel

from fastapi_tiered_cache import cached, get_cache


class Report(BaseModel):
    day: str
    orders: int


runs = 0


@cached(ttl=timedelta(hours=1), key="report:{day}")
async def daily_report(day: str) -> Report:
    global runs
    runs += 1
    return Report(day=day, orders=42)  # an expensive aggregation goes here


async def main() -> list[Report]:
    cache = get_cache()
    await cache.set("last-run", "2024-05-01", ttl=3600)
    first = await daily_report("2024-05-01")
    again = await daily_report(day="2024-05-01")  # the same entry, not computed again
    stored = await cache.get("report:2024-05-01", as_type=Report)  # the key= template
    await cache.close()
    return [first, again, stored]


if __name__ == "__main__":
    print(asyncio.run(main()))
