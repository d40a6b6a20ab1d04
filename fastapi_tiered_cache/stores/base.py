"""The ``Store`` protocol (the whole interface a cache tier offers) and the ``Runner``
protocol (how every other Redis command on the request path is given its time budget)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from redis.exceptions import RedisError

from ..entry import Record
from ..exceptions import StoreTimeout, StoreUnavailable
from ..tasks import within

__all__ = ["Runner", "Store", "TimeoutRunner", "within"]

T = TypeVar("T")


class Store(Protocol):
    """A key-value tier holding records with a per-entry lifetime (``ttl`` in seconds).

    ``get`` returns ``None`` on a miss; a tier that cannot answer raises ``StoreUnavailable``.
    """

    async def get(self, key: str) -> Record | None: ...

    async def set(self, key: str, record: Record, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def delete_many(self, keys: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


class Runner(Protocol):
    """Runs one Redis operation within ``budgets`` time budgets, or raises
    ``StoreUnavailable``. ``operation`` is a factory: the runner decides where (in which
    task) the command runs, so that one slow to cancel can be abandoned rather than
    awaited. ``TieredStore.run`` is the runner of a ``TieredCache``: the L2 budget counted
    while the event loop can listen, the circuit breaker and the in-flight bound, shared
    by the entries, generation counters, indexes and fleet leases."""

    def __call__(
        self, operation: Callable[[], Awaitable[T]], what: str, budgets: float = 1.0
    ) -> Awaitable[T]: ...


class TimeoutRunner:
    """The simplest ``Runner``: ``timeout`` seconds of wall time per budget, in the caller's
    task. For components used on their own (tests, scripts); a cache uses its store's."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def __call__(
        self, operation: Callable[[], Awaitable[T]], what: str, budgets: float = 1.0
    ) -> T:
        try:
            return await within(operation(), self.timeout * budgets)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise StoreTimeout(f"redis {what}: no answer within {self.timeout * budgets}s") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc
