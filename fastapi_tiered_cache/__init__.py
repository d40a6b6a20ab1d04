"""fastapi-tiered-cache: a two-tier (in-process + Redis) HTTP response cache for ASGI apps."""

from __future__ import annotations

from .cache import TieredCache
from .entry import CachedResponse
from .exceptions import CacheError, ConfigurationError, DecodeError, StoreUnavailable
from .identity import BYPASS, Identity
from .install import get_cache, install
from .middleware import TieredCacheMiddleware
from .routes import cache_policy, no_cache
from .settings import CacheSettings, RouteRule, load_settings

__version__ = "0.1.0"

__all__ = [
    "BYPASS",
    "CacheError",
    "CacheSettings",
    "CachedResponse",
    "ConfigurationError",
    "DecodeError",
    "Identity",
    "RouteRule",
    "StoreUnavailable",
    "TieredCache",
    "TieredCacheMiddleware",
    "__version__",
    "cache_policy",
    "get_cache",
    "install",
    "load_settings",
    "no_cache",
]
