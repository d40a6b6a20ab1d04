"""The public methods of ``TieredCache`` that only hand off, and the checks of their
arguments.

``TieredCache`` (``cache.py``) is the composition root: it builds the parts. What users call
on it to purge (``invalidate_*``, ``lookup``: the mechanism is ``purges.Purges``) and to keep
data (``get``, ``set``, ``delete``, ``get_or_set``: the mechanism is ``data.DataCache``) lives
here, as two mixins, so each file reads as one thing: how the cache is assembled, or what
its users may ask of it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .fields import parse_duration
from .identity import Identity

if TYPE_CHECKING:
    from .data import DataCache
    from .entry import CachedResponse
    from .purges import Purges
    from .settings import CacheSettings

__all__ = [
    "MAX_SECONDS",
    "DataAPI",
    "InvalidationAPI",
    "Principal",
    "Seconds",
    "beta_of",
    "seconds_of",
]

Seconds = float | dt.timedelta | str
Principal = str | Identity | None
MAX_SECONDS = 10 * 365 * 24 * 3600.0  # ten years: more than Redis expiries need, and finite


def seconds_of(value: Seconds | None, what: str = "ttl") -> float:
    """Seconds from a number, a ``timedelta`` or a duration as settings take it (``"5m"``,
    ``"1h30m"``); ``ValueError`` unless 0 to ``MAX_SECONDS``."""
    if value is None:
        return 0.0
    try:
        seconds = float(parse_duration(value))
    except (TypeError, ValueError):
        raise ValueError(
            f"{what} must be seconds, a timedelta or a duration such as '5m', got {value!r}"
        ) from None
    if not 0 <= seconds <= MAX_SECONDS:  # also refuses NaN and infinities
        raise ValueError(f"{what} must be 0 to {MAX_SECONDS:.0f} seconds, got {value!r}")
    return seconds


def beta_of(value: float | None) -> float:
    """XFetch's beta (0: no early refresh); ``ValueError`` unless a finite number >= 0."""
    beta = 0.0 if value is None else float(value)
    if not 0 <= beta < math.inf:
        raise ValueError(f"early_refresh must be a finite number >= 0, got {value!r}")
    return beta


class InvalidationAPI:
    """``invalidate_*`` and ``lookup``: what each selector means is ``purges.Purges``."""

    purges: Purges

    async def invalidate_path(
        self, path: str, *, tenant: str | None = None, soft: bool = False
    ) -> int:
        """Purge every variant and identity scope stored for ``path`` (query strings too);
        returns how many entries were purged. ``soft`` marks them stale instead."""
        return await self.purges.path(path, tenant=tenant, soft=soft)

    async def invalidate_prefix(
        self, prefix: str, *, tenant: str | None = None, soft: bool = False
    ) -> int:
        """Purge ``prefix`` and every path below it (by whole segments: ``/a`` not ``/ab``)."""
        return await self.purges.prefix(prefix, tenant=tenant, soft=soft)

    async def invalidate_tags(
        self, *tags: str, tenant: str | None = None, soft: bool = False
    ) -> int:
        """Purge every response and data entry carrying any of ``tags`` (surrogate keys)."""
        return await self.purges.tags(*tags, tenant=tenant, soft=soft)

    async def invalidate_tenant(self, tenant: str | None) -> None:
        """Purge a whole tenant in O(1): its generation counter moves on."""
        await self.purges.tenant(tenant)

    async def invalidate_identity(
        self,
        *,
        principal: str | None = None,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> None:
        """Purge one identity's scope in O(1), named by principal or by its credentials."""
        await self.purges.identity(principal=principal, headers=headers, tenant=tenant)

    async def invalidate_all(self) -> None:
        """Purge everything in O(1): the global generation counter moves on."""
        await self.purges.all()

    async def invalidate_request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> int:
        """Purge the entry one request would be served (its tenant, scope and variant);
        returns how many entries were deleted (0: nothing was stored for it)."""
        return await self.purges.request(method, url, headers=headers, tenant=tenant)

    async def lookup(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> CachedResponse | None:
        """What is stored for a GET of ``url`` by a client sending ``headers``."""
        return await self.purges.lookup(url, headers=headers, tenant=tenant)


class DataAPI:
    """``get`` / ``set`` / ``delete`` / ``get_or_set``; ``@cached`` (decorators.py) uses them
    too. The mechanism is ``data.DataCache``."""

    settings: CacheSettings
    data: DataCache

    async def get(
        self,
        key: str,
        default: Any = None,
        *,
        as_type: Any = None,
        principal: Principal = None,
        tenant: str | None = None,
    ) -> Any:
        """The value stored under ``key``, or ``default`` when absent, expired or unreadable
        (Redis down included). ``as_type`` (a model, ``list[Model]``, ...) validates it
        into that type; without it, plain msgpack data (dicts, lists, str, ...).
        ``principal`` / ``tenant``: the scope it was stored in."""
        return await self.data.get(key, default, as_type, principal, tenant)

    async def set(
        self,
        key: str,
        value: Any,
        ttl: Seconds | None = None,
        *,
        tags: Iterable[str] = (),
        as_type: Any = None,
        principal: Principal = None,
        tenant: str | None = None,
    ) -> None:
        """Store ``value`` for ``ttl`` seconds (``default_ttl`` when omitted; 0 deletes) in
        both tiers; every worker drops its older L1 copy. Raises ``ValueNotSerializable``
        for a value msgpack cannot hold; never for Redis."""
        seconds = self.settings.default_ttl if ttl is None else seconds_of(ttl)
        await self.data.set(key, value, seconds, tags, principal, tenant, as_type)

    async def delete(
        self, key: str, *, principal: Principal = None, tenant: str | None = None
    ) -> None:
        """Remove ``key`` from both tiers and every worker's L1."""
        await self.data.delete(key, principal, tenant)

    async def get_or_set(
        self,
        key: str,
        factory: Callable[[], Awaitable[Any]],
        ttl: Seconds | None = None,
        *,
        tags: Iterable[str] = (),
        stale_while_revalidate: Seconds | None = None,
        stale_if_error: Seconds | None = None,
        early_refresh: float | None = None,
        as_type: Any = None,
        principal: Principal = None,
        tenant: str | None = None,
    ) -> Any:
        """The value under ``key``; when there is none, ``await factory()`` once (in this
        process and across the fleet), store it and return it. Typed as ``as_type``, else
        as the factory's annotated return type, else plain data."""
        seconds = self.settings.default_ttl if ttl is None else seconds_of(ttl)
        return await self.data.get_or_set(
            key,
            factory,
            seconds,
            tags,
            seconds_of(stale_while_revalidate, "stale_while_revalidate"),
            seconds_of(stale_if_error, "stale_if_error"),
            beta_of(early_refresh),
            as_type,
            principal,
            tenant,
        )
