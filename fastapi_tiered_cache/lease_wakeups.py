"""The fleet lease's wake-ups: one pub/sub subscription per process, and the requests of
this process waiting on a key another process computes.

A holder's release publishes the key on the lease channel; every process that subscribed
wakes its waiters for that key, which then read the entry from Redis. A wake-up is only a
shortcut: a waiter also re-checks the lease every ``lease_ttl / 2`` (a lost message, an
owner that died), so this subscription may drop, and comes back on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from .exceptions import StoreUnavailable
from .tasks import raise_if_cancelled, within

__all__ = ["WakeUps"]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")


class WakeUps:
    """The subscription to ``channel`` and the futures of the keys waited on.

    - ``timeout`` / ``recheck``: a (re)subscription's budget is the larger of the two;
      ``recheck`` is also the pause before subscribing again after a failure.
    - ``on_error``: called once per failed Redis call (``FleetLease.errors``).
    - ``closed``: asked each turn; true once the lease is closed.
    """

    def __init__(
        self,
        client: Any,
        channel: str,
        *,
        timeout: float,
        recheck: float,
        on_error: Callable[[], None],
        closed: Callable[[], bool],
    ) -> None:
        self.client = client
        self.channel = channel
        self.timeout = timeout
        self.recheck = recheck
        self.on_error = on_error
        self.closed = closed
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def reset(self) -> None:
        """Forget the listener and waiters of an event loop that is gone."""
        self.listener, self.subscribed = None, asyncio.Event()
        self.waiters.clear()

    def listen(self) -> None:
        """Subscribe, unless already (or closed): in this process, someone may soon wait."""
        if self.listener is None and not self.closed():
            self.listener = asyncio.ensure_future(self._subscription())

    def add(self, key: str, woken: asyncio.Future[None]) -> None:
        self.waiters.setdefault(key, set()).add(woken)

    def discard(self, key: str, woken: asyncio.Future[None]) -> None:
        waiters = self.waiters.get(key)
        if waiters is not None:
            waiters.discard(woken)
            if not waiters:
                del self.waiters[key]

    def cancel_all(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Wake every waiter with a cancellation (the lease is closing); with ``loop``, only
        that loop's waiters (a future is cancelled from its own loop only)."""
        for waiters in list(self.waiters.values()):
            for woken in list(waiters):
                if loop is None or woken.get_loop() is loop:
                    woken.cancel()

    async def _call(self, operation: Awaitable[T], budget: float) -> T:
        # The subscription's own connection, outside the request path: a plain deadline.
        try:
            return await within(operation, budget)
        except (asyncio.TimeoutError, RedisError, OSError) as exc:
            self.on_error()
            raise StoreUnavailable(f"lease: {type(exc).__name__}: {exc}") from exc

    async def _subscription(self) -> None:
        """The process's one pub/sub connection; re-made after any failure."""
        # A cancel() can be swallowed by a client (see tasks.py): the closed flag and the
        # task's pending cancellations, not the CancelledError alone, end these loops.
        while not self.closed():
            raise_if_cancelled()
            pubsub: Any = None
            budget = max(self.timeout, self.recheck)
            try:
                # A Cluster client routes SUBSCRIBE by slot, so needs its slot map first.
                await self._call(self.client.initialize(), budget)
                pubsub = self.client.pubsub()
                await self._call(pubsub.subscribe(self.channel), budget)
                while not self.closed():
                    raise_if_cancelled()
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message)
            except (StoreUnavailable, RedisError, OSError, asyncio.TimeoutError):
                raise_if_cancelled()
                self.on_error()
            except Exception:  # e.g. a client without pub/sub: never let the listener die
                raise_if_cancelled()
                self.on_error()
                logger.warning("lease wake-up subscription failed", exc_info=True)
            finally:
                self.subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                        await within(pubsub.aclose(), self.timeout)
            if not self.closed():
                # Waiters fall back to their periodic re-check until we are back.
                await asyncio.sleep(self.recheck)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            self.subscribed.set()
        elif message["type"] == "message":
            data = message["data"]
            key = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
            for woken in self.waiters.pop(key, ()):
                if not woken.done():
                    woken.set_result(None)
