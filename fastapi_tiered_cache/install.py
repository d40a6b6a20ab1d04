"""``install(app)``: one call that wires everything the settings ask for.

It builds the ``TieredCache``, puts the middleware in front of the app (outside every
other middleware unless ``TIERED_CACHE_PLACEMENT=middleware``), mounts the admin router and the
Prometheus endpoint when enabled (and keeps them out of the cache), describes the cache in
the app's OpenAPI schema (``openapi.py``), and makes the cache
reachable from application code as ``app.state.tiered_cache`` or the ``get_cache``
dependency (for code that wants to invalidate). The middleware closes the Redis
connections at shutdown.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, cast

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .cache import TieredCache
from .exceptions import ConfigurationError
from .logs import brief_on_exit
from .middleware import TieredCacheMiddleware
from .openapi import document_cache
from .reads import mark_safe
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
    global _process_cache, _process_installed
    settings = _exempt_operations(settings if settings is not None else load_settings())
    cache = _process_cache
    if cache_options or cache is None or _process_installed or cache.settings != settings:
        try:
            cache = TieredCache(settings, **cache_options)
        except ConfigurationError as exc:  # a Redis URL the client refuses, say
            raise brief_on_exit(exc) from None
    _process_cache, _process_installed = cache, True  # get_cache() returns it from now on
    _mount_operations(app, cache)
    if settings.openapi and settings.enabled:
        document_cache(app, cache)
    if settings.placement == "outermost":
        _wrap_outermost(app, cache)
    else:
        app.add_middleware(TieredCacheMiddleware, cache=cache)
    app.state.tiered_cache = cache
    return cache


def _wrap_outermost(app: Starlette, cache: TieredCache) -> None:
    """Put the middleware where ``app.add_middleware`` would, but in front of every
    middleware added before ``install()`` too (just inside Starlette's error middleware).

    Middleware added after ``install()`` still wraps the cache and sees every request, as
    with ``add_middleware``; middleware added before it sees misses only. The stack keeps
    Starlette's shape (``ServerErrorMiddleware`` outermost), so instrumentation that
    rebuilds it (OpenTelemetry's ``instrument_app``) finds what it expects and wraps the
    cache, hits included.

    When nothing wraps the cache, repeated requests are answered even earlier, by the
    memo, from the app's own ``__call__``: FastAPI checks each request (native telemetry,
    root path) before its stack, which costs as much as a whole hit. The app keeps its
    class's behaviour for everything else: it becomes an instance of a subclass whose
    ``__call__`` asks the memo first, and only while the stack running is the one the cache
    built (``_Front.serves``): anything that wrapped it since makes the front step aside.
    """
    if app.middleware_stack is not None:  # already serving: wrap what is running
        middleware = TieredCacheMiddleware(app.middleware_stack, cache=cache)
        app.middleware_stack = middleware
        _answer_repeats_first(app, middleware, middleware)
        if cache.settings.enabled:
            app.__class__ = _front_class(type(app))
        return
    build = app.build_middleware_stack
    registered = len(app.user_middleware)  # add_middleware inserts at the front

    def build_with_cache() -> ASGIApp:
        app.__dict__[_FRONT] = None
        added_after = len(app.user_middleware) - registered
        entry = Middleware(TieredCacheMiddleware, cache=cache)
        app.user_middleware.insert(added_after, entry)
        try:
            stack = build()
        finally:
            app.user_middleware.remove(entry)  # the app's list stays the user's
        middleware = _under_framework_only(stack)
        # Answering first is right only where nothing but the framework's own middleware is
        # above the cache: not under middleware added after install(), nor under an
        # instrumentation that rebuilt the stack around it (OpenTelemetry's, in any order).
        if added_after == 0 and middleware is not None:
            _answer_repeats_first(app, middleware, stack)
        return stack

    # An instance attribute: this app only, and Starlette calls it exactly where it would
    # have called its own method.
    app.build_middleware_stack = build_with_cache  # type: ignore[method-assign]
    if cache.settings.enabled:
        app.__class__ = _front_class(type(app))


_FRAMEWORK = ("starlette.", "fastapi.")


def _under_framework_only(stack: Any) -> TieredCacheMiddleware | None:
    """The cache in a built stack, if every layer above it is Starlette's or FastAPI's own
    (error pages, FastAPI's exception telemetry and body limit): none of them changes what a
    hit answers, and none expects to see every request."""
    layer = stack
    for _ in range(16):
        if isinstance(layer, TieredCacheMiddleware):
            return layer
        if layer is None or not type(layer).__module__.startswith(_FRAMEWORK):
            return None
        layer = getattr(layer, "app", None)
    return None


_FRONT = "_tiered_cache_ahead"
_FRONT_CLASSES: dict[type[Starlette], type[Starlette]] = {}


class _Front:
    """What the app's ``__call__`` needs to answer repeats before its stack: the memo,
    the in-stack middleware, and the stack the cache built (answering first is right only
    while that is the stack the app runs)."""

    __slots__ = ("built", "memo", "middleware")

    def __init__(self, middleware: TieredCacheMiddleware, built: Any) -> None:
        self.middleware = middleware
        self.memo = middleware.memo
        self.built = built

    def serves(self, app: Starlette) -> bool:
        if app.middleware_stack is self.built:
            return True
        if app.middleware_stack is not None:  # something wrapped it: step aside for good
            app.__dict__[_FRONT] = None
            self.middleware.memo_in_front = False
        return False


def _answer_repeats_first(app: Starlette, middleware: TieredCacheMiddleware, built: Any) -> None:
    if middleware.memo is None:
        return
    app.__dict__[_FRONT] = _Front(middleware, built)
    middleware.memo_in_front = True  # asked already: once is enough


def _front_class(base: type[Starlette]) -> type[Starlette]:
    """``base`` with a ``__call__`` that lets the memo answer first (one class per base)."""
    if getattr(base, "_tiered_cache_front", False):
        return base
    front = _FRONT_CLASSES.get(base)
    if front is not None:
        return front

    async def __call__(self: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
        ahead = self.__dict__.get(_FRONT)
        if ahead is not None and scope["type"] == "http" and ahead.serves(self):
            memo = ahead.memo
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
            endpoint = metrics_endpoint(prometheus.registry, prometheus)
            # An ASGI app is a valid endpoint; the stubs only describe request functions.
            app.add_route(s.metrics_path, cast(Any, endpoint), include_in_schema=False)
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


# The process's cache: what get_cache() returns outside a request. install() adopts it
# when nothing installed it yet and its settings are the ones asked for (a module that
# called get_cache() before install(app) then shares the app's cache), and replaces it
# otherwise: the last installed cache is the process's.
_process_cache: TieredCache | None = None
_process_installed = False


def get_cache(connection: HTTPConnection | None = None) -> TieredCache:
    """The cache: the installed one of the request's app (as a FastAPI dependency,
    ``cache = Depends(get_cache)``), or with no argument the process's cache, the one
    ``install(app)`` uses, built from ``TIERED_CACHE_*`` on first use.

    Example::

        cache = get_cache()  # in a worker, a script or a route alike
        await cache.set("greeting", "hello", ttl=30)
    """
    global _process_cache
    if connection is None:
        cache = _process_cache
        if cache is None:
            cache = _process_cache = TieredCache(_exempt_operations(load_settings()))
        return cache
    cache = getattr(connection.app.state, "tiered_cache", None)
    if cache is None:
        cache = getattr(connection.state, "tiered_cache", None)
    if not isinstance(cache, TieredCache):
        raise RuntimeError("no TieredCache installed on this app; call install(app) first")
    return cache


# It reads only app state, so it does not make a route's responses depend on the request
# (although it takes the connection, which would otherwise make its routes opaque).
mark_safe(get_cache)
# FastAPI reads the signature to inject the connection: show it the parameter it fills.
get_cache.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            "connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
        )
    ],
    return_annotation=TieredCache,
)
