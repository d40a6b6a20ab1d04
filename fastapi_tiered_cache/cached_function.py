"""``CachedFunction``: what ``@cached`` (``decorators.py``) makes of an ``async def``,
whose results live in the cache's two tiers.

Equal calls share one entry whatever their spelling: the arguments are bound to the
signature with defaults applied, then packed (msgpack, typed: ``1``, ``1.0``, ``True`` and
``"1"`` are four keys, and so are ``Colour.RED`` and ``1``, or two models with the same
fields: ``values.pack_key``) and hashed with the cache's secret, under the function's
module and qualified name. A ``key`` template replaces that with a key of the caller's choosing,
which ``cache.get`` and ``cache.set`` reach too. An argument that cannot be packed (a
database session, say) cannot prove two calls equal, so such a call runs the function
and stores nothing (logged once; ``ignore=`` leaves such arguments out of the key).

The result comes back as the annotated return type, validated by pydantic's
``TypeAdapter``; every caller gets its own copy, except for types proven immutable
(``values.is_immutable``), which share one instance.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar

from .cache import TieredCache
from .data import DataCache
from .entry import DataEntry
from .exceptions import ValueNotSerializable
from .identity import Identity
from .install import get_cache
from .loading import Load
from .values import adapter_for, is_immutable, pack_key, return_type

if typing.TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = ["CachedFunction"]

logger = logging.getLogger("fastapi_tiered_cache")
P = ParamSpec("P")
R = TypeVar("R")
_SIMPLE = frozenset({str, int})  # argument types whose == is exactly "packs the same"
_MEMO_SIZE = 4096


class _Call:
    """What one argument set resolves to (memoised for simple arguments), and its storage
    key while the generation counters stay at ``version``."""

    __slots__ = ("digest", "key", "tags", "version", "where")

    def __init__(self, digest: str, tags: tuple[str, ...], where: Identity) -> None:
        self.digest = digest
        self.tags = tags
        self.where = where
        self.key = ""
        self.version = -1


class CachedFunction(Generic[P, R]):
    """An ``async def`` wrapped by ``@cached``; call it as the function itself.

    - ``await f(...)``: the cached result (computed once per cold key, fleet-wide).
    - ``await f.refresh(...)``: compute now, store, return (a per-call bypass of the read).
    - ``await f.invalidate(...)``: drop the entry of one argument set, in every worker.
    """

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        ttl: float,
        tags: tuple[str, ...],
        key: str | None,
        stale_while_revalidate: float,
        stale_if_error: float,
        early_refresh: float,
        scoped: str | None,
        ignore: frozenset[str],
        version: str,
        cache: TieredCache | Callable[[], TieredCache] | None,
    ) -> None:
        self.fn = fn
        self.signature = inspect.signature(fn)
        self.ttl = ttl
        self.tags = tags
        self.key = key
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.early_refresh = early_refresh
        self.scoped = scoped
        self.ignore = ignore
        self.label = f"@{fn.__module__}.{fn.__qualname__}"
        self.identity = f"{self.label}:{version}".encode() + _captured(fn)
        self._cache = cache
        self._fixed = cache if isinstance(cache, TieredCache) else None
        self._memo: dict[tuple[Any, ...], _Call] = {}
        self._memo_of: DataCache | None = None
        self._return: tuple[TypeAdapter[Any] | None, bool] | None = None
        self._warned = False
        functools.update_wrapper(self, fn)

    # -- resolution -------------------------------------------------------------------
    def cache(self) -> TieredCache:
        """The cache this function uses: the one given, else the process's (``get_cache()``)."""
        given = self._cache
        if given is None:
            return get_cache()
        return given if isinstance(given, TieredCache) else given()

    def returns(self) -> tuple[TypeAdapter[Any] | None, bool]:
        """The adapter of the annotated return type and whether it is immutable (resolved
        on first use, so a model defined after the function is fine)."""
        found = self._return
        if found is None:
            hint = return_type(self.fn)
            found = self._return = (adapter_for(hint), is_immutable(hint))
        return found

    def call_of(
        self, data: DataCache, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Call | None:
        """The entry an argument set maps to; None when the arguments cannot be keyed."""
        if self._memo_of is not data:
            self._memo.clear()
            self._memo_of = data
        memo_key: tuple[Any, ...] | None = None
        if all(type(a) in _SIMPLE for a in args) and all(
            type(v) in _SIMPLE for v in kwargs.values()
        ):
            memo_key = (args, tuple(kwargs.items())) if kwargs else args
            found = self._memo.get(memo_key)
            if found is not None:
                return found
        call = self._bind(data, args, kwargs)
        if call is not None and memo_key is not None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[memo_key] = call
        return call

    def _bind(self, data: DataCache, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        principal = arguments.get(self.scoped) if self.scoped is not None else None
        if principal is not None and not isinstance(principal, (str, Identity)):
            raise TypeError(
                f"{self.label}: the scoped argument {self.scoped!r} must be a principal (str)"
                f" or an Identity, not {type(principal).__name__}"
            )
        where = data.where(principal)
        tags = tuple(tag.format(**arguments) for tag in self.tags)
        if self.key is not None:
            return _Call(data.digest_of(self.key.format(**arguments)), tags, where)
        parts: list[Any] = []
        for name, value in arguments.items():
            if name in self.ignore:
                continue
            kind = self.signature.parameters[name].kind
            parts += [
                name,
                sorted(value.items()) if kind is inspect.Parameter.VAR_KEYWORD else value,
            ]
        try:
            packed = pack_key(parts)
        except ValueNotSerializable as exc:
            self._warn(exc)
            return None
        return _Call(data.digest(b"call", self.identity, packed), tags, where)

    def _warn(self, exc: ValueNotSerializable) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "%s: an argument cannot be part of a cache key (%s); these calls are not"
                " cached. Leave it out of the key with @cached(ignore=[...]).",
                self.label,
                exc,
                extra={"event": "unkeyable"},
            )

    def job(
        self,
        data: DataCache,
        call: _Call,
        key: str,
        shared: bool,
        compute: Callable[[], Awaitable[Any]],
    ) -> Load:
        adapter, immutable = self.returns()
        return Load(
            key,
            shared,
            compute,
            tenant=call.where.tenant,
            ttl=self.ttl or data.cache.settings.default_ttl,
            tags=call.tags,
            adapter=adapter,
            immutable=immutable,
            stale_while_revalidate=self.stale_while_revalidate,
            stale_if_error=self.stale_if_error,
            early_refresh=self.early_refresh,
            label=self.label,
        )

    # -- calls ------------------------------------------------------------------------
    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        cache = self._fixed or self.cache()
        data = cache.data
        call = None
        if not kwargs and self._memo_of is data:  # the memo, inline: the L1 hit path
            for arg in args:
                if type(arg) not in _SIMPLE:
                    break
            else:
                call = self._memo.get(args)
        if call is None:
            call = self.call_of(data, args, kwargs)
            if call is None:
                return await self.fn(*args, **kwargs)
        generations, loop = cache.generations, data.loop
        if (
            call.version == generations.version
            and generations.trusted
            and loop is not None
            and loop.is_running()  # data.start() ran in this loop (cheaper to ask)
            and not self.early_refresh
        ):  # an L1 hit needs nothing awaited, nothing built
            l1 = cache.store.l1
            local = l1.lookup(call.key) if l1 is not None else None
            if type(local) is DataEntry and cache.clock() - local.stored_at < local.fresh_for:
                adapter, immutable = self._return or self.returns()
                shared = local.shared
                if immutable and shared is not None and shared[0] is adapter:
                    value: R = shared[1]  # type: ignore[assignment]
                else:
                    value = data.value_of(local, adapter, immutable)
                stats = cache.stats
                stats.l1_hits += 1
                routes = stats.l1_route_hits
                routes[self.label] = routes.get(self.label, 0) + 1
                if cache.exporters:
                    cache.export_l1_hit(self.label, call.where.tenant)
                return value
        return await self._load(data, call, functools.partial(self.fn, *args, **kwargs))

    async def _load(
        self,
        data: DataCache,
        call: _Call,
        compute: Callable[[], Awaitable[Any]],
        refresh: bool = False,
    ) -> R:
        key = data.peek_key(call.digest, call.where)  # known generations: nothing to await
        shared = key is not None
        if key is None:
            key, shared = await data.storage_key(call.digest, call.where)
        generations = data.cache.generations
        if shared and generations.trusted:
            call.key, call.version = key, generations.version
        job = self.job(data, call, key, shared, compute)
        job.refresh = refresh
        result: R = await data.load(job)
        return result

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Compute now (whatever is stored), store the result and return it."""
        data = self.cache().data
        call = self.call_of(data, args, kwargs)
        if call is None:
            return await self.fn(*args, **kwargs)
        return await self._load(data, call, functools.partial(self.fn, *args, **kwargs), True)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the entry of this argument set, in both tiers and every worker's L1."""
        data = self.cache().data
        call = self.call_of(data, args, kwargs)
        if call is not None:
            key, _ = await data.storage_key(call.digest, call.where)
            await data.forget(key)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """On a class, a method: ``self`` is bound (leave it out of the key with
        ``ignore=["self"]`` unless it can be packed)."""
        if instance is None:
            return self
        return _Bound(self, instance)


class _Bound:
    """A ``CachedFunction`` used as a method, with its instance bound."""

    def __init__(self, function: CachedFunction[..., Any], instance: object) -> None:
        self.function = function
        self.instance = instance

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.function(self.instance, *args, **kwargs)

    async def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return await self.function.refresh(self.instance, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> None:
        await self.function.invalidate(self.instance, *args, **kwargs)


_CAPTURABLE = (str, int, float, bool, bytes, type(None))


def _captured(fn: Callable[..., Any]) -> bytes:
    """The plain values ``fn`` captures (a factory's table name, say), packed: two
    functions made by one factory share a module and a qualified name, so without them
    ``orders(1)`` would be answered with ``users(1)``. Only immutable plain values and
    enum members count (a captured list or session is not what selects the result and
    may change); nothing captured, nothing added (the keys of other functions stay)."""
    closure = getattr(fn, "__closure__", None)
    code = getattr(fn, "__code__", None)
    if not closure or code is None:
        return b""
    packed = []
    for name, cell in zip(code.co_freevars, closure, strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # not bound yet
            continue
        if type(value) in _CAPTURABLE or isinstance(value, enum.Enum):
            with contextlib.suppress(ValueNotSerializable):  # an enum of odd values
                packed.append(pack_key([name, value]))
    return b"\0" + b"".join(packed) if packed else b""
