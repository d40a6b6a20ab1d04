"""Background tasks that always stop, and timeouts that never lose a cancellation.

A cache runs a few tasks of its own beside the application's (the invalidation bus and its
ping, retries of purges and announcements, the fleet report). The event loop's shutdown
(``asyncio.run``, uvicorn's, a test client's portal) cancels every task and waits for all
of them: one that does not end hangs the process. Two things make a task miss its
cancellation: ``asyncio.wait_for`` before Python 3.12, which returns the operation's result
when the operation ends as the cancel arrives, and client code that catches
``CancelledError``. So the cache never uses ``wait_for`` (``within`` instead), its loops
look at their task's pending cancellations each turn (``raise_if_cancelled``), and its own
shutdown gives up on a task after a second (``finish``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import anyio

__all__ = ["after_the_response", "finish", "raise_if_cancelled", "within"]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")

if sys.version_info >= (3, 11):
    _timeout = asyncio.timeout
else:  # pragma: no cover - Python 3.10 (async-timeout is a dependency of redis there)
    from async_timeout import timeout as _timeout


def after_the_response() -> anyio.CancelScope:
    """The scope of the cache's own work once the app has answered (the store after the
    last byte, the fleet lease's release): shielded from the request's cancellation.

    An app answers without a checkpoint after its endpoint returns, and code that calls it
    in-process (``httpx.ASGITransport``, a test's cancel scope) relies on it: a request
    cancelled from inside its endpoint still returns its response. The cache's awaits on
    Redis must not add a checkpoint there. The work is bounded by the Redis budget, and a
    cancellation that arrived meanwhile reaches the caller at its next checkpoint, as it
    would without the cache.
    """
    return anyio.CancelScope(shield=True)


async def within(operation: Awaitable[T], seconds: float) -> T:
    """``operation``, or ``TimeoutError`` after ``seconds``.

    ``asyncio.wait_for`` before 3.12 can swallow a ``cancel()`` that races with the
    operation finishing; ``asyncio.timeout`` (3.11+) and ``async_timeout`` cannot: they
    run the operation in the caller's own task.
    """
    async with _timeout(seconds):
        return await operation


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the running task was asked to stop and the request got
    lost on the way: a client library may catch a ``CancelledError`` and carry on (as
    ``asyncio.wait_for`` before 3.12 does when the operation ends as the cancel arrives).

    Each background loop calls it once per turn. Without it, one lost cancellation keeps
    the loop alive for ever, and the event loop's shutdown (``asyncio.run``, a test client's
    portal, uvicorn's) waits on it for ever. Python 3.10 does not count cancellations, so
    there it can only rely on the loops' own stop flags.
    """
    if sys.version_info >= (3, 11):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError


async def finish(tasks: Iterable[asyncio.Future[Any]], timeout: float = 1.0) -> None:  # noqa: ASYNC109 - the bound is what it is for
    """Cancel ``tasks`` and wait for them, at most ``timeout`` seconds in all: a task that
    swallows its cancellation (some clients do, inside ``wait_for``) is cancelled again,
    and abandoned when the time is up, so a shutdown never hangs on one."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            for task in pending:
                task.add_done_callback(_consume)
            logger.warning(
                "%d background task(s) did not stop in time; abandoned",
                len(pending),
                extra={"event": "shutdown_timeout"},
            )
            return
        _, pending = await asyncio.wait(pending, timeout=min(left, 0.1))
    for task in tasks:
        if task.done():
            _consume(task)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
