"""``RequestInfo``: the parts of an ASGI request that the cache reads, parsed once.

Built in a single pass over ``scope["headers"]`` so that the hit path does no other
header work. Values are latin-1 decoded (as Starlette does); repeated fields are joined
with ``", "`` (``"; "`` for ``Cookie``) as RFC 9110 §5.3 and RFC 6265 §5.4 allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from starlette.types import Scope

__all__ = ["RequestInfo", "parse_cookies"]


@dataclass(slots=True)
class RequestInfo:
    """A request as the cache sees it; ``headers`` maps lower-case names to joined values."""

    scope: Scope
    method: str
    path: str
    raw_path: bytes
    query: bytes
    headers: dict[str, str] = field(default_factory=dict)
    _cookies: dict[str, str] | None = None

    @classmethod
    def from_scope(cls, scope: Scope) -> RequestInfo:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name in headers:
                headers[name] += ("; " if name == "cookie" else ", ") + value
            else:
                headers[name] = value
        path = scope.get("path", "/")
        raw_path = scope.get("raw_path") or path.encode("utf-8", "surrogateescape")
        return cls(
            scope=scope,
            method=scope["method"],
            path=path,
            raw_path=raw_path,
            query=scope.get("query_string", b""),
            headers=headers,
        )

    @classmethod
    def from_url(
        cls, method: str, url: str, headers: Mapping[str, str] | None = None
    ) -> RequestInfo:
        """A request as a client would send it: used to purge or look up one URL.

        ``url`` may be absolute (its host is used) or a path with a query.
        """
        parts = urlsplit(url)
        raw_path = (parts.path or "/").encode("utf-8")
        header_list = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        if parts.netloc and not any(name == b"host" for name, _ in header_list):
            header_list.append((b"host", parts.netloc.encode("idna")))
        scope: Scope = {
            "type": "http",
            "method": method.upper(),
            "scheme": parts.scheme or "http",
            "path": unquote(parts.path or "/"),
            "raw_path": raw_path,
            "query_string": parts.query.encode("utf-8"),
            "root_path": "",
            "headers": header_list,
        }
        return cls.from_scope(scope)

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies by lower-case name (parsed on first use only)."""
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers.get("cookie", ""))
        return self._cookies


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently; names are lower-cased.

    A repeated name keeps every value (joined with ``"; "``): frameworks disagree on which
    one wins, so identity must depend on all of them.
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        value = value.strip()
        cookies[name] = f"{cookies[name]}; {value}" if name in cookies else value
    return cookies
