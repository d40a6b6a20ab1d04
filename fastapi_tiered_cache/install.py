"""``install(app)``: one call that wires everything the settings ask for.

It builds the ``TieredCache``, puts the middleware in front of the app (outside every
other middleware unless ``TIERED_CACHE_PLACEMENT=middleware``), mounts the admin router and the
Prometheus endpoint when enabled (and keeps them out of the cache), and makes the cache
reachable from application code as ``app.state.tiered_cache`` or the ``get_cache``
dependency (for code that wants to invalidate). The middleware closes the Redis
connections at shutdown.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .cache import TieredCache
from .middleware import TieredCacheMiddleware
from .settings import CacheSettings, RouteRule, load_settings

__all__ = ["get_cache", "install"]


def install(
    app: Starlette, settings: CacheSettings | None = None, **cache_options: Any
) -> TieredCache:
    """Install the cache on ``app`` and return it.

    Example::

        app = FastAPI()
        cache = install(app)  # reads TIERED_CACHE_* variables
    """
    settings = _exempt_operations(settings if settings is not None else load_settings())
    cache = TieredCache(settings, **cache_options)
    _mount_operations(app, cache)
    if settings.placement == "outermost":
        _wrap_outermost(app, cache)
    else:
        app.add_middleware(TieredCacheMiddleware, cache=cache)
    app.state.tiered_cache = cache
    return cache


def _wrap_outermost(app: Starlette, cache: TieredCache) -> None:
    """Put the middleware where ``app.add_middleware`` would, but in front of FastAPI's own
    middleware (error pages, telemetry, body limits) too.

    Middleware added after ``install()`` still wraps the cache and sees every request, as
    with ``add_middleware``; middleware added before it sees misses only, as with
    ``add_middleware``. When nothing was added after, the cache wraps the whole stack, and
    repeated requests are answered even earlier, by the middleware's memo (see
    ``middleware._Memo``), from the app's own ``__call__``: FastAPI checks each request
    (native telemetry, root path) before its stack, which costs as much as a whole hit.
    The app keeps its class's behaviour for everything else: it becomes an instance of a
    subclass whose ``__call__`` asks the memo first.
    """
    if app.middleware_stack is not None:  # already serving: wrap what is running
        middleware = TieredCacheMiddleware(app.middleware_stack, cache=cache)
        app.middleware_stack = middleware
        _answer_repeats_first(app, middleware)
        if cache.settings.enabled:
            app.__class__ = _front_class(type(app))
        return
    build = app.build_middleware_stack
    registered = len(app.user_middleware)  # add_middleware inserts at the front

    def build_with_cache() -> ASGIApp:
        added_after = len(app.user_middleware) - registered
        if added_after > 0:
            # Some middleware must run before the cache on every request: keep its place.
            app.__dict__[_FRONT] = None
            entry = Middleware(TieredCacheMiddleware, cache=cache)
            app.user_middleware.insert(added_after, entry)
            try:
                return build()
            finally:
                app.user_middleware.remove(entry)  # the app's list stays the user's
        middleware = TieredCacheMiddleware(build(), cache=cache)
        _answer_repeats_first(app, middleware)
        return middleware

    # An instance attribute: this app only, and Starlette calls it exactly where it would
    # have called its own method.
    app.build_middleware_stack = build_with_cache  # type: ignore[method-assign]
    if cache.settings.enabled:
        app.__class__ = _front_class(type(app))


_FRONT = "_tiered_cache_memo"
_FRONT_CLASSES: dict[type[Starlette], type[Starlette]] = {}


def _answer_repeats_first(app: Starlette, middleware: TieredCacheMiddleware) -> None:
    app.__dict__[_FRONT] = middleware.memo
    middleware.memo_in_front = middleware.memo is not None  # asked already: once is enough


def _front_class(base: type[Starlette]) -> type[Starlette]:
    """``base`` with a ``__call__`` that lets the memo answer first (one class per base)."""
    if getattr(base, "_tiered_cache_front", False):
        return base
    front = _FRONT_CLASSES.get(base)
    if front is not None:
        return front

    async def __call__(self: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
        memo = self.__dict__.get(_FRONT)
        if memo is not None and scope["type"] == "http":
            root_path = getattr(self, "root_path", "")
            if root_path:  # what FastAPI.__call__ does first, so keys see the same scope
                scope["root_path"] = root_path
            found = memo.find(scope)
            if found is not None:  # as memo.serve, with the L1 hit inline
                answer = memo.local(found, scope)
                if answer is not None:
                    await send(answer[0])
                    await send(answer[1])
                    return
                downstream = partial(base.__call__, self)
                await memo.serve_beyond_l1(found, scope, receive, send, downstream)
                return
        await base.__call__(self, scope, receive, send)

    front = type(
        base.__name__,
        (base,),
        {"__call__": __call__, "__module__": base.__module__, "_tiered_cache_front": True},
    )
    _FRONT_CLASSES[base] = front
    return front


def _exempt_operations(settings: CacheSettings) -> CacheSettings:
    """Rules keeping the admin router and /metrics out of the cache (and its hit ratios)."""
    paths: list[str] = []
    if settings.admin_enabled:
        base = settings.admin_path.rstrip("/") or "/"
        paths += [base, f"{base.rstrip('/')}/**"]
    if settings.prometheus_enabled and settings.metrics_path:
        paths.append(settings.metrics_path)
    if not paths:
        return settings
    exempt = [RouteRule(path=path, cache=False) for path in paths]
    return settings.model_copy(update={"rules": [*exempt, *settings.rules]})


def _mount_operations(app: Starlette, cache: TieredCache) -> None:
    s = cache.settings
    if s.prometheus_enabled:
        from .exporters import PrometheusMetrics, metrics_endpoint

        prometheus = PrometheusMetrics(cache=cache, tenants_allow=s.metrics_tenants)
        cache.exporters.append(prometheus)
        if s.metrics_path:
            endpoint = metrics_endpoint(prometheus.registry)
            # An ASGI app is a valid endpoint; the stubs only describe request functions.
            app.add_route(s.metrics_path, endpoint, include_in_schema=False)  # type: ignore[arg-type]
    if s.admin_enabled:
        from fastapi import FastAPI

        from .admin import build_admin_router

        router = build_admin_router(cache, token=s.admin_token)
        if isinstance(app, FastAPI):
            app.include_router(router, prefix=s.admin_path)
        else:  # a bare APIRouter cannot be mounted under Starlette: wrap it in a FastAPI app
            admin = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
            admin.include_router(router)
            app.mount(s.admin_path, admin)


def get_cache(connection: HTTPConnection) -> TieredCache:
    """FastAPI dependency returning the installed cache: ``cache = Depends(get_cache)``."""
    cache = getattr(connection.app.state, "tiered_cache", None)
    if cache is None:
        cache = getattr(connection.state, "tiered_cache", None)
    if not isinstance(cache, TieredCache):
        raise RuntimeError("no TieredCache installed on this app; call install(app) first")
    return cache


# It reads only app state, so it does not make a route's responses depend on the request.
setattr(get_cache, "__tiered_cache_policy__safe", True)
