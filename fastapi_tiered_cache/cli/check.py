"""``check``: validate the settings and reach Redis, before an app is deployed with them."""

from __future__ import annotations

import argparse
import asyncio

from .connect import cache_for, ping_and_close, read_settings

__all__ = ["command_check"]


def command_check(args: argparse.Namespace) -> int:
    """One verdict (stdout, exit 0; or one error line on stderr, exit 1 or 2), then details.

    Everything is checked before anything is printed, so a bad Redis URL or an unreachable
    Redis is never preceded by an "ok".
    """
    settings = read_settings()
    cache = cache_for(settings)  # also validates TIERED_CACHE_REDIS_URL
    details = ["settings: valid"]
    if not settings.enabled:
        details.append("the cache is disabled (TIERED_CACHE_ENABLED=false)")
    if settings.l1_max_entries > 0 and settings.l1_max_bytes > 0:
        details.append(
            f"L1: in process, {settings.l1_max_entries} entries, {settings.l1_max_bytes} B"
        )
    else:
        details.append("L1: off")
    if settings.redis_url is None:
        details.append("L2: none (no TIERED_CACHE_REDIS_URL): L1 only")
    else:
        elapsed = asyncio.run(ping_and_close(cache, settings.redis_connect_timeout))
        details.append(f"L2: Redis answered PING in {elapsed * 1000:.1f} ms")
    print(f"ok: the cache can start ({cache.tiers if settings.enabled else 'disabled'})")
    for detail in details:
        print(f"  {detail}")
    return 0
