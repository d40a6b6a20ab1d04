"""Purge on write: an unsafe request (POST, PUT, PATCH, DELETE, any method not known to
be safe) goes to the app, and once it succeeds the cache purges what it changed (RFC 9111
§4.4): its path, its parent collection, the paths of its ``Location`` and
``Content-Location``, and the tags its rule names. Other processes drop their L1 copies
when the invalidation bus tells them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from starlette.types import Message, Receive, Scope, Send

from .exceptions import StoreUnavailable
from .invalidation import exact_index, parent_path, tag_index
from .metrics import Event
from .policy import Reason
from .request import RequestInfo, route_path
from .tags import fill_tags, rule_params

if TYPE_CHECKING:
    from .responder import Responder

__all__ = ["answer_write", "purge_after_write"]

logger = logging.getLogger("fastapi_tiered_cache")


async def answer_write(
    responder: Responder, info: RequestInfo, scope: Scope, receive: Receive, send: Send
) -> None:
    """An unsafe request: once it succeeds, purge what it changed, then answer.

    The purge runs before the response starts, so the writer's next read (in any
    process reached by the bus) cannot be served the old entry (RFC 9111 §4.4).
    """
    extra = responder.marks("BYPASS", "fwd=bypass", f"detail={Reason.METHOD}")
    responder.cache.record(Event.BYPASS, reason=str(Reason.METHOD))

    async def send_purging(message: Message) -> None:
        if message["type"] == "http.response.start":
            if 200 <= message["status"] < 400:  # any non-error status
                await purge_after_write(responder, info, scope, message)
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    await responder.app(scope, receive, send_purging)


async def purge_after_write(
    responder: Responder, info: RequestInfo, scope: Scope, message: Message
) -> None:
    """Purge the indexes a successful write touched; a Redis fault is logged, never raised
    (the write itself succeeded)."""
    cache = responder.cache
    tenant = await cache.tenant_of(info)
    if tenant is None:
        return
    rule, _ = cache.policy_for(info, responder.app)
    names = [exact_index(tenant, info.path)]
    parents = cache.settings.invalidate_parents
    if rule is not None and rule.invalidate_parents is not None:
        parents = rule.invalidate_parents
    parent = parent_path(info.path) if parents else None
    if parent is not None:
        names.append(exact_index(tenant, parent))
    for name, value in message.get("headers", ()):
        if name.lower() in (b"location", b"content-location"):
            target = _same_origin_path(value.decode("latin-1"), info)
            if target is not None:  # as the client sees it: route it like a request
                root = responder.root_path or scope.get("root_path", "") or ""
                names.append(exact_index(tenant, route_path(target, root)))
    if rule is not None:
        params = scope.get("path_params") or rule_params(rule, info.path)
        names.extend(tag_index(tenant, tag) for tag in fill_tags(rule.invalidates, params))
    try:
        await cache.invalidator.purge(names)
    except StoreUnavailable as exc:
        logger.warning("purge after write incomplete: %s", exc, extra={"event": "purge_error"})


def _same_origin_path(target: str, info: RequestInfo) -> str | None:
    """The path of a Location/Content-Location on this origin, or None (RFC 9111 §4.4)."""
    parts = urlsplit(target)
    if parts.netloc and parts.netloc.lower() != info.headers.get("host", "").lower():
        return None
    if not parts.netloc and not target.startswith("/"):
        return None
    return unquote(parts.path) or "/"
