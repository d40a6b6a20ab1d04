"""``TieredCacheMiddleware``: a pure ASGI response cache in front of the application.

A request is answered in this order, and the order is the design:

1. Decide from the request alone whether the cache may be used at all (method, body,
   method override, credentials the cache cannot scope). If not: the app answers, and the
   response says ``BYPASS`` and why.
2. Work out *who* the response is for (tenant, identity scope), then the key.
3. Look in L1 (no await), then L2 (one round trip). A fresh entry is replayed right here,
   before FastAPI routes, validates or serialises anything.
4. Otherwise call the app and stream its response to the client as it comes, teeing a
   copy. Storing happens only after the last byte was handed to the server, so a client
   never waits for Redis; and only if every rule allowed it once the whole body was seen.

This is counter-intuitive but correct: the ``http.response.start`` message is held back
until the first body message, because when the whole body arrives in one message (as it
does for every ordinary ``Response``) the ETag can still be added to the headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from contextvars import ContextVar
from email.utils import formatdate
from time import perf_counter
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .cache import TieredCache
from .cache_control import EMPTY, CacheControl, parse_cache_control, parse_http_date, parse_vary
from .coalesce import LeaderFailed, Lease, should_refresh_early
from .conditional import NOT_MODIFIED_HEADERS, is_not_modified, make_etag, select_range
from .entry import CachedResponse, VaryPointer
from .exceptions import StoreUnavailable
from .identity import Identity
from .invalidation import exact_index, index_names, parent_path, tag_index
from .keys import KEY_HEADERS, vary_values
from .metrics import Event
from .policy import (
    METHOD_OVERRIDE_HEADERS,
    Freshness,
    Reason,
    check_request,
    check_response,
    freshness_of,
    heuristic_lifetime,
    is_worth_storing,
    outgoing_cache_control,
    request_allows,
    response_cache_control,
)
from .request import RequestInfo
from .settings import CacheSettings, RouteRule
from .stores import Tier
from .stores.tiered import L2_FAULTED
from .tags import fill_tags, rule_params

__all__ = ["TieredCacheMiddleware"]

# Headers never replayed from a stored entry: hop-by-hop fields, and fields that only
# describe this one exchange (RFC 9111 §3.1).
_NOT_STORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"set-cookie",
        b"content-length",
        b"age",
        b"x-cache",
        b"cache-status",
    }
)
# Every other method, known or not, may change the resource (RFC 9111 §4.4).
_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_MAX_TAGS = 64
logger = logging.getLogger("fastapi_tiered_cache")
_CONDITIONAL_NAMES = (
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
)
_CONDITIONAL = frozenset(name.encode("latin-1") for name in _CONDITIONAL_NAMES)


class TieredCacheMiddleware:
    """The cache as ASGI middleware.

    - ``cache``: a ``TieredCache``; when omitted one is built from ``settings``.
    - ``settings``: a ``CacheSettings``; when both are omitted, read from the environment.

    Example::

        app = FastAPI()
        app.add_middleware(TieredCacheMiddleware)  # configured by TIERED_CACHE_* variables
    """

    def __init__(
        self,
        app: ASGIApp,
        cache: TieredCache | None = None,
        settings: CacheSettings | None = None,
    ) -> None:
        self.app = app
        self.cache = cache if cache is not None else TieredCache(settings)
        self.cache.startup()
        self.memo: _Memo | None = _Memo(self.cache) if _Memo.applies(self.cache) else None
        self.memo_in_front = False  # install() lets the memo answer before the app's stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.cache.settings.enabled:
            memo = self.memo
            token = L2_FAULTED.set(False) if L2_FAULTED.get() is None else None
            try:
                if memo is not None and not self.memo_in_front:
                    await memo.serve(scope, receive, send, self.full_path)
                else:
                    await self.full_path(scope, receive, send)
            finally:
                if token is not None:
                    L2_FAULTED.reset(token)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def full_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Parse, route, identify, hash, look up; serve, or fetch and store."""
        await _Responder(self.app, self.cache, self.memo)(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        if isinstance(state, dict):
            state.setdefault("tiered_cache", self.cache)  # request.state.tiered_cache

        async def receive_starting() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.cache.start_background()  # the invalidation bus lives with the app
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.cache.close()
            await send(message)

        await self.app(scope, receive_starting, send_closing)


_MemoKey = tuple[Any, ...]
# The key whose L2 lookup, made by the memo earlier in this request, found nothing: the
# full path then does not ask L2 again (a slow Redis costs a request one budget, not two).
ASKED_L2: ContextVar[str | None] = ContextVar("tiered_cache_asked_l2", default=None)
# The fleet lease as a lookup left it: ours (a ``Lease``), held by another process
# (``False``), or not asked (``None``).
Early = Lease | Literal[False] | None


class _Mapping:
    """Where the memo sends a request, and the headers of its last replay: within one
    second of age the same ones serve again."""

    __slots__ = ("age", "headers", "key", "record", "tenant", "tier", "ttl", "version")

    def __init__(self, key: str, version: int, tenant: str) -> None:
        self.key = key
        self.version = version  # of the generation counters when it was made
        self.tenant = tenant
        self.record: CachedResponse | None = None
        self.age = self.ttl = -1
        self.tier = b""
        self.headers: list[tuple[bytes, bytes]] = []


class _Memo:
    """The hit path for a request like one served before: same request line and same
    values of every header the cache could read.

    The full path (parse, route, identify, hash) maps a request to a key. The memo
    remembers that mapping, keyed by the request line and the values of the *watched*
    headers only: every header the key, the identity, the tenant, the request checks and
    the conditional logic may read (host, proxy headers, credentials, cookies, the tenant
    header, ``vary_on`` and rules' Vary, method overrides, body framing, validators, ranges,
    cache directives), plus the Vary names of routes and responses as they are learnt
    (learning one drops every mapping). Two requests with the same memo key therefore have
    the same cache key, whatever else they carry (trace ids, user agents, ...).

    A mapping is used while no generation counter moved since and the invalidation bus is
    trusted; purges drop the L1 entry itself, so a memo can point at nothing but never at a
    purged response. Only used without custom resolvers or key builders (which may read
    anything) and for requests with no validators, ranges or honoured client directives.
    A header name that is not lower-case (servers lower-case them) sends the request down
    the full path.
    """

    MAX = 10_000
    MAX_WATCHED = 256  # header names; a stream of new Vary names turns the memo off
    MAX_UNWATCHED = 1024

    def __init__(self, cache: TieredCache) -> None:
        self.cache = cache
        # Objects a hit reads, fixed for the cache's life: one attribute load each.
        self.generations = cache.generations
        self.l1 = cache.store.l1
        self.stats = cache.stats
        self.keys: dict[_MemoKey, _Mapping] = {}
        self.watched = self.static_watched(cache.settings)
        self.unwatched: set[bytes] = set()  # lower-case names seen and known not watched
        self.enabled = True
        name = cache.settings.cache_status_name.encode("latin-1")
        self.status_prefix = name + b"; hit; ttl="
        self.x_cache = [(b"x-cache", b"HIT")] if cache.settings.x_cache_header else []

    @staticmethod
    def applies(cache: TieredCache) -> bool:
        s = cache.settings
        plugins = cache.identity_resolver or cache.tenant_resolver or s.key_builder
        return not plugins and not s.early_refresh

    @staticmethod
    def static_watched(settings: CacheSettings) -> frozenset[bytes]:
        names = {
            "host",
            "cookie",
            "content-length",
            "transfer-encoding",
            "cache-control",
            "pragma",
            *KEY_HEADERS,
            *METHOD_OVERRIDE_HEADERS,
            *_NOT_PLAIN,
            *(_CONDITIONAL_NAMES),
            *settings.identity_headers,
            *settings.vary_on,
            *(name for rule in settings.rules for name in rule.vary),
        }
        if settings.tenant_header:
            names.add(settings.tenant_header)
        return frozenset(_header_of(name).encode("latin-1") for name in names)

    def key_of(self, scope: Scope) -> _MemoKey | None:
        watched = self.watched
        get = scope.get
        server = get("server")
        if server is not None and server.__class__ is not tuple:
            server = tuple(server)  # a list, as some servers and test clients send
        picked: list[Any] = [
            scope["method"],
            get("raw_path") or get("path"),  # the path is decoded from the raw path
            get("query_string"),
            get("scheme"),
            get("root_path"),
            server,
        ]
        unwatched = self.unwatched
        for pair in scope["headers"]:
            name = pair[0]
            if name in unwatched:
                continue
            if name in watched:
                picked.append(pair if pair.__class__ is tuple else tuple(pair))
                continue
            lowered = name.lower()
            if lowered in watched:
                return None  # not lower-case: the full path reads it, case-insensitively
            if lowered == name and len(unwatched) < self.MAX_UNWATCHED:
                unwatched.add(name)
        return tuple(picked)

    def learn(self, names: Iterable[str]) -> None:
        """Watch more headers (a route's or a response's Vary, a route's credentials)."""
        new = {_header_of(name).encode("latin-1") for name in names} - self.watched
        if not new:
            return
        self.keys.clear()  # mappings made without those headers in their key
        self.watched = self.watched | new
        self.unwatched -= new
        if len(self.watched) > self.MAX_WATCHED:
            self.enabled = False

    def remember(
        self, scope: Scope, key: str, version: int, tenant: str, names: Iterable[str]
    ) -> None:
        self.learn(names)
        if not self.enabled:
            return
        memo_key = self.key_of(scope)
        if memo_key is None:
            return
        try:
            hash(memo_key)
        except TypeError:
            return
        keys = self.keys
        if len(keys) >= self.MAX:
            del keys[next(iter(keys))]  # the oldest mapping
        keys[memo_key] = _Mapping(key, version, tenant)

    def find(self, scope: Scope) -> _Mapping | None:
        """Where a request seen before goes, if that still holds (generations unmoved)."""
        if not self.enabled:
            return None
        memo_key = self.key_of(scope)
        if memo_key is None:
            return None
        try:
            found = self.keys.get(memo_key)
        except TypeError:  # an unhashable part (a server sending odd types): full path
            return None
        if found is None:
            return None
        generations = self.generations
        if not generations.trusted or generations.version != found.version:
            return None
        return found

    def local(self, found: _Mapping, scope: Scope) -> tuple[Message, Message] | None:
        l1 = self.l1
        record = l1.lookup(found.key) if l1 is not None else None
        if type(record) is not CachedResponse:
            return None
        messages = self.replay(found, record, scope, b"l1")
        if messages is not None:
            stats = self.stats
            stats.l1_hits += 1
            route = record.route
            if route:
                routes = stats.l1_route_hits
                routes[route] = routes.get(route, 0) + 1
            if self.cache.exporters:
                self.cache.export_l1_hit(route, found.tenant)
        return messages

    async def remote(self, found: _Mapping, scope: Scope) -> tuple[Message, Message] | None:
        """As ``local``, from L2 (one round trip, the hit promoted into L1): for entries
        this process served before but no longer holds, or every hit without L1. When L2
        had nothing (or failed), says so in ``ASKED_L2`` for the rest of the request."""
        cache = self.cache
        if not cache.l2_usable:
            return None
        record = await cache.store.lookup_remote(found.key)
        if record is None:
            ASKED_L2.set(found.key)  # the full path must not wait on L2 for it again
            return None
        if type(record) is not CachedResponse:
            return None
        messages = self.replay(found, record, scope, b"l2")
        if messages is not None:
            cache.record(Event.HIT, tier="l2", route=record.route, tenant=found.tenant)
        return messages

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Answer a request seen before from L1 or L2, or hand it to ``app``."""
        found = self.find(scope)
        if found is None:
            await app(scope, receive, send)
            return
        answer = self.local(found, scope)
        if answer is None:
            await self.serve_beyond_l1(found, scope, receive, send, app)
            return
        await send(answer[0])
        await send(answer[1])

    async def serve_beyond_l1(
        self, found: _Mapping, scope: Scope, receive: Receive, send: Send, app: ASGIApp
    ) -> None:
        """A request the memo knows but L1 does not hold: L2, else ``app``."""
        token = ASKED_L2.set(None)
        faulted = L2_FAULTED.set(False) if L2_FAULTED.get() is None else None
        try:
            answer = await self.remote(found, scope)
            if answer is None:
                await app(scope, receive, send)
                return
        finally:
            ASKED_L2.reset(token)
            if faulted is not None:
                L2_FAULTED.reset(faulted)
        await send(answer[0])
        await send(answer[1])

    def replay(
        self, found: _Mapping, record: CachedResponse, scope: Scope, tier: bytes
    ) -> tuple[Message, Message] | None:
        if record.revalidate:
            return None
        now = self.cache.clock()
        age = record.initial_age + now - record.stored_at  # inlined CachedResponse.age/ttl
        if age < 0:
            age = 0.0
        ttl = record.fresh_for - age
        if ttl <= 0:
            return None
        whole_age, whole_ttl = int(age), int(ttl)
        if (
            found.record is record
            and found.age == whole_age
            and found.ttl == whole_ttl
            and found.tier == tier
        ):
            headers = found.headers.copy()
        else:
            headers = list(record.headers)
            headers.append((b"age", b"%d" % whole_age))
            status = self.status_prefix + b"%d; detail=%s" % (whole_ttl, tier)
            headers.append((b"cache-status", status))
            headers.extend(self.x_cache)
            found.record, found.age, found.ttl, found.tier = record, whole_age, whole_ttl, tier
            found.headers, headers = headers, headers.copy()
        body = b"" if scope["method"] == "HEAD" else record.body
        return (
            {"type": "http.response.start", "status": record.status, "headers": headers},
            {"type": "http.response.body", "body": body},
        )


def _header_of(name: str) -> str:
    """The header a key input reads: ``cookie:<name>`` is the Cookie header."""
    return "cookie" if name.startswith("cookie:") else name.lower()


_NOT_PLAIN = ("if-none-match", "if-modified-since", "range", "if-range")


def _plain(info: RequestInfo, rule: RouteRule | None, cache: TieredCache) -> bool:
    """Whether a request's hit can be replayed by the memo (see ``_Memo``)."""
    headers = info.headers
    if any(name in headers for name in _NOT_PLAIN):
        return False
    if cache.settings.honour_request_cache_control and "cache-control" in headers:
        return False
    return rule is None or not rule.cache_control


def _status_value(cache: TieredCache, *params: str) -> bytes:
    return "; ".join((cache.settings.cache_status_name, *params)).encode("latin-1")


class _Responder:
    """Per-request state: built for one request and dropped after it."""

    def __init__(self, app: ASGIApp, cache: TieredCache, memo: _Memo | None = None) -> None:
        self.app = app
        self.cache = cache
        self.memo = memo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cache = self.cache
        started = perf_counter() if cache.exporters else 0.0
        info = RequestInfo.from_scope(scope)
        if info.method not in _SAFE and cache.settings.invalidate_on_write:
            await self.write(info, scope, receive, send)
            return
        decision = check_request(info, cache.methods)
        if not decision.cacheable:
            await self.bypass(decision.reason, scope, receive, send)
            return
        rule, inputs = cache.policy_for(info, self.app)
        if rule is not None and not rule.cache:
            await self.bypass(Reason.RULE, scope, receive, send)
            return
        if inputs.raw_request and rule is None:
            await self.bypass(Reason.REQUEST_OBJECT, scope, receive, send)
            return
        identity = await cache.identify(info, inputs)
        if isinstance(identity, Reason):
            await self.bypass(identity, scope, receive, send)
            return
        generation = await cache.generation(identity)
        version = cache.generations.version
        config_names = cache.vary_names(rule, inputs)
        keyed = cache.keyed_request(info, rule)
        primary = cache.key_for(keyed, identity, vary_values(info, config_names), generation)
        key, names, record, tier, early = await self.lookup(
            keyed, identity, generation, primary, config_names
        )
        fetch = _Fetch(self, info, identity, rule, generation, primary, key, names)
        fetch.keyed = keyed
        fetch.config_names = config_names  # the names the primary key was built with
        fetch.early = early
        fetch.credential_headers = inputs.credential_headers
        try:
            await self.answer(fetch, record, tier, version, started, scope, receive, send)
        finally:
            if isinstance(fetch.early, Lease) and cache.fleet is not None:
                await cache.fleet.release(fetch.early)  # taken with the lookup, never used

    async def answer(
        self,
        fetch: _Fetch,
        record: CachedResponse | VaryPointer | None,
        tier: Tier | None,
        version: int,
        started: float,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Serve what the lookup found (fresh, stale, revalidated) or go to the origin."""
        cache = self.cache
        info, rule, identity, generation = fetch.info, fetch.rule, fetch.identity, fetch.generation
        key, names = fetch.key, fetch.names
        honour = cache.settings.honour_request_cache_control and fetch.request_cc is not EMPTY
        if isinstance(record, CachedResponse):
            now = cache.clock()
            if not record.matches(vary_values(info, [name for name, _ in record.vary])):
                fetch.forward = "vary-miss"
            elif record.is_fresh(now) and (
                not honour or request_allows(fetch.request_cc, record, now)
            ):
                if self.memo is not None and generation is not None and _plain(info, rule, cache):
                    learnt = (*names, *fetch.credential_headers, *(n for n, _ in record.vary))
                    self.memo.remember(scope, key, version, identity.tenant, learnt)
                await self.replay(info, record, tier, send, rule=rule, tenant=identity.tenant)
                if started:
                    cache.observe(perf_counter() - started, route=record.route, outcome="hit")
                if cache.settings.early_refresh and self.refresh_due(record, now):
                    self.refresh(fetch, scope)
                return
            else:
                staleness = -record.ttl(now)
                if not record.revalidate and 0 < staleness <= record.stale_while_revalidate:
                    params = ("hit", "fwd=stale", f"ttl={-int(staleness)}")
                    await self.replay(
                        info, record, tier, send, rule=rule, x_cache="STALE", params=params
                    )
                    cache.record(
                        Event.STALE,
                        reason="while-revalidate",
                        route=record.route,
                        tenant=identity.tenant,
                    )
                    if started:
                        cache.observe(perf_counter() - started, route=record.route, outcome="stale")
                    self.refresh(fetch, scope)
                    return
                if staleness <= record.stale_if_error:
                    fetch.fallback = record
                if honour and fetch.request_cc.only_if_cached:
                    await self.gateway_timeout(send)
                    return
                if record.can_revalidate:
                    await fetch.revalidate(record, scope, receive, send)
                    return
                fetch.forward = "stale"
        if honour and fetch.request_cc.only_if_cached:
            await self.gateway_timeout(send)  # RFC 9111 §5.2.1.7
            return
        await self.miss(fetch, scope, receive, send)
        if started:  # time in the cache on a miss: everything but the app itself
            spent = perf_counter() - started - fetch.app_seconds
            cache.observe(spent, route=_route_template(scope), outcome="miss")

    def refresh_due(self, record: CachedResponse, now: float) -> bool:
        """XFetch: refresh a hot entry early, more likely the closer it is to expiry."""
        delta = self.cache.compute_seconds.get(record.route, 0.05)
        beta = self.cache.settings.early_refresh
        return should_refresh_early(record.age(now), record.fresh_for, delta, beta)

    def refresh(self, fetch: _Fetch, scope: Scope) -> None:
        """Refresh an entry in the background, once per key in this process (and, with a
        lease, once across the fleet), with the original request's scope."""
        cache = self.cache
        background = {**scope, "headers": list(scope["headers"])}

        async def work() -> None:
            lease = await cache.fleet.acquire(fetch.key) if cache.fleet is not None else None
            if cache.fleet is not None and lease is None:
                return  # another process is refreshing it
            try:
                await fetch.app_through(background, _NoBody(), _discard, None)
            finally:
                if lease is not None and cache.fleet is not None:
                    await cache.fleet.release(lease)

        cache.run_in_background(fetch.key, work)

    async def miss(self, fetch: _Fetch, scope: Scope, receive: Receive, send: Send) -> None:
        """Go to the origin once per key for concurrent misses, in-process and fleet-wide.

        Requests waiting on another's origin call are answered from its stored result
        (same key, so same tenant, identity and variant); when that result is not storable,
        or the other call failed, each goes to the origin itself.
        """
        cache = self.cache
        key = fetch.key
        if not cache.settings.coalesce or key in cache.hit_for_miss:
            await fetch(scope, receive, send)
            return
        responded = False

        async def compute() -> CachedResponse | None:
            nonlocal responded
            early = fetch.early
            fleet = cache.fleet if cache.l2_usable or isinstance(early, Lease) else None
            lease: Lease | None = None
            if fleet is not None:  # else: the breaker is open, coalesce in-process only
                if isinstance(early, Lease):  # taken atomically with a lookup that missed
                    fetch.early = None
                    lease = fleet.adopt(early)
                elif early is None:
                    lease = await fleet.acquire(key)
                fetch.lease = lease
                if lease is None and not await fleet.wait_for(key):
                    pass  # the holder took too long: compute it ourselves
                elif lease is None or early is None:
                    # Woken by the holder, or we took the lease after our lookup (so the
                    # previous holder may have stored it since): look again first.
                    found = await cache.store.lookup_remote(key)
                    if isinstance(found, CachedResponse) and found.is_fresh(cache.clock()):
                        if lease is not None:
                            await fleet.release(lease)
                        return found
            try:
                responded = True
                stored = await fetch(scope, receive, send)
            finally:
                if lease is not None and fleet is not None and not fetch.lease_released:
                    await fleet.release(lease)
            if stored is None:
                cache.hit_for_miss.remember(key)
            return stored

        try:
            entry, _leader = await cache.flight.run(key, compute)
        except LeaderFailed:
            entry = None
        if responded:
            return
        if entry is not None and entry.matches(
            vary_values(fetch.info, [name for name, _ in entry.vary])
        ):
            cache.record(Event.COALESCED, route=entry.route, tenant=fetch.tenant)
            params = ("fwd=miss", "collapsed", f"ttl={max(0, int(entry.ttl(cache.clock())))}")
            await self.replay(
                fetch.info, entry, None, send, rule=fetch.rule, x_cache="MISS", params=params
            )
            return
        await fetch(scope, receive, send)

    async def lookup(
        self,
        info: RequestInfo,
        identity: Identity,
        generation: str | None,
        key: str,
        names: tuple[str, ...],
    ) -> tuple[str, tuple[str, ...], CachedResponse | VaryPointer | None, Tier | None, Early]:
        """Find the entry for a request, following a Vary pointer at most once.

        When it is in neither tier, the fleet lease on its key was tried in the same round
        trip (see ``Early``), so that a miss costs one round trip before the origin.
        """
        found, early = await self.get(key, generation)
        if found is None:
            return key, names, None, None, early
        record, tier = found
        if isinstance(record, VaryPointer):
            names = tuple(sorted(set(names) | set(record.names)))
            key = self.cache.key_for(info, identity, vary_values(info, names), generation)
            found, early = await self.get(key, generation)
            if found is None or isinstance(found[0], VaryPointer):
                return key, names, None, None, early
            record, tier = found
        return key, names, record, tier, None

    async def get(
        self, key: str, generation: str | None
    ) -> tuple[tuple[CachedResponse | VaryPointer, Tier] | None, Early]:
        cache = self.cache
        if ASKED_L2.get() == key:  # the memo found nothing in L2 a moment ago
            local = cache.store.lookup_local(key)
            return (None if local is None else (local, Tier.L1)), None
        fleet = cache.fleet
        if (
            fleet is None
            or generation is None
            or not cache.settings.coalesce
            or key in cache.hit_for_miss
            or not cache.l2_usable
            or not cache.store.misses_likely
        ):
            return await cache.store.get(key), None
        token = fleet.new_token()
        found, won = await cache.store.get_or_lease(
            key, fleet.lease_key(key), token, fleet.lease_ms
        )
        return found, None if won is None else (Lease(key, token) if won else False)

    async def write(self, info: RequestInfo, scope: Scope, receive: Receive, send: Send) -> None:
        """An unsafe request: once it succeeds, purge what it changed, then answer.

        The purge runs before the response starts, so the writer's next read (in any
        process reached by the bus) cannot be served the old entry (RFC 9111 §4.4).
        """
        extra = self.marks("BYPASS", "fwd=bypass", f"detail={Reason.METHOD}")
        self.cache.record(Event.BYPASS, reason=str(Reason.METHOD))

        async def send_purging(message: Message) -> None:
            if message["type"] == "http.response.start":
                if 200 <= message["status"] < 400:  # any non-error status
                    await self.purge_after_write(info, scope, message)
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_purging)

    async def purge_after_write(self, info: RequestInfo, scope: Scope, message: Message) -> None:
        cache = self.cache
        tenant = await cache.tenant_of(info)
        if tenant is None:
            return
        rule, _ = cache.policy_for(info, self.app)
        names = [exact_index(tenant, info.path)]
        parents = cache.settings.invalidate_parents
        if rule is not None and rule.invalidate_parents is not None:
            parents = rule.invalidate_parents
        parent = parent_path(info.path) if parents else None
        if parent is not None:
            names.append(exact_index(tenant, parent))
        for name, value in message.get("headers", ()):
            if name.lower() in (b"location", b"content-location"):
                target = _same_origin_path(value.decode("latin-1"), info)
                if target is not None:
                    names.append(exact_index(tenant, target))
        if rule is not None:
            params = scope.get("path_params") or rule_params(rule, info.path)
            names.extend(tag_index(tenant, tag) for tag in fill_tags(rule.invalidates, params))
        try:
            await cache.invalidator.purge(names)
        except StoreUnavailable as exc:
            logger.warning("purge after write incomplete: %s", exc, extra={"event": "purge_error"})

    async def bypass(self, reason: Reason, scope: Scope, receive: Receive, send: Send) -> None:
        """Let the app answer, marking the response as not from (nor into) the cache."""
        self.cache.record(Event.BYPASS, reason=str(reason))
        extra = self.marks("BYPASS", "fwd=bypass", f"detail={reason}")

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_marked)

    def marks(self, x_cache: str, *params: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"cache-status", _status_value(self.cache, *params))]
        if self.cache.settings.x_cache_header:
            headers.append((b"x-cache", x_cache.encode("latin-1")))
        return headers

    async def gateway_timeout(self, send: Send) -> None:
        headers = [
            (b"content-length", b"0"),
            *self.marks("MISS", "fwd=miss", "detail=only-if-cached"),
        ]
        await send({"type": "http.response.start", "status": 504, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def replay(
        self,
        info: RequestInfo,
        record: CachedResponse,
        tier: Tier | None,
        send: Send,
        *,
        rule: RouteRule | None = None,
        tenant: str = "",
        x_cache: str = "HIT",
        params: tuple[str, ...] = (),
    ) -> None:
        """Answer from a stored entry: 200 (or its status), 304, 206, or headers for HEAD."""
        now = self.cache.clock()
        if x_cache == "REVALIDATED":
            self.cache.record(Event.MISS, reason="revalidated", route=record.route, tenant=tenant)
        elif x_cache == "HIT" and tier is not None:
            self.cache.record(Event.HIT, tier=str(tier), route=record.route, tenant=tenant)
        status_params = params or ("hit", f"ttl={max(0, int(record.ttl(now)))}", f"detail={tier}")
        extra = [(b"age", str(int(record.age(now))).encode()), *self.marks(x_cache, *status_params)]
        if record.status == 200 and is_not_modified(info.headers, record):
            headers = [(k, v) for k, v in record.headers if k in NOT_MODIFIED_HEADERS]
            await send({"type": "http.response.start", "status": 304, "headers": headers + extra})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = list(record.headers)
        if rule is not None and rule.cache_control:
            headers = _with_cache_control(headers, rule.cache_control, record.ttl(now), now)
        status, body = record.status, record.body
        if "range" in info.headers:
            status, body, headers = _ranged(info, record, headers)
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": b"" if info.method == "HEAD" else body})


class _Fetch:
    """A trip to the origin on a miss (or to revalidate), storing what may be stored."""

    def __init__(
        self,
        responder: _Responder,
        info: RequestInfo,
        identity: Identity,
        rule: RouteRule | None,
        generation: str | None,
        primary: str,
        key: str,
        names: tuple[str, ...],
    ) -> None:
        self.responder = responder
        self.app_seconds = 0.0  # time spent in the app itself, not in the cache
        self.fallback: CachedResponse | None = None
        self.keyed = info
        self.config_names = names
        self.tenant = identity.tenant
        self.generation = generation
        self.started = responder.cache.invalidator.sequence
        self.cache = responder.cache
        self.info = info
        self.identity = identity
        self.rule = rule
        self.primary = primary
        self.key = key
        self.names = names
        self.forward = "miss"
        self.early: Early = None  # the fleet lease as the lookup left it
        self.lease: Lease | None = None  # the fleet lease held while computing
        self.lease_released = False  # by the store's pipeline
        self.credential_headers: tuple[str, ...] = ()  # the route's, for the memo
        cc = info.headers.get("cache-control")
        self.request_cc: CacheControl = parse_cache_control(cc) if cc else EMPTY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> CachedResponse | None:
        try:
            return await self.app_through(scope, receive, send, None)
        finally:
            route = _route_template(scope)
            self.cache.record(Event.MISS, reason=self.forward, route=route, tenant=self.tenant)

    async def revalidate(
        self, record: CachedResponse, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Ask the origin whether a stale entry is still good (RFC 9111 §4.3.1)."""
        self.forward = "stale"
        self.cache.record(Event.MISS, reason="revalidate")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _CONDITIONAL]
        if record.etag:
            headers.append((b"if-none-match", record.etag.encode("latin-1")))
        if record.last_modified is not None:
            headers.append((b"if-modified-since", _http_date(record.last_modified)))
        await self.app_through({**scope, "headers": headers}, receive, send, record)

    async def app_through(
        self, scope: Scope, receive: Receive, send: Send, stale: CachedResponse | None
    ) -> CachedResponse | None:
        """Call the app, forwarding its response; returns what was stored, if anything.

        With a stale ``fallback`` (stale-if-error), an exception, a 5xx or (when configured)
        a slow origin is answered with the stale entry instead (RFC 5861 §4).
        """
        capture = _Capture(self, send, stale)
        fallback = self.fallback
        timeout = self.cache.settings.origin_timeout if fallback is not None else None
        started = self.cache.invalidator.timer()
        clock_started = perf_counter()
        try:
            call = self.responder.app(scope, receive, capture.send)
            await (asyncio.wait_for(call, timeout) if timeout else call)
            self.app_seconds += perf_counter() - clock_started
        except Exception as exc:
            if fallback is None or capture.started:
                raise
            logger.warning(
                "origin failed (%s); serving stale", type(exc).__name__, extra={"event": "sie"}
            )
            await self.serve_stale(fallback, send)
            return None
        route = _route_template(scope)
        if route:
            self.cache.compute_seconds[route] = self.cache.invalidator.timer() - started
        if capture.suppressed and fallback is not None:
            await self.serve_stale(fallback, send)
            return None
        await capture.finish()
        return capture.stored

    async def serve_stale(self, record: CachedResponse, send: Send) -> None:
        self.cache.record(Event.STALE, reason="if-error", route=record.route, tenant=self.tenant)
        staleness = int(-record.ttl(self.cache.clock()))
        params = ("hit", "fwd=stale", f"ttl={-staleness}", "detail=stale-if-error")
        await self.responder.replay(
            self.info, record, None, send, rule=self.rule, x_cache="STALE", params=params
        )


class _Capture:
    """The ``send`` wrapper of one origin response: forward, tee, then decide and store."""

    def __init__(self, fetch: _Fetch, send: Send, stale: CachedResponse | None) -> None:
        self.fetch = fetch
        self.cache = fetch.cache
        self.client_send = send
        self.stale = stale
        self.start: Message | None = None
        self.started = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.storable = False
        self.reason = Reason.CACHEABLE
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.record: CachedResponse | None = None
        self.not_modified = False
        self.cc = EMPTY
        self.suppressed = False  # a 5xx held back: the stale fallback answers instead
        self.stored: CachedResponse | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.suppressed:
            return
        if kind == "http.response.start":
            self.on_start(message)
            if self.fetch.fallback is not None and self.status >= 500:
                self.suppressed = True
                return
            if self.not_modified:
                return
            if message.get("trailers"):
                self.storable = False
        elif kind == "http.response.body":
            if self.not_modified:
                self.complete = self.complete or not message.get("more_body", False)
                return
            await self.on_body(message)
        else:
            await self.client_send(message)

    def on_start(self, message: Message) -> None:
        self.status = message["status"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in message.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        self.start = message
        if self.stale is not None and self.status == 304:
            self.not_modified = True
            return
        self.reason = self.judge()
        self.storable = self.reason is Reason.CACHEABLE

    def judge(self) -> Reason:
        fetch = self.fetch
        if fetch.info.method == "HEAD":
            return Reason.METHOD  # a HEAD response has no body to replay for a GET
        settings = self.cache.settings
        statuses = fetch.rule.statuses if fetch.rule and fetch.rule.statuses else None
        self.cc = response_cache_control(self.headers, settings.targeted_headers)
        decision = check_response(
            self.status,
            self.headers,
            cc=self.cc,
            request_cc=fetch.request_cc,
            statuses=statuses or self.cache.statuses,
            shared=fetch.identity.is_anonymous,
            strict=settings.default_ttl == 0,
            authorization="authorization" in fetch.info.headers,
        )
        if not decision.cacheable:
            return decision.reason
        length = self.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > self.cache.settings.max_body_bytes:
            return Reason.TOO_LARGE
        return Reason.CACHEABLE

    async def on_body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self.storable:
            self.size += len(body)
            if self.size > self.cache.settings.max_body_bytes:
                self.storable, self.reason, self.chunks = False, Reason.TOO_LARGE, []
            else:
                self.chunks.append(body)
        if not self.started:
            self.started = True
            if self.storable and not more:
                self.record = self.build_record()
            await self.client_send(self.outgoing_start())
        await self.client_send(message)
        if not more:
            self.complete = True

    def outgoing_start(self) -> Message:
        assert self.start is not None
        params = [f"fwd={self.fetch.forward}"]
        if self.stale is not None:
            params.append(f"fwd-status={self.status}")
        if self.record is not None:
            params.append("stored")
        elif not self.storable:
            params.append(f"detail={self.reason}")
        x_cache = "MISS"
        headers = list(self.start.get("headers", ()))
        hidden = self.cache.hidden_headers
        if hidden:
            headers = [(k, v) for k, v in headers if k.lower() not in hidden]
        rule = self.fetch.rule
        if self.record is not None and rule is not None and rule.cache_control:
            now = self.cache.clock()
            headers = _with_cache_control(headers, rule.cache_control, self.record.ttl(now), now)
        if self.record is not None and not self.record.etag:
            headers.append((b"etag", self.record.served_etag))
        headers.extend(self.fetch.responder.marks(x_cache, *params))
        return {**self.start, "headers": headers}

    async def finish(self) -> None:
        """After the app returned: store what may be stored, or replay a revalidated entry."""
        if self.not_modified and self.stale is not None:
            await self.store_and_replay_revalidated(self.stale)
            return
        if not (self.complete and self.storable):
            return
        record = self.record or self.build_record()
        if record is not None:
            await self.store(record)

    def build_record(self) -> CachedResponse | None:
        fetch = self.fetch
        now = self.cache.clock()
        cc = self.cc
        freshness = freshness_of(
            self.headers,
            cc,
            default_ttl=self.default_ttl(now),
            shared=True,  # s-maxage applies to us in every scope
            now=now,
        )
        etag = self.headers.get("etag", "")
        last_modified = parse_http_date(self.headers.get("last-modified"))
        worth = is_worth_storing(freshness, bool(etag) or last_modified is not None)
        if not worth.cacheable:
            self.storable, self.reason = False, worth.reason
            return None
        body = b"".join(self.chunks)
        start = self.start
        assert start is not None
        # Hop-by-hop fields, including any the response names in Connection (RFC 9110 §7.6.1).
        named = {
            part.strip().lower().encode("latin-1")
            for part in self.headers.get("connection", "").split(",")
            if part.strip()
        }
        headers = [
            (k.lower(), v)
            for k, v in start.get("headers", ())
            if k.lower() not in _NOT_STORED and k.lower() not in named
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        if not etag:
            headers.append((b"etag", make_etag(body)))
        swr, sie = self.stale_windows(freshness)
        keep = self.cache.settings.keep_stale if (etag or last_modified is not None) else 0.0
        all_names = self.names_with(parse_vary(self.headers.get("vary")) or ())
        hidden = self.cache.hidden_headers
        headers = [(k, v) for k, v in headers if k not in hidden]
        return CachedResponse(
            status=self.status,
            headers=tuple(headers),
            body=body,
            stored_at=now,
            fresh_for=freshness.fresh_for,
            initial_age=freshness.initial_age,
            etag=etag,
            last_modified=last_modified,
            vary=vary_values(fetch.info, all_names),
            revalidate=freshness.revalidate,
            stale_for=max(swr, sie, keep),
            stale_while_revalidate=swr,
            stale_if_error=sie,
            tags=self.tags(),
            route=_route_template(fetch.info.scope),
        )

    def stale_windows(self, freshness: Freshness) -> tuple[float, float]:
        """Seconds the entry may be served stale while refreshing / when the origin fails:
        the origin's RFC 5861 directives, else the rule's, else the settings'. Never for a
        response that must be revalidated."""
        if freshness.must_revalidate or freshness.revalidate:
            return 0.0, 0.0
        settings, rule = self.cache.settings, self.fetch.rule
        swr = freshness.stale_while_revalidate or (
            rule.stale_while_revalidate
            if rule and rule.stale_while_revalidate is not None
            else settings.stale_while_revalidate
        )
        sie = freshness.stale_if_error or (
            rule.stale_if_error
            if rule and rule.stale_if_error is not None
            else settings.stale_if_error
        )
        return float(swr), float(sie)

    def default_ttl(self, now: float) -> float:
        """Lifetime when the origin gives none: the rule's, negative caching, the heuristic
        (when enabled), else the default."""
        settings = self.cache.settings
        rule = self.fetch.rule
        if rule is not None and rule.ttl is not None:
            return float(rule.ttl)
        if self.status in (404, 410) and settings.negative_ttl:
            return float(settings.negative_ttl)
        if settings.heuristic_freshness:
            heuristic = heuristic_lifetime(self.headers, now)
            if heuristic is not None:
                return heuristic
        return float(settings.default_ttl)

    def tags(self) -> tuple[str, ...]:
        """Tags from the route's rule (filled from path parameters) and surrogate headers."""
        found: set[str] = set()
        rule = self.fetch.rule
        if rule is not None and rule.tags:
            scope = self.fetch.info.scope
            params = scope.get("path_params") or rule_params(rule, self.fetch.info.path)
            found.update(fill_tags(rule.tags, params))
        for name in self.cache.settings.surrogate_key_headers:
            value = self.headers.get(name)
            if value:
                found.update(part for part in value.replace(",", " ").split() if part)
        return tuple(sorted(found))[:_MAX_TAGS]

    def names_with(self, response_vary: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(self.fetch.names) | set(response_vary)))

    async def store(self, record: CachedResponse) -> None:
        fetch = self.fetch
        store = self.cache.store
        ttl = record.remaining_life(self.cache.clock())
        if ttl <= 0:
            return
        names = tuple(name for name, _ in record.vary)
        key, pointer = fetch.primary, None
        if names != fetch.config_names:
            # The response varies on headers the primary key does not cover: store it under
            # a key that does, and leave a pointer at the primary key for later lookups.
            key = self.cache.key_for(fetch.keyed, fetch.identity, record.vary, fetch.generation)
            pointer = VaryPointer(names)
        invalidator = self.cache.invalidator
        index = index_names(fetch.identity.tenant, fetch.info.path, record.tags)
        if invalidator.seen_since(index, fetch.started):
            return  # purged while we fetched: what we hold may be the old version
        self.cache.record(Event.STORE, route=record.route, tenant=fetch.identity.tenant)
        self.stored = record
        store.set_local(key, record, ttl)
        if pointer is not None:
            store.set_local(fetch.primary, pointer, ttl)
        invalidator.record_local(key, index)
        if fetch.generation is None:
            return  # generations unknown (Redis unreachable): this process's L1 only
        entries: list[tuple[str, CachedResponse | VaryPointer, float]] = [(key, record, ttl)]
        if pointer is not None:
            entries.append((fetch.primary, pointer, ttl))
        indexed = invalidator.client is not None and self.cache.l2_usable
        then = invalidator.index_commands(key, index, ttl) if indexed else []
        fleet, lease = self.cache.fleet, fetch.lease
        if lease is not None and fleet is not None and store.pipelines and self.cache.l2_usable:
            release = fleet.release_command(lease)
            if release is not None:
                then.append(release)
                fetch.lease_released = True
        # Entries, their index updates and the lease's release: one pipeline, one round trip.
        await store.set_remote_many(entries, then)

    async def store_and_replay_revalidated(self, stale: CachedResponse) -> None:
        """A 304 from the origin: freshen the stored entry (RFC 9111 §4.3.4) and serve it."""
        fetch = self.fetch
        assert self.start is not None
        updates = {
            k.lower(): v
            for k, v in self.start.get("headers", ())
            if k.lower() not in _NOT_STORED and k.lower() != b"etag"
        }
        headers = [(k, updates.pop(k, v)) for k, v in stale.headers]
        headers.extend(updates.items())
        merged = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        cc = response_cache_control(merged, self.cache.settings.targeted_headers)
        headers = [(k, v) for k, v in headers if k not in self.cache.hidden_headers]
        now = self.cache.clock()
        freshness = freshness_of(
            merged,
            cc,
            default_ttl=stale.fresh_for,
            shared=True,
            now=now,
        )
        record = CachedResponse(
            status=stale.status,
            headers=tuple(headers),
            body=stale.body,
            stored_at=now,
            fresh_for=freshness.fresh_for,
            initial_age=freshness.initial_age,
            etag=stale.etag,
            last_modified=stale.last_modified,
            vary=stale.vary,
            revalidate=freshness.revalidate,
            tags=stale.tags,
            stale_for=stale.stale_for,
            stale_while_revalidate=stale.stale_while_revalidate,
            stale_if_error=stale.stale_if_error,
        )
        params = ("fwd=stale", "fwd-status=304", "stored")
        self.stored = record
        await fetch.responder.replay(
            fetch.info, record, None, self.client_send, x_cache="REVALIDATED", params=params
        )
        await self.store(record)


class _NoBody:
    """``receive`` for a background refresh: an empty body, then nothing (no disconnect,
    which would make streaming responses stop early)."""

    def __init__(self) -> None:
        self.sent = False

    async def __call__(self) -> Message:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # until the refresh finishes and this task is cancelled
        raise AssertionError("unreachable")  # pragma: no cover


async def _discard(message: Message) -> None:
    """Where a background refresh's response goes: only the cache wants it."""


def _ranged(
    info: RequestInfo, record: CachedResponse, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """A 206 (or 416) from a stored full response, or the whole of it (RFC 9110 §14)."""
    selected = select_range(info.headers, record)
    if selected is None:
        return record.status, record.body, headers
    size = len(record.body)
    kept = [(k, v) for k, v in headers if k != b"content-length"]
    if selected is False:
        kept.append((b"content-range", f"bytes */{size}".encode()))
        return 416, b"", [*kept, (b"content-length", b"0")]
    assert not isinstance(selected, bool)
    first, last = selected
    kept.append((b"content-range", f"bytes {first}-{last}/{size}".encode()))
    kept.append((b"content-length", str(last - first + 1).encode()))
    return 206, record.body[first : last + 1], kept


def _with_cache_control(
    headers: list[tuple[bytes, bytes]], configured: str, ttl: float, now: float
) -> list[tuple[bytes, bytes]]:
    """Replace the origin's Cache-Control by a rule's (never outliving the entry)."""
    origin = parse_cache_control(
        ", ".join(v.decode("latin-1") for k, v in headers if k == b"cache-control")
    )
    value = outgoing_cache_control(configured, origin, ttl)
    if value is None:
        return headers
    kept = [(k, v) for k, v in headers if k not in (b"cache-control", b"expires")]
    kept.append((b"cache-control", value.encode("latin-1")))
    max_age = parse_cache_control(value).max_age
    if max_age is not None:
        kept.append((b"expires", _http_date(now + max_age)))
    return kept


def _route_template(scope: Scope) -> str:
    """The template of the route the router chose (set on the scope), or ""."""
    route = scope.get("route")
    path = getattr(route, "path", "")
    return path if isinstance(path, str) else ""


def _same_origin_path(target: str, info: RequestInfo) -> str | None:
    """The path of a Location/Content-Location on this origin, or None (RFC 9111 §4.4)."""
    parts = urlsplit(target)
    if parts.netloc and parts.netloc.lower() != info.headers.get("host", "").lower():
        return None
    if not parts.netloc and not target.startswith("/"):
        return None
    return unquote(parts.path) or "/"


def _http_date(timestamp: float) -> bytes:
    return formatdate(timestamp, usegmt=True).encode("latin-1")
