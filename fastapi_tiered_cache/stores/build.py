"""The two tiers as the settings describe them: L1 bounded by entries and bytes, with a
share per tenant; L2 over a client the cache makes (one per event loop) or is given.

Kept apart from ``TieredCache`` so that the composition root says *what* it assembles,
and this module *how* each tier is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..metrics import Event
from .connect import build_client_from_settings
from .loops import PerLoopClient
from .memory import MemoryStore
from .redis import RedisStore

if TYPE_CHECKING:
    from ..cache_settings import CacheSettings

__all__ = ["build_l1", "build_l2"]

Report = Callable[[Event, str], None]


def build_l1(settings: CacheSettings, timer: Callable[[], float]) -> MemoryStore | None:
    """L1, or None when it is turned off (no entries or no bytes allowed). It gets 7/8 of
    the byte budget: the rest is for the memo, route lookups and indexes."""
    entries, budget = settings.l1_max_entries, settings.l1_max_bytes
    if entries <= 0 or budget <= 0:
        return None
    return MemoryStore(
        entries,
        budget - budget // 8,
        timer=timer,
        tenant_share=settings.l1_tenant_share,
        tenant_of=tenant_of_key,
    )


def build_l2(settings: CacheSettings, redis: Any, report: Report) -> RedisStore | None:
    """L2 over ``redis`` (a client, left open for its owner, or a factory the cache calls
    once per event loop), else over the client ``redis_url`` describes; None without one."""
    options: dict[str, Any] = {
        "timeout": settings.redis_timeout,
        "max_in_flight": settings.redis_max_connections,
        "report": report,
    }
    if redis is not None and is_factory(redis):
        # Clients made by the cache's own factory, one per event loop, closed with it.
        return RedisStore(PerLoopClient(redis), **options)
    if redis is not None:
        return RedisStore(redis, owns_client=False, **options)
    if settings.redis_url is None:
        return None
    # One client per event loop (see stores/loops.py): tests and scripts run several.
    return RedisStore(PerLoopClient(lambda: build_client_from_settings(settings)), **options)


def is_factory(redis: Any) -> bool:
    """Whether ``redis=`` is a factory of clients rather than a client."""
    return callable(redis) and not hasattr(redis, "execute_command")


def tenant_of_key(key: str) -> str | None:
    """The tenant label in ``{namespace}:{generations}:{tenant}:{scope}:{digest}``."""
    parts = key.split(":", 3)
    return parts[2] if len(parts) == 4 else None
