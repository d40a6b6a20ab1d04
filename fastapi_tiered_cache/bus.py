"""The invalidation bus: Redis pub/sub carrying purges to every process's L1.

Why pub/sub and not RESP3 client tracking: tracking invalidates by Redis key, but our
purges are mostly *generation bumps*, which change no stored key at all, and tag/path
purges whose L1 copies must go even when L2 never held them. One channel also works
unchanged on Redis Cluster, where a classic ``PUBLISH`` reaches subscribers on every node.

A connection can die silently (packets dropped, socket still open), so each process
publishes a heartbeat and expects to *receive its own* within three heartbeats.
Whenever that fails, or the connection breaks, ``on_lost`` runs (the cache drops L1 and
stops trusting its generation counters); once a heartbeat makes the round trip again,
``on_restored`` runs. Messages are msgpack ``[sender, kind, data]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack

__all__ = ["InvalidationBus"]

logger = logging.getLogger("fastapi_tiered_cache")

Handler = Callable[[str, Any], None]


class _Silent(Exception):
    """No heartbeat came back in time: the subscription cannot be trusted."""


class InvalidationBus:
    """Publish and receive invalidation messages on ``{namespace}:bus``.

    - ``client``: a ``redis.asyncio`` client with ``pubsub()``.
    - ``on_message(kind, data)``: called for every message from *another* process.
    - ``on_lost`` / ``on_restored``: called when delivery stops / resumes being certain.
    - ``heartbeat``: seconds between heartbeats.
    """

    def __init__(
        self,
        client: Any,
        namespace: str,
        *,
        on_message: Handler,
        on_lost: Callable[[], None],
        on_restored: Callable[[], None],
        heartbeat: float = 1.0,
        timeout: float = 0.5,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.channel = f"{namespace}:bus"
        self.sender = uuid.uuid4().hex
        self.on_message = on_message
        self.on_lost = on_lost
        self.on_restored = on_restored
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.timer = timer
        self.healthy = False
        self.lost_count = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_echo = 0.0

    def start(self) -> None:
        """Start listening (idempotent); must be called from a running event loop."""
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ftc-bus")

    async def publish(self, kind: str, data: Any) -> None:
        """Send a message to every process (raises the client's errors)."""
        payload = msgpack.packb([self.sender, kind, data], use_bin_type=True)
        await asyncio.wait_for(self.client.publish(self.channel, payload), self.timeout)

    async def close(self) -> None:
        self._stopping = True  # ends the loop even if a client swallowed the cancel
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.healthy = False

    def _mark_lost(self, reason: str) -> None:
        if self.healthy:
            logger.warning(
                "invalidation bus lost (%s): L1 dropped until it is back",
                reason,
                extra={"event": "bus_lost", "reason": reason},
            )
        self.healthy = False
        self.lost_count += 1
        self.on_lost()

    def _receive(self, message: dict[str, Any]) -> None:
        try:
            sender, kind, data = msgpack.unpackb(message["data"], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return  # not ours; never let a stray publisher break the bus
        if kind == "ping":
            if sender == self.sender:
                self._last_echo = self.timer()
                if not self.healthy:
                    self.healthy = True
                    logger.info("invalidation bus connected", extra={"event": "bus_restored"})
                    self.on_restored()
            return
        if sender != self.sender:
            self.on_message(kind, data)

    async def _run(self) -> None:
        backoff = self.heartbeat / 4
        while not self._stopping:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means messages may have been missed
                task = asyncio.current_task()
                if task is not None and getattr(task, "cancelling", lambda: 0)():
                    raise asyncio.CancelledError from exc  # a client turned our cancel into this
                self._mark_lost(type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.heartbeat * 4)
            else:  # pragma: no cover - _listen only returns by raising
                return

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        beat: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(pubsub.subscribe(self.channel), self.timeout)
            self._last_echo = self.timer()
            beat = asyncio.get_running_loop().create_task(self._beat())
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.heartbeat / 2
                )
                if message is not None and message.get("type") == "message":
                    self._receive(message)
                if self.timer() - self._last_echo > 3 * self.heartbeat:
                    raise _Silent("no heartbeat")
        finally:
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), self.timeout)

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.publish("ping", None)
            await asyncio.sleep(self.heartbeat)
