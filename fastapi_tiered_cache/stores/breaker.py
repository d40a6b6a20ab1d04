"""``CircuitBreaker``: stop asking a failing L2 until it has had time to recover.

The states::

    closed ──(threshold consecutive failures)──> open
    open ──(cooldown seconds)──> half_open: one probe operation is let through
    half_open ──(probe succeeds)──> closed
    half_open ──(probe fails)──> open (for another cooldown)

It is pure mechanism: the caller asks ``allow()`` before an operation and reports how it
ended with ``success()``, ``failure()`` or ``release()`` (an ending that says nothing about
the server: the caller was cancelled, its event loop was too busy, its connection pool was
full). The clock is injected; nothing here sleeps or does I/O.

The two kinds of ``StoreUnavailable`` whose difference matters to the breaker live in
``exceptions``: ``StoreTimeout`` (no answer within the budget, counted) and ``Overloaded``
(this process could not run the operation in time, not counted); they are re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from enum import Enum

from ..exceptions import Overloaded, StoreTimeout

__all__ = ["BreakerState", "CircuitBreaker", "Overloaded", "StoreTimeout"]

logger = logging.getLogger("fastapi_tiered_cache")


class BreakerState(str, Enum):
    """Where a ``CircuitBreaker`` is; also a metrics and log label."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


Transition = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Consecutive-failure circuit breaker with one half-open probe.

    - ``threshold``: consecutive failures that open it (at least 1).
    - ``cooldown``: seconds it stays open before one probe is let through.
    - ``clock``: monotonic seconds (tests inject a fake one).
    - ``on_transition``: called with ``(old, new)`` on every change of state, after logging.
    - ``name``: what it protects, for the log lines.

    ``transitions`` counts how many times each state was entered. Example::

        breaker = CircuitBreaker(threshold=5, cooldown=5.0)
        if breaker.allow():
            try:
                value = await redis.get(key)
            except StoreUnavailable:
                breaker.failure()
            else:
                breaker.success()
    """

    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 5.0,  # seconds
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
        name: str = "redis",
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if cooldown <= 0:
            raise ValueError("cooldown must be positive")
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.on_transition = on_transition
        self.name = name
        self.failures = 0  # consecutive, while closed
        self.transitions: Counter[BreakerState] = Counter()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_since: float | None = None  # when the half-open probe was let through

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self.state} failures={self.failures}>"

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cooldown is over reads as half-open."""
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.cooldown:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether an operation may go to the store now (half-open: only the one probe)."""
        if self._state is BreakerState.CLOSED:  # every operation of a healthy store
            return True
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self.clock()
        # A probe whose caller vanished without reporting must not wedge the breaker.
        if self._probe_since is None or now - self._probe_since >= self.cooldown:
            self._probe_since = now
            return True
        return False

    def success(self) -> None:
        """The store answered."""
        if self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self.failures = 0
        # While open: a late answer to an operation let through before it opened.

    def failure(self) -> None:
        """The store failed to answer (timeout, refused, reset, error reply)."""
        if self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.OPEN)
        elif self._state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.threshold:
                self._move(BreakerState.OPEN)

    def release(self) -> None:
        """The operation ended without telling anything about the store; free the probe."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_since = None

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self._probe_since = None
        if new is BreakerState.OPEN:
            self._opened_at = self.clock()
            why = (
                "the probe failed"
                if old is BreakerState.HALF_OPEN
                else f"{self.failures} consecutive failures"
            )
            logger.warning(
                "circuit breaker for %s opened (%s): not asking it for %.3gs",
                self.name,
                why,
                self.cooldown,
                extra={"event": "breaker_open"},
            )
        elif new is BreakerState.CLOSED:
            logger.info(
                "circuit breaker for %s closed: it answers again",
                self.name,
                extra={"event": "breaker_closed"},
            )
        else:
            logger.info(
                "circuit breaker for %s half-open: probing",
                self.name,
                extra={"event": "breaker_half_open"},
            )
        self.failures = 0
        self.transitions[new] += 1
        if self.on_transition is not None:
            self.on_transition(old, new)
