"""fastapi-tiered-cache: a two-tier (in-process + Redis) cache for ASGI apps: HTTP responses
and, through ``get_cache()`` and ``@cached``, any data."""

from __future__ import annotations

from .cache import TieredCache
from .decorators import CachedFunction, cached
from .entry import CachedResponse
from .exceptions import (
    CacheError,
    ConfigurationError,
    DecodeError,
    StoreUnavailable,
    ValueNotSerializable,
)
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
    "CachedFunction",
    "CachedResponse",
    "ConfigurationError",
    "DecodeError",
    "Identity",
    "RouteRule",
    "StoreUnavailable",
    "TieredCache",
    "TieredCacheMiddleware",
    "ValueNotSerializable",
    "__version__",
    "cache_policy",
    "cached",
    "get_cache",
    "install",
    "load_settings",
    "no_cache",
]
