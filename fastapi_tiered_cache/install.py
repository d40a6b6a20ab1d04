"""``install(app)``: one call that wires everything the settings ask for.

It builds the ``TieredCache``, adds the middleware, and makes the cache reachable from
application code as ``app.state.tiered_cache`` or the ``get_cache`` dependency (for code
that wants to invalidate). The middleware closes the Redis connections at shutdown.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from .cache import TieredCache
from .middleware import TieredCacheMiddleware
from .settings import CacheSettings

__all__ = ["get_cache", "install"]


def install(
    app: Starlette, settings: CacheSettings | None = None, **cache_options: Any
) -> TieredCache:
    """Install the cache on ``app`` and return it.

    Example::

        app = FastAPI()
        cache = install(app)  # reads TIERED_CACHE_* variables
    """
    cache = TieredCache(settings, **cache_options)
    app.add_middleware(TieredCacheMiddleware, cache=cache)
    app.state.tiered_cache = cache
    return cache


def get_cache(connection: HTTPConnection) -> TieredCache:
    """FastAPI dependency returning the installed cache: ``cache = Depends(get_cache)``."""
    cache = getattr(connection.app.state, "tiered_cache", None)
    if cache is None:
        cache = getattr(connection.state, "tiered_cache", None)
    if not isinstance(cache, TieredCache):
        raise RuntimeError("no TieredCache installed on this app; call install(app) first")
    return cache


# It reads only app state, so it does not make a route's responses depend on the request.
setattr(get_cache, "__tiered_cache_policy__safe", True)
