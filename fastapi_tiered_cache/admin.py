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
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from .entry import CachedResponse
from .exceptions import ConfigurationError, StoreUnavailable
from .gauges import read_gauges
from .identity import keyed_hash
from .metrics import format_ratio
from .purge import (
    SELECTORS,
    IdentitySelector,
    ManagedCache,
    PurgeRequest,
    RequestSelector,
    describe_purge,
    find_entry,
    run_purge,
    split_header,
)

__all__ = [
    "SELECTORS",
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
    "status_with_fleet",
]

logger = logging.getLogger("fastapi_tiered_cache")

REALM = 'Bearer realm="fastapi-tiered-cache"'
MIN_TOKEN_LENGTH = 16  # as for TIERED_CACHE_SECRET_KEY
SECURE = "[secure]"  # shown instead of a credential, as httpx prints headers


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


async def status_with_fleet(cache: ManagedCache) -> dict[str, object]:
    """``cache_status`` and, under ``fleet``, every process's counters summed through Redis
    (``None`` when Redis could not be read)."""
    status = cache_status(cache)
    try:
        status["fleet"] = await cache.fleet_stats()
    except StoreUnavailable as exc:
        logger.warning("fleet stats unavailable: %s", exc, extra={"event": "fleet_stats"})
        status["fleet"] = None
    return status


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
{_fleet_line(status.get("fleet"))}
<p>This process: hit ratio <b>{format_ratio(status["hit_ratio"])}</b>.
L1: {l1.get("entries", "-")} entries, {l1.get("bytes", "-")} bytes.
L2 faults: {status["l2_faults"]}. Breaker: {html.escape(str(status["breaker"] or "-"))}.</p>
<h2>By tier</h2><table><tr><th>tier</th><th>share of lookups</th></tr>{tiers}</table>
<h2>By route</h2>
<table><tr><th>route</th><th>hit ratio</th><th>hits</th><th>misses</th></tr>{routes}</table>
</body></html>
"""


def _fleet_line(fleet: Any) -> str:
    if not isinstance(fleet, Mapping):
        return "<p>Fleet: unknown (Redis could not be read).</p>"
    return (
        f"<p>Fleet: {int(fleet.get('processes', 0))} processes, hit ratio"
        f" <b>{format_ratio(fleet.get('hit_ratio'))}</b>.</p>"
    )


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
        return await status_with_fleet(cache)

    @router.get("/", response_class=HTMLResponse, summary="Status page")
    async def status_page(who: Annotated[str, auth]) -> str:
        return _status_page(await status_with_fleet(cache))

    @router.post(
        "/purge",
        summary="Purge entries by request, path, prefix, tags, identity...",
        responses={404: {"description": "Nothing matched: not cached"}},
    )
    async def purge(body: PurgeRequest, who: Annotated[str, auth]) -> Any:
        what = describe_purge(body, cache.secret)
        extra = {"event": "admin_purge", "who": who, "kind": body.kind}
        try:
            outcome = await run_purge(cache, body)
        except StoreUnavailable as exc:
            logger.warning("admin purge by %s: %s failed: %s", who, what, exc, extra=extra)
            raise HTTPException(503, detail=f"purge failed: {exc}") from None
        done = "done" if outcome.purged is None else f"{outcome.purged} purged"
        logger.info("admin purge by %s: %s -> %s", who, what, done, extra=extra)
        answer: dict[str, object] = {"kind": body.kind, "purged": outcome.purged}
        if outcome.urls:
            answer["urls"] = list(outcome.urls)
        if not outcome.matched:
            return JSONResponse({**answer, "detail": "not cached"}, status_code=404)
        return answer

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
        found = await find_entry(cache, url, headers=headers or None, tenant=tenant)
        if found is None:
            raise HTTPException(404, detail="not cached")
        resolved, record = found
        return {"url": resolved, **describe_entry(record, cache.clock(), secret_headers)}

    return router
