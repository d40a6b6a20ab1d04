"""``TieredCache``: everything the middleware, the admin router and the CLI share.

It is built from ``CacheSettings`` (or given objects directly, so tests and code-first
users need no environment): the two tiers, the key builder, the identity and tenant
resolvers and the route rules. It holds no per-request state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from .identity import (
    DEFAULT_TENANT,
    Bypass,
    Identity,
    IdentityResolver,
    TenantResolver,
    credentials_of,
    resolve,
    scope_for,
    tenant_label,
)
from .keys import KeyBuilder, VaryValues, build_key
from .metrics import Event, Metrics, Stats
from .policy import Reason
from .request import RequestInfo
from .rules import RuleSet
from .settings import CacheSettings, RouteRule, load_settings
from .stores import MemoryStore, RedisStore, TieredStore
from .stores.redis import connect

__all__ = ["TieredCache"]

logger = logging.getLogger("fastapi_tiered_cache")


class TieredCache:
    """The cache: tiers, keys and identity, configured by ``settings``.

    - ``settings``: a ``CacheSettings``; read from the environment when omitted.
    - ``redis``: a ready ``redis.asyncio`` client (for example fakeredis), used instead of
      ``settings.redis_url``.
    - ``identity_resolver`` / ``tenant_resolver`` / ``key_builder``: objects that override the
      dotted paths of the settings.
    - ``clock``: wall-clock seconds (tests inject a fake one).

    Example::

        cache = TieredCache(CacheSettings(default_ttl=30, secret_key="change-me-please-16+"))
        app.add_middleware(TieredCacheMiddleware, cache=cache)
    """

    def __init__(
        self,
        settings: CacheSettings | None = None,
        *,
        redis: Any = None,
        identity_resolver: IdentityResolver | None = None,
        tenant_resolver: TenantResolver | None = None,
        key_builder: KeyBuilder | None = None,
        clock: Callable[[], float] = time.time,
        l1_timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.clock = clock
        s = self.settings
        self.secret = (
            s.secret_key.get_secret_value().encode()
            if s.secret_key is not None
            else f"fastapi-tiered-cache:{s.namespace}".encode()
        )
        self.rules = RuleSet(s.rules)
        self.identity_resolver = identity_resolver or s.identity_resolver
        self.tenant_resolver = tenant_resolver or s.tenant_resolver
        self.key_builder: KeyBuilder = key_builder or s.key_builder or build_key
        self.statuses = frozenset(s.statuses)
        self.methods = frozenset(s.methods)
        l1 = (
            MemoryStore(s.l1_max_entries, s.l1_max_bytes, timer=l1_timer)
            if s.l1_max_entries > 0 and s.l1_max_bytes > 0
            else None
        )
        self.store = TieredStore(l1, self._l2(redis), l1_max_ttl=s.l1_max_ttl, clock=clock)
        self.stats = Stats()
        self.exporters: list[Metrics] = []
        self._vary_names: dict[int, tuple[str, ...]] = {}
        self._started = False

    def _l2(self, redis: Any) -> RedisStore | None:
        s = self.settings
        if redis is not None:
            return RedisStore(redis, timeout=s.redis_timeout, owns_client=False)
        if s.redis_url is None:
            return None
        client = connect(
            s.redis_url.get_secret_value(),
            connect_timeout=s.redis_connect_timeout,
            socket_timeout=max(s.redis_timeout, s.redis_connect_timeout),
        )
        return RedisStore(client, timeout=s.redis_timeout)

    @property
    def tiers(self) -> str:
        """Human-readable description of the active tiers."""
        names = [name for name, tier in (("L1", self.store.l1), ("L2", self.store.l2)) if tier]
        return " + ".join(names) or "none"

    def startup(self) -> None:
        """Say once which tiers are active (called at application start-up)."""
        if self._started:
            return
        self._started = True
        if not self.settings.enabled:
            logger.info("fastapi-tiered-cache disabled (TIERED_CACHE_ENABLED=false)")
        elif self.store.l2 is None:
            logger.info("fastapi-tiered-cache: no TIERED_CACHE_REDIS_URL, running L1 only")
        else:
            logger.info("fastapi-tiered-cache: tiers %s", self.tiers)
        if not self.settings.caches_identities:
            logger.info(
                "fastapi-tiered-cache: responses to requests with credentials are not cached"
                " (set TIERED_CACHE_SECRET_KEY to cache them per identity)"
            )

    async def close(self) -> None:
        """Close the Redis connections and drop L1 (called at application shutdown)."""
        await self.store.close()

    async def identify(self, info: RequestInfo) -> Identity | Reason:
        """The tenant and scope a request is cached under, or why it must bypass."""
        tenant = await self._tenant(info)
        if tenant is None:
            return Reason.RESOLVER
        s = self.settings
        credentials = credentials_of(info, s.identity_headers, s.identity_cookies)
        principal: str | None
        if self.identity_resolver is not None:
            answer = await resolve(self.identity_resolver, Request(info.scope))
            if isinstance(answer, Bypass) or (answer is None and credentials):
                return Reason.RESOLVER  # fail closed: credentials are never anonymous
            principal = answer
        elif credentials:
            principal = "\n".join(credentials)
        else:
            principal = None
        if principal is None:
            return Identity(tenant=tenant)
        if not s.caches_identities:
            return Reason.AUTHENTICATED
        return Identity(tenant=tenant, scope=scope_for(principal, self.secret))

    async def _tenant(self, info: RequestInfo) -> str | None:
        """The tenant label of a request, or None when the resolver says bypass."""
        if self.tenant_resolver is not None:
            tenant = await resolve(self.tenant_resolver, Request(info.scope))
            if isinstance(tenant, Bypass):
                return None
        else:
            header = self.settings.tenant_header
            tenant = (info.headers.get(header, "").strip() or None) if header else None
        if tenant is None:
            return DEFAULT_TENANT
        return tenant_label(tenant, self.secret)

    def record(
        self,
        event: Event,
        *,
        route: str = "",
        tenant: str = "",
        tier: str = "",
        reason: str = "",
    ) -> None:
        """Report an outcome to the in-process stats and every enabled exporter."""
        self.stats.record(event, route=route, tenant=tenant, tier=tier, reason=reason)
        for exporter in self.exporters:
            exporter.record(event, route=route, tenant=tenant, tier=tier, reason=reason)

    def vary_names(self, rule: RouteRule | None) -> tuple[str, ...]:
        """Request headers always in the key: the settings' ``vary_on`` plus the rule's."""
        names = self._vary_names.get(id(rule))
        if names is None:
            extra = rule.vary if rule is not None else []
            names = tuple(sorted({*self.settings.vary_on, *extra}))
            self._vary_names[id(rule)] = names
        return names

    def key_for(self, info: RequestInfo, identity: Identity, vary: VaryValues) -> str:
        """The storage key of a request in a scope, with the given Vary values."""
        return self.key_builder(
            info, identity, vary, namespace=self.settings.namespace, secret=self.secret
        )
