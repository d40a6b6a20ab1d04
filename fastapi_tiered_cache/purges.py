"""``Purges``: what each invalidation selector means in indexes, generation counters and
keys, behind ``TieredCache``'s ``invalidate_*`` methods and ``lookup``.

Kept apart from ``purge.py``, which is what the operators' tools share (the admin router
and the CLI: validated requests, relative URLs, loggable descriptions), because this is
the mechanism every purge ends in, whoever asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .entry import CachedResponse, VaryPointer
from .exceptions import StoreUnavailable
from .generations import counter_names
from .identity import DEFAULT_TENANT, Identity, scope_for
from .invalidation import exact_index, normalize_path, prefix_index, tag_index
from .keys import vary_values
from .metrics import Event
from .request import RequestInfo
from .routes import RouteInputs

if TYPE_CHECKING:
    from .cache import TieredCache

__all__ = ["Purges"]


class Purges:
    """The invalidation API of a ``TieredCache`` (its ``invalidate_*`` methods and
    ``lookup``): what each selector means in indexes, generation counters and keys.

    Path, prefix and tag purges go through the indexes (``invalidation.Invalidator``);
    tenant, identity and global purges move a generation counter (``generations``), O(1);
    a request's purge computes that request's keys as the middleware would.
    """

    def __init__(self, cache: TieredCache) -> None:
        self.cache = cache

    def label(self, tenant: str | None) -> str:
        """How a tenant id appears in keys and indexes (None: the default tenant)."""
        return self.cache.identifier.label(tenant)

    async def path(self, path: str, *, tenant: str | None = None, soft: bool = False) -> int:
        """Purge every variant and identity scope stored for ``path`` (query strings too)."""
        self.cache.record(Event.INVALIDATION, reason="path")
        label = self.label(tenant)
        return await self.cache.invalidator.purge([exact_index(label, path)], soft=soft)

    async def prefix(self, prefix: str, *, tenant: str | None = None, soft: bool = False) -> int:
        """Purge ``prefix`` and every path below it (by whole segments: ``/a`` not ``/ab``)."""
        label = self.label(tenant)
        if normalize_path(prefix) == "/":
            await self.tenant(tenant)
            return 0
        self.cache.record(Event.INVALIDATION, reason="prefix")
        # Below it by its own index, the path itself by its exact one (see index_names).
        names = [prefix_index(label, prefix), exact_index(label, prefix)]
        return await self.cache.invalidator.purge(names, soft=soft)

    async def tags(self, *tags: str, tenant: str | None = None, soft: bool = False) -> int:
        """Purge every entry carrying any of ``tags`` (surrogate keys)."""
        self.cache.record(Event.INVALIDATION, reason="tag")
        label = self.label(tenant)
        return await self.cache.invalidator.purge(
            [tag_index(label, tag) for tag in tags], soft=soft
        )

    async def tenant(self, tenant: str | None) -> None:
        """Purge a whole tenant in O(1): its generation counter moves on."""
        self.cache.record(Event.INVALIDATION, reason="tenant")
        await self._bump(counter_names(self.cache.settings.namespace, self.label(tenant), "")[1])

    async def identity(
        self,
        *,
        principal: str | None = None,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> None:
        """Purge one identity's scope in O(1), named by principal or by its credentials."""
        if principal is None:
            info = RequestInfo.from_url("GET", "/", headers)
            identity = await self.cache.identify(info, self._every_credential())
            if not isinstance(identity, Identity) or identity.is_anonymous:
                raise ValueError("these headers carry no credentials the cache can scope")
            scope = identity.scope
        else:
            scope = scope_for(principal, self.cache.secret)
        self.cache.record(Event.INVALIDATION, reason="identity")
        names = counter_names(self.cache.settings.namespace, self.label(tenant), scope)
        await self._bump(names[2])

    def _every_credential(self) -> RouteInputs:
        """Inputs naming every credential any known route reads (only present ones count)."""
        tables = self.cache.visibility.tables
        routes = [inputs for table in tables for _, _, inputs in table.routes]
        return RouteInputs(
            template="",
            credential_headers=tuple(sorted({h for r in routes for h in r.credential_headers})),
            credential_cookies=tuple(sorted({c for r in routes for c in r.credential_cookies})),
        )

    async def all(self) -> None:
        """Purge everything in O(1): the global generation counter moves on."""
        self.cache.record(Event.INVALIDATION, reason="all")
        await self._bump(counter_names(self.cache.settings.namespace, DEFAULT_TENANT, "")[0])

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> int:
        """Purge the entry one request would be served (its tenant, scope and variant);
        returns how many entries were deleted (0: nothing was stored for it)."""
        self.cache.record(Event.INVALIDATION, reason="key")
        keys = await self._keys_of(method, url, headers, tenant)
        if not keys:
            return 0
        info = RequestInfo.from_url(method, url, headers)
        label = self.label(tenant)
        purged = await self.cache.invalidator.purge_keys(keys, [exact_index(label, info.path)])
        # A Vary pointer at the primary key is not an entry: only the variant is counted.
        return 1 if keys[-1] in purged else 0

    async def lookup(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> CachedResponse | None:
        """What is stored for a GET of ``url`` by a client sending ``headers``."""
        keys = await self._keys_of("GET", url, headers, tenant)
        found = await self.cache.store.get(keys[-1]) if keys else None
        return found[0] if found and isinstance(found[0], CachedResponse) else None

    async def _keys_of(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        tenant: str | None,
    ) -> list[str]:
        """The primary key of a request and, behind a Vary pointer, its variant's key."""
        cache, routing = self.cache, self.cache.routing
        merged = dict(headers or {})
        if tenant is not None and cache.settings.tenant_header:
            merged[cache.settings.tenant_header] = tenant
        info = RequestInfo.from_url(method, url, merged, root_path=cache.root_path)
        rule, inputs = routing.policy_for(info)
        identity = await cache.identify(info, inputs)
        if not isinstance(identity, Identity):
            return []
        generation = await cache.generation(identity)
        info = routing.keyed_request(info, rule, inputs)
        names = routing.vary_names(rule, inputs)
        primary = routing.key_for(info, identity, vary_values(info, names), generation)
        found = await cache.store.get(primary)
        if found is not None and isinstance(found[0], VaryPointer):
            names = tuple(sorted({*names, *found[0].names}))
            variant = routing.key_for(info, identity, vary_values(info, names), generation)
            return [primary, variant]
        return [primary]

    async def _bump(self, name: str) -> None:
        try:
            value = await self.cache.generations.bump(name)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"purge failed: {exc}") from exc
        await self.cache.invalidator.announce("gen", [name, value])
