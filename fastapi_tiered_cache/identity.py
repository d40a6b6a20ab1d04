"""Who a response is for: the tenant and the auth identity a request belongs to.

Policy only: nothing here touches a store. Resolvers are plug-ins (sync or async callables
taking a Starlette ``Request``); the built-ins read the request's credentials and tenant
header. The rule that makes this safe is *fail closed*: a request that carries credentials
is never anonymous. If a resolver cannot name its principal, the request bypasses the cache.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from starlette.requests import Request

from .credentials import CredentialRules, credentials_of
from .policy import Reason
from .request import RequestInfo, route_path
from .verdicts import Refusal

__all__ = [
    "ANONYMOUS",
    "BYPASS",
    "DEFAULT_TENANT",
    "Bypass",
    "Identifier",
    "Identity",
    "IdentityResolver",
    "TenantResolver",
    "tenant_from_header",
    "tenant_from_path_prefix",
    "tenant_from_subdomain",
]


class Bypass(Enum):
    """The type of ``BYPASS``: a resolver's answer meaning "do not use the cache"."""

    BYPASS = "bypass"


BYPASS: Final = Bypass.BYPASS
DEFAULT_TENANT: Final = "_"
logger = logging.getLogger("fastapi_tiered_cache")
_CLEAR_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

Resolved = str | None | Bypass


class IdentityResolver(Protocol):
    """Map a request to a stable principal (``str``), ``None`` (anonymous) or ``BYPASS``."""

    def __call__(self, request: Request, /) -> Resolved | Awaitable[Resolved]: ...


class TenantResolver(Protocol):
    """Map a request to a tenant id (``str``), ``None`` (default tenant) or ``BYPASS``."""

    def __call__(self, request: Request, /) -> Resolved | Awaitable[Resolved]: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """The key scope of a request: ``tenant`` and ``scope`` (``"pub"`` or ``"u.<hmac>"``).

    Both are safe to show: a principal appears only as a keyed hash.
    """

    tenant: str = DEFAULT_TENANT
    scope: str = "pub"

    @property
    def is_anonymous(self) -> bool:
        return self.scope == "pub"


ANONYMOUS: Final = Identity()


def keyed_hash(secret: bytes, *parts: str, size: int = 16) -> str:
    """Hex keyed BLAKE2b of length-prefixed ``parts`` (injective, so parts cannot be shifted)."""
    digest = hashlib.blake2b(key=secret[:64], digest_size=size)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.hexdigest()


def scope_for(principal: str, secret: bytes) -> str:
    """The key scope of an authenticated principal."""
    return "u." + keyed_hash(secret, "principal", principal)


def tenant_label(tenant: str, secret: bytes) -> str:
    """A tenant as it appears in keys: itself when plain, else ``_h`` + a keyed hash.

    The two forms cannot collide: plain labels start with a letter or digit.
    """
    if _CLEAR_TENANT.match(tenant):
        return tenant
    return "_h" + keyed_hash(secret, "tenant", tenant, size=12)


async def resolve(resolver: Callable[[Request], object], request: Request) -> Resolved:
    """Call a sync or async resolver and check the type of its answer."""
    answer = resolver(request)
    if inspect.isawaitable(answer):
        answer = await answer
    if answer is None or isinstance(answer, (str, Bypass)):
        return answer
    raise TypeError(f"resolver {resolver!r} returned {type(answer).__name__}, not str | None")


MAX_TENANT = 256  # characters of a tenant header value


def tenant_from_header(request: Request, header: str = "x-tenant-id") -> str | Bypass | None:
    """The built-in tenant resolver: the value of a header (``X-Tenant-ID`` by default);
    every field of a repeated header counts, and an overlong value bypasses."""
    values = request.headers.getlist(header)
    value = ", ".join(values).strip()
    if len(value) > MAX_TENANT:
        return BYPASS
    return value or None


MAX_HOST = 1024  # characters of a Host value the subdomain resolver reads


def tenant_from_subdomain(request: Request) -> str | Bypass | None:
    """Tenant = first label of a host with at least three labels (``acme.example.com``).

    The fully qualified form (``acme.example.com.``, trailing dot) is the same host, so
    the same tenant; a host that is not a plain name (empty labels, overlong) bypasses.
    """
    host = request.headers.get("host", "")
    if len(host) > MAX_HOST:
        return BYPASS
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal names no tenant
        return None
    host = host.rsplit(":", 1)[0].removesuffix(".")
    labels = host.split(".")
    if not all(labels):
        return BYPASS if host else None
    return labels[0] if len(labels) >= 3 else None


def tenant_from_path_prefix(request: Request) -> str | None:
    """Tenant = first segment of the routed path (``/acme/products`` -> ``acme``), after
    any ``root_path`` (behind ``--root-path /api``, ``/api/acme/products`` is ``acme``)."""
    scope = request.scope
    path = route_path(scope.get("path", "/"), scope.get("root_path", "") or "")
    first = path.lstrip("/").split("/", 1)[0]
    return first or None


class Identifier:
    """Who a request is cached for: its tenant label and identity scope, or why it must
    bypass (the *identify* phase of the pipeline).

    - ``credentials``: the rules naming the request's credentials (``credentials.py``).
    - ``identity_resolver`` / ``tenant_resolver``: plug-ins, or None for the built-ins (the
      credentials themselves; the ``tenant_header``).
    - ``secret``: the key of the keyed hashes; ``caches_identities``: whether requests with
      credentials are cached (per identity) at all.
    """

    def __init__(
        self,
        credentials: CredentialRules,
        *,
        secret: bytes,
        tenant_header: str | None,
        caches_identities: bool,
        identity_resolver: IdentityResolver | None = None,
        tenant_resolver: TenantResolver | None = None,
    ) -> None:
        self.credentials = credentials
        self.secret = secret
        self.tenant_header = tenant_header
        self.caches_identities = caches_identities
        self.identity_resolver = identity_resolver
        self.tenant_resolver = tenant_resolver

    async def identify(
        self, info: RequestInfo, headers: Iterable[str] = (), cookies: Iterable[str] = ()
    ) -> Identity | Reason | Refusal:
        """The tenant and scope of a request whose route declares the credential
        ``headers`` and ``cookies``, or why it must bypass. A resolver that raises makes
        the request bypass (logged): a plug-in bug must cost the cache, never the response.
        """
        try:
            return await self._identify(info, tuple(headers), tuple(cookies))
        except Exception as exc:
            logger.error(
                "identity/tenant resolver failed: %s: %s",
                type(exc).__name__,
                exc,
                extra={"event": "resolver_error"},
            )
            return Reason.RESOLVER

    async def _identify(
        self, info: RequestInfo, headers: tuple[str, ...], cookies: tuple[str, ...]
    ) -> Identity | Reason | Refusal:
        tenant = await self.tenant(info)
        if isinstance(tenant, (Reason, Refusal)):
            return tenant
        credentials = credentials_of(info, self.credentials, headers, cookies)
        principal: str | None
        if self.identity_resolver is not None:
            answer = await resolve(self.identity_resolver, Request(info.scope))
            if isinstance(answer, Bypass) or (answer is None and credentials):
                return Reason.RESOLVER  # fail closed: credentials are never anonymous
            principal = answer
        elif credentials:
            principal = "\n".join(credentials)
        else:
            principal = None
        if principal is None:
            return Identity(tenant=tenant)
        if not self.caches_identities:
            return Reason.AUTHENTICATED
        return Identity(tenant=tenant, scope=scope_for(principal, self.secret))

    async def tenant(self, info: RequestInfo) -> str | Reason | Refusal:
        """The tenant label of a request, or why it must bypass."""
        tenant: str | Bypass | None
        if self.tenant_resolver is not None:
            tenant = await resolve(self.tenant_resolver, Request(info.scope))
            if isinstance(tenant, Bypass):
                return Reason.RESOLVER
        else:
            header = self.tenant_header
            tenant = (info.headers.get(header, "").strip() or None) if header else None
            if tenant is not None and len(tenant) > MAX_TENANT:
                return Refusal.OVERSIZED
        if tenant is None:
            return DEFAULT_TENANT
        return tenant_label(tenant, self.secret)

    def label(self, tenant: str | None) -> str:
        """How a tenant id appears in keys and indexes (None: the default tenant)."""
        return DEFAULT_TENANT if tenant is None else tenant_label(tenant, self.secret)
