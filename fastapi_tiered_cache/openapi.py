"""The cache in the app's OpenAPI schema: what API consumers and reviewers see in ``/docs``.

``install()`` wraps ``app.openapi`` (FastAPI's documented way to extend the schema), so the
schema it returns describes the cache, with the verdicts ``fastapi-tiered-cache routes``
prints (``explain.route_verdict``), decided as the middleware decides them:

- every operation gets an ``x-cache`` extension: whether it is cached, shared or per user,
  the lifetime a response gets when it gives none, what the key varies on, where the
  policy comes from, or why it is not cached;
- cached operations document the headers the cache adds to the responses it stores
  (``Cache-Status``, ``X-Cache``, ``ETag``, ``Age``) and its ``304 Not Modified`` answer.

What the app documents itself is never overwritten. ``TIERED_CACHE_OPENAPI=false`` turns
this off. An app that replaces ``app.openapi`` after ``install()`` can call
``add_cache_info(schema, app, cache)`` in its own function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cache import TieredCache
from .explain import RouteVerdict, hidden_middleware, route_verdict, walk_routes

__all__ = ["add_cache_info", "document_cache", "operation_verdicts"]

Schema = dict[str, Any]
X_CACHE_VALUES = ["HIT", "MISS", "STALE", "REVALIDATED", "BYPASS"]
COMPONENT_PREFIX = "tiered-cache."  # components.headers names, apart from the app's


def document_cache(app: Any, cache: TieredCache) -> None:
    """Make ``app.openapi()`` describe the cache (a no-op for apps without OpenAPI)."""
    original: Callable[[], Schema] | None = getattr(app, "openapi", None)
    if not callable(original):
        return
    annotated: list[Schema] = []  # the last schema described (FastAPI reuses it)

    def openapi() -> Schema:
        schema = original()
        if not annotated or annotated[0] is not schema:
            add_cache_info(schema, app, cache)
            annotated[:] = [schema]
        return schema

    app.openapi = openapi


def operation_verdicts(app: Any, cache: TieredCache) -> dict[tuple[str, str], RouteVerdict]:
    """``(path template, METHOD) -> verdict`` of every operation FastAPI puts in the schema.

    Routes under a ``Mount`` are another app's (not in this schema); each method of a
    route gets its own verdict (a route serving GET and POST is cached for GET only).
    """
    verdicts: dict[tuple[str, str], RouteVerdict] = {}
    hidden = ", ".join(hidden_middleware(app, cache))
    for _, path, _, owner, route in walk_routes(getattr(app, "routes", ())):
        template = getattr(route, "path_format", None)
        if not template or not getattr(route, "include_in_schema", False):
            continue
        if getattr(route, "path", None) != path:  # under a Mount
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            verdict = route_verdict(cache, method, path, owner, hidden)
            verdicts.setdefault((template, method), verdict)
    return verdicts


def add_cache_info(schema: Schema, app: Any, cache: TieredCache) -> Schema:
    """Describe the cache in ``schema``, in place (and return it); running it again changes
    nothing."""
    if not cache.settings.enabled:
        return schema
    verdicts = operation_verdicts(app, cache)
    references: dict[str, Any] | None = None
    for path, item in (schema.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method, operation in item.items():
            verdict = verdicts.get((path, method.upper()))
            if verdict is None or not isinstance(operation, dict):
                continue
            operation["x-cache"] = extension(verdict)
            if verdict.stored:
                references = references or _references(schema, cache)
                _document_answers(operation, references)
    return schema


def extension(verdict: RouteVerdict) -> dict[str, Any]:
    """The ``x-cache`` object of one operation."""
    policy: dict[str, Any] = {"cached": verdict.stored, "verdict": verdict.cached}
    if verdict.stored:
        policy["scope"] = "per-user" if verdict.cached == "per user" else "shared"
        ttl = verdict.ttl or 0.0
        policy["ttl"] = int(ttl) if ttl.is_integer() else ttl
        if verdict.ttl_notes:
            policy["ttl_notes"] = list(verdict.ttl_notes)
        policy["key"] = list(verdict.key)
    elif verdict.why:
        policy["reason"] = verdict.why
    policy["rule"] = None if verdict.rule == "-" else verdict.rule
    return policy


def _document_answers(operation: Schema, references: dict[str, Schema]) -> None:
    """The headers on every stored status's response, and the 304 answer."""
    responses = operation.setdefault("responses", {})
    for status, response in responses.items():
        if str(status) in references["statuses"] and isinstance(response, dict):
            documented = response.setdefault("headers", {})
            for name, reference in references["headers"].items():
                documented.setdefault(name, reference)
    responses.setdefault(
        "304",
        {
            "description": "Not Modified: the stored response still matches the client's"
            " `If-None-Match` (or `If-Modified-Since`); sent without a body.",
            "headers": dict(references["headers"]),
        },
    )


def _references(schema: Schema, cache: TieredCache) -> dict[str, Any]:
    """The header objects, put once in ``components.headers``, and references to them."""
    components = schema.setdefault("components", {}).setdefault("headers", {})
    references: dict[str, Schema] = {}
    for name, header in _headers(cache).items():
        component = f"{COMPONENT_PREFIX}{name}"
        components[component] = header
        references[name] = {"$ref": f"#/components/headers/{component}"}
    return {"headers": references, "statuses": {str(status) for status in cache.statuses}}


def _headers(cache: TieredCache) -> dict[str, Schema]:
    name = cache.settings.cache_status_name
    headers: dict[str, Schema] = {
        "Cache-Status": {
            "description": "How the cache answered (RFC 9211): `hit` with the seconds the"
            " entry stays fresh, or `fwd=miss`, `fwd=stale` or `fwd=bypass` with a `detail`"
            " that says why.",
            "schema": {"type": "string"},
            "example": f"{name}; hit; ttl=42; detail=l1",
        },
    }
    if cache.settings.x_cache_header:
        headers["X-Cache"] = {
            "description": "The cache's answer in one word.",
            "schema": {"type": "string", "enum": X_CACHE_VALUES},
        }
    headers["ETag"] = {
        "description": "Validator of the stored response (the origin's, or one the cache"
        " derives from the body): send it in `If-None-Match` to get `304 Not Modified`.",
        "schema": {"type": "string"},
    }
    headers["Age"] = {
        "description": "Seconds since the stored response was generated (RFC 9111 §5.1);"
        " on answers from the cache.",
        "schema": {"type": "integer", "minimum": 0},
    }
    return headers
