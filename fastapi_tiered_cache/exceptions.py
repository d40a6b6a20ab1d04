"""Exceptions raised by fastapi-tiered-cache.

The tree::

    CacheError
    ├── ConfigurationError      invalid settings, found at start-up (also a ValueError)
    ├── StoreUnavailable        a tier could not answer in time (Redis down, slow, refused)
    └── DecodeError             a stored value is corrupt, foreign or of another format version

Only ``ConfigurationError`` ever reaches application code. ``StoreUnavailable`` is raised by
``RedisStore`` at its boundary and caught only by ``TieredStore``; ``DecodeError`` is caught
where entries are read and turned into a miss plus a delete.
"""

from __future__ import annotations

__all__ = ["CacheError", "ConfigurationError", "DecodeError", "StoreUnavailable"]


class CacheError(Exception):
    """Base class of every error raised by this package."""


class ConfigurationError(CacheError, ValueError):
    """The settings are invalid; the message names the variable to fix."""


class StoreUnavailable(CacheError):
    """A store could not serve the operation within its budget."""


class DecodeError(CacheError):
    """A stored value could not be decoded into an entry for the requested key."""
