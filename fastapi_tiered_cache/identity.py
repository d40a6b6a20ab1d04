"""Who a response is for: the tenant and the auth identity a request belongs to.

Policy only: nothing here touches a store. Resolvers are plug-ins (sync or async callables
taking a Starlette ``Request``); the built-ins read the request's credentials and tenant
header. The rule that makes this safe is *fail closed*: a request that carries credentials
is never anonymous. If a resolver cannot name its principal, the request bypasses the cache.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from starlette.requests import Request

from .request import RequestInfo

__all__ = [
    "ANONYMOUS",
    "BYPASS",
    "DEFAULT_TENANT",
    "Bypass",
    "Identity",
    "IdentityResolver",
    "TenantResolver",
    "credentials_of",
    "tenant_from_header",
    "tenant_from_path_prefix",
    "tenant_from_subdomain",
]


class Bypass(Enum):
    """The type of ``BYPASS``: a resolver's answer meaning "do not use the cache"."""

    BYPASS = "bypass"


BYPASS: Final = Bypass.BYPASS
DEFAULT_TENANT: Final = "_"
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


def credentials_of(info: RequestInfo, headers: Iterable[str], cookies: Iterable[str]) -> list[str]:
    """Every credential the request carries, as ``"kind:name=value"`` strings (sorted)."""
    found = [f"h:{name}={info.headers[name]}" for name in headers if name in info.headers]
    if "cookie" in info.headers:
        jar = info.cookies
        found.extend(f"c:{name}={jar[name]}" for name in cookies if name in jar)
    return found


async def resolve(resolver: Callable[[Request], object], request: Request) -> Resolved:
    """Call a sync or async resolver and check the type of its answer."""
    answer = resolver(request)
    if inspect.isawaitable(answer):
        answer = await answer
    if answer is None or isinstance(answer, (str, Bypass)):
        return answer
    raise TypeError(f"resolver {resolver!r} returned {type(answer).__name__}, not str | None")


def tenant_from_header(request: Request, header: str = "x-tenant-id") -> str | None:
    """The built-in tenant resolver: the value of a header (``X-Tenant-ID`` by default)."""
    value = request.headers.get(header, "").strip()
    return value or None


def tenant_from_subdomain(request: Request) -> str | None:
    """Tenant = first label of a host with at least three labels (``acme.example.com``)."""
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip().lower()
    labels = host.split(".")
    if len(labels) < 3 or not all(labels):
        return None
    return labels[0]


def tenant_from_path_prefix(request: Request) -> str | None:
    """Tenant = first path segment (``/acme/products`` -> ``acme``)."""
    first = request.url.path.lstrip("/").split("/", 1)[0]
    return first or None
