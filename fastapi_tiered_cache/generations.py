"""Generation counters: O(1) purges of everything, a tenant, or one identity's scope.

Every key embeds three counters, ``g{global}.{tenant}.{scope}``. A purge increments one
counter in Redis (``INCR``); from then on every process computes keys nobody has written,
and the old entries simply expire. Nothing is scanned or deleted.

Reading the counters on every request would cost a round trip, so each process keeps
them in memory and the invalidation bus pushes every increment to every process. That
copy is trusted only while the bus proves it heard every message (``Coherence``);
otherwise counters are re-read (for at most ``degraded_ttl`` seconds each, the coherence
bound) so a purge made elsewhere is seen within that bound. Concurrent requests that need
the same unknown counters share one read.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from .bus import Coherence
from .exceptions import StoreUnavailable
from .stores.base import Runner, TimeoutRunner

__all__ = ["Generations", "counter_names"]

_MAX_CACHED = 50_000


def counter_names(namespace: str, tenant: str, scope: str) -> tuple[str, str, str]:
    """The Redis keys of the three counters a key in (tenant, scope) depends on."""
    return (
        f"{namespace}:gen",
        f"{namespace}:gen:t:{tenant}",
        f"{namespace}:gen:s:{tenant}:{scope}",
    )


class Generations:
    """Process-local view of the generation counters.

    - ``client``: a ``redis.asyncio`` client, or ``None`` for a single process (L1 only),
      where counters live in memory alone.
    - ``timeout``: seconds allowed per Redis operation (when no ``run`` is given).
    - ``run``: the ``Runner`` of the Redis commands (the cache passes its store's, so a
      read is bounded, abandoned if slow to cancel, and seen by the circuit breaker).
    - ``purge_run``: the ``Runner`` of ``bump`` (default ``run``); the cache passes one that
      an open breaker does not stop, so a purge always tries.
    - ``timer``: monotonic seconds (injected by tests).
    - ``coherence``: whether the bus is trusted now (without one: trusted without Redis,
      else never).
    """

    def __init__(
        self,
        client: Any,
        namespace: str,
        *,
        timeout: float = 0.05,
        degraded_ttl: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
        run: Runner | None = None,
        purge_run: Runner | None = None,
        coherence: Coherence | None = None,
    ) -> None:
        self.client = client
        self.run: Runner = run if run is not None else TimeoutRunner(timeout)
        self.purge_run: Runner = purge_run if purge_run is not None else self.run
        self.namespace = namespace
        self.timeout = timeout
        self.degraded_ttl = degraded_ttl
        self.timer = timer
        self.coherence = coherence or Coherence(
            degraded_ttl, degraded_ttl, shared=client is not None
        )
        self.version = 0  # moves whenever any known counter may have changed
        self._values: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._names: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._reads: dict[tuple[str, str, str], asyncio.Future[list[int]]] = {}

    @property
    def trusted(self) -> bool:
        """Whether the counters held here are known to be current (the bus is trusted)."""
        return self.coherence.trusted()

    def _cached(self, name: str) -> int | None:
        found = self._values.get(name)
        if found is None:
            return None
        value, read_at = found
        if self.timer() - read_at > self.degraded_ttl and not self.coherence.trusted():
            return None
        return value

    def _remember(self, name: str, value: int) -> None:
        old = self._values.get(name)
        if old is None or old[0] != value:
            self.version += 1
        self._values[name] = (value, self.timer())
        self._values.move_to_end(name)
        while len(self._values) > _MAX_CACHED:
            self._values.popitem(last=False)

    def peek(self, tenant: str, scope: str) -> str | None:
        """The ``g..`` key part when every counter is known locally (the fast path)."""
        names = self._names.get((tenant, scope))
        if names is None:
            if len(self._names) > _MAX_CACHED:
                self._names.clear()
            names = self._names[tenant, scope] = counter_names(self.namespace, tenant, scope)
        parts = []
        for name in names:
            value = self._cached(name)
            if value is None:
                if self.client is None:
                    value = 0
                else:
                    return None
            parts.append(value)
        return "g{}.{}.{}".format(*parts)

    async def current(self, tenant: str, scope: str) -> str | None:
        """The ``g..`` key part, reading unknown counters from Redis (one round trip).

        ``None`` means the counters cannot be known now (Redis unreachable): the caller
        must not read or write shared entries under a guessed generation.
        """
        known = self.peek(tenant, scope)
        if known is not None:
            return known
        names = counter_names(self.namespace, tenant, scope)
        try:
            values = await self._shared_read(names)
        except StoreUnavailable:
            return None
        return "g{}.{}.{}".format(*values)

    async def _shared_read(self, names: tuple[str, str, str]) -> list[int]:
        """One read of ``names`` for every request waiting on them at once (a burst of a
        fresh process would otherwise open a connection per request)."""
        loop = asyncio.get_running_loop()
        pending = self._reads.get(names)
        if pending is not None and pending.get_loop() is loop:
            return list(await asyncio.shield(pending))
        future: asyncio.Future[list[int]] = loop.create_future()
        self._reads[names] = future
        try:
            values = await self.run(lambda: self._read(names), "generations")
        except BaseException as exc:
            if not future.done():
                future.set_exception(StoreUnavailable(f"generations: {exc!r}"))
                future.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            if self._reads.get(names) is future:
                del self._reads[names]
        for name, value in zip(names, values, strict=True):
            self._remember(name, value)
        if not future.done():
            future.set_result(values)
        return values

    async def _read(self, names: Sequence[str]) -> list[int]:
        # One GET per counter in a pipeline: on a cluster they live on different slots.
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        replies = await pipe.execute()
        return [int(reply) if reply is not None else 0 for reply in replies]

    async def bump(self, name: str) -> int:
        """Increment a counter everywhere; returns its new value.

        Raises ``StoreUnavailable`` when Redis could not do it.
        """
        if self.client is None:
            value = (self._cached(name) or 0) + 1
        else:
            value = int(await self.purge_run(lambda: self.client.incr(name), "INCR", 10))
        self._remember(name, value)
        return value

    def apply(self, name: str, value: int) -> None:
        """A counter value announced on the bus (never moves a counter backwards)."""
        known = self._cached(name)
        if known is None or value > known:
            self._remember(name, value)

    def forget(self) -> None:
        """Drop every cached value (the bus lost messages, so they may be out of date)."""
        self._values.clear()
        self.version += 1
