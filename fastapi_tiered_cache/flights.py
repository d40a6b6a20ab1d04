"""Stampede protection in one process: one call per key at a time.

When a popular entry expires, every request for it misses at once. Varnish answers this
with *request coalescing*: the first miss fetches, later ones wait on a "waiting list"
and are served the object it stored; a response that turns out uncacheable leaves a
*hit-for-miss* marker so the next requests skip the wait. This module is the in-process
half of that mechanism (``leases`` is the fleet's):

- ``SingleFlight``: concurrent misses *in this process* share one call (Go's
  ``singleflight``). Waiters never inherit the leader's error: if it fails or is cancelled
  they get ``LeaderFailed`` and go to the origin themselves. Under trio (through anyio) it
  uses anyio's primitives.
- ``HitForMiss``: keys recently found uncacheable, so their requests do not queue up.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import anyio
from cachetools import TTLCache

from .exceptions import CacheError

__all__ = ["HitForMiss", "LeaderFailed", "SingleFlight"]

T = TypeVar("T")
FailureReason = Literal["error", "cancelled", "timeout"]


class LeaderFailed(CacheError):
    """The call this request waited on produced nothing to share; go to the origin.

    ``reason`` (also a metrics label): ``error`` (the leader's call raised), ``cancelled``
    (its client went away; calling ``run`` again re-elects a leader) or ``timeout``.
    """

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(f"the coalesced call did not complete: {reason}")
        self.reason: FailureReason = reason


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: FailureReason


class SingleFlight(Generic[T]):
    """Concurrent ``run`` calls for one key in this process share one ``compute``.

    - ``wait``: most seconds a waiter waits for the leader (``None``: as long as it runs).

    Example::

        flight: SingleFlight[CachedResponse | None] = SingleFlight()
        try:
            entry, leader = await flight.run(key, fetch)
        except LeaderFailed:
            entry, leader = await fetch(), True
    """

    def __init__(self, wait: float | None = None) -> None:
        self.wait = wait
        self._flights: dict[str, asyncio.Future[T | _Failure]] = {}
        self._anyio: _AnyioFlights[T] = _AnyioFlights(wait)  # under trio (through anyio)

    def __len__(self) -> int:
        """Keys with a call in flight."""
        return len(self._flights)

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``(result, True)`` for the leader, ``(the leader's result, False)`` for waiters.

        The leader's own exception or cancellation propagates to the leader only; its
        waiters get ``LeaderFailed``.
        """
        loop = asyncio._get_running_loop()
        if loop is None:  # not asyncio: trio, through anyio
            return await self._anyio.run(key, compute)
        flight = self._flights.get(key)
        if flight is not None and flight.get_loop() is loop:  # another loop's died with it
            return await self._follow(flight), False
        flight = loop.create_future()
        self._flights[key] = flight
        try:
            result = await compute()
        except asyncio.CancelledError:
            self._land(key, flight, _Failure("cancelled"))
            raise
        except BaseException:
            self._land(key, flight, _Failure("error"))
            raise
        self._land(key, flight, result)
        return result, True

    async def _follow(self, flight: asyncio.Future[T | _Failure]) -> T:
        # asyncio.wait never cancels the flight, so a waiter's disconnect touches nobody else.
        done, _ = await asyncio.wait({flight}, timeout=self.wait)
        if not done:
            raise LeaderFailed("timeout")
        outcome = flight.result()
        if isinstance(outcome, _Failure):
            raise LeaderFailed(outcome.reason)
        return outcome

    def _land(self, key: str, flight: asyncio.Future[T | _Failure], outcome: T | _Failure) -> None:
        # Synchronous on purpose: it must complete even in a task being cancelled.
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.done():
            flight.set_result(outcome)


class _AnyioCall(Generic[T]):
    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: T | _Failure = _Failure("error")


class _AnyioFlights(Generic[T]):
    """``SingleFlight`` with anyio's primitives, for trio: the same contract, slower."""

    def __init__(self, wait: float | None) -> None:
        self.wait = wait
        self._calls: dict[str, _AnyioCall[T]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        call = self._calls.get(key)
        if call is not None:
            with anyio.move_on_after(math.inf if self.wait is None else self.wait):
                await call.done.wait()
            outcome = call.outcome
            if not call.done.is_set():
                raise LeaderFailed("timeout")
            if isinstance(outcome, _Failure):
                raise LeaderFailed(outcome.reason)
            return outcome, False
        call = self._calls[key] = _AnyioCall()
        try:
            call.outcome = result = await compute()
        except BaseException as exc:  # a cancellation is trio's Cancelled, not asyncio's
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            call.outcome = _Failure("cancelled" if cancelled else "error")
            raise
        finally:  # synchronous: it must complete even in a cancelled task
            if self._calls.get(key) is call:
                del self._calls[key]
            call.done.set()
        return result, True


class HitForMiss:
    """Keys whose response was uncacheable, remembered for ``ttl`` seconds (Varnish's
    hit-for-miss object): their requests go straight to the origin instead of queueing
    behind a call whose result they could not use.

    - ``ttl``: seconds a key is remembered; 0 turns the map off.
    - ``maxsize``: most keys remembered (the oldest go first).
    - ``timer``: a monotonic clock in seconds (injected by tests).
    """

    def __init__(
        self, ttl: float, maxsize: int = 10_000, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._keys: TTLCache[str, bool] = TTLCache(maxsize=max(maxsize, 1), ttl=ttl, timer=timer)

    def __contains__(self, key: object) -> bool:
        return self.ttl > 0 and key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def remember(self, key: str) -> None:
        if self.ttl > 0:
            self._keys[key] = True

    def forget(self, key: str) -> None:
        """Drop ``key``, for example once its response was cacheable again."""
        self._keys.pop(key, None)
