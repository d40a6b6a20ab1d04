"""Plug-in key builders: which one keys a request, and calling it without risk.

A key builder (``TIERED_CACHE_KEY_BUILDER``, a rule's ``key_builder``,
``@cache_policy(key_builder=...)``) computes only the *digest* of a request: the cache
composes the key around it (``{namespace}:g{generations}:{tenant}:{scope}:{digest}``), so
no plug-in can drop the tenant or the identity scope. What the route is known to read still
guards every hit: each entry records the values of the headers and cookies its key was built
with (the route's own and ``Vary``), and a request with other values is never served it,
whatever digest the plug-in gave.

The route's builder travels with the request as the key sees it (``KeyedRequest``, made by
``TieredCache.keyed_request``), so every place that computes a key for that request (the
lookup, a ``Vary`` variant, the store, a purge of one request) uses the same one.

A plug-in that raises or returns something other than a string does not fail the request:
the request gets a key of its own that no other request can produce (a miss, never
shared), and the error is logged once per builder.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, fields
from typing import Any

from .keys import KeyBuilder, VaryValues, build_key
from .request import RequestInfo

__all__ = ["KeyedRequest", "builder_name", "digest_with"]

logger = logging.getLogger("fastapi_tiered_cache")
_reported: set[int] = set()


@dataclass(slots=True)
class KeyedRequest(RequestInfo):
    """A request as its key sees it, carrying the key builder of the rule governing it."""

    key_builder: KeyBuilder | None = None

    @classmethod
    def of(cls, info: RequestInfo, builder: KeyBuilder) -> KeyedRequest:
        """``info`` (its parsed parts shared, not copied) keyed by ``builder``."""
        parts = {field.name: getattr(info, field.name) for field in fields(RequestInfo)}
        return cls(**parts, key_builder=builder)


def digest_with(builder: KeyBuilder, info: RequestInfo, vary: VaryValues, secret: bytes) -> str:
    """``builder``'s digest of a request; a fresh unshareable one when the builder fails."""
    if builder is build_key:
        return build_key(info, vary, secret=secret)
    try:
        digest: Any = builder(info, vary, secret=secret)
    except Exception as exc:
        _report(builder, f"raised {type(exc).__name__}: {exc}")
        return _unshared()
    if not isinstance(digest, str) or not digest:
        _report(builder, f"returned {type(digest).__name__}, not a non-empty str")
        return _unshared()
    return digest


def builder_name(builder: Any) -> str:
    """``module:qualname`` of a key builder, as a rule names it."""
    module = getattr(builder, "__module__", None) or "?"
    name = getattr(builder, "__qualname__", None) or type(builder).__qualname__
    return f"{module}:{name}"


def _unshared() -> str:
    """A digest no other request gets: the request misses and shares with nobody."""
    return "unshared" + secrets.token_hex(16)


def _report(builder: Any, what: str) -> None:
    if id(builder) in _reported:
        return
    _reported.add(id(builder))
    logger.error(
        "key builder %s %s: its requests are answered by the app and never shared",
        builder_name(builder),
        what,
        extra={"event": "key_builder"},
    )
