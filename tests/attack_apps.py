"""Apps written the way real teams write them, for the attack corpus (``test_attacks.py``).

Every endpoint answers with who it served (and, where the cache must never store it, a
call counter), so that any answer the cache gives can be compared with what the app alone
would have answered to that very request: a difference is a leak or a poisoning.

No ``from __future__ import annotations`` here: FastAPI must resolve the annotations of
endpoints defined inside functions, whose dependencies are local variables.
"""

import base64
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, Query, Request, Response
from fastapi.openapi.models import OAuthFlows as OAuthFlowsModel
from fastapi.routing import APIRoute
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
    OAuth2,
    OAuth2PasswordBearer,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

TOKENS = {"alice-secret": "alice", "bob-secret": "bob"}


def who(token: str | None) -> str:
    return TOKENS.get(token or "", "anonymous")


def jwt_for(user: str) -> str:
    """A JWT-shaped token (unsigned: the shape is what matters here)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': user})}.c2lnbmF0dXJl"


class Counter:
    """Calls of an endpoint that must never be served from the cache."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


# -- 1. security schemes the cache must not trust -------------------------------------------


class OAuth2PasswordBearerWithCookie(OAuth2):
    """The widespread recipe: OAuth2 whose ``__call__`` reads the token from a cookie."""

    def __init__(self, token_url: str, cookie: str) -> None:
        super().__init__(flows=OAuthFlowsModel(password={"tokenUrl": token_url}))
        self.cookie = cookie

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        value = request.cookies.get(self.cookie, "")
        scheme, _, token = value.partition(" ")
        return token if scheme.lower() == "bearer" else value or None


def oauth2_cookie(cookie: str) -> FastAPI:
    app = FastAPI()
    scheme = OAuth2PasswordBearerWithCookie("/token", cookie)

    @app.get("/me")
    async def me(token: Annotated[str | None, Depends(scheme)]) -> dict[str, str]:
        return {"user": who(token)}

    return app


class AcmeBearer(HTTPBearer):
    """An HTTPBearer subclass reading the company's own header from the Request."""

    def __init__(self, header: str) -> None:
        super().__init__(auto_error=False)
        self.header = header

    async def __call__(self, request: Request) -> Any:  # type: ignore[override]
        return request.headers.get(self.header)


def bearer_subclass(header: str) -> FastAPI:
    app = FastAPI()
    scheme = AcmeBearer(header)

    @app.get("/me")
    async def me(token: Annotated[Any, Depends(scheme)]) -> dict[str, str]:
        return {"user": who(token)}

    return app


class TeamKey(APIKeyHeader):
    """``APIKeyHeader(name="X-API-Key")`` whose ``__call__`` declares another header."""

    async def __call__(  # type: ignore[override]
        self, x_acme_user: Annotated[str | None, Header()] = None
    ) -> str | None:
        return x_acme_user


def api_key_subclass() -> FastAPI:
    app = FastAPI()
    scheme = TeamKey(name="X-API-Key", auto_error=False)

    @app.get("/me")
    async def me(token: Annotated[str | None, Depends(scheme)]) -> dict[str, str]:
        return {"user": who(token)}

    return app


# -- dependencies that take the Request, anywhere in the tree -------------------------------


class Guard:
    """A callable-class dependency reading the Request."""

    def __init__(self, header: str) -> None:
        self.header = header

    def __call__(self, request: Request) -> str:
        return who(request.headers.get(self.header))


def connection_user(connection: HTTPConnection) -> str:
    return who(connection.headers.get("x-who"))


def request_user(request: Request) -> str:
    return who(request.headers.get("x-who"))


def class_dependency() -> FastAPI:
    app = FastAPI()
    guard = Guard("x-who")

    @app.get("/me")
    async def me(user: Annotated[str, Depends(guard)]) -> dict[str, str]:
        return {"user": user}

    return app


def nested_connection_dependency() -> FastAPI:
    app = FastAPI()

    def profile(user: Annotated[str, Depends(connection_user)]) -> dict[str, str]:
        return {"user": user}

    @app.get("/me")
    async def me(data: Annotated[dict[str, str], Depends(profile)]) -> dict[str, str]:
        return data

    return app


USER: ContextVar[str] = ContextVar("user", default="anonymous")


def current_user() -> str:
    return USER.get()


async def remember_user(request: Request) -> None:
    USER.set(who(request.headers.get("x-who")))


def router_guard() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/team", dependencies=[Depends(remember_user)])

    @router.get("/me")
    async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    app.include_router(router)
    return app


def app_guard() -> FastAPI:
    app = FastAPI(dependencies=[Depends(remember_user)])

    @app.get("/me")
    async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    return app


def from_header(x_user: Annotated[str | None, Header()] = None) -> str:
    return who(x_user)


def overridable() -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(user: Annotated[str, Depends(from_header)]) -> dict[str, str]:
        return {"user": user}

    return app


def override_with_request(app: FastAPI) -> None:
    """As a test suite does: the real dependency replaced by one reading the Request."""
    app.dependency_overrides[from_header] = request_user


def override_with_constant(app: FastAPI) -> None:
    app.dependency_overrides[from_header] = lambda: "test-user"


def clear_overrides(app: FastAPI) -> None:
    app.dependency_overrides.clear()


# -- 2. routes the table cannot read --------------------------------------------------------


def header_app() -> FastAPI:
    """A small app whose /me reads X-Who through a declared header."""
    sub = FastAPI()

    @sub.get("/me")
    async def me(x_who: Annotated[str | None, Header()] = None) -> dict[str, str]:
        return {"user": who(x_who)}

    return sub


def host_route() -> FastAPI:
    app = FastAPI()
    app.host("api.example.com", header_app())

    @app.get("/about")
    async def about() -> dict[str, str]:
        return {"about": "public"}

    return app


def mounted_app() -> FastAPI:
    app = FastAPI()
    app.mount("/v2", header_app())
    return app


class WhoRoute(BaseRoute):
    """A route type of a third-party library: matches /me, reads X-Who itself."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return (Match.FULL if scope.get("path") == "/me" else Match.NONE), {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        user = who(headers.get(b"x-who", b"").decode())
        await JSONResponse({"user": user})(scope, receive, send)


def custom_route() -> FastAPI:
    app = FastAPI()
    app.router.routes.insert(0, WhoRoute())

    @app.get("/me")
    async def me() -> dict[str, str]:
        return {"user": "never reached"}

    return app


def starlette_route() -> FastAPI:
    app = FastAPI()

    async def me(request: Request) -> PlainTextResponse:
        return PlainTextResponse(who(request.headers.get("x-who")))

    app.router.routes.append(Route("/me", me))
    return app


class StampingRoute(APIRoute):
    """A custom route class (FastAPI docs' recipe) whose handler reads the request."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            response = await handler(request)
            response.body = json.dumps({"user": who(request.headers.get("x-who"))}).encode()
            response.headers["content-length"] = str(len(response.body))
            return response

        return handle


def custom_route_class() -> FastAPI:
    app = FastAPI()
    router = APIRouter(route_class=StampingRoute)

    @router.get("/me")
    async def me() -> dict[str, str]:
        return {"user": "replaced"}

    app.include_router(router)
    return app


class Wrapper:
    """An outer ASGI wrapper between the cache and FastAPI (a tracing shim, say)."""

    def __init__(self, app: ASGIApp) -> None:
        self.inner = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.inner(scope, receive, send)


# -- 3. inputs read exactly as the app reads them -------------------------------------------


def currency_cookie() -> FastAPI:
    app = FastAPI()

    @app.get("/prices")
    async def prices(currency: Annotated[str, Cookie()] = "USD") -> dict[str, str]:
        return {"currency": currency}

    return app


def language_header() -> FastAPI:
    app = FastAPI()

    @app.get("/greeting")
    async def greeting(x_lang: Annotated[str, Header()] = "en") -> dict[str, str]:
        return {"lang": x_lang}

    return app


def query_param() -> FastAPI:
    app = FastAPI()

    @app.get("/search")
    async def search(q: Annotated[str, Query()] = "") -> dict[str, str]:
        return {"q": q}

    return app


def validation_aliases() -> FastAPI:
    app = FastAPI()

    @app.get("/cookie")
    async def cookie(
        pref: Annotated[str | None, Cookie(validation_alias="ui_pref")] = None,
    ) -> dict[str, str | None]:
        return {"pref": pref}

    @app.get("/header")
    async def header(
        tier: Annotated[str | None, Header(validation_alias="x-plan")] = None,
    ) -> dict[str, str | None]:
        return {"tier": tier}

    return app


class AnyHeaders(BaseModel):
    model_config = ConfigDict(extra="allow")
    x_region: str | None = None


class StrictCookies(BaseModel):
    model_config = ConfigDict(extra="forbid")
    theme: str | None = None


def models_with_extra() -> FastAPI:
    app = FastAPI()

    @app.get("/headers")
    async def headers(h: Annotated[AnyHeaders, Header()]) -> dict[str, Any]:
        extra = h.model_extra or {}
        return {"region": h.x_region, "who": who(extra.get("x_who") or extra.get("x-who"))}

    @app.get("/cookies")
    async def cookies(c: Annotated[StrictCookies, Cookie()]) -> dict[str, Any]:
        return {"theme": c.theme}

    return app


# -- 4. credentials read by a plain middleware ---------------------------------------------


def middleware_auth(header: str, *, cookie: str | None = None) -> FastAPI:
    """Auth done in a plain middleware (not declared anywhere a route can see)."""
    app = FastAPI()

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if cookie is not None:
            token = request.cookies.get(cookie)
            user = next((u for u in TOKENS.values() if token == jwt_for(u)), "anonymous")
        else:
            value = request.headers.get(header, "")
            user = who(value.removeprefix("Bearer "))
        USER.set(user)
        return await call_next(request)

    @app.get("/me")
    async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    return app


def public_page() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"page": "home"}

    return app


# -- 5. private responses --------------------------------------------------------------------


def private_me() -> FastAPI:
    app = FastAPI()
    scheme = HTTPBearer(auto_error=False)
    calls = Counter()

    @app.get("/me")
    async def me(response: Response, c: Annotated[Any, Depends(scheme)]) -> dict[str, Any]:
        response.headers["cache-control"] = "private, max-age=60"
        return {"user": who(c.credentials if c else None), "call": calls()}

    return app


# -- 7. root_path and rules --------------------------------------------------------------------


def admin_app(root_path: str = "") -> FastAPI:
    app = FastAPI()
    app.root_path = root_path  # FastAPI(root_path=...), without its deprecation warning
    calls = Counter()

    @app.get("/admin")
    async def admin() -> dict[str, int]:
        return {"call": calls()}

    @app.get("/admin/stats")
    async def stats() -> dict[str, int]:
        return {"call": calls()}

    return app


# -- styles that work today ------------------------------------------------------------------


def stock_schemes() -> FastAPI:
    app = FastAPI()
    bearer = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)
    basic = HTTPBasic(auto_error=False)
    header_key = APIKeyHeader(name="X-Partner-Key", auto_error=False)
    query_key = APIKeyQuery(name="partner", auto_error=False)
    cookie_key = APIKeyCookie(name="partner_id", auto_error=False)

    @app.get("/oauth2")
    async def oauth2(token: Annotated[str | None, Depends(bearer)]) -> dict[str, str]:
        return {"user": who(token)}

    @app.get("/basic")
    async def basic_auth(
        c: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> dict[str, str]:
        return {"user": who(c.password if c else None)}

    @app.get("/header-key")
    async def header_key_auth(key: Annotated[str | None, Depends(header_key)]) -> dict[str, str]:
        return {"user": who(key)}

    @app.get("/query-key")
    async def query_key_auth(key: Annotated[str | None, Depends(query_key)]) -> dict[str, str]:
        return {"user": who(key)}

    @app.get("/cookie-key")
    async def cookie_key_auth(key: Annotated[str | None, Depends(cookie_key)]) -> dict[str, str]:
        return {"user": who(key)}

    return app


def request_state() -> FastAPI:
    """``request.state.user`` set by a middleware, read by the endpoint through Request."""
    app = FastAPI()

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        request.state.user = who(request.headers.get("x-session-token"))
        return await call_next(request)

    @app.get("/me")
    async def me(request: Request) -> dict[str, str]:
        return {"user": request.state.user}

    return app


def jwt_from_request() -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(request: Request) -> dict[str, str]:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        user = next((u for u in TOKENS.values() if token == jwt_for(u)), "anonymous")
        return {"user": user}

    return app


class Pagination(BaseModel):
    page: int = Field(1, ge=1)


def tenant_pages() -> FastAPI:
    """Answers per tenant (from X-Tenant-ID) and per subdomain, with a data version."""
    app = FastAPI()
    versions: dict[str, int] = {}

    @app.get("/page")
    async def page(request: Request) -> dict[str, Any]:
        host = request.headers.get("host", "").split(":")[0].removesuffix(".")
        tenant = host.split(".")[0] if host.count(".") >= 2 else "-"
        return {"tenant": tenant, "version": versions.get(tenant, 1)}

    app.state.versions = versions
    return app
