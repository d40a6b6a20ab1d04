"""A real origin for the mixed workload: one ``SELECT`` by primary key in PostgreSQL.

``python benchmarks/mixed.py --origin postgres [--dsn ...]`` uses it instead of
``asyncio.sleep``: every origin call then costs CPU in the app (asyncpg) and in the
database, as a real endpoint does. The table ``bench_mixed_items`` (created and filled
once by ``prepare``; nothing else is touched) holds one row per item id. Needs asyncpg
(``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

TABLE = "bench_mixed_items"
QUERY = f"SELECT id, name, price, description FROM {TABLE} WHERE id = $1"


def prepare(dsn: str, rows: int, log: Callable[[str], None]) -> None:
    """Create and fill the table when it does not hold ``rows`` rows yet."""

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                "id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL, "
                "description text NOT NULL)"
            )
            count = await conn.fetchval(f"SELECT count(*) FROM {TABLE}")
            if count != rows:
                log(f"postgres: filling {TABLE} with {rows:,} rows")
                await conn.execute(f"TRUNCATE {TABLE}")
                await conn.execute(
                    f"INSERT INTO {TABLE} SELECT i, 'Product number ' || i, 5 + (i % 997) * 0.37, "
                    f"repeat('lorem ipsum ', 50) FROM generate_series(1, {rows}) AS i"
                )
                await conn.execute(f"ANALYZE {TABLE}")
        finally:
            await conn.close()

    asyncio.run(run())


def pg_origin(dsn: str, pool_size: int) -> tuple[Callable[[int], Awaitable[None]], Any]:
    """The origin (one query per call) and the lifespan that opens and closes its pool of
    at most ``pool_size`` connections (the harness gives each worker its share of wrk's
    connections, so that every server of a group stays within max_connections)."""
    state: dict[str, Any] = {}

    async def origin(item_id: int) -> None:
        await state["pool"].fetchrow(QUERY, item_id)  # the document is built by the app

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        import asyncpg

        state["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
        try:
            yield
        finally:
            await state["pool"].close()

    return origin, lifespan
