"""The ``Store`` protocol: the whole interface a cache tier offers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..entry import Record

__all__ = ["Store"]


class Store(Protocol):
    """A key-value tier holding records with a per-entry lifetime (``ttl`` in seconds).

    ``get`` returns ``None`` on a miss; a tier that cannot answer raises ``StoreUnavailable``.
    """

    async def get(self, key: str) -> Record | None: ...

    async def set(self, key: str, record: Record, ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def delete_many(self, keys: Iterable[str]) -> None: ...

    async def close(self) -> None: ...
