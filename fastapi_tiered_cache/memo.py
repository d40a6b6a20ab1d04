"""The memo: the hit path for a request like one served before.

The full path (parse, route, identify, hash) maps a request to a key. The memo remembers
that mapping, keyed by the request line and the values of the *watched* headers only, so
that a repeat is answered with two dictionary lookups and a copied header list, before
FastAPI (or even the rest of the middleware) runs. See ``Memo`` for when that is sound.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .credentials import looks_like_credential_bytes, plain_header
from .entry import CachedResponse
from .keys import build_key
from .memo_watch import (
    CONDITIONAL_NAMES,
    FULL,
    PICK,
    SCHEME_STARTS,
    SCREEN,
    SKIP,
    SPACES,
    header_of,
    is_plain,
    watched_names,
)
from .metrics import Event
from .replay import Answer
from .stores.tiered import L2_FAULTED

if TYPE_CHECKING:
    from .cache import TieredCache

__all__ = ["ASKED_L2", "CONDITIONAL_NAMES", "Memo", "is_plain"]

MemoKey = tuple[Any, ...]
# The key whose L2 lookup, made by the memo earlier in this request, found nothing: the
# full path then does not ask L2 again (a slow Redis costs a request one budget, not two).
# A context variable: with install(), the app's middleware lies between the memo and the
# full path, and an ASGI app passes on nothing but the scope (which the app can see).
ASKED_L2: ContextVar[str | None] = ContextVar("tiered_cache_asked_l2", default=None)


class Mapping:
    """Where the memo sends a request, and the headers of its last replay: within one
    second of age the same ones serve again."""

    __slots__ = ("age", "cost", "headers", "key", "record", "tenant", "tier", "ttl", "version")

    def __init__(self, key: str, version: int, tenant: str, cost: int = 0) -> None:
        self.key = key
        self.version = version  # of the generation counters when it was made
        self.tenant = tenant
        self.cost = cost  # bytes of its memo key and itself, as counted against the budget
        self.record: CachedResponse | None = None
        self.age = self.ttl = -1
        self.tier = b""
        self.headers: list[tuple[bytes, bytes]] = []


_MAPPING_BYTES = 400  # a Mapping, its dict slot, its memo-key tuple and the key string
_PAIR_BYTES = 72  # a header pair tuple in a memo key, beyond the bytes it holds


def _cost(memo_key: tuple[Any, ...]) -> int:
    """What a memo key holds (bytes of path, query and watched header values)."""
    cost = _MAPPING_BYTES
    for part in memo_key:
        if isinstance(part, (bytes, str)):
            cost += len(part)
        elif isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
            cost += _PAIR_BYTES + len(part[0]) + len(part[1])
    return cost


class Memo:
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
    trusted (``Coherence.until``); purges drop the L1 entry itself, so a memo can point at
    nothing but never at a purged response. Only used without custom resolvers or key
    builders (which may read anything) and for requests with no validators, ranges or
    honoured client directives.
    A header name that is not lower-case (servers lower-case them) sends the request down
    the full path.

    Credentials the cache recognises by name (``X-Acme-Token``) are watched from the first
    time a name is seen; a value shaped like a credential (``Bearer ...``, a JWT) in a header
    the memo does not watch sends the request down the full path, which decides its scope.
    While dependency overrides are in force (tests), the memo neither answers nor learns.

    Its memory counts against the cache's byte budget (``TieredCache.memo_bytes``): half for
    the mappings and their keys (whole query strings), half for the records held for header
    reuse, which are released oldest first (the next hit just rebuilds its headers).
    """

    MAX = 10_000
    MAX_WATCHED = 256  # header names; a stream of new Vary names turns the memo off
    MAX_UNWATCHED = 1024
    MAX_CREDENTIAL_NAMES = 1024  # credential-like names watched; more take the full path
    MAX_NAME = 256  # bytes of a header name remembered (longer ones are judged each time)

    def __init__(self, cache: TieredCache) -> None:
        self.cache = cache
        # Objects a hit reads, fixed for the cache's life: one attribute load each.
        self.generations = cache.generations
        self.coherence = cache.coherence
        self.now = cache.coherence.timer
        self.l1 = cache.store.l1
        self.stats = cache.stats
        self.providers = cache.visibility.providers  # whose dependency_overrides to check
        self.keys: dict[MemoKey, Mapping] = {}
        self.watched = watched_names(cache.settings)
        # Raw header names by what the memo does with them: pick into the key (watched, and
        # named like credentials), skip (standard headers), screen (the others).
        self.picks: set[bytes] = set(self.watched)
        self.skipped: set[bytes] = set()
        self.screened: set[bytes] = set()
        self.guessed = cache.credentials.guessed
        self.enabled = True
        self.marks = cache.marks
        self.key_budget = cache.memo_bytes // 2
        self.held_budget = cache.memo_bytes - self.key_budget
        self.key_bytes = 0
        self.held_bytes = 0
        self.holding: dict[Mapping, None] = {}  # mappings holding a record, oldest first

    @staticmethod
    def applies(cache: TieredCache) -> bool:
        s = cache.settings
        identifier = cache.identifier
        plugins = (
            identifier.identity_resolver
            or identifier.tenant_resolver
            or cache.routing.key_builder is not build_key
        )
        return not plugins and not s.early_refresh

    def key_of(self, scope: Scope) -> MemoKey | None:
        get = scope.get
        server = get("server")
        if server is not None and server.__class__ is not tuple:
            server = tuple(server)  # a list, as some servers and test clients send
        picked: list[Any] = [
            scope["method"],
            get("raw_path"),
            get("path"),  # not always the raw path decoded: a middleware may rewrite it
            get("query_string"),
            get("scheme"),
            get("root_path"),
            server,
        ]
        skipped, picks, screened = self.skipped, self.picks, self.screened
        for pair in scope["headers"]:
            name = pair[0]
            if name in skipped:
                continue
            if name in picks:
                picked.append(pair if pair.__class__ is tuple else tuple(pair))
            elif name in screened:
                value = pair[1]
                # Maybe a credential in a header we do not watch: the full path decides.
                if (
                    value[:3] in SCHEME_STARTS or value[:1] in SPACES or b"eyJ" in value
                ) and looks_like_credential_bytes(value):
                    return None
            else:
                kind = self.classify(name)
                if kind is FULL or (kind is SCREEN and looks_like_credential_bytes(pair[1])):
                    return None
                if kind is PICK:
                    picked.append(pair if pair.__class__ is tuple else tuple(pair))
        return tuple(picked)

    def classify(self, name: bytes) -> str:
        """What a header name seen for the first time is to the memo (remembered, bounded):
        watched (picked into the key), plain (skipped), screened, or ``FULL`` (a name the
        full path reads case-insensitively: a request carrying it takes the full path)."""
        lowered = name.lower()
        credential = lowered in self.watched or self.guessed(lowered.decode("latin-1"))
        if lowered != name:
            return FULL if credential else SCREEN  # servers lower-case names: not kept
        kept = len(name) <= self.MAX_NAME  # longer names (the client's) are not remembered
        if credential:
            if not kept or len(self.picks) >= self.MAX_CREDENTIAL_NAMES + len(self.watched):
                return FULL
            self.picks.add(name)
            return PICK
        if plain_header(name.decode("latin-1")):
            kind, names = SKIP, self.skipped
        else:
            kind, names = SCREEN, self.screened
        if kept and len(names) < self.MAX_UNWATCHED:
            names.add(name)
        return kind

    def learn(self, names: Iterable[str]) -> None:
        """Watch more headers (a route's or a response's Vary, a route's credentials)."""
        new = {header_of(name).encode("latin-1") for name in names} - self.watched
        if not new:
            return
        self.forget()  # mappings made without those headers in their key
        self.watched = self.watched | new
        self.picks |= new
        self.skipped -= new
        self.screened -= new
        if len(self.watched) > self.MAX_WATCHED:
            self.enabled = False

    def forget(self) -> None:
        """Drop every mapping (and every record held for them)."""
        self.keys.clear()
        self.holding.clear()
        self.key_bytes = self.held_bytes = 0

    def overridden(self) -> bool:
        """Whether dependency overrides are in force: routes then read other things."""
        return any(provider.dependency_overrides for provider in self.providers)

    def remember(
        self, scope: Scope, key: str, version: int, tenant: str, names: Iterable[str]
    ) -> None:
        self.learn(names)
        if not self.enabled or self.overridden():
            return
        memo_key = self.key_of(scope)
        if memo_key is None:
            return
        try:
            hash(memo_key)
        except TypeError:
            return
        keys = self.keys
        old = keys.pop(memo_key, None)
        if old is not None:
            self._drop(old)
        cost = _cost(memo_key)
        if cost > self.key_budget:
            return
        keys[memo_key] = Mapping(key, version, tenant, cost)
        self.key_bytes += cost
        while len(keys) > self.MAX or self.key_bytes > self.key_budget:
            self._drop(keys.pop(next(iter(keys))))  # the oldest mapping

    def _drop(self, mapping: Mapping) -> None:
        self.key_bytes -= mapping.cost
        self._release(mapping)

    def _release(self, mapping: Mapping) -> None:
        """Stop holding a mapping's record (its next hit rebuilds the headers)."""
        record = mapping.record
        if record is not None:
            self.held_bytes -= record.size
            self.holding.pop(mapping, None)
            mapping.record = None
            mapping.headers = []
            mapping.age = mapping.ttl = -1

    def _hold(self, mapping: Mapping, record: CachedResponse) -> None:
        """Account a record a mapping now holds; release the oldest holders beyond budget."""
        self._release(mapping)
        mapping.record = record
        self.held_bytes += record.size
        self.holding[mapping] = None
        holding = self.holding
        while self.held_bytes > self.held_budget and holding:
            self._release(next(iter(holding)))

    def find(self, scope: Scope) -> Mapping | None:
        """Where a request seen before goes, if that still holds (generations unmoved)."""
        if not self.enabled:
            return None
        for provider in self.providers:
            if provider.dependency_overrides:
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
        # Trusted while the bus vouches for L1 (the coherence bound), one clock read.
        if self.now() >= self.coherence.until or self.generations.version != found.version:
            return None
        return found

    def local(self, found: Mapping, scope: Scope) -> Answer | None:
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

    async def remote(self, found: Mapping, scope: Scope) -> Answer | None:
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
        self, found: Mapping, scope: Scope, receive: Receive, send: Send, app: ASGIApp
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
        self, found: Mapping, record: CachedResponse, scope: Scope, tier: bytes
    ) -> Answer | None:
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
            headers = self.marks.hit(record, whole_age, whole_ttl, tier)
            self._hold(found, record)
            if found.record is record:  # else released at once: over the budget alone
                found.age, found.ttl, found.tier = whole_age, whole_ttl, tier
                found.headers, headers = headers, headers.copy()
        body = b"" if scope["method"] == "HEAD" else record.body
        return (
            {"type": "http.response.start", "status": record.status, "headers": headers},
            {"type": "http.response.body", "body": body},
        )
