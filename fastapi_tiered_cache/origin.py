"""The trip to the origin on a miss (or to revalidate): call the app, stream its response
to the client while teeing a copy, then judge, build and store the entry.

``Fetch`` carries the request's state through the trip: what the lookup left (the key,
the fleet lease, the fill's start), the stale entry to fall back on, the time spent in
the app. The phases of the response are their own modules: ``capture`` (forward, tee,
judge), ``new_entry`` (what the copy becomes) and ``storing`` (after the last byte, and
only if every rule allowed it once the whole body was seen).
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING

import anyio
from starlette.types import Message, Receive, Scope, Send

from .cache_control import EMPTY, CacheControl, parse_cache_control
from .capture import Capture
from .entry import CachedResponse
from .identity import Identity
from .invalidation import FillStart
from .leases import Lease
from .memo import CONDITIONAL_NAMES
from .metrics import Event
from .replay import http_date
from .request import RequestInfo, route_template
from .settings import RouteRule
from .tasks import after_the_response

if TYPE_CHECKING:
    from .lookup import Early
    from .responder import Responder
    from .stores.tiered import Lookup

__all__ = ["Fetch", "discard", "route_template"]

logger = logging.getLogger("fastapi_tiered_cache")
_CONDITIONAL = frozenset(name.encode("latin-1") for name in CONDITIONAL_NAMES)
# Server extensions that send a body the cache never sees (a file by path or descriptor):
# hidden from the app on a miss, so the body comes as messages the cache can tee and store.
_BODY_EXTENSIONS = ("http.response.pathsend", "http.response.zerocopysend")


class Fetch:
    """A trip to the origin on a miss (or to revalidate), storing what may be stored."""

    def __init__(
        self,
        responder: Responder,
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
        self.looked: Lookup | None = None  # the last L2 lookup (its time: the fill's start)
        self.start: FillStart | None = None  # set before the origin is called
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
        self.private_ok = False  # `private` may be stored (in this identity's scope only)
        cc = info.headers.get("cache-control")
        self.request_cc: CacheControl = parse_cache_control(cc) if cc else EMPTY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> CachedResponse | None:
        try:
            return await self.app_through(scope, receive, send, None)
        finally:
            route = route_template(scope)
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
            headers.append((b"if-modified-since", http_date(record.last_modified)))
        await self.app_through({**scope, "headers": headers}, receive, send, record)

    async def app_through(
        self, scope: Scope, receive: Receive, send: Send, stale: CachedResponse | None
    ) -> CachedResponse | None:
        """Call the app, forwarding its response; returns what was stored, if anything.

        With a stale ``fallback`` (stale-if-error), an exception, a 5xx or (when configured)
        a slow origin is answered with the stale entry instead (RFC 5861 §4).
        """
        if self.start is None:
            self.start = await self.fill_start()
        scope = _without_body_extensions(scope)
        capture = Capture(self, send, stale)
        receive = capture.watch(receive)
        fallback = self.fallback
        timeout = self.cache.settings.origin_timeout if fallback is not None else None
        clock_started = perf_counter()
        try:
            if timeout:  # anyio's deadline: asyncio.wait_for would not run under trio
                with anyio.fail_after(timeout):
                    await self.responder.app(scope, receive, capture.send)
            else:
                await self.responder.app(scope, receive, capture.send)
            self.app_seconds += perf_counter() - clock_started
        except Exception as exc:
            if fallback is None or capture.started:
                await capture.send_held_start()
                raise
            logger.warning(
                "origin failed (%s); serving stale", type(exc).__name__, extra={"event": "sie"}
            )
            await self.serve_stale(fallback, send)
            return None
        route = route_template(scope)
        if route:
            self.cache.compute_seconds[route] = perf_counter() - clock_started
        if capture.suppressed and fallback is not None:
            await self.serve_stale(fallback, send)
            return None
        with after_the_response():
            await capture.finish()
        return capture.stored

    async def fill_start(self) -> FillStart:
        """When this fill starts reading: the time of the lookup that missed, else asked
        now (see ``markers``: a purge after it refuses the store)."""
        invalidator = self.cache.invalidator
        looked = self.looked
        if looked is not None and looked.server_us is not None:
            return invalidator.fills.start(looked.read_at, looked.server_us)
        return await invalidator.fills.begin(self.cache.store.coherence.timer())

    async def serve_stale(self, record: CachedResponse, send: Send) -> None:
        self.cache.record(Event.STALE, reason="if-error", route=record.route, tenant=self.tenant)
        staleness = int(-record.ttl(self.cache.clock()))
        params = ("hit", "fwd=stale", f"ttl={-staleness}", "detail=stale-if-error")
        await self.responder.replay(
            self.info, record, None, send, rule=self.rule, x_cache="STALE", params=params
        )


def _without_body_extensions(scope: Scope) -> Scope:
    """``scope`` without the server extensions whose body would bypass the tee."""
    extensions = scope.get("extensions")
    if not extensions or not any(name in extensions for name in _BODY_EXTENSIONS):
        return scope
    kept = {k: v for k, v in extensions.items() if k not in _BODY_EXTENSIONS}
    return {**scope, "extensions": kept}


class NoBody:
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


async def discard(message: Message) -> None:
    """Where a background refresh's response goes: only the cache wants it."""
