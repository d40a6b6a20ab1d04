"""One byte budget (issue 14, item 6): L1, the memo and every index stay within
``TIERED_CACHE_L1_MAX_BYTES``, however many distinct URLs a client floods the cache with.

Measured with tracemalloc (Python allocations: what the cache holds, not the allocator's
slack), after a warm-up that pays for imports and one-off structures.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest
from fastapi import FastAPI, Response

from fastapi_tiered_cache import CacheSettings, install
from fastapi_tiered_cache.memo import Memo

from .helpers import SECRET

BUDGET = 8 * 1024 * 1024
BODY = 200 * 1024
SLACK = 1024 * 1024  # the app's own objects, the event loop, tracemalloc's frames


def flood_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> Response:
        body = item_id.to_bytes(4, "big") * (BODY // 4)  # a new body each time, as real ones
        return Response(body, media_type="application/octet-stream")

    return app


async def get(app: Any, path: str, query: bytes = b"") -> int:
    status = 0

    sent = False

    async def receive() -> dict[str, Any]:  # the body once, then nothing
        nonlocal sent
        if sent:  # as a server does: nothing more until the client goes
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"test"), (b"user-agent", b"flood")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    await app(scope, receive, send)
    return status


async def flood(app: Any, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        # Each URL three times: stored; a hit (the memo learns the mapping); a memo hit
        # (the memo holds the record to reuse its headers).
        for _ in range(3):
            status = await get(app, f"/items/{n}", b"page=%d&%s" % (n, b"q" * 200))
            assert status == 200


async def measure(count: int) -> tuple[int, Any]:
    app = flood_app()
    cache = install(app, CacheSettings(secret_key=SECRET, l1_max_bytes=BUDGET))
    await flood(app, 50)  # warm-up: imports, route tables, the first structures
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await flood(app, count, start=50)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    await cache.close()
    return grown, cache


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_flood_of_distinct_urls_keeps_the_cache_within_its_byte_budget() -> None:
    """2,000 URLs of a 200 KB response with an 8 MB budget (it grew by 395 MB before)."""
    grown, cache = asyncio.run(measure(2000))
    assert cache.store.l1 is not None and cache.store.l1.current_bytes <= BUDGET
    assert grown <= BUDGET + SLACK, f"the process grew by {grown / 2**20:.1f} MiB"


def test_the_memo_counts_its_keys_and_records_against_its_share() -> None:
    async def run() -> Memo:
        app = flood_app()
        cache = install(app, CacheSettings(secret_key=SECRET, l1_max_bytes=BUDGET))
        await flood(app, 300)
        await cache.close()
        memo = app.__dict__["_tiered_cache_ahead"].memo
        assert isinstance(memo, Memo)
        return memo

    memo = asyncio.run(run())
    assert memo.key_bytes <= memo.key_budget
    assert memo.held_bytes <= memo.held_budget
    held = [m for m in memo.keys.values() if m.record is not None]
    assert sum(m.record.size for m in held if m.record is not None) == memo.held_bytes
    assert memo.key_budget + memo.held_budget == BUDGET // 16
    assert len(memo.keys) > 0


def test_l1_and_the_route_lookups_take_their_shares() -> None:
    cache = install(FastAPI(), CacheSettings(l1_max_bytes=BUDGET))
    assert cache.store.l1 is not None
    assert cache.store.l1.max_bytes == BUDGET - BUDGET // 8
    assert cache.memo_bytes == BUDGET // 16
    assert cache.table_bytes == BUDGET // 32
