"""The admin router: stats, purge and lookup over HTTP, behind a bearer token.

Mount it under ``TIERED_CACHE_ADMIN_PATH``::

    router = build_admin_router(cache, token=settings.admin_token)
    app.include_router(router, prefix=settings.admin_path)

Every answer carries ``Cache-Control: no-store`` (errors included) so neither this cache
nor any proxy keeps it. Each purge is logged on the ``fastapi_tiered_cache`` logger with
who asked (a keyed hash of the token, or the principal the auth dependency returned) and
what was purged; credentials and principals are never logged in the clear.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves string annotations in the
# module's globals only, and the endpoints below depend on objects local to the router.
import hmac
import html
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .entry import CachedResponse
from .exceptions import ConfigurationError, StoreUnavailable
from .exporters import read_gauges
from .identity import keyed_hash, scope_for
from .metrics import Stats
from .settings import CacheSettings
from .stores import TieredStore

__all__ = [
    "IdentitySelector",
    "ManagedCache",
    "PurgeRequest",
    "RequestSelector",
    "build_admin_router",
    "cache_status",
    "describe_entry",
    "describe_purge",
    "format_ratio",
    "run_purge",
    "split_header",
]

logger = logging.getLogger("fastapi_tiered_cache")

REALM = 'Bearer realm="fastapi-tiered-cache"'
MIN_TOKEN_LENGTH = 16  # as for TIERED_CACHE_SECRET_KEY
SECURE = "[secure]"  # shown instead of a credential, as httpx prints headers
SELECTORS = ("request", "path", "prefix", "tags", "identity", "all")


class ManagedCache(Protocol):
    """What the admin router and the CLI need from a cache; ``TieredCache`` provides it."""

    settings: CacheSettings
    stats: Stats
    store: TieredStore
    secret: bytes
    clock: Callable[[], float]

    async def invalidate_request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> int: ...

    async def invalidate_path(self, path: str, *, tenant: str | None = None) -> int: ...

    async def invalidate_prefix(self, prefix: str, *, tenant: str | None = None) -> int: ...

    async def invalidate_tags(
        self, *tags: str, tenant: str | None = None, soft: bool = False
    ) -> int: ...

    async def invalidate_tenant(self, tenant: str) -> None: ...

    async def invalidate_identity(
        self,
        *,
        principal: str | None = None,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
    ) -> None: ...

    async def invalidate_all(self) -> None: ...

    async def lookup(
        self, url: str, *, headers: Mapping[str, str] | None = None, tenant: str | None = None
    ) -> CachedResponse | None: ...


NonEmpty = Annotated[str, Field(min_length=1)]


class RequestSelector(BaseModel):
    """One stored request: its method, URL and the request headers it was selected by."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("GET", pattern=r"^[A-Za-z]+$")
    url: NonEmpty
    headers: dict[str, str] = Field(default_factory=dict)


class IdentitySelector(BaseModel):
    """Everything one identity has stored: name its ``principal`` or give its ``headers``."""

    model_config = ConfigDict(extra="forbid")

    principal: NonEmpty | None = None
    headers: dict[str, str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "IdentitySelector":
        if (self.principal is None) == (not self.headers):
            raise ValueError("give exactly one of principal or headers")
        return self


class PurgeRequest(BaseModel):
    """What to purge: exactly one selector, optionally within one ``tenant``.

    ``{"tenant": "acme"}`` alone (or with ``"all": true``) purges that whole tenant;
    ``{"all": true}`` purges everything. ``soft`` (tags only) marks entries stale instead.
    """

    model_config = ConfigDict(extra="forbid")

    request: RequestSelector | None = None
    path: NonEmpty | None = None
    prefix: NonEmpty | None = None
    tags: list[NonEmpty] | None = Field(None, min_length=1)
    soft: bool = False
    identity: IdentitySelector | None = None
    all: bool = False
    tenant: NonEmpty | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> "PurgeRequest":
        chosen = self.selectors
        if len(chosen) > 1:
            raise ValueError(f"choose one selector, not {' and '.join(chosen)}")
        if not chosen and self.tenant is None:
            raise ValueError(f"choose one of {', '.join(SELECTORS)} or tenant")
        if self.soft and chosen != ["tags"]:
            raise ValueError("soft applies to tags only")
        return self

    @property
    def selectors(self) -> list[str]:
        return [name for name in SELECTORS if getattr(self, name) not in (None, False)]

    @property
    def kind(self) -> str:
        """The selector used: ``tenant`` for a whole tenant (also ``all`` with a tenant)."""
        chosen = self.selectors
        if not chosen or (chosen == ["all"] and self.tenant is not None):
            return "tenant"
        return chosen[0]


async def run_purge(cache: ManagedCache, purge: PurgeRequest) -> int | None:
    """Call the cache's invalidation API; the number purged, or None when it is not counted."""
    tenant = purge.tenant
    if purge.request is not None:
        r = purge.request
        headers = r.headers or None
        return await cache.invalidate_request(
            r.method.upper(), r.url, headers=headers, tenant=tenant
        )
    if purge.path is not None:
        return await cache.invalidate_path(purge.path, tenant=tenant)
    if purge.prefix is not None:
        return await cache.invalidate_prefix(purge.prefix, tenant=tenant)
    if purge.tags:
        return await cache.invalidate_tags(*purge.tags, tenant=tenant, soft=purge.soft)
    if purge.identity is not None:
        who = purge.identity
        await cache.invalidate_identity(principal=who.principal, headers=who.headers, tenant=tenant)
    elif tenant is None:
        await cache.invalidate_all()
    else:
        await cache.invalidate_tenant(tenant)
    return None


def describe_purge(purge: PurgeRequest, secret: bytes) -> str:
    """A loggable account of a purge: no credential, query value or principal in the clear."""
    parts = [purge.kind]
    if purge.request is not None:
        url = urlsplit(purge.request.url)
        where = (f"{url.scheme}://{url.hostname}" if url.hostname else "") + (url.path or "/")
        parts.append(f"{purge.request.method.upper()} {where}{'?...' if url.query else ''}")
        if purge.request.headers:
            parts.append(f"headers={','.join(sorted(h.lower() for h in purge.request.headers))}")
    elif purge.path is not None or purge.prefix is not None:
        parts.append(purge.path or purge.prefix or "")
    elif purge.tags:
        parts.append(",".join(purge.tags) + (" (soft)" if purge.soft else ""))
    elif purge.identity is not None:
        who = purge.identity
        if who.principal is not None:
            parts.append(f"scope={scope_for(who.principal, secret)}")
        else:
            parts.append(f"headers={','.join(sorted(h.lower() for h in who.headers or {}))}")
    if purge.tenant is not None:
        parts.append(f"tenant={purge.tenant}")
    return " ".join(parts)


def cache_status(cache: ManagedCache) -> dict[str, object]:
    """Tiers, L1 size, L2 faults, breaker state and the in-process counters."""
    gauges = read_gauges(cache.store)
    l1 = cache.store.l1
    return {
        "tiers": {"l1": l1 is not None, "l2": cache.store.l2 is not None},
        "l1": None
        if l1 is None
        else {
            "entries": gauges.l1_entries,
            "bytes": gauges.l1_bytes,
            "max_entries": l1.max_entries,
            "max_bytes": l1.max_bytes,
            "evictions": gauges.l1_evictions,
        },
        "l2_faults": cache.store.faults,
        "breaker": gauges.breaker,
        **cache.stats.snapshot(),
    }


def describe_entry(
    record: CachedResponse, now: float, secret_headers: frozenset[str]
) -> dict[str, object]:
    """A stored response as JSON; values of credential headers it varies on are masked."""
    return {
        "status": record.status,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in record.headers],
        "age": round(record.age(now), 3),
        "ttl": round(record.ttl(now), 3),
        "fresh": record.is_fresh(now),
        "size": record.size,
        "body_bytes": len(record.body),
        "tags": list(record.tags),
        "etag": record.etag or None,
        "vary": {
            name: SECURE if value is not None and name in secret_headers else value
            for name, value in record.vary
        },
    }


def _status_page(status: Mapping[str, Any]) -> str:
    tiers = "".join(
        f"<tr><td>{html.escape(tier)}</td><td>{format_ratio(value)}</td></tr>"
        for tier, value in sorted(status["hit_ratio_by_tier"].items())
    )
    routes = "".join(
        f"<tr><td>{html.escape(route)}</td><td>{format_ratio(counts.get('hit_ratio'))}</td>"
        f"<td>{counts.get('hit', 0)}</td><td>{counts.get('miss', 0)}</td></tr>"
        for route, counts in sorted(status["routes"].items())
    )
    l1 = status["l1"] or {}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fastapi-tiered-cache</title></head>
<body style="font-family: sans-serif; max-width: 50rem; margin: 2rem auto">
<h1>fastapi-tiered-cache</h1>
<p>Hit ratio: <b>{format_ratio(status["hit_ratio"])}</b>. L1: {l1.get("entries", "-")} entries,
{l1.get("bytes", "-")} bytes. L2 faults: {status["l2_faults"]}.
Breaker: {html.escape(str(status["breaker"] or "-"))}.</p>
<h2>By tier</h2><table><tr><th>tier</th><th>share of lookups</th></tr>{tiers}</table>
<h2>By route</h2>
<table><tr><th>route</th><th>hit ratio</th><th>hits</th><th>misses</th></tr>{routes}</table>
</body></html>
"""


class _NoStoreRoute(APIRoute):
    """A route whose every response, errors included, says ``Cache-Control: no-store``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def no_store(request: Request) -> Response:
            try:
                response = await handler(request)
            except RequestValidationError as exc:
                response = await request_validation_exception_handler(request, exc)
            except StarletteHTTPException as exc:
                response = await http_exception_handler(request, exc)
            response.headers["cache-control"] = "no-store"
            return response

        return no_store


def _refuse(error: str | None = None) -> HTTPException:
    challenge = REALM + (f', error="{error}"' if error else "")
    detail = "invalid admin token" if error else "admin token required"
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": challenge})


def _authenticator(
    secret: bytes, token: bytes | None, dependency: Callable[..., Any] | None
) -> Callable[..., Coroutine[Any, Any, str]]:
    """The dependency that checks the bearer token and/or runs ``dependency``; returns who."""

    def check_token(request: Request) -> str | None:
        if token is None:
            return None
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise _refuse()
        if not hmac.compare_digest(presented.strip().encode("latin-1"), token):
            raise _refuse("invalid_token")
        return "token:" + keyed_hash(secret, "admin-token", token.decode("latin-1"), size=6)

    if dependency is None:

        async def by_token(request: Request) -> str:
            return check_token(request) or ""

        return by_token

    async def by_dependency(
        request: Request, principal: Annotated[Any, Depends(dependency)]
    ) -> str:
        check_token(request)
        if principal is None or principal is False:
            raise _refuse()
        return str(principal)

    return by_dependency


def build_admin_router(
    cache: ManagedCache,
    *,
    token: str | SecretStr | None = None,
    dependency: Callable[..., Any] | None = None,
    include_in_schema: bool = False,
) -> APIRouter:
    """The admin endpoints of ``cache``, protected by ``token`` and/or ``dependency``.

    - ``token``: the bearer token clients send (``Authorization: Bearer <token>``).
    - ``dependency``: a FastAPI dependency returning the caller's principal (a ``str``) or
      ``None`` to refuse; it may also raise its own ``HTTPException``. With both, both apply.
    - ``include_in_schema``: list the endpoints in the OpenAPI schema (off by default).

    Raises ``ConfigurationError`` when neither a token nor a dependency is given, or when
    the token is shorter than 16 characters.
    """
    secret_token = token.get_secret_value() if isinstance(token, SecretStr) else token
    if secret_token is not None and len(secret_token.strip()) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"the admin token must be at least {MIN_TOKEN_LENGTH} characters"
            " (TIERED_CACHE_ADMIN_TOKEN; use a random one)"
        )
    if secret_token is None and dependency is None:
        raise ConfigurationError(
            "the admin router needs a token (TIERED_CACHE_ADMIN_TOKEN) or an auth dependency"
        )
    encoded = secret_token.encode("utf-8") if secret_token is not None else None
    auth = Depends(_authenticator(cache.secret, encoded, dependency))
    router = APIRouter(route_class=_NoStoreRoute, include_in_schema=include_in_schema)
    secret_headers = frozenset([*cache.settings.identity_headers, "cookie"])

    @router.get("/stats", summary="What the cache did, and its tiers")
    async def stats(who: Annotated[str, auth]) -> dict[str, object]:
        return cache_status(cache)

    @router.get("/", response_class=HTMLResponse, summary="Status page")
    async def status_page(who: Annotated[str, auth]) -> str:
        return _status_page(cache_status(cache))

    @router.post("/purge", summary="Purge entries by request, path, prefix, tags, identity...")
    async def purge(body: PurgeRequest, who: Annotated[str, auth]) -> dict[str, object]:
        what = describe_purge(body, cache.secret)
        extra = {"event": "admin_purge", "who": who, "kind": body.kind}
        try:
            purged = await run_purge(cache, body)
        except StoreUnavailable as exc:
            logger.warning("admin purge by %s: %s failed: %s", who, what, exc, extra=extra)
            raise HTTPException(503, detail=f"purge failed: {exc}") from None
        outcome = "done" if purged is None else f"{purged} purged"
        logger.info("admin purge by %s: %s -> %s", who, what, outcome, extra=extra)
        return {"kind": body.kind, "purged": purged}

    @router.get("/lookup", summary="What is stored for a URL")
    async def lookup(
        who: Annotated[str, auth],
        url: Annotated[str, Query(min_length=1)],
        tenant: str | None = None,
        header: Annotated[list[str] | None, Query(description="`name: value`")] = None,
    ) -> dict[str, object]:
        pairs = [split_header(item) for item in header or ()]
        if None in pairs:
            raise HTTPException(422, detail="each header must look like 'name: value'")
        headers = dict(pair for pair in pairs if pair is not None)
        record = await cache.lookup(url, headers=headers or None, tenant=tenant)
        if record is None:
            raise HTTPException(404, detail="not cached")
        return {"url": url, **describe_entry(record, cache.clock(), secret_headers)}

    return router


def split_header(item: str) -> tuple[str, str] | None:
    """``"Name: value"`` as ``("name", "value")``; None when it is not a header line."""
    name, sep, value = item.partition(":")
    if not sep or not name.strip():
        return None
    return name.strip().lower(), value.strip()


def format_ratio(value: object) -> str:
    """A hit ratio as a percentage, ``-`` when there were no lookups."""
    return f"{value:.1%}" if isinstance(value, (int, float)) else "-"
