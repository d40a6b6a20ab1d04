"""Telling the other processes of a purge, even when the first try to publish it fails.

A purge deletes the entries in Redis, then announces itself on the bus so every other
process drops its L1 copies. If that publish fails (a timeout under load, a broken
connection), nothing else would ever tell them: their own pings keep coming back, so
they trust their L1 and serve the old copies for their whole L1 life. So a message that
could not be sent is queued and retried in the background, in order, until it is sent
or until every copy it names has left L1 anyway (``give_up_after``, the longest an L1
copy lives).

The queue is bounded: past ``MAX_PENDING`` messages (a long outage with many writes) they
are replaced by one ``reset``, which makes every process drop its whole L1 and distrust
what it knew (as when its own bus is lost). While messages wait, new ones queue behind
them without a try of their own: during an outage only the first write pays a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .stores.loops import background_task, ours
from .tasks import finish, raise_if_cancelled

__all__ = ["MAX_PENDING", "RESET", "Announcements"]

logger = logging.getLogger("fastapi_tiered_cache")

MAX_PENDING = 256  # messages waiting before they collapse into one reset
RESET = "reset"  # the message kind: drop all of L1
_FIRST_RETRY = 0.05  # seconds; doubled after each failure, up to _LAST_RETRY
_LAST_RETRY = 1.0

Publish = Callable[[str, Any], Awaitable[None]]


class Announcements:
    """The bus messages of one process that must reach the others.

    - ``publish(kind, data)``: sends one message (raises on failure), or ``None`` without
      a bus (then there is nobody to tell).
    - ``give_up_after``: seconds a message is retried.
    - ``timer``: monotonic seconds.
    """

    def __init__(
        self,
        publish: Publish | None,
        *,
        give_up_after: float = 30.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.publish = publish
        self.give_up_after = give_up_after
        self.timer = timer
        self.pending: deque[tuple[str, Any, float]] = deque()  # kind, data, queued at
        self.retried = 0  # messages sent late
        self.abandoned = 0  # messages given up on (their copies expired meanwhile)
        self._task: asyncio.Task[None] | None = None

    async def send(self, kind: str, data: Any, *, now: bool = True) -> None:
        """Send a message, or queue it for the retries when it cannot be sent now (or
        ``now`` is False: Redis is known to be failing). Never raises."""
        if self.publish is None:
            return
        if now and not self.pending:
            try:
                await self.publish(kind, data)
            except Exception as exc:
                logger.warning(
                    "purge not announced (%s): retrying in the background",
                    type(exc).__name__,
                    extra={"event": "announce_retry"},
                )
            else:
                return
        self._queue(kind, data)

    def _queue(self, kind: str, data: Any) -> None:
        pending = self.pending
        if pending and pending[0][0] == RESET:
            return  # a reset already drops everything this message would
        if len(pending) >= MAX_PENDING:
            queued_at = pending[0][2]
            pending.clear()
            pending.append((RESET, None, queued_at))
        else:
            pending.append((kind, data, self.timer()))
        self._task = background_task(self._task, self._drain, "ftc-announce")

    async def _drain(self) -> None:
        delay = _FIRST_RETRY
        pending = self.pending
        while pending:
            raise_if_cancelled()
            await asyncio.sleep(delay)
            self._forget_expired()
            try:
                while pending:
                    kind, data, _ = pending[0]
                    await self.publish(kind, data)  # type: ignore[misc]
                    pending.popleft()
                    self.retried += 1
            except Exception:
                delay = min(delay * 2, _LAST_RETRY)
            else:
                logger.info("purges announced after a retry", extra={"event": "announce_sent"})

    def _forget_expired(self) -> None:
        pending = self.pending
        while pending and self.timer() - pending[0][2] >= self.give_up_after:
            pending.popleft()
            self.abandoned += 1
            logger.error(
                "a purge was never announced: other processes' L1 copies lived out their time",
                extra={"event": "announce_failed"},
            )

    async def close(self) -> None:
        """Stop retrying (this loop's task only: another loop's died with it)."""
        task = self._task
        if task is not None and ours(task):
            await finish([task])
            self._task = None
