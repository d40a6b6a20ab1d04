"""What the middleware can see: the app whose routes answer its requests, and what not.

Route-aware keys are only as good as the route table they come from, so the table must
be the one of the app that will actually answer. The middleware trusts a table when

- it wraps a Starlette/FastAPI app (or router) itself (``TieredCacheMiddleware(app)``); or
- it sits in the middleware stack of ``scope["app"]`` (``install()``,
  ``app.add_middleware``): walking that stack through each middleware's ``app`` reaches
  what the cache wraps.

Anything else (a raw ASGI app, an outer wrapper between the cache and FastAPI, the cache
wrapping an app that is mounted inside another) is *blind*: the middleware cannot know
what answers, so it must not cache by URL. Requests bypass the cache
(``detail=opaque-app``) unless a rule covers them; this is logged once.

Middleware between the cache and the router may read anything too: a gate that answers
403 to requests without the right header, auth done in a plain middleware, a locale picked
from a cookie. The cache cannot see into them, so under one it cannot prove two requests
get the same answer: every request bypasses (``detail=opaque-middleware``) unless a rule
or ``@cache_policy`` covers it (saying what the route varies on), and this is logged once.
Framework plumbing and stock middleware whose inputs are keyed anyway are seen through
(``SEE_THROUGH``); operators vouch for others by class path, or for a function middleware
by the function's path, in ``TIERED_CACHE_TRUSTED_MIDDLEWARE``.

Two stock middleware answer by a request header without always saying so in ``Vary``:
older Starlette releases add ``Vary: Origin`` (CORS) and ``Vary: Accept-Encoding`` (GZip)
only to the responses they changed, so the answer to a request without the header looked
shareable with one that has it. Under them the cache adds the header to every response's
Vary itself (``Visibility.vary``), as current releases do.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, NamedTuple

from starlette.types import Scope

from .routes import RouteTable

__all__ = [
    "IMPLIED_VARY",
    "SEE_THROUGH",
    "Sight",
    "Visibility",
    "implied_vary",
    "middleware_between",
]

logger = logging.getLogger("fastapi_tiered_cache")

# Middleware whose effect on the answer the cache accounts for: framework plumbing, and
# stock middleware whose inputs are keyed anyway (Origin/Accept-Encoding are added to
# every response's Vary, ``IMPLIED_VARY``; Host and scheme are in the key; the session
# cookie is a credential) or reach a route only through the Request (which makes the
# route opaque).
SEE_THROUGH = frozenset(
    {
        "starlette.middleware.errors.ServerErrorMiddleware",
        "starlette.middleware.exceptions.ExceptionMiddleware",
        "starlette.middleware.cors.CORSMiddleware",
        "starlette.middleware.gzip.GZipMiddleware",
        "starlette.middleware.trustedhost.TrustedHostMiddleware",
        "starlette.middleware.httpsredirect.HTTPSRedirectMiddleware",
        "starlette.middleware.sessions.SessionMiddleware",
        "starlette.middleware.authentication.AuthenticationMiddleware",
        "fastapi.middleware.asyncexitstack.AsyncExitStackMiddleware",
        "fastapi.telemetry._asgi.ExceptionTelemetryMiddleware",
        "fastapi._body_limit.AppBodyLimitMiddleware",
        "fastapi_tiered_cache.middleware.TieredCacheMiddleware",
        # Instrumentation that measures and traces but never changes an answer.
        "prometheus_fastapi_instrumentator.middleware.PrometheusInstrumentatorMiddleware",
        "starlette_exporter.middleware.PrometheusMiddleware",
        "opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware",
        "sentry_sdk.integrations.asgi.SentryAsgiMiddleware",
    }
)
# Request headers a stock middleware answers by, whatever its responses say in Vary:
# Starlette's CORSMiddleware adds its headers by Origin but said `Vary: Origin` only when
# the request had an Origin (encode/starlette#3516 made it say so always), and its
# GZipMiddleware compresses by Accept-Encoding but said so only on what it compressed.
IMPLIED_VARY: dict[str, tuple[str, ...]] = {
    "starlette.middleware.cors.CORSMiddleware": ("origin",),
    "starlette.middleware.gzip.GZipMiddleware": ("accept-encoding",),
}
_MAX_DEPTH = 64
_MAX_APPS = 64


def _routed(app: Any) -> bool:
    """Whether ``app`` is a Starlette/FastAPI app or router (it has a route list)."""
    routes = getattr(getattr(app, "router", app), "routes", None)
    return isinstance(routes, list)


_NEXT = ("app", "_app", "application", "inner")  # where middleware keep what they wrap


def _next(node: Any) -> Any:
    for name in _NEXT:
        found = getattr(node, name, None)
        if found is not None:
            return found
    return None


def _in_stack(app: Any, wrapped: Any) -> bool:
    """Whether ``wrapped`` is in ``app``'s middleware stack (so ``app``'s routes answer):
    an identity found by following each middleware to the next, never a guess."""
    node = getattr(app, "middleware_stack", None)
    for _ in range(_MAX_DEPTH):
        if node is None:
            return False
        if node is wrapped:
            return True
        node = _next(node)
    return False


def _path(thing: Any) -> str:
    """``module.Qualname`` of a class or function (its repr when it has no name)."""
    qualname = getattr(thing, "__qualname__", None)
    if qualname is None:
        return repr(thing)
    return f"{getattr(thing, '__module__', '?')}.{qualname}"


def _described(cls: type[Any], dispatch: Any) -> str:
    """A middleware as logs and settings name it: its class path, and for a function
    middleware (``@app.middleware("http")``, ``BaseHTTPMiddleware(dispatch=f)``) the
    function's path in brackets."""
    name = _path(cls)
    return f"{name}({_path(dispatch)})" if dispatch is not None else name


def _describe(node: Any) -> str:
    cls = type(node)
    dispatch = getattr(node, "dispatch_func", None)
    if cls.__qualname__ != "BaseHTTPMiddleware":
        dispatch = None
    return _described(cls, dispatch)


def _declared(middleware: Any) -> str:
    """A ``Middleware(cls, ...)`` entry of ``app.user_middleware``, described."""
    options = getattr(middleware, "kwargs", None) or getattr(middleware, "options", None) or {}
    return _described(middleware.cls, options.get("dispatch"))


def _layers_between(wrapped: Any, app: Any) -> list[tuple[str, type[Any]]]:
    """Every middleware between the cache (which wraps ``wrapped``) and ``app``'s router,
    described and with its class, outermost first (``app`` None: down to the first app
    with routes)."""
    router = getattr(app, "router", app)
    node = wrapped
    if app is not None and node is app:  # wrapping the app from outside: its whole stack
        node = getattr(app, "middleware_stack", None)
        if node is None:  # not built yet: what it will be built from (inside the cache)
            layers = [(_declared(m), m.cls) for m in getattr(app, "user_middleware", ())]
            names = [name for name, _ in layers]
            ours = "fastapi_tiered_cache.middleware.TieredCacheMiddleware"
            return layers[names.index(ours) + 1 :] if ours in names else layers
    found = []
    for _ in range(_MAX_DEPTH):
        if node is None or node is router or node is app or (app is None and _routed(node)):
            break
        found.append((_describe(node), type(node)))
        node = _next(node)
    return found


def _trusted(name: str, trusted: Collection[str]) -> bool:
    cls, _, dispatch = name.partition("(")
    return cls in SEE_THROUGH or cls in trusted or (bool(dispatch) and dispatch[:-1] in trusted)


def middleware_between(wrapped: Any, app: Any, trusted: Collection[str] = ()) -> list[str]:
    """The middleware between the cache (which wraps ``wrapped``) and ``app``'s router
    that the cache cannot see through (neither ``SEE_THROUGH`` nor ``trusted``, by class
    path or function path), outermost first."""
    layers = _layers_between(wrapped, app)
    return [name for name, _ in layers if not _trusted(name, trusted)]


def implied_vary(wrapped: Any, app: Any) -> tuple[str, ...]:
    """The request headers that middleware between the cache and ``app``'s router answer by
    (``IMPLIED_VARY``, for those classes and their subclasses: keying more is never
    unsafe), sorted: every response under them varies on these."""
    names = {
        name
        for _, cls in _layers_between(wrapped, app)
        for base in getattr(cls, "__mro__", (cls,))
        for name in IMPLIED_VARY.get(f"{base.__module__}.{base.__qualname__}", ())
    }
    return tuple(sorted(names))


class Sight(NamedTuple):
    """What one middleware sees of the app behind it (resolved once per app and wrapped)."""

    app: Any
    wrapped: Any
    table: RouteTable | None  # None: blind
    vary: tuple[str, ...]  # IMPLIED_VARY of the middleware between
    hidden: str  # the middleware between it cannot see through, described ("" if none)


class Visibility:
    """The route table of the app behind each middleware, resolved once per app.

    ``tables`` lists every table in use (the memo asks them whether dependency overrides
    are in force); ``last`` is the most recent, for purges and lookups made from code.
    ``trusted``: class (or function middleware) paths vouched for as reading nothing the
    key does not hold (``TIERED_CACHE_TRUSTED_MIDDLEWARE``).
    """

    def __init__(self, table_bytes: int = 1024 * 1024, trusted: Collection[str] = ()) -> None:
        self.table_bytes = table_bytes
        self.trusted = frozenset(trusted)
        self.tables: list[RouteTable] = []
        self.providers: list[Any] = []  # holders of dependency_overrides, updated in place
        self.last: RouteTable | None = None
        self._resolved: dict[tuple[int, int], Sight] = {}
        self._by_app: dict[int, tuple[Any, RouteTable]] = {}
        self._logged: set[tuple[int, int]] = set()

    def sight(self, scope: Scope, wrapped: Any) -> Sight:
        """What reaches ``wrapped`` is answered by: its table (None: blind), the headers
        implied in Vary, and the middleware in between the cache cannot see through."""
        app = scope.get("app")
        key = (id(app), id(wrapped))
        known = self._resolved.get(key)
        if known is not None and known.app is app and known.wrapped is wrapped:
            return known
        return self._resolve(key, app, wrapped)

    def table(self, scope: Scope, wrapped: Any) -> RouteTable | None:
        """The table of the app that answers what reaches ``wrapped`` (None: blind)."""
        return self.sight(scope, wrapped).table

    def vary(self, scope: Scope, wrapped: Any) -> tuple[str, ...]:
        """Request headers every response reaching ``wrapped`` varies on, whether or not it
        says so (``IMPLIED_VARY``): added to a stored response's Vary."""
        return self.sight(scope, wrapped).vary

    def _resolve(self, key: tuple[int, int], app: Any, wrapped: Any) -> Sight:
        owner = wrapped if _routed(wrapped) else None
        if owner is None and app is not None and _routed(app) and _in_stack(app, wrapped):
            owner = app
        table = None if owner is None else self._table_of(owner)
        if len(self._resolved) >= _MAX_APPS:
            self._resolved.clear()
        hidden = (
            "" if owner is None else ", ".join(middleware_between(wrapped, owner, self.trusted))
        )
        resolved = Sight(app, wrapped, table, implied_vary(wrapped, owner), hidden)
        self._resolved[key] = resolved
        self._log(wrapped, owner, hidden)
        return resolved

    def _table_of(self, app: Any) -> RouteTable:
        known = self._by_app.get(id(app))
        if known is not None and known[0] is app:
            table = known[1]
        else:
            table = RouteTable(app, max_bytes=self.table_bytes, on_build=self._collect)
            self._by_app[id(app)] = (app, table)
            self.tables = [t for _, t in self._by_app.values()]
            self._collect()
        self.last = table
        return table

    def _collect(self) -> None:
        providers: dict[int, Any] = {}
        for _, table in self._by_app.values():
            for provider in table.providers:
                providers.setdefault(id(provider), provider)
        self.providers[:] = providers.values()

    def _log(self, wrapped: Any, owner: Any, hidden: str) -> None:
        said = (id(wrapped), id(owner))
        if said in self._logged or len(self._logged) >= _MAX_APPS:
            return
        self._logged.add(said)
        if owner is None:
            logger.warning(
                "fastapi-tiered-cache cannot see the routes of %s (not a Starlette/FastAPI"
                " app, or the cache is not in its middleware stack): requests bypass the"
                " cache (detail=opaque-app) unless a rule in TIERED_CACHE_RULES covers them",
                type(wrapped).__qualname__,
                extra={"event": "opaque_app"},
            )
            return
        if hidden:
            logger.warning(
                "fastapi-tiered-cache cannot see what these middleware read: %s; requests"
                " bypass the cache (detail=opaque-middleware) unless a rule or @cache_policy"
                " covers them. If they change nothing the key does not hold, list them in"
                " TIERED_CACHE_TRUSTED_MIDDLEWARE",
                hidden,
                extra={"event": "opaque_middleware"},
            )
