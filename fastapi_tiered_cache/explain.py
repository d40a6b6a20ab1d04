"""What the cache does for each route of an app, and why: ``fastapi-tiered-cache routes``.

Each route gets a verdict decided as the middleware decides it: cached (shared, or per
user when its security schemes carry credentials), or not, and why: the method, a rule,
or what the cache cannot see through (``opaque-route``, ``opaque-dependency``,
``request-object``, ``opaque-input``), with the reason in words. When the cache wraps
something whose routes it cannot see (``opaque-app``), that is said instead, with the
rules that still apply; the middleware between the cache and the router that it cannot
see into are listed too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Host, Mount, WebSocketRoute

from .cache import TieredCache
from .custom_keys import builder_name
from .keys import COOKIE, HEADER, SYNTHETIC, build_key
from .middleware import TieredCacheMiddleware
from .policy import lifetime_without_freshness
from .routes import RouteInputs, _entry, flatten_routes, under_middleware
from .settings import CacheSettings, RouteRule
from .visibility import middleware_between

__all__ = [
    "Explanation",
    "RouteVerdict",
    "describe_route",
    "explain",
    "hidden_middleware",
    "iter_routes",
    "route_verdict",
    "walk_routes",
]

_MAX_DEPTH = 64


@dataclass
class Explanation:
    """The routes table (``rows``), or why there is none (``blind``), and notes."""

    rows: list[tuple[str, ...]] = field(default_factory=list)
    blind: str = ""
    rules: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """What the cache does for one route, as the CLI prints it and OpenAPI shows it.

    - ``cached``: ``yes``, ``per user``, or ``no (reason)``;
    - ``ttl``: seconds a 200 lives when the origin gives none (None when not cached), and
      ``ttl_notes``: ``strict``, ``or heuristic`` when they decide per response;
    - ``rule``: where the policy comes from (a rule's path, ``route:name``,
      ``@cache_policy``, or ``-``);
    - ``key``: the request parts the key holds; ``why``: why not cached, in words.
    """

    cached: str
    ttl: float | None = None
    ttl_notes: tuple[str, ...] = ()
    rule: str = "-"
    key: tuple[str, ...] = ()
    why: str = ""

    @property
    def stored(self) -> bool:
        return not self.cached.startswith("no")

    def row(self) -> tuple[str, str, str, str]:
        """``(cached, ttl, rule, key or why)`` for the ``routes`` table."""
        if not self.stored:
            return self.cached, "-", self.rule, self.why or "-"
        ttl = " ".join([f"{self.ttl:g}s", *self.ttl_notes])
        return self.cached, ttl, self.rule, " ".join(self.key)


def iter_routes(
    routes: Iterable[Any], prefix: str = "", owner: Any = None, shadow: list[Any] | None = None
) -> Iterator[tuple[str, str, str, Any]]:
    """``(methods, path template, name, owner)`` of every route, routers and mounts followed.

    ``owner`` is what the middleware decides with: the route itself, the ``Mount`` or
    ``Host`` it is under, or an unknown route type ahead of it (which may take its requests).
    """
    for methods, path, name, decider, _ in walk_routes(routes, prefix, owner, shadow):
        yield methods, path, name, decider


def walk_routes(
    routes: Iterable[Any], prefix: str = "", owner: Any = None, shadow: list[Any] | None = None
) -> Iterator[tuple[str, str, str, Any, Any]]:
    """As ``iter_routes``, with the route itself last (its ``path_format``, ``methods``)."""
    shadow = [] if shadow is None else shadow
    for route in flatten_routes(routes):
        original = getattr(route, "original_route", route)
        path = prefix + str(getattr(route, "path", "") or "")
        name = str(getattr(route, "name", "") or "")
        decider = shadow[0] if shadow else (owner or route)
        if isinstance(original, Mount) and original.routes:
            yield from walk_routes(original.routes, path, decider, shadow)
        elif isinstance(original, Mount):
            yield "*", path + "/...", name, decider, route
        elif isinstance(original, Host):
            yield "*", f"{original.host}:{path or '/...'}", name, decider, route
        elif isinstance(original, WebSocketRoute) or type(original).__name__.endswith(
            "WebSocketRoute"
        ):
            yield "WS", path, name, decider, route
        else:
            methods = ",".join(sorted(getattr(route, "methods", None) or ["*"]))
            yield methods, path, name, decider, route
            entry = _entry(route, {}, "") if owner is None and not shadow else None
            if entry is not None and entry.kind == "any":
                shadow.append(route)


def _verdict(cache: TieredCache, inputs: RouteInputs, rule: RouteRule | None) -> str:
    if inputs.opaque is not None and rule is None:
        return f"no ({inputs.opaque})"
    if inputs.credential_headers or inputs.credential_cookies:
        return "per user" if cache.settings.caches_identities else "no (credentials)"
    return "yes"


def describe_route(
    cache: TieredCache, methods: str, path: str, owner: Any, hidden: str = ""
) -> tuple[str, ...]:
    """``(cached, ttl, rule, key inputs or why not)`` of a route."""
    return route_verdict(cache, methods, path, owner, hidden).row()


def route_verdict(
    cache: TieredCache, methods: str, path: str, owner: Any, hidden: str = ""
) -> RouteVerdict:
    """What the cache does for a route, decided as the middleware decides it (``hidden``:
    the middleware between the cache and the routes it cannot see through, described)."""
    settings = cache.settings
    entry = _entry(owner, {}, "")
    inputs = entry.inputs if entry is not None else RouteInputs(template=path)
    inputs = under_middleware(inputs, hidden)
    rule: RouteRule | None = cache.rules.match(path, inputs.name) if cache.rules else None
    origin = "-" if rule is None else (rule.path or f"route:{rule.route}")
    if rule is None and inputs.policy is not None:
        rule, origin = inputs.policy, "@cache_policy"
    if not settings.enabled:
        return RouteVerdict("no (disabled)", rule=origin)
    if methods == "WS":
        return RouteVerdict("no (websocket)", rule=origin)
    if not set(methods.split(",")) & cache.methods and methods != "*":
        return RouteVerdict("no (method)", rule=origin)
    if rule is not None and not rule.cache:
        return RouteVerdict("no (rule)", rule=origin)
    if rule is None and settings.opt_in:
        why = "TIERED_CACHE_OPT_IN: no rule or @cache_policy names it"
        return RouteVerdict("no (not-opted-in)", rule=origin, why=why)
    verdict = _verdict(cache, inputs, rule)
    if verdict.startswith("no"):
        return RouteVerdict(verdict, rule=origin, why=inputs.why)
    ttl, notes = lifetime_of(settings, rule)
    key = key_parts(cache, rule, inputs, per_user=verdict == "per user")
    return RouteVerdict(verdict, ttl, notes, origin, key)


def lifetime(settings: CacheSettings, rule: RouteRule | None) -> str:
    """A 200's lifetime when the origin gives none, in words (``60s``, ``0s strict``)."""
    ttl, notes = lifetime_of(settings, rule)
    return " ".join([f"{ttl:g}s", *notes])


def lifetime_of(settings: CacheSettings, rule: RouteRule | None) -> tuple[float, tuple[str, ...]]:
    """A 200's lifetime when the origin gives none, by the middleware's own rule; strict
    mode and the heuristic are named, as they decide per response."""
    ttl = lifetime_without_freshness(
        rule_ttl=rule.ttl if rule is not None else None,
        status=200,
        negative_ttl=settings.negative_ttl,
        heuristic=None,
        default_ttl=settings.default_ttl,
    )
    notes = ["strict"] if settings.is_strict else []
    if settings.uses_heuristic and (rule is None or rule.ttl is None):
        notes.append("or heuristic")
    return ttl, tuple(notes)


def key_inputs(cache: TieredCache, rule: RouteRule | None, inputs: RouteInputs) -> str:
    """The parts of a request its key holds, in words."""
    return " ".join(key_parts(cache, rule, inputs))


def key_parts(
    cache: TieredCache, rule: RouteRule | None, inputs: RouteInputs, *, per_user: bool = False
) -> tuple[str, ...]:
    """The parts of a request its key holds: ``path``, ``query`` (or the parameters a rule
    keeps), ``h:<header>``, ``cookie:<name>``, or the key builder that replaces the first
    two; then ``tenant``, and ``identity`` when entries are kept per user."""
    builder = rule.key_builder if rule is not None and rule.key_builder is not None else None
    builder = builder or cache.routing.key_builder
    if builder is not build_key:
        parts = [f"key_builder={builder_name(builder)}"]
    elif rule is not None and rule.query_allow is not None:
        parts = ["path", f"query[{','.join(rule.query_allow)}]"]
    elif rule is not None and rule.query_deny:
        parts = ["path", f"query[-{',-'.join(rule.query_deny)}]"]
    else:
        parts = ["path", "query"]
    for name in cache.vary_names(rule, inputs):
        if name.startswith(HEADER):
            parts.append(f"h:{name[len(HEADER) :]}")
        elif name.startswith(COOKIE):
            parts.append(name)
        elif not name.startswith(SYNTHETIC):
            parts.append(f"h:{name}")
    parts.append("tenant")
    if per_user or cache.settings.caches_identities:
        parts.append("identity")
    return tuple(parts)


def _routed(app: Any) -> bool:
    return isinstance(getattr(getattr(app, "router", app), "routes", None), list)


def _find(target: Any) -> tuple[TieredCacheMiddleware | None, Any]:
    """The first cache middleware and the first routed app down the ``.app`` chain."""
    middleware, node = None, target
    for _ in range(_MAX_DEPTH):
        if node is None or _routed(node):
            return middleware, node
        if isinstance(node, TieredCacheMiddleware) and middleware is None:
            middleware = node
        node = getattr(node, "app", None) or getattr(node, "inner", None)
    return middleware, None


def explain(target: Any, cache: TieredCache) -> Explanation | None:
    """What the cache does for ``target`` (None: there is no app to explain)."""
    middleware, app = _find(target)
    if middleware is not None and not _routed(middleware.app):
        blind = (
            f"The cache wraps {type(middleware.app).__qualname__}, whose routes it cannot see:"
            " every request bypasses it (detail=opaque-app) unless a rule covers it."
        )
        rules: list[tuple[str, ...]] = [
            (rule.path or f"route:{rule.route}", "no (rule)" if not rule.cache else "yes")
            for rule in middleware.cache.rules.rules
        ]
        return Explanation(blind=blind, rules=rules)
    if app is None:
        return None
    if middleware is not None:
        cache = middleware.cache
    explanation = Explanation()
    between = hidden_middleware(app, cache, middleware)
    hidden = ", ".join(between)
    for methods, path, name, owner in iter_routes(app.routes):
        row = describe_route(cache, methods, path, owner, hidden)
        explanation.rows.append((methods, path, name, *row))
    if between:
        explanation.notes.append(
            "The cache cannot see what these middleware read, so requests bypass it"
            " (detail=opaque-middleware) unless a rule or @cache_policy covers them"
            " (TIERED_CACHE_TRUSTED_MIDDLEWARE vouches for them): " + ", ".join(between)
        )
    return explanation


def hidden_middleware(
    app: Any, cache: TieredCache, middleware: TieredCacheMiddleware | None = None
) -> list[str]:
    """The middleware between the cache and ``app``'s routes that it cannot see through."""
    stack_top = getattr(app, "middleware_stack", None)
    wrapped = middleware.app if middleware is not None else (stack_top and _after_cache(stack_top))
    trusted = cache.visibility.trusted
    return middleware_between(wrapped if wrapped is not None else app, app, trusted)


def _after_cache(node: Any) -> Any:
    """What the installed cache wraps inside a built middleware stack (or None)."""
    for _ in range(_MAX_DEPTH):
        if node is None:
            return None
        if isinstance(node, TieredCacheMiddleware):
            return node.app
        node = getattr(node, "app", None)
    return None
