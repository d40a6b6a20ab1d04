"""FastAPI apps built from a generated description (``AppSpec``), for the property test
``test_properties_apps.py``: random auth styles, dependency trees (nested, class-based,
subclassed schemes), declared parameters with aliases, routers, mounts and host routes.

Every endpoint answers with everything it read, so two answers differ exactly when the
app treated two requests differently. ``build(spec)`` builds a fresh app each call (one
bare, one behind the cache): the two behave identically.
"""

import inspect
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, APIKeyQuery, HTTPBearer

from fastapi_tiered_cache import cache_policy

TOKENS = {"alice-token": "alice", "bob-token": "bob"}
USER: ContextVar[str] = ContextVar("generated_user", default="anonymous")


def who(token: Any) -> str:
    token = getattr(token, "credentials", token)
    if isinstance(token, str):
        token = token.removeprefix("Bearer ")
    return TOKENS.get(token or "", "anonymous")


@dataclass(frozen=True)
class Param:
    """A declared input: ``kind`` header, cookie or query; names as FastAPI reads them."""

    kind: str
    name: str  # the Python parameter name
    alias: str | None = None
    validation_alias: str | None = None
    convert_underscores: bool = True
    as_list: bool = False  # a header read as a list (every field)

    def annotation(self) -> Any:
        options: dict[str, Any] = {}
        if self.alias:
            options["alias"] = self.alias
        if self.validation_alias:
            options["validation_alias"] = self.validation_alias
        if self.kind == "header":
            if not self.convert_underscores:
                options["convert_underscores"] = False
            marker: Any = Header(**options)
        elif self.kind == "cookie":
            marker = Cookie(**options)
        else:
            marker = Query(**options)
        kind = list[str] | None if self.as_list else str | None
        return Annotated[kind, marker]


@dataclass(frozen=True)
class Auth:
    """How a route learns who asks.

    ``style``: none, bearer (stock HTTPBearer), key-header / key-cookie / key-query (stock
    API keys named ``name``), subclass (an HTTPBearer subclass reading ``name`` from the
    Request), class (a callable class taking the Request), middleware (a plain middleware
    setting a context variable from header ``name``), state (``request.state`` from a
    middleware, read through the Request).
    """

    style: str = "none"
    name: str = "authorization"


@dataclass(frozen=True)
class RouteSpec:
    path: str
    auth: Auth = Auth()
    params: tuple[Param, ...] = ()
    nested: tuple[Param, ...] = ()  # declared in a nested function dependency
    in_class: tuple[Param, ...] = ()  # declared in a class-based dependency
    place: str = "app"  # app, router, guarded-router, mount, host
    opt_in: bool = False  # @cache_policy() naming what a Request-taking route reads


@dataclass(frozen=True)
class AppSpec:
    routes: tuple[RouteSpec, ...] = field(default_factory=tuple)


def _callable(name: str, params: tuple[Param, ...], body: Callable[..., Any]) -> Any:
    """A function with exactly the declared parameters (FastAPI reads ``__signature__``)."""

    def call(**kwargs: Any) -> Any:
        return body(kwargs)

    call.__name__ = call.__qualname__ = name
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                p.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=p.annotation()
            )
            for p in params
        ]
    )
    return call


class AcmeBearer(HTTPBearer):
    def __init__(self, header: str) -> None:
        super().__init__(auto_error=False)
        self.header = header

    async def __call__(self, request: Request) -> Any:  # type: ignore[override]
        return request.headers.get(self.header)


class RequestGuard:
    def __init__(self, header: str) -> None:
        self.header = header

    def __call__(self, request: Request) -> str:
        return who(request.headers.get(self.header))


def _auth_dependency(auth: Auth) -> Any:
    if auth.style == "bearer":
        return HTTPBearer(auto_error=False)
    if auth.style == "key-header":
        return APIKeyHeader(name=auth.name, auto_error=False)
    if auth.style == "key-cookie":
        return APIKeyCookie(name=auth.name, auto_error=False)
    if auth.style == "key-query":
        return APIKeyQuery(name=auth.name, auto_error=False)
    if auth.style == "subclass":
        return AcmeBearer(auth.name)
    if auth.style == "class":
        return RequestGuard(auth.name)
    if auth.style == "middleware":
        return lambda: USER.get()
    return None


def _endpoint(route: RouteSpec) -> Any:
    auth = _auth_dependency(route.auth)
    extra: list[inspect.Parameter] = []
    if auth is not None:
        extra.append(
            inspect.Parameter(
                "who_",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[Any, Depends(auth)],
            )
        )
    if route.nested:
        inner = _callable(f"inner_{route.path.strip('/')}", route.nested, dict)
        outer_params = (Param("query", "unused_outer"),)

        def outer_body(kwargs: dict[str, Any]) -> dict[str, Any]:
            return kwargs

        outer = _callable(f"outer_{route.path.strip('/')}", outer_params, outer_body)
        sig = inspect.signature(outer)
        outer.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[
                *sig.parameters.values(),
                inspect.Parameter(
                    "inner",
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[dict[str, Any], Depends(inner)],
                ),
            ]
        )
        extra.append(
            inspect.Parameter(
                "nested_",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[dict[str, Any], Depends(outer)],
            )
        )
    if route.in_class:
        holder = type(f"Filters_{route.path.strip('/')}", (), {})

        def init(self: Any, **kwargs: Any) -> None:
            self.values = kwargs

        holder.__init__ = init  # type: ignore[misc]
        holder.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(
                    p.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=p.annotation()
                )
                for p in route.in_class
            ]
        )
        extra.append(
            inspect.Parameter(
                "class_",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[Any, Depends(holder)],
            )
        )
    if route.auth.style == "state":
        extra.append(
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )

    async def endpoint(**kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"route": route.path}
        for name, value in sorted(kwargs.items()):
            if name == "who_":
                answer["who"] = (
                    value
                    if isinstance(value, str) and route.auth.style in ("class", "middleware")
                    else who(value)
                )
            elif name == "request":
                answer["who"] = getattr(value.state, "user", "anonymous")
            elif name == "class_":
                answer["class"] = value.values
            else:
                answer[name] = value
        return answer

    params = [
        inspect.Parameter(
            p.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=p.annotation()
        )
        for p in route.params
    ]
    endpoint.__signature__ = inspect.Signature([*params, *extra])  # type: ignore[attr-defined]
    endpoint.__name__ = endpoint.__qualname__ = "ep_" + route.path.strip("/").replace("/", "_")
    if route.opt_in:
        names = sorted({r.name for r in (route.auth,) if r.style in ("state", "class", "subclass")})
        return cache_policy(vary=names)(endpoint)
    return endpoint


def _team_guard(kwargs: dict[str, Any]) -> None:
    """A router-level guard: one team is refused (the status depends on the header)."""
    if kwargs.get("x_team") == "blocked":
        raise HTTPException(status_code=403, detail="blocked team")


def build(spec: AppSpec) -> FastAPI:
    app = FastAPI()
    styles = {route.auth.style: route.auth.name for route in spec.routes}
    if "middleware" in styles or "state" in styles:
        names = [r.auth.name for r in spec.routes if r.auth.style in ("middleware", "state")]

        @app.middleware("http")
        async def authenticate(request: Request, call_next: Any) -> Any:
            user = next(
                (who(request.headers.get(n)) for n in names if request.headers.get(n)),
                "anonymous",
            )
            USER.set(user)
            request.state.user = user
            return await call_next(request)

    mounted = FastAPI()
    hosted = FastAPI()
    for index, route in enumerate(spec.routes):
        endpoint = _endpoint(route)
        if route.place == "app":
            app.get(route.path)(endpoint)
        elif route.place in ("router", "guarded-router"):
            guards = []
            if route.place == "guarded-router":
                guard = _callable(f"guard_{index}", (Param("header", "x_team"),), _team_guard)
                guards.append(Depends(guard))
            router = APIRouter(prefix=f"/g{index}", dependencies=guards)
            router.get(route.path)(endpoint)
            app.include_router(router)
        elif route.place == "mount":
            mounted.get(route.path)(endpoint)
        else:
            hosted.get(route.path)(endpoint)
    if mounted.router.routes:
        app.mount("/m", mounted)
    if hosted.router.routes:
        app.host("api.example.com", hosted)
    return app


def url_of(spec: AppSpec, index: int) -> tuple[str, str]:
    """(path, host) a client uses for route ``index``."""
    route = spec.routes[index]
    if route.place in ("router", "guarded-router"):
        return f"/g{index}{route.path}", "test"
    if route.place == "mount":
        return f"/m{route.path}", "test"
    if route.place == "host":
        return route.path, "api.example.com"
    return route.path, "test"
