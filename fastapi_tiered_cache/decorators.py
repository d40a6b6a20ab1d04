"""``@cached``: cache an ``async def``'s results in both tiers.

The decorator checks its options once, when the function is decorated (a sync ``def``, a
missing return annotation, a template or ``ignore`` naming no parameter: each refused
there, not at the first call), and returns a ``CachedFunction`` (``cached_function.py``),
which keys, reads, computes and stores each call. A sync ``def`` is refused: run it in a
thread from an ``async def`` (``await anyio.to_thread.run_sync(...)``) and decorate that.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

from .api import Seconds, beta_of, seconds_of
from .cache import TieredCache
from .cached_function import CachedFunction

__all__ = ["CachedFunction", "cached"]  # CachedFunction: cached_function.py

P = ParamSpec("P")
R = TypeVar("R")


def _fields(template: str) -> set[str]:
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            names.add(field.split(".", 1)[0].split("[", 1)[0])
    return names


def cached(
    ttl: Seconds | None = None,
    *,
    tags: Sequence[str] = (),
    key: str | None = None,
    stale_while_revalidate: Seconds | None = None,
    stale_if_error: Seconds | None = None,
    early_refresh: float | None = None,
    scoped: str | None = None,
    ignore: Iterable[str] = (),
    version: str = "",
    cache: TieredCache | Callable[[], TieredCache] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
    """Cache an ``async def``'s results in both tiers.

    - ``ttl``: seconds, a ``timedelta`` or ``"5m"`` a result is fresh; the cache's
      ``default_ttl`` when omitted.
    - ``tags``: templates over the arguments (``"product:{product_id}"``), purged by
      ``cache.invalidate_tags``.
    - ``key``: a template giving the entry's key (``"product:{product_id}"``), shared with
      ``cache.get`` / ``cache.set``; by default a hash of the function and its arguments.
    - ``stale_while_revalidate`` / ``stale_if_error``: seconds a stale result is returned
      while one refresh runs / when computing fails.
    - ``early_refresh``: XFetch's beta (1.0 is a good start): refresh hot entries shortly
      before they expire, so callers never wait for a recomputation.
    - ``scoped``: the name of the argument holding the principal (a ``str``) or an
      ``Identity`` the result is for; never implicit.
    - ``ignore``: arguments left out of the key (a database session, a client).
    - ``version``: bump it when the function's results change shape.
    - ``cache``: a ``TieredCache`` (or a callable returning one); the process's
      ``get_cache()`` when omitted, resolved at each call.

    Example::

        @cached(ttl=60, tags=["product:{product_id}"])
        async def load_product(product_id: int) -> Product: ...
    """
    seconds = seconds_of(ttl)
    if ttl is not None and seconds <= 0:
        raise ValueError("@cached: ttl must be more than 0 seconds (omit it for the default)")
    swr = seconds_of(stale_while_revalidate, "stale_while_revalidate")
    sie = seconds_of(stale_if_error, "stale_if_error")
    beta = beta_of(early_refresh)
    ignored = frozenset(ignore)

    def decorate(fn: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        name = getattr(fn, "__qualname__", repr(fn))
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@cached needs an async def function, and {name} is not: call the sync"
                " function from an async def (await anyio.to_thread.run_sync(...) if it"
                " blocks) and decorate that"
            )
        if "return" not in getattr(fn, "__annotations__", {}):
            raise TypeError(
                f"@cached: annotate the return type of {name} (results come back as that"
                " type; -> Any gives plain msgpack data)"
            )
        parameters = inspect.signature(fn).parameters
        for template in (*tags, *(() if key is None else (key,))):
            unknown = _fields(template) - set(parameters)
            if unknown:
                raise ValueError(f"@cached on {name}: {template!r} names unknown {sorted(unknown)}")
        for name_ in (*ignored, *(() if scoped is None else (scoped,))):
            if name_ not in parameters:
                raise ValueError(f"@cached on {name}: no parameter {name_!r}")
        return CachedFunction(
            fn,
            ttl=seconds,
            tags=tuple(tags),
            key=key,
            stale_while_revalidate=swr,
            stale_if_error=sie,
            early_refresh=beta,
            scoped=scoped,
            ignore=ignored,
            version=version,
            cache=cache,
        )

    return decorate
