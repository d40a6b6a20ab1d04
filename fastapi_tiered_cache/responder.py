"""The full path of one request, phase by phase; the ``Responder`` lives for one request.

Route, identify and key happen here, in ``Responder.__call__``, each phase able to end
the request with a bypass that says why. The later phases are their own modules:
``lookup`` (L1, then L2), ``answer`` (fresh, stale, revalidate), ``miss`` (one origin call
per key), ``origin`` (call the app, tee, store after the last byte) and
``purge_on_write``. They take the responder, and the ``Fetch`` that carries the
request's state, as arguments.
"""

from __future__ import annotations

from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .answer import answer
from .cache import TieredCache
from .entry import CachedResponse
from .identity import Identity
from .keys import vary_values
from .leases import Lease
from .lookup import look_up
from .memo import Memo
from .metrics import Event
from .origin import Fetch
from .policy import Reason, check_request
from .purge_on_write import answer_write
from .replay import replay
from .request import RequestInfo
from .settings import RouteRule
from .stores import Tier
from .verdicts import Refusal

__all__ = ["Responder"]

# Every other method, known or not, may change the resource (RFC 9111 §4.4).
_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Responder:
    """Per-request state: built for one request and dropped after it."""

    def __init__(
        self,
        app: ASGIApp,
        cache: TieredCache,
        memo: Memo | None = None,
        root_path: str | None = None,
    ) -> None:
        self.app = app
        self.cache = cache
        self.memo = memo
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cache = self.cache
        started = perf_counter() if cache.exporters else 0.0
        info = RequestInfo.from_scope(scope, self.root_path)
        cache.root_path = self.root_path or scope.get("root_path", "")
        if info.method not in _SAFE and cache.settings.invalidate_on_write:
            await answer_write(self, info, scope, receive, send)
            return
        decision = check_request(info, cache.methods)
        if not decision.cacheable:
            await self.bypass(decision.reason, scope, receive, send)
            return
        if info.oversized:  # bounded parsing: what was not read cannot be keyed
            await self.bypass(Refusal.OVERSIZED, scope, receive, send)
            return
        rule, inputs = cache.policy_for(info, self.app)
        if rule is not None and not rule.cache:
            await self.bypass(Reason.RULE, scope, receive, send)
            return
        if rule is None and cache.settings.opt_in:
            await self.bypass(Reason.NOT_OPTED_IN, scope, receive, send)
            return
        opaque = inputs.opaque
        if opaque is not None and (rule is None or opaque is Refusal.METHOD_NOT_ALLOWED):
            await self.bypass(opaque, scope, receive, send)  # fail closed: never guess
            return
        identity = await cache.identify(info, inputs)
        if not isinstance(identity, Identity):
            await self.bypass(identity, scope, receive, send)
            return
        generation = await cache.generation(identity)
        version = cache.generations.version
        config_names = cache.vary_names(rule, inputs)
        keyed = cache.keyed_request(info, rule, inputs)
        primary = cache.key_for(keyed, identity, vary_values(info, config_names), generation)
        key, names, record, tier, early, looked = await look_up(
            cache, keyed, identity, generation, primary, config_names
        )
        fetch = Fetch(self, info, identity, rule, generation, primary, key, names)
        fetch.keyed = keyed
        fetch.config_names = config_names  # the names the primary key was built with
        fetch.early = early
        fetch.looked = looked
        fetch.credential_headers = inputs.credential_headers
        fetch.private_ok = not identity.is_anonymous and cache.private_allowed(rule)
        try:
            await answer(self, fetch, record, tier, version, started, scope, receive, send)
        finally:
            if isinstance(fetch.early, Lease) and cache.fleet is not None:
                await cache.fleet.release(fetch.early)  # taken with the lookup, never used

    async def bypass(
        self, reason: Reason | Refusal, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Let the app answer, marking the response as not from (nor into) the cache."""
        self.cache.record(Event.BYPASS, reason=str(reason))
        extra = self.marks("BYPASS", "fwd=bypass", f"detail={reason}")

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_marked)

    def marks(self, x_cache: str, *params: str) -> list[tuple[bytes, bytes]]:
        """The ``Cache-Status`` (and ``X-Cache``) headers of an answer."""
        return self.cache.marks.headers(x_cache, *params)

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
        """Answer from a stored entry (see ``replay.replay``), and count it."""
        cache = self.cache
        if x_cache == "REVALIDATED":
            cache.record(Event.MISS, reason="revalidated", route=record.route, tenant=tenant)
        elif x_cache == "HIT" and tier is not None:
            cache.record(Event.HIT, tier=str(tier), route=record.route, tenant=tenant)
        start, body = replay(
            cache.marks,
            record,
            method=info.method,
            request_headers=info.headers,
            now=cache.clock(),
            tier=None if tier is None else str(tier),
            rule=rule,
            x_cache=x_cache,
            params=params,
        )
        await send(start)
        await send(body)
