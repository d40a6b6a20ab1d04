"""Purge operations shared by the admin router and the ``purge`` command of the CLI.

Both validate a ``PurgeRequest`` (exactly one selector), run it with ``run_purge`` against
the cache's invalidation API and describe it with ``describe_purge`` (loggable: no
credential, query value or principal in the clear). This module imports neither FastAPI
nor the admin router, so the CLI needs neither.

**Relative URLs.** A stored entry's key holds the scheme and ``Host`` the application saw,
so ``/items/1`` alone names no entry. A relative URL is resolved against
``TIERED_CACHE_PUBLIC_URL`` when it is set, else against every origin (``scheme://host``)
whose responses were stored (recorded in Redis as they are stored, at most 64), and tried
as given too. **Counts are exact**: the entries really deleted; a purge that matched
nothing says so (``PurgeOutcome.matched``) instead of reporting success.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .entry import CachedResponse
from .identity import scope_for
from .invalidation import normalize_path
from .metrics import Stats
from .purges import Purges  # importable from here, as before
from .settings import CacheSettings
from .stores import TieredStore

__all__ = [
    "SELECTORS",
    "IdentitySelector",
    "ManagedCache",
    "PurgeOutcome",
    "PurgeRequest",
    "Purges",
    "RequestSelector",
    "describe_purge",
    "find_entry",
    "resolve_url",
    "run_purge",
    "split_header",
]

SELECTORS = ("request", "path", "prefix", "tags", "identity", "all")
SOFT_SELECTORS = (["path"], ["prefix"], ["tags"])  # what can be marked stale, not deleted


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

    async def invalidate_path(
        self, path: str, *, tenant: str | None = None, soft: bool = False
    ) -> int: ...

    async def invalidate_prefix(
        self, prefix: str, *, tenant: str | None = None, soft: bool = False
    ) -> int: ...

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

    async def origins(self) -> list[str]: ...

    async def fleet_stats(self) -> dict[str, Any]: ...


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
    def _exactly_one(self) -> IdentitySelector:
        if (self.principal is None) == (not self.headers):
            raise ValueError("give exactly one of principal or headers")
        return self


class PurgeRequest(BaseModel):
    """What to purge: exactly one selector, optionally within one ``tenant``.

    ``{"tenant": "acme"}`` alone (or with ``"all": true``) purges that whole tenant;
    ``{"all": true}`` purges everything. ``soft`` (with ``path``, ``prefix`` or ``tags``, as
    ``TieredCache.invalidate_*`` allow) marks entries stale instead: they are revalidated
    with the origin before they are served again, never served stale while revalidating.
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
    def _one_selector(self) -> PurgeRequest:
        chosen = self.selectors
        if len(chosen) > 1:
            raise ValueError(f"choose one selector, not {' and '.join(chosen)}")
        if not chosen and self.tenant is None:
            raise ValueError(f"choose one of {', '.join(SELECTORS)} or tenant")
        if self.soft and chosen not in SOFT_SELECTORS:
            raise ValueError("soft applies to path, prefix and tags only")
        if self.soft and self.prefix is not None and normalize_path(self.prefix) == "/":
            raise ValueError(
                "soft does not apply to the prefix / (a whole tenant is purged at once)"
            )
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


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    """What a purge did.

    - ``purged``: the entries deleted (or marked stale); None for the O(1) generation
      purges (tenant, identity, all, the prefix ``/``), which count nothing.
    - ``urls``: for a request purge, the absolute URLs a relative one was resolved to.
    """

    purged: int | None
    urls: tuple[str, ...] = ()

    @property
    def matched(self) -> bool:
        """False when the purge found nothing to purge ("not cached")."""
        return self.purged is None or self.purged > 0


async def resolve_url(cache: ManagedCache, url: str) -> list[str]:
    """The URLs a purge or lookup of ``url`` tries: ``url`` itself when absolute; else the
    public URL joined with it, or every recorded origin joined with it, then ``url``."""
    if urlsplit(url).netloc:
        return [url]
    path = url if url.startswith("/") else "/" + url
    public = cache.settings.public_url
    if public:
        return [public.rstrip("/") + path]
    return [*(origin + path for origin in await cache.origins()), url]


async def run_purge(cache: ManagedCache, purge: PurgeRequest) -> PurgeOutcome:
    """Call the cache's invalidation API for ``purge``."""
    tenant = purge.tenant
    if purge.request is not None:
        r = purge.request
        urls = await resolve_url(cache, r.url)
        purged = 0
        for url in urls:
            purged += await cache.invalidate_request(
                r.method.upper(), url, headers=r.headers or None, tenant=tenant
            )
        return PurgeOutcome(purged, tuple(urls) if urls != [r.url] else ())
    if purge.path is not None:
        return PurgeOutcome(await cache.invalidate_path(purge.path, tenant=tenant, soft=purge.soft))
    if purge.prefix is not None:
        purged = await cache.invalidate_prefix(purge.prefix, tenant=tenant, soft=purge.soft)
        return PurgeOutcome(None if normalize_path(purge.prefix) == "/" else purged)
    if purge.tags:
        return PurgeOutcome(
            await cache.invalidate_tags(*purge.tags, tenant=tenant, soft=purge.soft)
        )
    if purge.identity is not None:
        who = purge.identity
        await cache.invalidate_identity(principal=who.principal, headers=who.headers, tenant=tenant)
    elif tenant is None:
        await cache.invalidate_all()
    else:
        await cache.invalidate_tenant(tenant)
    return PurgeOutcome(None)


async def find_entry(
    cache: ManagedCache,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    tenant: str | None = None,
) -> tuple[str, CachedResponse] | None:
    """The first URL ``url`` resolves to that has an entry, and the entry."""
    for candidate in await resolve_url(cache, url):
        record = await cache.lookup(candidate, headers=headers, tenant=tenant)
        if record is not None:
            return candidate, record
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
        parts.append((purge.path or purge.prefix or "") + (" (soft)" if purge.soft else ""))
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


def split_header(item: str) -> tuple[str, str] | None:
    """``"Name: value"`` as ``("name", "value")``; None when it is not a header line."""
    name, sep, value = item.partition(":")
    if not sep or not name.strip():
        return None
    return name.strip().lower(), value.strip()
