"""``TieredCacheMiddleware``: a pure ASGI response cache in front of the application.

A request is answered in this order, and the order is the design:

1. Decide from the request alone whether the cache may be used at all (method, body,
   method override, credentials the cache cannot scope). If not: the app answers, and the
   response says ``BYPASS`` and why.
2. Work out *who* the response is for (tenant, identity scope), then the key.
3. Look in L1 (no await), then L2 (one round trip). A fresh entry is replayed right here
   (``replay.py``), before FastAPI routes, validates or serialises anything.
4. Otherwise call the app (``origin.py``) and stream its response to the client as it
   comes, teeing a copy; store it after the last byte, if every rule allowed it.

A request seen before skips steps 1-2 altogether: the memo (``memo.py``) remembers where
it went. Unsafe methods go to the app and purge what they changed once they succeed.

This module is the ASGI face (configuration, lifespan, the memo in front); each request
on the full path gets a ``Responder`` (``responder.py``), whose phases are modules of
their own: ``lookup``, ``answer``, ``miss``, ``origin``, ``purge_on_write``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .cache import TieredCache
from .memo import Memo
from .responder import Responder as Responder  # importable from here, as before the split
from .settings import CacheSettings
from .stores.tiered import L2_FAULTED

__all__ = ["TieredCacheMiddleware"]


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
        self.memo: Memo | None = Memo(self.cache) if Memo.applies(self.cache) else None
        self.memo_in_front = False  # install() lets the memo answer before the app's stack
        # A FastAPI(root_path=...) wrapped from outside sets its root path once called.
        self.root_path: str | None = getattr(app, "root_path", None) or None

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
        await Responder(self.app, self.cache, self.memo, self.root_path)(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The lifespan state is the app's: the cache adds nothing to it (code reaches the
        # cache through get_cache or app.state.tiered_cache, which install() sets).

        async def receive_starting() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.cache.start_background()  # the invalidation bus lives with the app
                self.cache.visibility.table(scope, self.app)  # says once what it cannot see
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.cache.close()
            await send(message)

        await self.app(scope, receive_starting, send_closing)
