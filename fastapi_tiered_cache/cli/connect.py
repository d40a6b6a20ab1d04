"""The settings and the Redis connection of a command: read once, every failure turned
into a ``UserError`` (one line, the right exit status), and a PING within a time limit,
so a command that needs Redis says at once when it cannot reach it."""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import RedisError

from ..cache import TieredCache
from ..exceptions import ConfigurationError
from ..settings import CacheSettings, load_settings
from ..tasks import within
from .errors import USAGE, UserError

__all__ = ["cache_for", "ping", "ping_and_close", "read_settings"]


def read_settings() -> CacheSettings:
    """The settings from the environment; invalid ones are a usage error (exit 2)."""
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise UserError(f"error: {exc}", USAGE) from None


def cache_for(settings: CacheSettings) -> TieredCache:
    """A cache built from ``settings``; a Redis URL redis-py refuses is a usage error."""
    try:
        return TieredCache(settings)
    except ValueError as exc:  # a ConfigurationError, or a Redis URL redis-py refuses
        raise UserError(f"error: {exc}", USAGE) from None


async def ping(cache: TieredCache, timeout: float) -> float:
    """PING the cache's L2 within ``timeout`` seconds; the seconds it took."""
    client = getattr(cache.store.l2, "client", None)
    if client is None:
        raise UserError("error: no Redis tier is configured", USAGE)
    started = time.perf_counter()
    try:
        await within(client.ping(), timeout)
    except asyncio.TimeoutError:
        raise UserError(f"error: Redis is unreachable: no answer within {timeout}s") from None
    except (RedisError, OSError) as exc:
        raise UserError(f"error: Redis is unreachable: {type(exc).__name__}: {exc}") from None
    return time.perf_counter() - started


async def ping_and_close(cache: TieredCache, timeout: float) -> float:
    """``ping``, then close the cache's connections whatever happened."""
    try:
        return await ping(cache, timeout)
    finally:
        await cache.close()
