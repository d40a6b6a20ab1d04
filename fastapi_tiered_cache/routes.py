"""Route-aware keys: what each FastAPI route reads from a request, learned at start-up.

Real endpoints read headers and cookies they never name in ``Vary`` (``X-Token``,
``User-Agent``, an API-key header, ``Header()``/``Cookie()`` parameters and models). A key
built from the URL alone would serve those responses to the wrong callers. FastAPI
already knows, per route, every header, cookie and security scheme the endpoint and its
dependencies read, so the cache walks those declarations once and keys on them:

- security credentials (``APIKeyHeader``/``APIKeyCookie``, ``HTTPBearer``, ``HTTPBasic``,
  ``OAuth2PasswordBearer``...) join the *identity* scope, hashed;
- other declared headers and cookies join the key like ``Vary`` values;
- an endpoint (or dependency) that takes the raw ``Request`` could read anything, so it is
  cached only when a rule or ``@cache_policy`` explicitly says so.

Policy only: this module looks at route objects and returns values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.types import Scope

from .settings import RouteRule

__all__ = ["RouteInputs", "RouteTable", "cache_policy", "inputs_of", "no_cache"]

POLICY_ATTRIBUTE = "__tiered_cache_policy__"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RouteInputs:
    """What one route reads: its template and the request parts that must be in the key.

    ``vary`` holds header names and ``cookie:<name>`` entries; ``credential_headers`` and
    ``credential_cookies`` decide the identity scope.
    """

    template: str
    name: str = ""
    vary: tuple[str, ...] = ()
    credential_headers: tuple[str, ...] = ()
    credential_cookies: tuple[str, ...] = ()
    raw_request: bool = False
    policy: RouteRule | None = None


UNKNOWN = RouteInputs(template="")


def cache_policy(**options: Any) -> Callable[[F], F]:
    """Declare the cache policy of an endpoint, with the fields of a rule (``ttl``, ``vary``,
    ``tags``, ``cache_control``, ``stale_while_revalidate``...). Environment rules still win.

    Example::

        @app.get("/products/{product_id}")
        @cache_policy(ttl=300, tags=["product:{product_id}"])
        async def product(product_id: int): ...
    """
    rule = RouteRule(path="/", **options)

    def mark(endpoint: F) -> F:
        setattr(endpoint, POLICY_ATTRIBUTE, rule)
        return endpoint

    return mark


def no_cache(endpoint: F) -> F:
    """Never cache this endpoint's responses."""
    setattr(endpoint, POLICY_ATTRIBUTE, RouteRule(path="/", cache=False))
    return endpoint


def _model_names(annotation: Any, convert_underscores: bool) -> list[str] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        names = []
        for name, info in annotation.model_fields.items():
            alias = info.alias or (name.replace("_", "-") if convert_underscores else name)
            names.append(alias)
        return names
    return None


def _param_names(fields: Iterable[Any], *, header: bool) -> list[str]:
    names: list[str] = []
    for field in fields:
        info = getattr(field, "field_info", None)
        convert = bool(getattr(info, "convert_underscores", True)) and header
        expanded = _model_names(getattr(info, "annotation", None), convert)
        names.extend(expanded if expanded is not None else [str(field.alias)])
    return names


def _security(call: Any) -> tuple[list[str], list[str]] | None:
    """(credential headers, credential cookies) of a security scheme dependency, if it is one."""
    try:
        from fastapi.security.api_key import APIKeyCookie, APIKeyHeader, APIKeyQuery
        from fastapi.security.base import SecurityBase
    except ImportError:  # pragma: no cover - FastAPI is a dependency
        return None
    if not isinstance(call, SecurityBase):
        return None
    name = getattr(getattr(call, "model", None), "name", "")
    if isinstance(call, APIKeyHeader):
        return [name.lower()], []
    if isinstance(call, APIKeyCookie):
        return [], [name.lower()]
    if isinstance(call, APIKeyQuery):
        return [], []  # the query string is in the key already
    return ["authorization"], []  # HTTP bearer/basic/digest, OAuth2, OpenID Connect


def inputs_of(route: Any) -> RouteInputs:
    """Walk a route's dependency tree and collect what it reads."""
    template = str(getattr(route, "path_format", "") or getattr(route, "path", ""))
    endpoint = getattr(route, "endpoint", None)
    policy = getattr(endpoint, POLICY_ATTRIBUTE, None)
    dependant = getattr(route, "dependant", None)
    if dependant is None:  # a plain Starlette route: it may read anything
        return RouteInputs(
            template, str(getattr(route, "name", "")), raw_request=True, policy=policy
        )
    headers: set[str] = set()
    cookies: set[str] = set()
    cred_headers: set[str] = set()
    cred_cookies: set[str] = set()
    raw = False
    stack = [dependant]
    while stack:
        node = stack.pop()
        if getattr(node.call, POLICY_ATTRIBUTE + "safe", False):
            continue  # our own dependencies (get_cache) read nothing from the request
        security = _security(node.call)
        if security is not None:
            cred_headers.update(security[0])
            cred_cookies.update(security[1])
            continue
        headers.update(name.lower() for name in _param_names(node.header_params, header=True))
        cookies.update(name.lower() for name in _param_names(node.cookie_params, header=False))
        raw = raw or bool(node.request_param_name or node.http_connection_param_name)
        stack.extend(node.dependencies)
    vary = sorted(headers - cred_headers) + sorted(f"cookie:{c}" for c in cookies - cred_cookies)
    return RouteInputs(
        template=template,
        name=str(getattr(route, "name", "")),
        vary=tuple(vary),
        credential_headers=tuple(sorted(cred_headers)),
        credential_cookies=tuple(sorted(cred_cookies)),
        raw_request=raw,
        policy=policy,
    )


def flatten_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every route an app may dispatch to, with included routers expanded.

    Newer FastAPI keeps included routers as nodes whose effective routes (prefix and router
    dependencies applied) come from ``effective_route_contexts()``; older versions flatten
    them into ``app.routes``. Both shapes expose ``path_regex``, ``methods``, ``dependant``.
    """
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            yield from contexts()
        else:
            yield route


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


class RouteTable:
    """The routes of an app with their inputs, and a bounded memo of path -> route.

    Matching uses each route's own ``path_regex`` and ``methods`` (never ``matches()``, which
    in some FastAPI versions records state on the scope), in the router's order.
    """

    def __init__(self, routes: Iterable[Any], max_paths: int = 10_000) -> None:
        self.routes = [
            (regex, getattr(route, "methods", None), inputs_of(route))
            for route in flatten_routes(routes)
            if (regex := getattr(route, "path_regex", None)) is not None
        ]
        self.max_paths = max_paths
        self._memo: OrderedDict[tuple[str, str], RouteInputs] = OrderedDict()

    @classmethod
    def of(cls, app: Any) -> RouteTable:
        return cls(getattr(getattr(app, "router", app), "routes", ()))

    def find(self, scope: Scope) -> RouteInputs:
        """The inputs of the route that will answer ``scope`` (UNKNOWN when none matches)."""
        method = str(scope.get("method", "GET"))
        path = _route_path(scope)
        memo_key = (method, path)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        found = UNKNOWN
        partial: RouteInputs | None = None
        for regex, methods, inputs in self.routes:
            if not regex.match(path):
                continue
            if not methods or method in methods or (method == "HEAD" and "GET" in methods):
                found = inputs
                break
            if partial is None:
                partial = inputs
        if found is UNKNOWN and partial is not None:
            found = partial
        self._memo[memo_key] = found
        if len(self._memo) > self.max_paths:
            self._memo.popitem(last=False)
        return found
