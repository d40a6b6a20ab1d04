"""Purges Redis did not complete, finished when it answers again.

A write whose purge meets a Redis fault (a timeout, a partition, a paused server) still
succeeds: its L1 copies are gone and the other processes are told. But the entries in
Redis are still there, and once Redis answers again every process would read them back,
old, for the rest of their life. So the index names of an unfinished purge are kept and
the purge is run again in the background (backing off up to ``_LAST_RETRY`` seconds)
until Redis completes it. Purging again is harmless: it deletes what is indexed now.

Bounded: past ``MAX_NAMES`` waiting names (a long outage with many writes) they are
replaced by one purge of everything (the global generation moves on, O(1)), which covers
them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from .stores.loops import background_task, ours
from .tasks import finish, raise_if_cancelled

__all__ = ["MAX_NAMES", "UnfinishedPurges"]

logger = logging.getLogger("fastapi_tiered_cache")

MAX_NAMES = 10_000  # index names waiting before they collapse into a purge of everything
_BATCH = 500  # names per retried purge
_FIRST_RETRY = 0.1  # seconds; doubled after each failure, up to _LAST_RETRY
_LAST_RETRY = 5.0


class UnfinishedPurges:
    """The purges of one process that Redis has not completed yet.

    - ``purge(names, soft)``: runs the purge of ``names`` again (raises while Redis fails).
    - ``purge_all()``: purges everything (raises while Redis fails).
    """

    def __init__(
        self,
        purge: Callable[[list[str], bool], Awaitable[object]],
        purge_all: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.purge = purge
        self.purge_all = purge_all
        self.pending: dict[tuple[str, bool], None] = {}  # (name, soft), oldest first
        self.everything = False
        self.finished = 0  # purges completed late
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.pending) + self.everything

    def add(self, names: Iterable[str], *, soft: bool = False) -> None:
        """Keep ``names`` for a purge once Redis answers (call from the event loop)."""
        for name in names:
            self.pending[(name, soft)] = None
        if len(self.pending) > MAX_NAMES and self.purge_all is not None:
            self.pending.clear()
            self.everything = True
        if not self:
            return
        self._task = background_task(self._task, self._drain, "ftc-unfinished-purges")

    async def _drain(self) -> None:
        delay = _FIRST_RETRY
        while self:
            raise_if_cancelled()
            await asyncio.sleep(delay)
            try:
                await self._finish_some()
            except Exception as exc:
                delay = min(delay * 2, _LAST_RETRY)
                logger.debug("unfinished purges wait for Redis: %s", type(exc).__name__)
            else:
                delay = _FIRST_RETRY
        logger.info("unfinished purges completed", extra={"event": "purges_completed"})

    async def _finish_some(self) -> None:
        if self.everything and self.purge_all is not None:
            await self.purge_all()
            self.everything = False
            self.pending.clear()
            self.finished += 1
            return
        batch = list(self.pending)[:_BATCH]
        for soft in (False, True):
            names = [name for name, is_soft in batch if is_soft is soft]
            if names:
                await self.purge(names, soft)
                for name in names:
                    self.pending.pop((name, soft), None)
                self.finished += 1

    async def close(self) -> None:
        """Stop retrying (this loop's task only: another loop's died with it). What is
        still pending stays, for the next loop that purges."""
        task = self._task
        if task is not None and ours(task):
            await finish([task])
            self._task = None
