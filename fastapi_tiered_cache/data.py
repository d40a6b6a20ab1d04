"""The data API: ``get`` / ``set`` / ``delete`` / ``get_or_set`` on the cache's two tiers.

Values go through the same machinery as responses: L1 in front of Redis, the generation
counters (so ``invalidate_all``, ``invalidate_tenant`` and ``invalidate_identity`` purge
data too), the tag indexes (``invalidate_tags`` purges responses and values alike), the
invalidation bus (a ``set`` or ``delete`` drops every worker's L1 copy), the fleet lease
and in-process single flight (one computation per cold key across the fleet), the time
budget and the circuit breaker (Redis down: ``get`` finds nothing, ``get_or_set`` computes,
nothing raises).

Keys never collide with responses' keys: a data key ends in ``d`` and a keyed hash of the
caller's key, ``{namespace}:g{G}.{T}.{S}:{tenant}:{scope}:d{digest}``. The tenant and scope
are the default tenant and ``pub`` unless the caller names a tenant or a principal; nothing
is ever scoped implicitly.

A fill that raced a ``set``, ``delete`` or purge of what it computes is not stored: each of
those is noted in the invalidator's log (and announced on the bus), and a fill that began
before it drops its result instead of overwriting the newer state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .api import Principal
from .entry import DataEntry
from .exceptions import DecodeError, StoreUnavailable
from .flights import SingleFlight
from .identity import DEFAULT_TENANT, Identity, scope_for, tenant_label
from .invalidation import tag_index
from .leases import Lease
from .loading import Filled, Load, fill_start, load_beyond_l1, refresh_in_background, written
from .markers import FillStart
from .metrics import Event
from .policy import should_refresh_early
from .values import adapter_for, dump, is_immutable, load, return_type

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from .cache import TieredCache

__all__ = ["DataCache"]

logger = logging.getLogger("fastapi_tiered_cache")
_EVERYONE = Identity()  # the default tenant, anonymous: what nothing scoped is kept in

_MEMO_SIZE = 4096


class DataCache:
    """The data API of one ``TieredCache`` (reached through its ``get``, ``set``, ...)."""

    def __init__(self, cache: TieredCache) -> None:
        self.cache = cache
        self.flight: SingleFlight[Filled] = SingleFlight(wait=cache.settings.coalesce_wait)
        self._digests: dict[str, str] = {}
        self._generations: dict[tuple[str, str], tuple[int, str | None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # where the bus was started

    # -- keys -----------------------------------------------------------------------
    def digest(self, *parts: bytes) -> str:
        """``d`` and a keyed hash of length-prefixed ``parts``."""
        digest = hashlib.blake2b(key=self.cache.secret[:64], digest_size=20, person=b"ftc-data")
        for part in parts:
            digest.update(len(part).to_bytes(4, "big"))
            digest.update(part)
        return "d" + digest.hexdigest()

    def digest_of(self, key: str) -> str:
        """The digest of a caller's key (memoised: the hit path)."""
        found = self._digests.get(key)
        if found is None:
            if not isinstance(key, str):
                raise TypeError(f"a cache key is a str, not {type(key).__name__}")
            if len(self._digests) >= _MEMO_SIZE:
                self._digests.clear()
            found = self._digests[key] = self.digest(b"key", key.encode("utf-8", "surrogatepass"))
        return found

    def where(self, principal: Principal = None, tenant: str | None = None) -> Identity:
        """The tenant and scope a value is kept in (anonymous and default unless named)."""
        if principal is None and tenant is None:
            return _EVERYONE
        if isinstance(principal, Identity):
            return principal
        label = DEFAULT_TENANT if tenant is None else tenant_label(tenant, self.cache.secret)
        if principal is None:
            return Identity(tenant=label)
        return Identity(tenant=label, scope=scope_for(principal, self.cache.secret))

    async def storage_key(self, digest: str, where: Identity) -> tuple[str, bool]:
        """The Redis key of ``digest`` in ``where``, and whether it may go to L2 (False
        when the generation counters cannot be known now: this process's L1 only)."""
        self._start()
        generation = await self._generation(where)
        ns = self.cache.settings.namespace
        return f"{ns}:{generation or 'gx'}:{where.tenant}:{where.scope}:{digest}", (
            generation is not None
        )

    def peek_key(self, digest: str, where: Identity) -> str | None:
        """``storage_key`` without awaiting, when the generations are known (the hit path)."""
        memo = self._generations.get((where.tenant, where.scope))
        generations, loop = self.cache.generations, self.loop
        if (
            memo is None
            or memo[1] is None
            or not generations.trusted
            or memo[0] != generations.version
            or loop is None
            or not loop.is_running()  # start() ran in this loop (cheaper to ask)
        ):
            return None
        return f"{self.cache.settings.namespace}:{memo[1]}:{where.tenant}:{where.scope}:{digest}"

    async def _generation(self, where: Identity) -> str | None:
        generations = self.cache.generations
        memo = self._generations.get((where.tenant, where.scope))
        if memo is not None and generations.trusted and memo[0] == generations.version:
            return memo[1]
        generation = await self.cache.generation(where)
        if generation is not None and generations.trusted:
            if len(self._generations) >= _MEMO_SIZE:
                self._generations.clear()
            self._generations[where.tenant, where.scope] = (generations.version, generation)
        return generation

    def _start(self) -> None:
        """Start the bus (coherent L1 across workers) once per event loop, as the app's
        lifespan does: scripts and workers use the data API without an app."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop = loop
            self._generations.clear()
            self.cache.start_background()

    # -- reading --------------------------------------------------------------------
    def value_of(self, entry: DataEntry, adapter: TypeAdapter[Any] | None, immutable: bool) -> Any:
        """A caller's own copy of the value (one shared instance for an immutable type)."""
        if not immutable:
            return load(entry.body, adapter)
        shared = entry.shared
        if shared is not None and shared[0] is adapter:
            return shared[1]
        value = load(entry.body, adapter)
        entry.share(adapter, value)
        return value

    def typed(self, as_type: Any) -> tuple[TypeAdapter[Any] | None, bool]:
        if as_type is None:
            return None, False
        return adapter_for(as_type), is_immutable(as_type)

    async def get(
        self, key: str, default: Any, as_type: Any, principal: Principal, tenant: str | None
    ) -> Any:
        where = self.where(principal, tenant)
        digest = self.digest_of(key)
        skey, shared = self.peek_key(digest, where), True
        if skey is None:
            skey, shared = await self.storage_key(digest, where)
        store, tier = self.cache.store, "l1"
        entry = store.lookup_local(skey)
        if entry is None and shared:
            entry, tier = await store.lookup_remote(skey), "l2"
        if not isinstance(entry, DataEntry) or not entry.is_fresh(self.cache.clock()):
            self.cache.record(Event.MISS, reason="miss", route="data", tenant=where.tenant)
            return default
        adapter, immutable = self.typed(as_type)
        try:
            value = self.value_of(entry, adapter, immutable)
        except DecodeError as exc:
            await self.drop(skey, exc)
            return default
        if tier == "l1":
            self.count_l1_hit("data", where.tenant)
        else:
            self.cache.record(Event.HIT, tier=tier, route="data", tenant=where.tenant)
        return value

    async def drop(self, key: str, exc: Exception) -> None:
        """An entry that does not decode (or fit its type): a miss, and gone everywhere."""
        logger.warning("dropping cached value: %s", exc, extra={"event": "decode_error"})
        await self.cache.store.delete(key)

    # -- writing --------------------------------------------------------------------
    def entry(
        self,
        payload: bytes,
        ttl: float,
        tags: Iterable[str],
        *,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        compute_seconds: float = 0.0,
        label: str = "data",
    ) -> DataEntry:
        return DataEntry(
            status=200,
            headers=(),
            body=payload,
            stored_at=self.cache.clock(),
            fresh_for=ttl,
            stale_for=max(stale_while_revalidate, stale_if_error),
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            tags=tuple(sorted({tag for tag in tags if tag})),
            route=label,
            compute_seconds=compute_seconds,
        )

    async def set(
        self,
        key: str,
        value: Any,
        ttl: float,
        tags: Iterable[str],
        principal: Principal,
        tenant: str | None,
        as_type: Any = None,
    ) -> None:
        adapter, _ = self.typed(as_type)
        payload = dump(value, adapter)  # refused here, at the call that gave it
        where = self.where(principal, tenant)
        skey, shared = await self.storage_key(self.digest_of(key), where)
        await self.forget(skey)  # every worker's copy, and every fill racing this write
        if ttl <= 0:
            return
        start = await fill_start(self, None) if shared else None
        if start is not None:
            start = replace(start, write=True)  # the caller's value, not a read (markers)
        await self.write(skey, where.tenant, self.entry(payload, ttl, tags), start)

    async def write(
        self,
        key: str,
        tenant: str,
        entry: DataEntry,
        start: FillStart | None,
        lease: Lease | None = None,
    ) -> bool:
        """Store ``entry``: in Redis with its indexes (its key's own and its tags'), unless
        a purge of any of them followed ``start`` in any process, releasing ``lease`` in
        the same round trip where it can; then in L1, unless this process heard such a
        purge. ``start`` None: L1 only (the generations, so L2, cannot be known now).
        Returns whether the lease was released."""
        cache = self.cache
        life = entry.remaining_life(cache.clock())
        if life <= 0:
            return False
        names = [written(key), *(tag_index(tenant, tag) for tag in entry.tags)]
        invalidator = cache.invalidator
        since = invalidator.sequence if start is None else start.sequence
        if invalidator.heard_since(names, since):
            return False  # set, deleted or purged meanwhile: keep the newer state
        released = False
        if start is not None and invalidator.client is not None and cache.l2_usable:
            then = []
            fleet = cache.fleet
            if lease is not None and fleet is not None and invalidator.fills.atomic(start):
                release = fleet.release_command(lease)
                if release is not None:
                    then.append(release)
                    released = True
            try:
                stored = await invalidator.fills.fill([(key, entry, life)], key, names, start, then)
            except StoreUnavailable:
                released, stored = False, True  # counted by the store; L1 alone keeps it
            if not stored:
                return released
        cache.record(Event.STORE, route=entry.route, tenant=tenant)
        if invalidator.seen_since(names, since):
            return released  # purges may have gone unheard since it began: not in L1
        cache.store.set_local(key, entry, life, None if start is None else start.read_at)
        invalidator.record_local(key, names)
        return released

    async def forget(self, key: str) -> None:
        """Delete ``key`` in both tiers and in every worker's L1, and refuse every fill of it
        that began before (in this process or another: a purge of its own index)."""
        cache = self.cache
        with contextlib.suppress(StoreUnavailable):  # L1 copies are gone all the same
            await cache.invalidator.purge([written(key)])
        await cache.store.delete(key)  # one stored without its index (an older version)

    async def delete(self, key: str, principal: Principal, tenant: str | None) -> None:
        skey, _ = await self.storage_key(self.digest_of(key), self.where(principal, tenant))
        await self.forget(skey)

    # -- read-through ---------------------------------------------------------------
    async def get_or_set(
        self,
        key: str,
        factory: Callable[[], Awaitable[Any]],
        ttl: float,
        tags: Iterable[str],
        stale_while_revalidate: float,
        stale_if_error: float,
        early_refresh: float,
        as_type: Any,
        principal: Principal,
        tenant: str | None,
    ) -> Any:
        adapter, immutable = self.typed(as_type if as_type is not None else returns_of(factory))
        where = self.where(principal, tenant)
        skey, shared = await self.storage_key(self.digest_of(key), where)

        async def compute() -> Any:
            result = factory()
            if not inspect.isawaitable(result):
                raise TypeError("get_or_set: factory must be an async callable (async def)")
            return await result

        job = Load(
            skey,
            shared,
            compute,
            tenant=where.tenant,
            ttl=ttl,
            tags=tuple(tags),
            adapter=adapter,
            immutable=immutable,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            early_refresh=early_refresh,
            label=_label_of(factory),
        )
        return await self.load(job)

    async def load(self, job: Load) -> Any:
        """The value of ``job.key``: from L1, L2, another computation, or computed."""
        local: DataEntry | None = None
        if not job.refresh:
            found = self.cache.store.lookup_local(job.key)
            if type(found) is DataEntry:
                local = found
                now = self.cache.clock()
                if now - local.stored_at < local.fresh_for:
                    try:
                        value = self.value_of(local, job.adapter, job.immutable)
                    except DecodeError as exc:
                        await self.drop(job.key, exc)
                        local = None
                    else:
                        self.count_l1_hit(job.label, job.tenant)
                        if job.early_refresh and self._due(local, now, job.early_refresh):
                            self.refresh_later(job)
                        return value
        return await load_beyond_l1(self, job, local)

    def count_l1_hit(self, label: str, tenant: str) -> None:
        """An L1 hit, counted as the memo counts its own (the hit path)."""
        stats = self.cache.stats
        stats.l1_hits += 1
        routes = stats.l1_route_hits
        routes[label] = routes.get(label, 0) + 1
        if self.cache.exporters:
            self.cache.export_l1_hit(label, tenant)

    @staticmethod
    def _due(entry: DataEntry, now: float, beta: float) -> bool:
        delta = entry.compute_seconds
        return delta > 0 and should_refresh_early(entry.age(now), entry.fresh_for, delta, beta)

    def refresh_later(self, job: Load) -> None:
        refresh_in_background(self, job)


_RETURNS: dict[Any, Any] = {}


def returns_of(factory: Callable[..., Any]) -> Any:
    """The annotated return type of an ``async def`` factory, or None (unknown)."""
    fn = getattr(factory, "__func__", factory)
    try:
        return _RETURNS[fn]
    except (KeyError, TypeError):
        pass
    found = None
    if inspect.iscoroutinefunction(fn) and "return" in getattr(fn, "__annotations__", {}):
        with contextlib.suppress(Exception):  # an unresolvable annotation: untyped
            found = return_type(fn)
    with contextlib.suppress(TypeError):
        if len(_RETURNS) >= _MEMO_SIZE:
            _RETURNS.clear()
        _RETURNS[fn] = found
    return found


def _label_of(factory: Callable[..., Any]) -> str:
    fn = getattr(factory, "__func__", factory)
    name = getattr(fn, "__qualname__", "")
    return f"@{fn.__module__}.{name}" if name and "<lambda>" not in name else "data"
