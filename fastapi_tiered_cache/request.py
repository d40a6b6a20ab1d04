"""``RequestInfo``: the parts of an ASGI request that the cache reads, parsed once.

Built in a single pass over ``scope["headers"]`` so that the hit path does no other
header work. Values are latin-1 decoded (as Starlette does); repeated fields are joined
with ``", "`` (``"; "`` for ``Cookie``) in ``headers``, which serves the cache's own
checks (method overrides, body framing, validators) and ``Vary``.

What the *app* reads is never taken from that joined view: a route's declared headers
and cookies are read with Starlette's own ``Headers`` and cookie parser (``app_headers``,
``app_cookies``), so the key holds exactly the values the app's parser will see, whatever
the Starlette version, field repetition, case or whitespace.

Parsing is bounded: a request with more or longer header fields, cookies or query than
the bounds below is marked ``oversized`` and bypasses the cache (never an exception, and
never a guess about what was left unread).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.types import Scope

__all__ = ["RequestInfo", "parse_cookie_pairs", "route_path", "route_template"]

MAX_HEADER_FIELDS = 256
MAX_HEADER_VALUE = 32 * 1024  # bytes, one field value
MAX_HEADER_BYTES = 64 * 1024  # bytes, every value together
MAX_COOKIES = 256  # name=value pairs, over every Cookie field
MAX_QUERY_BYTES = 2 * 1024 * 1024


def route_path(path: str, root_path: str) -> str:
    """The path the router matches: ``path`` without ``root_path`` (Starlette's rule).

    Behind ``uvicorn --root-path /api`` or ``FastAPI(root_path="/api")`` the scope's path
    is ``/api/items`` and routes, rules and purges all speak of ``/items``.
    """
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


@dataclass(slots=True)
class RequestInfo:
    """A request as the cache sees it.

    - ``path``: the routed path (``root_path`` removed), what rules and purges match;
    - ``raw_path``: the path as sent (the key uses it, with ``root_path``);
    - ``headers``: lower-case names to joined values;
    - ``oversized``: beyond the parsing bounds, so the request bypasses the cache.
    """

    scope: Scope
    method: str
    path: str
    raw_path: bytes
    query: bytes
    headers: dict[str, str] = field(default_factory=dict)
    oversized: bool = False
    _cookie_pairs: list[tuple[str, str]] | None = None
    _request: Request | None = None

    @classmethod
    def from_scope(cls, scope: Scope, root_path: str | None = None) -> RequestInfo:
        """Parse ``scope``; ``root_path`` is the app's own when it sets one itself (a
        ``FastAPI(root_path=...)`` wrapped from outside sets it only once called)."""
        headers: dict[str, str] = {}
        raw_headers = scope["headers"]
        total = 0
        oversized = len(raw_headers) > MAX_HEADER_FIELDS
        for raw_name, raw_value in raw_headers:
            size = len(raw_value)
            total += size
            if size > MAX_HEADER_VALUE:
                oversized = True
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name in headers:
                headers[name] += ("; " if name == "cookie" else ", ") + value
            else:
                headers[name] = value
        path = scope.get("path", "/")
        raw_path = scope.get("raw_path") or path.encode("utf-8", "surrogateescape")
        query = scope.get("query_string", b"")
        root = scope.get("root_path", "") if root_path is None else root_path
        cookies = headers.get("cookie")
        if cookies is not None and cookies.count(";") >= MAX_COOKIES:
            oversized = True
        return cls(
            scope=scope,
            method=scope["method"],
            path=route_path(path, root or ""),
            raw_path=raw_path,
            query=query,
            headers=headers,
            oversized=oversized or total > MAX_HEADER_BYTES or len(query) > MAX_QUERY_BYTES,
        )

    @classmethod
    def from_url(
        cls,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        root_path: str = "",
    ) -> RequestInfo:
        """A request as a client would send it: used to purge or look up one URL.

        ``url`` may be absolute (its host is used) or a path with a query, as the client
        sends it (with the ``root_path`` prefix, when the app has one).
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
            "root_path": root_path,
            "headers": header_list,
        }
        return cls.from_scope(scope)

    @property
    def cookie_pairs(self) -> list[tuple[str, str]]:
        """Every cookie of every ``Cookie`` field, names exactly as sent (parsed once)."""
        if self._cookie_pairs is None:
            self._cookie_pairs = parse_cookie_pairs(self.headers.get("cookie", ""))
        return self._cookie_pairs

    @property
    def request(self) -> Request:
        """A Starlette ``Request`` over the same scope: the app's own parsers."""
        if self._request is None:
            self._request = Request(self.scope)
        return self._request

    def app_headers(self, name: str) -> list[str]:
        """Every value of a header as Starlette hands them to the app, in order: its
        ``Headers.getlist`` (fields whose raw name is exactly the lower-case name)."""
        key = name.lower().encode("latin-1")
        return [value.decode("latin-1") for raw, value in self.scope["headers"] if raw == key]

    def app_cookies(self) -> dict[str, str]:
        """The cookies exactly as the app reads them (Starlette's parser, its version)."""
        cookies: dict[str, Any] = self.request.cookies
        return cookies


def parse_cookie_pairs(header: str) -> list[tuple[str, str]]:
    """Split a ``Cookie`` value into ``(name, value)`` pairs, leniently.

    Names keep their case (Starlette's parser is case-sensitive); surrounding whitespace
    is removed; a chunk without ``=`` is a value with an empty name (as browsers and
    Starlette read it). Bounded by the request's bounds (a request with more than
    ``MAX_COOKIES`` cookies is ``oversized`` and never parsed for keys).
    """
    pairs: list[tuple[str, str]] = []
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        if not sep:
            name, value = "", name
        name, value = name.strip(), value.strip()
        if name or value:
            pairs.append((name, value))
    return pairs


def route_template(scope: Scope) -> str:
    """The template of the route the router chose (set on the scope), or ""."""
    route = scope.get("route")
    path = getattr(route, "path", "")
    return path if isinstance(path, str) else ""
