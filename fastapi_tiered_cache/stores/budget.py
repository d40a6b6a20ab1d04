"""The time budget of Redis operations: one heartbeat per event loop, no timer or task per
operation.

An operation runs in its caller's task (no task to create, schedule and wait for, no timer
to arm and cancel: on a hit, that bookkeeping cost as much as the hit itself). While any
operation is in flight, one heartbeat per loop (every tenth of the budget, 2 to 10 ms)
measures how late the loop runs it (a period in which it ran more than one period late was
stalled, and is not charged to anyone's budget) and sweeps the operations in flight: one
whose budget is spent gets its task cancelled, as ``asyncio.timeout`` would, at most one
period late.

An operation whose budget ran out is not awaited in its caller's task: ``Driven`` hands the
suspended coroutine to a task of its own, which delivers the cancellation and lets it end
(redis-py then drops the connection it was using), while the caller waits for it one more
budget at most. So a client slow to honour its cancellation (redis-py can turn one into a
connect retry and a backoff sleep) cannot hold a request longer than that. Other
cancellations (the caller's own, an ``asyncio.timeout`` inside the client) reach the
command as with a plain ``await``; if the command is slow to honour one, the heartbeat's
comes when the budget runs out.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Driven", "Flight", "Handover", "LoopBudget", "drive", "still_cancelled", "uncancel"]

T = TypeVar("T")


class Flight:
    """One operation in flight: its task, when it started, what it may spend."""

    __slots__ = (
        "cancelling",
        "delivered",
        "expired",
        "limit",
        "sent",
        "stalled",
        "started",
        "task",
        "timeout",
    )

    def __init__(
        self, task: asyncio.Task[Any], started: float, stalled: float, timeout: float, limit: float
    ) -> None:
        self.task = task
        self.started = started  # loop time
        self.stalled = stalled  # the loop's stalled seconds when it started
        self.timeout = timeout  # seconds of budget (time the loop could listen)
        self.limit = limit  # most wall seconds, however busy the loop
        self.sent = False  # holds a slot and talks to Redis
        self.expired = False  # the heartbeat cancelled its task
        self.delivered = 0  # other cancellations thrown into the command
        # Cancellations requested of the task before this one (3.11+), to tell ours apart.
        self.cancelling = 0
        if sys.version_info >= (3, 11):
            self.cancelling = task.cancelling()


class LoopBudget:
    """How long one event loop was too busy to run a timer, and the deadlines of the
    operations in flight in it.

    - ``period``: seconds between heartbeats while anything is in flight.
    - ``slots``: most operations talking to Redis at once (None: no bound).

    The heartbeat runs only while an operation is in flight, so an idle process has no
    timer ticking and a closed loop has nothing pending.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float, slots: int | None) -> None:
        self.loop = loop
        self.period = period
        self.slots = asyncio.Semaphore(slots) if slots else None
        self._stalled = 0.0  # seconds, over completed heartbeat periods
        self._last = 0.0  # when the heartbeat last ran
        self._handle: asyncio.TimerHandle | None = None
        self._flights: dict[Flight, None] = {}  # in start order

    def begin(self, task: asyncio.Task[Any], timeout: float, limit: float) -> Flight:
        """Start the clock of an operation run by ``task``."""
        if self._handle is None:
            self._last = self.loop.time()
            self._handle = self.loop.call_at(self._last + self.period, self._beat)
        flight = Flight(task, self.loop.time(), self.stalled(), timeout, limit)
        self._flights[flight] = None
        return flight

    def end(self, flight: Flight) -> None:
        # The heartbeat stops itself at its next beat if nothing is left in flight:
        # cheaper than a new timer for every operation of a mostly idle process.
        self._flights.pop(flight, None)

    def spent(self, flight: Flight) -> float:
        """Budget ``flight`` used: time the loop could have handled its answer."""
        return self.loop.time() - flight.started - (self.stalled() - flight.stalled)

    def stalled(self) -> float:
        """Seconds the loop was stalled so far, counting the current period if overdue."""
        overdue = self.loop.time() - self._last
        return self._stalled + (overdue if overdue > 2 * self.period else 0.0)

    def _beat(self) -> None:
        now = self.loop.time()
        if now - self._last > 2 * self.period:  # ran more than one period late
            self._stalled += now - self._last
        self._last = now
        if not self._flights or self.loop.is_closed():
            self._handle = None
            return
        self._sweep(now)
        self._handle = self.loop.call_at(now + self.period, self._beat)

    def _sweep(self, now: float) -> None:
        stalled = self._stalled
        expired = []
        for flight in self._flights:
            wall = now - flight.started
            if wall < flight.timeout:
                continue  # the common case: nothing to compute
            if wall - (stalled - flight.stalled) >= flight.timeout or wall >= flight.limit:
                expired.append(flight)
        for flight in expired:
            if _pending(flight):
                # Cancelled already and not yet told (the client's own socket timeout
                # fired with us): the command sees that first; the next beat looks again.
                continue
            del self._flights[flight]
            flight.expired = True
            flight.task.cancel()


def _pending(flight: Flight) -> bool:
    if sys.version_info >= (3, 11):
        return flight.task.cancelling() > flight.cancelling + flight.delivered
    return False  # pragma: no cover - Python 3.10 does not count cancellations


def still_cancelled(flight: Flight, caught: BaseException | None) -> bool:
    """Whether ``flight``'s task has a cancellation of someone else's pending, once the
    heartbeat's was withdrawn (``caught``: one that reached it meanwhile; on Python 3.10,
    which does not count cancellations, that one is taken for the caller's)."""
    if sys.version_info >= (3, 11):
        return flight.task.cancelling() > flight.cancelling
    return caught is not None  # pragma: no cover


def uncancel(flight: Flight) -> None:
    """Withdraw the heartbeat's cancellation of ``flight``'s task."""
    if flight.expired:
        flight.expired = False
        if sys.version_info >= (3, 11):
            flight.task.uncancel()


class Handover(BaseException):
    """Raised by ``Driven`` when its task was cancelled: ``coroutine`` (suspended) is for
    the caller to finish elsewhere (``drive``), ``error`` the cancellation it must see."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any], error: BaseException) -> None:
        super().__init__()
        self.coroutine = coroutine
        self.error = error


class Driven(Generic[T]):
    """``await Driven(coroutine, flight)`` is ``await coroutine``, except when the
    heartbeat cancels ``flight``: that cancellation is not thrown into the coroutine,
    ``Handover`` is raised instead, with the coroutine still suspended, so the caller can
    let it end in a task of its own (``drive``). Every other cancellation (the caller's,
    or an ``asyncio.timeout`` inside the client) is the coroutine's to see, as with a plain
    ``await``; should the coroutine be slow to honour it, the heartbeat's comes next."""

    __slots__ = ("coroutine", "error", "flight")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, T],
        flight: Flight | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.coroutine = coroutine
        self.flight = flight
        self.error = error  # thrown in first (a coroutine resumed by ``drive``)

    def __await__(self) -> Generator[Any, Any, T]:
        coroutine, flight = self.coroutine, self.flight
        value: Any = None
        error = self.error
        while True:
            try:
                yielded = coroutine.send(value) if error is None else coroutine.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value = error = None
            try:
                value = yield yielded
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # thrown in by the task
                if flight is not None:
                    if flight.expired:
                        raise Handover(coroutine, exc) from None
                    if isinstance(exc, asyncio.CancelledError):
                        flight.delivered += 1
                error = exc


async def drive(handover: Handover) -> Any:
    """Finish a handed-over coroutine in the running task: deliver its cancellation, let
    it end."""
    return await Driven(handover.coroutine, None, handover.error)
