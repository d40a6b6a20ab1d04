"""``RedisStore``: the shared L2, one round trip per operation, with a time budget.

Every command runs under ``timeout`` seconds; a ``RedisError`` or an exceeded budget
becomes ``StoreUnavailable`` here, at the boundary, and nowhere else. A value that does
not decode (corrupt, foreign, another format version) is deleted and reported as a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..codec import decode, encode
from ..entry import Record
from ..exceptions import DecodeError, StoreUnavailable

__all__ = ["RedisStore", "connect"]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")


def connect(url: str, *, connect_timeout: float, socket_timeout: float) -> Redis:
    """A ``redis.asyncio`` client for ``url`` (lazy: nothing is opened until first use)."""
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=30,
    )


class RedisStore:
    """A store on a ``redis.asyncio`` client (standalone, Sentinel or Cluster).

    - ``client``: the client; the store closes it on ``close()`` when ``owns_client``.
    - ``timeout``: seconds allowed per operation.
    """

    def __init__(self, client: Any, *, timeout: float = 0.05, owns_client: bool = True) -> None:
        self.client = client
        self.timeout = timeout
        self.owns_client = owns_client
        self.decode_errors = 0

    async def _run(self, operation: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(operation, self.timeout)
        except asyncio.TimeoutError:
            raise StoreUnavailable(f"redis {what}: no answer within {self.timeout}s") from None
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc

    async def get(self, key: str) -> Record | None:
        data = await self._run(self.client.get(key), "GET")
        if data is None:
            return None
        try:
            return decode(key, data)
        except DecodeError as exc:
            self.decode_errors += 1
            logger.warning("dropping undecodable entry: %s", exc, extra={"event": "decode_error"})
            await self.delete(key)
            return None

    async def set(self, key: str, record: Record, ttl: float) -> None:
        milliseconds = int(ttl * 1000)
        if milliseconds <= 0:
            return
        await self._run(self.client.set(key, encode(key, record), px=milliseconds), "SET")

    async def delete(self, key: str) -> None:
        await self._run(self.client.delete(key), "DEL")

    async def delete_many(self, keys: Iterable[str]) -> None:
        # One DEL per key: a multi-key DEL is not cluster-safe across hash slots.
        batch = list(keys)
        if batch:
            await self._run(asyncio.gather(*(self.client.delete(k) for k in batch)), "DEL")

    async def close(self) -> None:
        if self.owns_client:
            # Closing a broken connection must not fail the application's shutdown.
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()
