"""Exceptions raised by fastapi-tiered-cache.

The tree::

    CacheError
    ├── ConfigurationError      invalid settings, found at start-up (also a ValueError)
    ├── StoreUnavailable        a tier could not answer in time (Redis down, slow, refused)
    │   ├── StoreTimeout        no answer within the budget (the circuit breaker counts it)
    │   └── Overloaded          this process could not run it in time (not counted)
    ├── DecodeError             a stored value is corrupt, foreign or of another format version
    └── ValueNotSerializable    a value given to the data API cannot be stored (also a TypeError)

Only ``ConfigurationError`` and ``ValueNotSerializable`` (raised by ``cache.set`` and
``@cached`` for a value msgpack cannot hold, at the call that gave it) ever reach
application code. ``StoreUnavailable`` is raised by
``RedisStore`` at its boundary and caught only by ``TieredStore``; ``DecodeError`` is caught
where entries are read and turned into a miss plus a delete.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "ConfigurationError",
    "DecodeError",
    "Overloaded",
    "StoreTimeout",
    "StoreUnavailable",
    "ValueNotSerializable",
]


class CacheError(Exception):
    """Base class of every error raised by this package."""


class ConfigurationError(CacheError, ValueError):
    """The settings are invalid; the message names the variable to fix."""


class StoreUnavailable(CacheError):
    """A store could not serve the operation within its budget."""


class StoreTimeout(StoreUnavailable):
    """The store did not answer within its time budget (counted by the breaker)."""


class Overloaded(StoreUnavailable):
    """This process could not run the operation in time: its event loop was saturated or
    its connection pool exhausted. Says nothing about the server, so the breaker ignores it.
    """


class DecodeError(CacheError):
    """A stored value could not be decoded into an entry for the requested key."""


class ValueNotSerializable(CacheError, TypeError):
    """A value given to the data API cannot be stored as msgpack; the message names its type.

    Raised when the value is given (``set``, or the return of a ``@cached`` function), never
    later when it is read.
    """

    def __init__(self, value: object, detail: str = "") -> None:
        kind = type(value)
        name = (
            f"{kind.__module__}.{kind.__qualname__}"
            if kind.__module__ != "builtins"
            else kind.__qualname__
        )
        message = f"cannot cache a value of type {name}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.type = kind
