"""``TieredCache``: everything the middleware, the admin router and the CLI share.

It is built from ``CacheSettings`` (or given objects directly, so tests and code-first
users need no environment): the two tiers, the key builder, the identity and tenant
resolvers and the route rules. It holds no per-request state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from starlette.requests import Request

from .bus import InvalidationBus
from .coalesce import FleetLease, HitForMiss, SingleFlight
from .entry import CachedResponse, VaryPointer
from .exceptions import StoreUnavailable
from .generations import Generations, counter_names
from .identity import (
    DEFAULT_TENANT,
    Bypass,
    Identity,
    IdentityResolver,
    TenantResolver,
    credentials_of,
    keyed_hash,
    resolve,
    scope_for,
    tenant_label,
)
from .invalidation import Invalidator, exact_index, normalize_path, prefix_index, tag_index
from .keys import KeyBuilder, VaryValues, build_key, filter_query, vary_values
from .metrics import Event, Metrics, Stats
from .policy import Reason
from .request import RequestInfo
from .routes import UNKNOWN, RouteInputs, RouteTable
from .rules import RuleSet
from .settings import CacheSettings, RouteRule, load_settings
from .stores import MemoryStore, RedisStore, TieredStore
from .stores.breaker import BreakerState, CircuitBreaker
from .stores.connect import build_client_from_settings

__all__ = ["TieredCache"]

logger = logging.getLogger("fastapi_tiered_cache")


def _tenant_of_key(key: str) -> str | None:
    """The tenant label in ``{namespace}:{generations}:{tenant}:{scope}:{digest}``."""
    parts = key.split(":", 3)
    return parts[2] if len(parts) == 4 else None


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
        self.statuses = frozenset(s.statuses) | (
            frozenset({404, 410}) if s.negative_ttl else frozenset()
        )
        self.methods = frozenset(s.methods)
        l1 = (
            MemoryStore(
                s.l1_max_entries,
                s.l1_max_bytes,
                timer=l1_timer,
                tenant_share=s.l1_tenant_share,
                tenant_of=_tenant_of_key,
            )
            if s.l1_max_entries > 0 and s.l1_max_bytes > 0
            else None
        )
        breaker = CircuitBreaker(s.breaker_threshold, s.breaker_cooldown)
        self.store = TieredStore(
            l1,
            self._l2(redis),
            l1_max_ttl=s.l1_max_ttl,
            clock=clock,
            breaker=breaker,
            report=lambda event, reason: self.record(event, reason=reason),
        )
        # Response headers carrying tags, as raw lower-case names, and those never forwarded.
        self.surrogate_headers = frozenset(h.encode("latin-1") for h in s.surrogate_key_headers)
        targeted = frozenset(h.encode("latin-1") for h in s.targeted_headers)
        self.hidden_headers = (
            frozenset() if s.forward_surrogate_keys else self.surrogate_headers
        ) | (frozenset() if s.forward_targeted_headers else targeted)
        self.stats = Stats()
        self.exporters: list[Metrics] = []
        self._vary_names: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]] = {}
        self._route_tables: dict[int, RouteTable] = {}
        self._app: Any = None
        self._started = False
        client = self.store.l2.client if isinstance(self.store.l2, RedisStore) else None
        # Every Redis command on the request path shares L2's budget and breaker; purges
        # share the budget but are tried even while the breaker is open.
        run, purge_run = self.store.run, self.store.run_unguarded
        self.generations = Generations(
            client,
            s.namespace,
            timeout=s.redis_timeout,
            degraded_ttl=1.0,
            timer=l1_timer,
            run=run,
            purge_run=purge_run,
        )
        self.bus = (
            InvalidationBus(
                client,
                s.namespace,
                on_message=self._on_bus_message,
                on_lost=self._on_bus_change,
                on_restored=self._on_bus_change,
                heartbeat=s.bus_heartbeat,
                timeout=max(s.redis_timeout, 0.5),
            )
            if client is not None and hasattr(client, "pubsub")
            else None
        )
        self.invalidator = Invalidator(
            self.store,
            client,
            s.namespace,
            publish=self.bus.publish if self.bus is not None else None,
            timeout=s.redis_timeout,
            timer=l1_timer,
            clock=clock,
            run=run,
            purge_run=purge_run,
        )
        self._sync_l1_bound()
        # Stampede protection and stale serving (see coalesce.py).
        self.flight: SingleFlight[CachedResponse | None] = SingleFlight(wait=s.coalesce_wait)
        self.fleet = (
            FleetLease(
                client,
                namespace=s.namespace,
                lease_ttl=s.lease_ttl,
                wait=s.coalesce_wait,
                timeout=s.redis_timeout,
                run=run,
            )
            if client is not None and s.coalesce
            else None
        )
        self.hit_for_miss = HitForMiss(s.hit_for_miss_ttl, timer=l1_timer)
        self.refreshing: set[str] = set()
        self.background: set[asyncio.Task[Any]] = set()
        self.compute_seconds: dict[str, float] = {}  # last origin time per route, for XFetch

    def _l2(self, redis: Any) -> RedisStore | None:
        s = self.settings
        if redis is not None:
            return RedisStore(
                redis,
                timeout=s.redis_timeout,
                owns_client=False,
                max_in_flight=s.redis_max_connections,
                report=lambda event, reason: self.record(event, reason=reason),
            )
        if s.redis_url is None:
            return None
        client = build_client_from_settings(s)
        return RedisStore(
            client,
            timeout=s.redis_timeout,
            max_in_flight=s.redis_max_connections,
            report=lambda event, reason: self.record(event, reason=reason),
        )

    @property
    def tiers(self) -> str:
        """Human-readable description of the active tiers."""
        tiers = (("L1", self.store.l1), ("L2", self.store.l2))
        names = [name for name, tier in tiers if tier is not None]
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

    def start_background(self) -> None:
        """Start the invalidation bus and open the L2 connection (idempotent; needs a
        running event loop). Called at application start-up."""
        if self.bus is not None:
            self.bus.start()
        if self.store.l2 is not None:
            task = asyncio.get_running_loop().create_task(self.warm_up())
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def warm_up(self) -> bool:
        """Connect to L2 (and learn a cluster's slots) within the connect timeout, not the
        per-request budget, so the first requests do not pay for a slow handshake."""
        l2 = self.store.l2
        if not isinstance(l2, RedisStore):
            return False
        try:
            await asyncio.wait_for(l2.client.ping(), 2 * self.settings.redis_connect_timeout)
        except Exception as exc:  # Redis down at start-up is a degraded start, not a failure
            logger.warning("L2 not reachable at start-up: %s", exc, extra={"event": "warm_up"})
            return False
        return True

    async def close(self) -> None:
        """Stop the bus, close the Redis connections and drop L1 (at application shutdown)."""
        for task in list(self.background):
            task.cancel()
        for task in list(self.background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.background.clear()
        if self.fleet is not None:
            await self.fleet.close()
        if self.bus is not None:
            await self.bus.close()
        await self.invalidator.close()
        await self.store.close()

    def run_in_background(self, key: str, work: Callable[[], Awaitable[None]]) -> bool:
        """Run one refresh of ``key`` in the background, bounded per process; False if not."""
        if key in self.refreshing or len(self.refreshing) >= self.settings.max_background_refreshes:
            return False
        self.refreshing.add(key)

        async def run() -> None:
            try:
                await work()
            except Exception as exc:  # a failed refresh leaves the stale entry in place
                logger.warning("background refresh failed: %s", exc, extra={"event": "refresh"})
            finally:
                self.refreshing.discard(key)

        task = asyncio.get_running_loop().create_task(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return True

    # -- coherence --------------------------------------------------------------------
    def _sync_l1_bound(self) -> None:
        """Trust L1 for ``l1_max_ttl`` only while the bus is delivering; else a few beats."""
        s = self.settings
        coherent = self.store.l2 is None or (self.bus is not None and self.bus.healthy)
        self.generations.trusted = coherent
        self.store.l1_max_ttl = s.l1_max_ttl if coherent else min(s.l1_max_ttl, 3 * s.bus_heartbeat)

    def _on_bus_change(self) -> None:
        # Whatever we held may have been purged while we could not hear: start over.
        if self.store.l1 is not None:
            self.store.l1.clear()
        self.invalidator.local.clear()
        self.generations.forget()
        self._sync_l1_bound()

    def _on_bus_message(self, kind: str, data: Any) -> None:
        if kind == "purge":
            self.invalidator.on_purge_message(data)
        elif kind == "gen" and isinstance(data, list) and len(data) == 2:
            name, value = data
            if isinstance(name, str) and isinstance(value, int):
                self.generations.apply(name, value)

    async def identify(self, info: RequestInfo, inputs: RouteInputs = UNKNOWN) -> Identity | Reason:
        """The tenant and scope a request is cached under, or why it must bypass.

        A resolver that raises makes the request bypass the cache (logged): a plug-in bug
        must cost the cache, never the response.
        """
        try:
            return await self._identify(info, inputs)
        except Exception as exc:
            logger.error(
                "identity/tenant resolver failed: %s: %s",
                type(exc).__name__,
                exc,
                extra={"event": "resolver_error"},
            )
            return Reason.RESOLVER

    async def _identify(self, info: RequestInfo, inputs: RouteInputs) -> Identity | Reason:
        tenant = await self._tenant(info)
        if tenant is None:
            return Reason.RESOLVER
        s = self.settings
        credentials = credentials_of(
            info,
            (*s.identity_headers, *inputs.credential_headers),
            (*s.identity_cookies, *inputs.credential_cookies),
        )
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

    async def tenant_of(self, info: RequestInfo) -> str | None:
        """The tenant label of a request, or None when the resolver says bypass."""
        return await self._tenant(info)

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

    def export_l1_hit(self, route: str, tenant: str) -> None:
        """An L1 hit to the exporters (the memo counts it in ``stats`` itself)."""
        for exporter in self.exporters:
            exporter.record(Event.HIT, route=route, tenant=tenant, tier="l1")

    def observe(self, seconds: float, *, route: str = "", outcome: str = "") -> None:
        """Report seconds spent in the cache to every exporter (Stats keeps no timings)."""
        for exporter in self.exporters:
            exporter.observe(seconds, route=route, outcome=outcome)

    def vary_names(self, rule: RouteRule | None, inputs: RouteInputs = UNKNOWN) -> tuple[str, ...]:
        """Request parts always in the key: ``vary_on``, the rule's, and what the route reads."""
        extra = tuple(rule.vary) if rule is not None else ()
        memo = (extra, inputs.vary)
        names = self._vary_names.get(memo)
        if names is None:
            names = tuple(sorted({*self.settings.vary_on, *extra, *inputs.vary}))
            self._vary_names[memo] = names
        return names

    def route_inputs(self, scope: Any, fallback_app: Any = None) -> RouteInputs:
        """What the route that will answer ``scope`` reads (learned once per app).

        The app comes from ``scope["app"]`` (set by Starlette before its middleware), else
        ``fallback_app`` (the app the middleware wraps, when it wraps from outside), else
        the last app seen (for URLs purged or looked up from code).
        """
        routed = fallback_app is not None and hasattr(fallback_app, "routes")
        app = scope.get("app") or (fallback_app if routed else None) or self._app
        if app is None:
            return UNKNOWN
        self._app = app
        table = self._route_tables.get(id(app))
        if table is None:
            table = self._route_tables[id(app)] = RouteTable.of(app)
        return table.find(scope)

    @staticmethod
    def keyed_request(info: RequestInfo, rule: RouteRule | None) -> RequestInfo:
        """The request as its key sees it: the rule's query allow/deny-list applied."""
        if rule is None or (rule.query_allow is None and not rule.query_deny):
            return info
        return replace(info, query=filter_query(info.query, rule.query_allow, rule.query_deny))

    def policy_for(
        self, info: RequestInfo, app: Any = None
    ) -> tuple[RouteRule | None, RouteInputs]:
        """The rule governing a request (environment rules win over ``@cache_policy``)."""
        inputs = self.route_inputs(info.scope, app)
        rule = self.rules.match(info.path, inputs.name) if self.rules else None
        return (rule if rule is not None else inputs.policy), inputs

    async def generation(self, identity: Identity) -> str | None:
        """The generation part of keys in this scope; None if it cannot be known now."""
        known = self.generations.peek(identity.tenant, identity.scope)
        if known is not None:
            return known
        if not self.l2_usable:
            return None  # the breaker is open: do not wait on Redis for counters either
        return await self.generations.current(identity.tenant, identity.scope)

    @property
    def l2_usable(self) -> bool:
        """Whether Redis may be asked now (the breaker is closed); probes stay with the store."""
        return self.store.l2 is not None and self.store.breaker.state is BreakerState.CLOSED

    def key_for(
        self, info: RequestInfo, identity: Identity, vary: VaryValues, generation: str | None
    ) -> str:
        """The storage key of a request in a scope, with the given Vary values.

        ``generation`` None (counters unknown, Redis unreachable) gives a key that is only
        ever used in this process's L1.
        """
        digest = self.key_builder(info, vary, secret=self.secret)
        if len(digest) > 64 or not digest.isalnum():  # a plug-in's digest, kept bounded
            digest = keyed_hash(self.secret, "key", digest, size=20)
        gen = generation or "gx"
        return f"{self.settings.namespace}:{gen}:{identity.tenant}:{identity.scope}:{digest}"

    # -- the invalidation API ------------------------------------------------------------
    def tenant_label(self, tenant: str | None) -> str:
        """How a tenant id appears in keys and indexes (None: the default tenant)."""
        return DEFAULT_TENANT if tenant is None else tenant_label(tenant, self.secret)

    async def invalidate_path(
        self, path: str, *, tenant: str | None = None, soft: bool = False
    ) -> int:
        """Purge every variant and identity scope stored for ``path`` (query strings too)."""
        self.record(Event.INVALIDATION, reason="path")
        label = self.tenant_label(tenant)
        return await self.invalidator.purge([exact_index(label, path)], soft=soft)

    async def invalidate_prefix(
        self, prefix: str, *, tenant: str | None = None, soft: bool = False
    ) -> int:
        """Purge ``prefix`` and every path below it (by whole segments: ``/a`` not ``/ab``)."""
        label = self.tenant_label(tenant)
        if normalize_path(prefix) == "/":
            await self.invalidate_tenant(tenant)
            return 0
        self.record(Event.INVALIDATION, reason="prefix")
        return await self.invalidator.purge([prefix_index(label, prefix)], soft=soft)

    async def invalidate_tags(
        self, *tags: str, tenant: str | None = None, soft: bool = False
    ) -> int:
        """Purge every entry carrying any of ``tags`` (surrogate keys)."""
        self.record(Event.INVALIDATION, reason="tag")
        label = self.tenant_label(tenant)
        return await self.invalidator.purge([tag_index(label, tag) for tag in tags], soft=soft)

    async def invalidate_tenant(self, tenant: str | None) -> None:
        """Purge a whole tenant in O(1): its generation counter moves on."""
        self.record(Event.INVALIDATION, reason="tenant")
        await self._bump(counter_names(self.settings.namespace, self.tenant_label(tenant), "")[1])

    async def invalidate_identity(
        self,
        *,
        principal: str | None = None,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> None:
        """Purge one identity's scope in O(1), named by principal or by its credentials."""
        if principal is None:
            info = RequestInfo.from_url("GET", "/", headers)
            identity = await self.identify(info, self._every_credential())
            if isinstance(identity, Reason) or identity.is_anonymous:
                raise ValueError("these headers carry no credentials the cache can scope")
            scope = identity.scope
        else:
            scope = scope_for(principal, self.secret)
        self.record(Event.INVALIDATION, reason="identity")
        names = counter_names(self.settings.namespace, self.tenant_label(tenant), scope)
        await self._bump(names[2])

    def _every_credential(self) -> RouteInputs:
        """Inputs naming every credential any known route reads (only present ones count)."""
        routes = [inputs for table in self._route_tables.values() for _, _, inputs in table.routes]
        return RouteInputs(
            template="",
            credential_headers=tuple(sorted({h for r in routes for h in r.credential_headers})),
            credential_cookies=tuple(sorted({c for r in routes for c in r.credential_cookies})),
        )

    async def invalidate_all(self) -> None:
        """Purge everything in O(1): the global generation counter moves on."""
        self.record(Event.INVALIDATION, reason="all")
        await self._bump(counter_names(self.settings.namespace, DEFAULT_TENANT, "")[0])

    async def invalidate_request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> int:
        """Purge the entry one request would be served (its tenant, scope and variant)."""
        self.record(Event.INVALIDATION, reason="key")
        keys = await self._keys_of(method, url, headers, tenant)
        if not keys:
            return 0
        self.invalidator.evict_local((), keys)
        await self.store.delete_many(keys)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.publish("purge", [[], keys])
        return 1

    async def lookup(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> CachedResponse | None:
        """What is stored for a GET of ``url`` by a client sending ``headers``."""
        keys = await self._keys_of("GET", url, headers, tenant)
        found = await self.store.get(keys[-1]) if keys else None
        return found[0] if found and isinstance(found[0], CachedResponse) else None

    async def _keys_of(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        tenant: str | None,
    ) -> list[str]:
        """The primary key of a request and, behind a Vary pointer, its variant's key."""
        merged = dict(headers or {})
        if tenant is not None and self.settings.tenant_header:
            merged[self.settings.tenant_header] = tenant
        info = RequestInfo.from_url(method, url, merged)
        rule, inputs = self.policy_for(info)
        identity = await self.identify(info, inputs)
        if isinstance(identity, Reason):
            return []
        generation = await self.generation(identity)
        info = self.keyed_request(info, rule)
        names = self.vary_names(rule, inputs)
        primary = self.key_for(info, identity, vary_values(info, names), generation)
        found = await self.store.get(primary)
        if found is not None and isinstance(found[0], VaryPointer):
            names = tuple(sorted({*names, *found[0].names}))
            return [primary, self.key_for(info, identity, vary_values(info, names), generation)]
        return [primary]

    async def _bump(self, name: str) -> None:
        try:
            value = await self.generations.bump(name)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"purge failed: {exc}") from exc
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.publish("gen", [name, value])
