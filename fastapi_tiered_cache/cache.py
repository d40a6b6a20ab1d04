"""``TieredCache``: everything the middleware, the admin router and the CLI share.

It is built from ``CacheSettings`` (or given objects directly, so tests and code-first
users need no environment): the two tiers, the key builder, the identity and tenant
resolvers and the route rules. It holds no per-request state. What users call on it to
purge and to keep data is in ``api.py`` (it only hands off to ``purges`` and ``data``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from . import lifecycle
from .api import DataAPI, InvalidationAPI
from .bus import Coherence, InvalidationBus
from .credentials import CredentialRules
from .data import DataCache
from .entry import CachedResponse
from .fleet import FleetReporter
from .flights import HitForMiss, SingleFlight
from .generations import Generations
from .identity import (
    Identifier,
    Identity,
    IdentityResolver,
    TenantResolver,
)
from .invalidation import Invalidator
from .keys import KeyBuilder, build_key
from .leases import FleetLease
from .metrics import Event, Metrics, Stats
from .policy import Reason
from .purges import Purges
from .replay import Marks
from .request import RequestInfo
from .routes import NOT_FOUND, RouteInputs
from .routing import Routing
from .rules import RuleSet
from .settings import CacheSettings, load_settings
from .stores import RedisStore, TieredStore
from .stores.breaker import BreakerState, CircuitBreaker
from .stores.build import build_l1, build_l2
from .stores.loops import asyncio_running
from .stores.tiered import Lookup
from .verdicts import Refusal
from .visibility import Visibility

__all__ = ["TieredCache"]

logger = logging.getLogger("fastapi_tiered_cache")


class TieredCache(InvalidationAPI, DataAPI):
    """The cache: tiers, keys and identity, configured by ``settings``.

    - ``settings``: a ``CacheSettings``; read from the environment when omitted.
    - ``redis``: a ready ``redis.asyncio`` client (for example fakeredis), used instead of
      ``settings.redis_url`` and left open for its owner; or a function that makes one,
      which the cache calls once per event loop and closes with that loop.
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
        self.statuses = frozenset(s.statuses) | (
            frozenset({404, 410}) if s.negative_ttl else frozenset()
        )
        self.methods = frozenset(s.methods)
        self.credentials = CredentialRules(
            s.identity_headers,
            s.identity_cookies,
            s.credential_name_parts,
            s.credential_name_ignore,
        )
        # The phases of the pipeline that need no store: identify (tenant and identity
        # scope), route and key (``routing``); the middleware composes them.
        self.identifier = Identifier(
            self.credentials,
            secret=self.secret,
            tenant_header=s.tenant_header,
            caches_identities=s.caches_identities,
            identity_resolver=identity_resolver or s.identity_resolver,
            tenant_resolver=tenant_resolver or s.tenant_resolver,
        )
        # One byte budget: L1 entries get 7/8 of it (stores/build.py), the memo 1/16 (its
        # keys and the records it holds for header reuse), route lookups 1/32.
        self.memo_bytes = s.l1_max_bytes // 16
        self.table_bytes = s.l1_max_bytes // 32
        l1 = build_l1(s, l1_timer)
        breaker = CircuitBreaker(s.breaker_threshold, s.breaker_cooldown)
        l2 = build_l2(s, redis, lambda event, reason: self.record(event, reason=reason))
        # When L1 may be trusted: always alone; with Redis, while the bus vouches for it.
        self.coherence = Coherence(s.coherence_bound, s.l1_max_ttl, shared=l2 is not None)
        self.store = TieredStore(
            l1,
            l2,
            l1_max_ttl=s.l1_max_ttl,
            clock=clock,
            breaker=breaker,
            report=lambda event, reason: self.record(event, reason=reason),
            coherence=self.coherence,
        )
        # Response headers carrying tags, as raw lower-case names, and those never forwarded.
        self.surrogate_headers = frozenset(h.encode("latin-1") for h in s.surrogate_key_headers)
        targeted = frozenset(h.encode("latin-1") for h in s.targeted_headers)
        self.hidden_headers = (
            frozenset() if s.forward_surrogate_keys else self.surrogate_headers
        ) | (frozenset() if s.forward_targeted_headers else targeted)
        self.marks = Marks(s)  # the Cache-Status and X-Cache fields of every answer
        self.stats = Stats()
        self.exporters: list[Metrics] = []
        self.visibility = Visibility(
            table_bytes=max(self.table_bytes, 64 * 1024), trusted=s.trusted_middleware
        )
        self.routing = Routing(
            self.rules,
            self.visibility,
            self.credentials,
            key_builder or s.key_builder or build_key,
            secret=self.secret,
            namespace=s.namespace,
            vary_on=s.vary_on,
            cache_private=s.cache_private,
        )
        # The routing phase's questions, asked of the cache by the pipeline.
        self.policy_for = self.routing.policy_for
        self.vary_names = self.routing.vary_names
        self.keyed_request = self.routing.keyed_request
        self.key_for = self.routing.key_for
        self.private_allowed = self.routing.private_allowed
        self.root_path = ""  # as last seen on a request: programmatic purges use it
        self.announced = False  # said which tiers are active (lifecycle.startup)
        self.bus_loop: asyncio.AbstractEventLoop | None = None  # where the bus was started
        self.said_lazy = False  # said once: started on first use, without a lifespan
        # Whether a loop no lifespan started starts the bus on first use (see
        # ensure_started); off, such an app runs without the bus, as it did before.
        self.start_on_first_use = True
        client = self.store.l2.client if isinstance(self.store.l2, RedisStore) else None
        # Every Redis command on the request path shares L2's budget and breaker; purges
        # share the budget but are tried even while the breaker is open.
        run, purge_run = self.store.run, self.store.run_unguarded
        self.generations = Generations(
            client,
            s.namespace,
            timeout=s.redis_timeout,
            degraded_ttl=s.coherence_bound,
            timer=l1_timer,
            run=run,
            purge_run=purge_run,
            coherence=self.coherence,
        )
        self.bus = (
            InvalidationBus(
                client,
                s.namespace,
                on_message=partial(lifecycle.on_bus_message, self),
                on_lost=partial(lifecycle.on_bus_change, self),
                on_restored=partial(lifecycle.on_bus_change, self),
                coherence=self.coherence,
                interval=min(s.bus_heartbeat, s.coherence_bound / 3),
                timeout=max(s.redis_timeout, 0.5),
            )
            if client is not None and hasattr(client, "pubsub")
            else None
        )
        self.invalidator = Invalidator(
            self.store,
            client,
            s.namespace,
            publish=partial(lifecycle.publish, self) if self.bus is not None else None,
            timeout=s.redis_timeout,
            timer=self.coherence.timer,
            clock=clock,
            run=run,
            purge_run=purge_run,
            announce_for=self.coherence.l1_max_ttl,
        )
        # Stampede protection and stale serving (see flights.py and leases.py).
        self.flight: SingleFlight[CachedResponse | None] = SingleFlight(wait=s.coalesce_wait)
        # Concurrent L2 lookups of one key share one round trip (see lookup.look_up_one).
        self.lookups: SingleFlight[Lookup] = SingleFlight(wait=s.coalesce_wait)
        self._client = client
        self._fleet = self._new_fleet()
        breaker.on_transition = self._breaker_moved
        self.hit_for_miss = HitForMiss(s.hit_for_miss_ttl, timer=l1_timer)
        # Fleet-wide stats: this process's counters, written to Redis now and then.
        self.reporter = (
            FleetReporter(
                client,
                s.namespace,
                self.stats,
                partial(lifecycle.gauges, self),
                run=run,
                every=s.stats_interval,
            )
            if client is not None and s.stats_interval > 0
            else None
        )
        self.refreshing: set[str] = set()
        self.background: set[asyncio.Task[Any]] = set()
        self.compute_seconds: dict[str, float] = {}  # last origin time per route, for XFetch
        self.data = DataCache(self)  # what get, set, get_or_set and @cached share
        self.purges = Purges(self)  # what the invalidate_* methods do
        self.invalidator.unfinished.purge_all = self.purges.all

    def _breaker_moved(self, old: BreakerState, new: BreakerState) -> None:
        """Redis stopped answering: the wake-up of another process's lease cannot reach
        this one now, so a request waiting for it goes to the origin at once instead of
        at its next re-check (``lease_ttl / 2`` later)."""
        fleet, loop = self._fleet, asyncio._get_running_loop()
        if new is BreakerState.OPEN and fleet is not None and loop is not None:
            fleet.wakeups.cancel_all(loop)

    def _new_fleet(self) -> FleetLease | None:
        s, client = self.settings, self._client
        if client is None or not s.coalesce:
            return None
        return FleetLease(
            client,
            namespace=s.namespace,
            lease_ttl=s.lease_ttl,
            wait=s.coalesce_wait,
            timeout=s.redis_timeout,
            run=self.store.run,
        )

    def renew_fleet(self) -> FleetLease | None:
        """A new fleet lease in place of the current one, which is returned (to be closed:
        a closed lease never works again)."""
        fleet, self._fleet = self._fleet, self._new_fleet()
        return fleet

    # -- life in an event loop (lifecycle.py) ---------------------------------------------
    @property
    def tiers(self) -> str:
        """Human-readable description of the active tiers."""
        return lifecycle.tiers(self)

    def startup(self) -> None:
        """Say once which tiers are active (called at application start-up)."""
        lifecycle.startup(self)

    def start_background(self) -> None:
        """Start the invalidation bus and open the L2 connection (idempotent), in the loop
        that will serve."""
        lifecycle.start_background(self)

    def ensure_started(self) -> None:
        """Start the bus on first use in a loop no lifespan started (see lifecycle)."""
        lifecycle.ensure_started(self)

    async def warm_up(self) -> bool:
        """Connect to L2 within the connect timeout; False when it is not reachable."""
        return await lifecycle.warm_up(self)

    async def close(self) -> None:
        """Stop the bus, close this loop's Redis connections and drop L1 (at shutdown); the
        cache stays usable in a later loop."""
        await lifecycle.close(self)

    async def fleet_stats(self) -> dict[str, Any]:
        """Every process's counters summed, through Redis; without it, this process's own.
        Raises ``StoreUnavailable``."""
        return await lifecycle.fleet_stats(self)

    def run_in_background(self, key: str, work: Callable[[], Awaitable[None]]) -> bool:
        """Run one refresh of ``key`` in the background, bounded per process; False if not."""
        return lifecycle.run_in_background(self, key, work)

    @property
    def fleet(self) -> FleetLease | None:
        """The fleet lease, or None (no Redis, coalescing off, or not on asyncio)."""
        return self._fleet if asyncio_running() else None

    @fleet.setter
    def fleet(self, fleet: FleetLease | None) -> None:
        self._fleet = fleet

    async def identify(
        self, info: RequestInfo, inputs: RouteInputs = NOT_FOUND
    ) -> Identity | Reason | Refusal:
        """The tenant and scope a request is cached under, or why it must bypass (the
        credentials its route declares count too; see ``identity.Identifier``)."""
        return await self.identifier.identify(
            info, inputs.credential_headers, inputs.credential_cookies
        )

    async def tenant_of(self, info: RequestInfo) -> str | None:
        """The tenant label of a request, or None when it must bypass."""
        tenant = await self.identifier.tenant(info)
        # Reason and Refusal are str enums: test them first, never "is it a str".
        return None if isinstance(tenant, (Reason, Refusal)) else tenant

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

    async def generation(self, identity: Identity) -> str | None:
        """The generation part of keys in this scope; None if it cannot be known now."""
        if self.bus_loop is not asyncio._get_running_loop():
            self.ensure_started()
        known = self.generations.peek(identity.tenant, identity.scope)
        if known is not None:
            return known
        if not self.l2_usable:
            return None  # the breaker is open: do not wait on Redis for counters either
        return await self.generations.current(identity.tenant, identity.scope)

    @property
    def l2_usable(self) -> bool:
        """Whether Redis may be asked now (the breaker is closed, and this is asyncio);
        probes stay with the store."""
        return (
            self.store.l2 is not None
            and self.store.breaker.state is BreakerState.CLOSED
            and asyncio_running()
        )

    async def origins(self) -> list[str]:
        """Every ``scheme://host`` whose responses were stored, as the app saw them (at most
        64, fleet-wide through Redis): what a relative URL of a purge is resolved against."""
        return await self.invalidator.fills.origins()

    def tenant_label(self, tenant: str | None) -> str:
        """How a tenant id appears in keys and indexes (None: the default tenant)."""
        return self.identifier.label(tenant)
