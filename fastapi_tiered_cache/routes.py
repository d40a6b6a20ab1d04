"""Route-aware keys: which route will answer a request, and what it reads, or "opaque".

Real endpoints read headers and cookies they never name in ``Vary``. FastAPI declares,
per route, what the endpoint and its dependencies read, so the cache walks those
declarations (``reads.py``) and keys each route on them. It shares an entry only when it
can prove that everyone it serves it to gets the same answer; anything it cannot see
through is *opaque*, meaning "may read the whole request", and bypasses the cache unless
a rule or ``@cache_policy`` opts it in (and says what it varies on):

- route types the table cannot read: ``Mount`` (another app), ``Host``, plain Starlette
  routes, custom ``BaseRoute``/``APIRoute`` subclasses; an unknown route type ahead of
  the matching one (its ``matches`` could take the request first);
- dependencies it cannot see through (see ``reads.py``);
- paths no route matches, when the app answers them with code of its own (frontend
  routes, a custom 404 handler, a custom router default).

The table is matched in the router's own order, with each route's own ``path_regex`` and
``methods`` (never ``matches()``, which in some FastAPI versions records state on the
scope). It follows ``app.dependency_overrides`` and routes added later: both are checked
on every lookup (two comparisons) and the table is rebuilt when they change; while
overrides are in force, every key carries a marker of them.

Policy only: this module looks at route objects and returns values.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from starlette.types import Scope

from .keys import COOKIE, HEADER, SYNTHETIC
from .reads import Reads, reads_of
from .request import RequestInfo
from .route_policy import POLICY_ATTRIBUTE, cache_policy, no_cache, policy_of
from .settings import RouteRule
from .verdicts import Refusal

__all__ = [
    "BLIND",
    "NOT_FOUND",
    "POLICY_ATTRIBUTE",
    "RouteInputs",
    "RouteTable",
    "cache_policy",
    "no_cache",
    "under_middleware",
]
_PROCESS = secrets.token_hex(4)  # override markers never match another process's keys
_EPOCHS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class RouteInputs:
    """What one route reads, or why the cache cannot tell (``opaque``, explained by ``why``).

    ``vary`` holds the key names of what it reads exactly (``header:<name>``,
    ``cookie:<Name>``, and a ``~`` marker of the dependency overrides in force);
    ``credential_headers``/``credential_cookies`` (its security schemes) decide the identity
    scope; ``query`` names the query parameters it reads (never filtered out of the key),
    ``query_all`` that it reads them all.
    """

    template: str
    name: str = ""
    vary: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    query_all: bool = False
    credential_headers: tuple[str, ...] = ()
    credential_cookies: tuple[str, ...] = ()
    opaque: Refusal | None = None
    why: str = ""
    policy: RouteRule | None = None

    @property
    def raw_request(self) -> bool:
        """Whether the route may read anything (kept for code written before ``opaque``)."""
        return self.opaque is not None


NOT_FOUND = RouteInputs(template="")  # no route matches: the router's stock 404 or redirect
BLIND = RouteInputs(
    template="",
    opaque=Refusal.OPAQUE_APP,
    why="the cache cannot see the routes of the app it wraps",
)


def under_middleware(inputs: RouteInputs, hidden: str) -> RouteInputs:
    """``inputs`` of a route behind middleware the cache cannot see through (``hidden``,
    described): opaque, as they may read anything, unless the route already is."""
    if not hidden or inputs.opaque is not None:
        return inputs
    return replace(inputs, opaque=Refusal.OPAQUE_MIDDLEWARE, why=f"under {hidden}")


# -- what one route is ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """A route as the table matches it: by path (``regex``), by host, or unknown (``any``)."""

    kind: str  # "path" | "host" | "any"
    regex: re.Pattern[str] | None
    methods: frozenset[str] | None
    inputs: RouteInputs


def _same_methods(cls: type, base: type, names: Iterable[str]) -> bool:
    return all(getattr(cls, name, None) is getattr(base, name, None) for name in names)


def _stock(route: Any, base: type, names: Iterable[str] = ("matches",)) -> bool:
    return isinstance(route, base) and _same_methods(type(route), base, names)


def _inputs(route: Any, reads: Reads, epoch: str, policy: RouteRule | None) -> RouteInputs:
    vary = [f"{HEADER}{name}" for name in sorted(reads.headers)]
    vary += [f"{COOKIE}{name}" for name in sorted(reads.cookies)]
    if epoch:
        vary.append(epoch)
    return RouteInputs(
        template=str(getattr(route, "path_format", "") or getattr(route, "path", "") or ""),
        name=str(getattr(route, "name", "") or ""),
        vary=tuple(vary),
        query=tuple(sorted(reads.query)),
        query_all=reads.query_all,
        credential_headers=tuple(sorted(reads.credential_headers)),
        credential_cookies=tuple(sorted(reads.credential_cookies)),
        opaque=reads.refusal,
        why=reads.why,
        policy=policy,
    )


def _opaque(route: Any, why: str, refusal: Refusal = Refusal.OPAQUE_ROUTE) -> RouteInputs:
    endpoint = getattr(route, "endpoint", None)
    return RouteInputs(
        template=str(getattr(route, "path_format", "") or getattr(route, "path", "") or ""),
        name=str(getattr(route, "name", "") or ""),
        opaque=refusal,
        why=why,
        policy=policy_of(endpoint),
    )


def _methods(route: Any) -> frozenset[str] | None:
    methods = getattr(route, "methods", None)
    return frozenset(methods) if methods else None


def _api_route(view: Any, original: Any, overrides: Mapping[Any, Any], epoch: str) -> _Entry:
    """A FastAPI route (``view`` is it, or its effective context inside a router)."""
    from fastapi.routing import APIRoute

    regex = getattr(view, "path_regex", None)
    policy = policy_of(getattr(view, "endpoint", None))
    if not _same_methods(type(original), APIRoute, ("matches",)) or regex is None:
        why = f"{type(original).__qualname__} overrides how routes match"
        return _Entry("any", None, None, _opaque(view, why))
    if not _same_methods(type(original), APIRoute, ("handle", "get_route_handler")):
        why = f"{type(original).__qualname__} overrides how routes are handled"
        return _Entry("path", regex, _methods(view), _opaque(view, why))
    reads = reads_of(view.dependant, overrides)
    return _Entry("path", regex, _methods(view), _inputs(view, reads, epoch, policy))


def _entry(route: Any, overrides: Mapping[Any, Any], epoch: str) -> _Entry | None:
    """Classify one route the router may dispatch to (None: it never answers HTTP)."""
    from fastapi.routing import APIRoute, APIWebSocketRoute
    from starlette.routing import Host, Mount, Route, WebSocketRoute

    original = getattr(route, "original_route", None)  # FastAPI's routes inside routers
    if original is not None:
        if isinstance(original, APIRoute):
            return _api_route(route, original, overrides, epoch)
        route = getattr(route, "starlette_route", None) or original
    if isinstance(route, APIRoute):
        return _api_route(route, route, overrides, epoch)
    if _stock(route, WebSocketRoute) or _stock(route, APIWebSocketRoute):
        return None
    regex = getattr(route, "path_regex", None)
    if _stock(route, Mount) and regex is not None:
        app = getattr(route, "app", None)
        why = f"a Mount of {type(app).__qualname__} (another app: its routes are not read)"
        return _Entry("path", regex, None, _opaque(route, why))
    if _stock(route, Route) and regex is not None:
        why = "a plain Starlette route (its endpoint takes the Request)"
        return _Entry("path", regex, _methods(route), _opaque(route, why))
    host = getattr(route, "host_regex", None)
    if _stock(route, Host) and host is not None:
        why = f"a Host route for {getattr(route, 'host', '?')!r} (another app)"
        return _Entry("host", host, None, _opaque(route, why))
    why = f"a {type(route).__qualname__} route (a type the cache cannot read)"
    return _Entry("any", None, None, _opaque(route, why))


def flatten_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every route an app may dispatch to, in the router's order, routers expanded.

    Newer FastAPI keeps included routers as nodes whose effective routes (prefix and router
    dependencies applied) come from ``effective_route_contexts()``; older versions flatten
    them into ``app.routes``.
    """
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            yield from contexts()
        else:
            yield route


# -- what answers a path no route matches -----------------------------------------------


def _unmatched(app: Any, router: Any) -> RouteInputs:
    """The verdict for paths no route matches: the stock 404 (or slash redirect) is the
    same for everyone; frontend routes, custom 404 handlers and router defaults may not be."""
    from starlette.routing import Router

    low = getattr(router, "_iter_low_priority_routes", None)
    try:
        frontend = bool(callable(low) and any(True for _ in low()))
    except Exception:
        frontend = True
    if frontend:
        return replace(NOT_FOUND, opaque=Refusal.OPAQUE_ROUTE, why="frontend routes answer it")
    default = getattr(router, "default", None)
    if default is not None and getattr(default, "__func__", None) is not Router.not_found:
        return replace(NOT_FOUND, opaque=Refusal.OPAQUE_ROUTE, why="a custom router default")
    if not _stock_404(app):
        return replace(NOT_FOUND, opaque=Refusal.OPAQUE_ROUTE, why="a custom 404 handler")
    return NOT_FOUND


def _stock_404(app: Any) -> bool:
    from fastapi import HTTPException
    from fastapi.exception_handlers import http_exception_handler
    from starlette.exceptions import HTTPException as StarletteHTTPException

    handlers = getattr(app, "exception_handlers", None) or {}
    for key in (404, HTTPException, StarletteHTTPException):
        handler = handlers.get(key)
        if handler is not None and handler is not http_exception_handler:
            return False
    return True


# -- the table --------------------------------------------------------------------------


def _host_of(scope: Scope) -> str:
    """The host a ``Host`` route matches on (Starlette: the first Host field, no port)."""
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1")).split(":")[0]
    return ""


class RouteTable:
    """The routes of an app with their inputs, and a bounded memo of request -> route.

    - ``app``: a Starlette/FastAPI app (or a ``Router``);
    - ``max_paths`` / ``max_bytes``: bounds of the memo (entries, and bytes of the paths
      it holds); paths longer than ``max_path`` are matched every time instead;
    - ``on_build``: called after every (re)build (the cache collects override providers).
    """

    def __init__(
        self,
        app: Any,
        max_paths: int = 4096,
        max_bytes: int = 1024 * 1024,
        max_path: int = 1024,
        on_build: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.on_build = on_build
        self.router = getattr(app, "router", app)
        self.max_paths = max_paths
        self.max_bytes = max_bytes
        self.max_path = max_path
        self.entries: list[_Entry] = []
        self.unmatched = NOT_FOUND
        self.hosts = False
        self.epoch = ""
        self.providers: list[Any] = []
        self._snapshot: list[dict[Any, Any]] = []
        self._version: object = None
        self._memo: OrderedDict[tuple[str, str, str], RouteInputs] = OrderedDict()
        self._memo_bytes = 0
        self.build()

    @classmethod
    def of(cls, app: Any) -> RouteTable:
        return cls(app)

    @property
    def routes(self) -> list[tuple[re.Pattern[str] | None, frozenset[str] | None, RouteInputs]]:
        """``(regex, methods, inputs)`` of every route, in the router's order."""
        return [(entry.regex, entry.methods, entry.inputs) for entry in self.entries]

    @property
    def overridden(self) -> bool:
        """Whether dependency overrides are in force (the memo must not answer then)."""
        return any(provider.dependency_overrides for provider in self.providers)

    def _routes_version(self) -> object:
        routes = getattr(self.router, "routes", ())
        version = getattr(self.router, "_get_routes_version", None)
        try:
            nested = version() if callable(version) else None
        except Exception:
            nested = None
        return (len(routes), id(routes), nested)

    def _overrides_changed(self) -> bool:
        snapshot = self._snapshot
        for index, provider in enumerate(self.providers):
            if provider.dependency_overrides != snapshot[index]:
                return True
        return False

    def build(self) -> None:
        """(Re)read every route, under the overrides in force."""
        routes = list(flatten_routes(getattr(self.router, "routes", ())))
        providers: dict[int, Any] = {}
        for candidate in (self.app, *routes):
            provider = candidate if candidate is self.app else None
            if provider is None:
                provider = getattr(candidate, "dependency_overrides_provider", None)
            if isinstance(getattr(provider, "dependency_overrides", None), dict):
                providers.setdefault(id(provider), provider)
        self.providers = list(providers.values())
        self._snapshot = [dict(p.dependency_overrides) for p in self.providers]
        in_force = any(self._snapshot)
        self.epoch = f"{SYNTHETIC}overrides.{_PROCESS}.{next(_EPOCHS)}" if in_force else ""
        entries = []
        for route in routes:
            provider = getattr(route, "dependency_overrides_provider", None) or self.app
            overrides = getattr(provider, "dependency_overrides", None) or {}
            entry = _entry(route, overrides, self.epoch)
            if entry is not None:
                entries.append(entry)
        self.entries = entries
        self.hosts = any(entry.kind == "host" for entry in entries)
        self.unmatched = _unmatched(self.app, self.router)
        self._version = self._routes_version()
        self._memo.clear()
        self._memo_bytes = 0
        if self.on_build is not None:
            self.on_build()

    def refresh(self) -> None:
        """Rebuild when routes were added or the dependency overrides changed."""
        if self._routes_version() != self._version or self._overrides_changed():
            self.build()

    def find(self, info: RequestInfo) -> RouteInputs:
        """The inputs of the route that will answer the request."""
        self.refresh()
        host = _host_of(info.scope) if self.hosts else ""
        memo_key = (info.method, info.path, host)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        found = self.match(info.method, info.path, host)
        if len(info.path) + len(host) <= self.max_path:
            self._memo[memo_key] = found
            self._memo_bytes += len(info.path) + len(host) + 200  # strings, tuple, slot
            while len(self._memo) > self.max_paths or self._memo_bytes > self.max_bytes:
                old, _ = self._memo.popitem(last=False)
                self._memo_bytes -= len(old[1]) + len(old[2]) + 200
        return found

    def match(self, method: str, path: str, host: str = "") -> RouteInputs:
        """The router's choice: the first full match, else the first partial one; an
        unknown route type reached first answers for itself (opaque)."""
        partial: RouteInputs | None = None
        for entry in self.entries:
            if entry.kind == "any":
                return entry.inputs  # it may well take the request: never guess
            regex = entry.regex
            assert regex is not None
            if not regex.match(host if entry.kind == "host" else path):
                continue
            methods = entry.methods
            # Exactly the router's test: FastAPI's APIRoute does not add HEAD to GET (its
            # router answers a HEAD to a GET-only route with 405), Starlette's Route does.
            if not methods or method in methods:
                return entry.inputs
            if partial is None:
                partial = entry.inputs
        if partial is not None:  # the router will answer 405 Method Not Allowed
            return replace(
                partial, opaque=Refusal.METHOD_NOT_ALLOWED, why="the route refuses this method"
            )
        return self.unmatched
