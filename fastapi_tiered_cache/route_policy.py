"""``@cache_policy`` and ``@no_cache``: a route's rule, declared on its endpoint.

The decorator takes every field of a ``RouteRule`` but ``path``/``route`` (the endpoint is
the selector) as a typed keyword argument, so IDEs complete them and mypy checks them; a
test keeps the signature and the rule's fields in step. Durations accept seconds
(``int``/``float``), a ``timedelta`` or a string such as ``"5m"`` or ``"1h30m"``, as in
``TIERED_CACHE_RULES``. A bad value fails when the module is imported, with one
``ConfigurationError`` line naming the option, never at the first request.

Policy only: the rule is attached to the endpoint; ``routes.py`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from .exceptions import ConfigurationError
from .keys import KeyBuilder
from .logs import brief_on_exit
from .settings import RouteRule, describe_errors

__all__ = ["POLICY_ATTRIBUTE", "Duration", "cache_policy", "no_cache", "policy_of"]

POLICY_ATTRIBUTE = "__tiered_cache_policy__"
F = TypeVar("F", bound=Callable[..., Any])

#: Seconds, a ``timedelta``, or a duration string (``"500ms"``, ``"5m"``, ``"1h30m"``, ``"2d"``).
Duration = int | float | timedelta | str


def cache_policy(
    *,
    ttl: Duration | None = None,
    cache: bool = True,
    statuses: Sequence[int] | None = None,
    vary: Sequence[str] = (),
    tags: Sequence[str] = (),
    invalidates: Sequence[str] = (),
    invalidate_parents: bool | None = None,
    stale_while_revalidate: Duration | None = None,
    stale_if_error: Duration | None = None,
    cache_control: str | None = None,
    query_allow: Sequence[str] | None = None,
    query_deny: Sequence[str] = (),
    cache_private: bool | None = None,
    key_builder: KeyBuilder | str | None = None,
) -> Callable[[F], F]:
    """Declare the cache policy of an endpoint; rules from the environment still win.

    - ``ttl``: lifetime when the response gives none (whole seconds, ``timedelta`` or
      ``"5m"``); ``cache=False`` never caches (as ``@no_cache``);
    - ``statuses``: cacheable statuses; ``vary``: request headers added to the key;
    - ``tags``: tags of stored responses, ``{param}`` filled from the path;
      ``invalidates``: tags purged when a write to this route succeeds;
      ``invalidate_parents``: whether that write also purges its parent paths;
    - ``stale_while_revalidate`` / ``stale_if_error``: stale windows;
    - ``cache_control``: the ``Cache-Control`` clients get for cached responses;
    - ``query_allow`` / ``query_deny``: query parameters kept in / left out of the key;
    - ``cache_private``: store ``private`` responses in the user's own scope;
    - ``key_builder``: a ``KeyBuilder`` (or its dotted path) computing this route's digest
      instead of the default one; the cache still adds namespace, generations, tenant and
      identity scope (see ``keys.KeyBuilder``).

    A policy also opts in an endpoint the cache cannot see through (one that takes the
    ``Request``, say): name in ``vary`` every header it reads, or give a ``key_builder``.

    Example::

        @app.get("/products/{product_id}")
        @cache_policy(ttl="5m", tags=["product:{product_id}"])
        async def product(product_id: int): ...
    """
    options = {
        "ttl": ttl,
        "cache": cache,
        "statuses": statuses,
        "vary": vary,
        "tags": tags,
        "invalidates": invalidates,
        "invalidate_parents": invalidate_parents,
        "stale_while_revalidate": stale_while_revalidate,
        "stale_if_error": stale_if_error,
        "cache_control": cache_control,
        "query_allow": query_allow,
        "query_deny": query_deny,
        "cache_private": cache_private,
        "key_builder": key_builder,
    }
    rule = _rule("@cache_policy", options)

    def mark(endpoint: F) -> F:
        setattr(endpoint, POLICY_ATTRIBUTE, rule)
        return endpoint

    return mark


def no_cache(endpoint: F) -> F:
    """Never cache this endpoint's responses (its signature is kept for type checkers)."""
    setattr(endpoint, POLICY_ATTRIBUTE, RouteRule(path="/", cache=False))
    return endpoint


def policy_of(endpoint: Any) -> RouteRule | None:
    """The rule ``@cache_policy``/``@no_cache`` attached to ``endpoint``, if any."""
    rule = getattr(endpoint, POLICY_ATTRIBUTE, None)
    return rule if isinstance(rule, RouteRule) else None


def _rule(where: str, options: dict[str, Any]) -> RouteRule:
    """A rule from the decorator's options; a bad value is one line naming the option.

    Strings are not sequences of names here: ``vary="x-region"`` is refused (a list is
    meant), not read as seven one-letter headers.
    """
    try:
        return RouteRule(path="/", **options)
    except ValidationError as exc:
        error = ConfigurationError(f"invalid {where}: {describe_errors(exc)}")
    raise brief_on_exit(error) from None
