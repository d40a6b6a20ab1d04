"""The invalidation bus: Redis pub/sub carrying purges to every process's L1, and the
coherence bound that says how long a process may trust its L1 without hearing them.

Why pub/sub and not RESP3 client tracking: tracking invalidates by Redis key, but our
purges are mostly *generation bumps*, which change no stored key at all, and tag/path
purges whose L1 copies must go even when L2 never held them.

**The coherence bound** (``TIERED_CACHE_COHERENCE_BOUND``, ``bound`` below): no process
serves an L1 entry more than ``bound`` seconds after another process's purge of it, even
when its bus connection dies silently (socket open, nothing delivered). Redis delivers
the messages of one connection in the order it executed their ``PUBLISH``. So every
``bound / 3`` seconds each process publishes a ping on a channel of its own, which only
it hears, on the same connection (and, on a cluster, the same node) as the bus: when the
ping it sent at ``s`` (its own clock) comes back, every purge published before ``s`` has
already been handled, and L1 may be trusted until ``s + bound``. Past that deadline L1
is not read at all (``Coherence``); requests go to Redis. One ping per process and
interval, heard by one subscriber: N processes cost Redis N publishes and N deliveries
per interval, not the N² of a shared heartbeat channel.

If no ping comes back for three intervals, or the connection breaks, the bus is *lost*:
L1 is dropped, and until a ping makes the round trip on a new connection L1 entries live
at most ``bound`` seconds from when their data was read (``Coherence.l1_ttl``).
Messages are msgpack ``[sender, kind, data]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
from redis.asyncio.cluster import RedisCluster

from .tasks import finish, raise_if_cancelled, within

__all__ = ["Coherence", "InvalidationBus"]

logger = logging.getLogger("fastapi_tiered_cache")

Handler = Callable[[str, Any], None]
_MIN_LOST_AFTER = 1.0  # seconds: a busy event loop must not make the bus reconnect in a loop


class Coherence:
    """Whether this process may trust its L1, and for how long it may keep an entry.

    - ``bound``: the coherence bound, in seconds.
    - ``l1_max_ttl``: most seconds an entry lives in L1 while the bus is heard.
    - ``shared``: False without Redis: there is nobody to be coherent with.
    - ``timer``: monotonic seconds.

    ``until``, read on the hit path: L1 and the memo are trusted while ``timer() <
    until``. It is ``+inf`` without Redis, ``-inf`` while the bus is not heard (L1 entries
    then expire ``bound`` seconds after their data was read, and the memo is off), and
    ``s + bound`` while it is, ``s`` the send time of the last ping that came back.
    """

    def __init__(
        self,
        bound: float,
        l1_max_ttl: float,
        *,
        shared: bool = True,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bound = bound
        self.l1_max_ttl = l1_max_ttl
        self.shared = shared
        self.timer = timer
        self.heard = not shared
        self.until = math.inf if not shared else -math.inf

    def trusted(self) -> bool:
        """Whether the bus has proven, within the bound, that no purge went unheard."""
        return self.timer() < self.until

    def l1_usable(self) -> bool:
        """Whether L1 may be read: always when the bus is not heard (entries are short-
        lived then), else while it is trusted."""
        return not self.heard or self.timer() < self.until

    def l1_ttl(self, ttl: float, read_at: float | None = None) -> float:
        """Seconds an entry may live in L1, its data read at ``read_at`` (monotonic)."""
        ttl = min(ttl, self.l1_max_ttl)
        if self.heard:
            return ttl
        age = 0.0 if read_at is None else max(0.0, self.timer() - read_at)
        return min(ttl, self.bound - age)

    def confirm(self, sent_at: float) -> None:
        """A ping sent at ``sent_at`` came back: everything published before was heard."""
        self.heard = True
        self.until = max(self.until, sent_at + self.bound)

    def lose(self) -> None:
        """The bus is not heard (lost, or not started): short-lived L1 entries only."""
        if self.shared:
            self.heard = False
            self.until = -math.inf


class _Silent(Exception):
    """No ping came back in time: the subscription cannot be trusted."""


class InvalidationBus:
    """Publish and receive invalidation messages on ``{namespace}:bus``.

    - ``client``: a ``redis.asyncio`` client with ``pubsub()``.
    - ``on_message(kind, data)``: called for every message from *another* process.
    - ``on_lost`` / ``on_restored``: called when delivery stops / resumes being certain.
    - ``coherence``: told of every ping that comes back (``confirm``) and of losses.
    - ``interval``: seconds between pings (the bound / 3, at most the heartbeat setting).
    """

    def __init__(
        self,
        client: Any,
        namespace: str,
        *,
        on_message: Handler,
        on_lost: Callable[[], None],
        on_restored: Callable[[], None],
        coherence: Coherence | None = None,
        interval: float = 1.0,
        timeout: float = 0.5,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.channel = f"{namespace}:bus"
        self.sender = uuid.uuid4().hex
        # Hash-tagged with the bus channel: the same cluster node, so the same connection.
        self.ping_channel = f"{{{self.channel}}}:ping:{self.sender}"
        self.on_message = on_message
        self.on_lost = on_lost
        self.on_restored = on_restored
        self.coherence = coherence if coherence is not None else Coherence(3 * interval, 30.0)
        self.interval = interval
        self.lost_after = max(3 * interval, _MIN_LOST_AFTER)
        self.timeout = timeout
        self.timer = timer
        self.healthy = False
        self.pings = 0  # sent, for the cost figures
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_echo = 0.0

    def start(self) -> None:
        """Start listening (idempotent); must be called from a running event loop."""
        self._stopping = False
        loop = asyncio.get_running_loop()
        # Another loop's task died with that loop (a test client's, say): start one here.
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="ftc-bus")

    async def publish(self, kind: str, data: Any) -> None:
        """Send a message to every process (raises the client's errors)."""
        await self._publish(self.channel, kind, data)

    async def _publish(self, channel: str, kind: str, data: Any) -> None:
        payload = msgpack.packb([self.sender, kind, data], use_bin_type=True)
        options: dict[str, Any] = {}
        if isinstance(self.client, RedisCluster):
            # Every message to the node the subscriptions are on: one order for all of them.
            node = self.client.get_node_from_key(self.channel)
            if node is not None:
                options["target_nodes"] = node
        await within(self.client.publish(channel, payload, **options), self.timeout)

    async def close(self) -> None:
        """Stop listening; returns within about a second whatever Redis does."""
        self._stopping = True  # ends the loops even if a client swallowed the cancel
        # Only this loop's task: another loop's died with it (a test client's, say).
        if self._task is not None and self._task.get_loop() is asyncio.get_running_loop():
            await finish([self._task])
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
        self.coherence.lose()
        self.on_lost()

    def _receive(self, message: dict[str, Any]) -> None:
        try:
            sender, kind, data = msgpack.unpackb(message["data"], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return  # not ours; never let a stray publisher break the bus
        if kind == "ping":
            if sender == self.sender and isinstance(data, (int, float)):
                self._echo(float(data))
            return
        if sender != self.sender:
            self.on_message(kind, data)

    def _echo(self, sent_at: float) -> None:
        self._last_echo = self.timer()
        if not self.healthy:
            self.healthy = True
            logger.info("invalidation bus connected", extra={"event": "bus_restored"})
            self.on_restored()  # drops L1 first: messages were missed while not heard
        self.coherence.confirm(sent_at)

    async def _run(self) -> None:
        backoff = self.interval
        while not self._stopping:
            raise_if_cancelled()
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means messages may have been missed
                raise_if_cancelled()  # a client turned our cancel into this
                if self._stopping:
                    return
                self._mark_lost(type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.lost_after * 4)
            else:
                return  # stopping

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        beat: asyncio.Task[None] | None = None
        try:
            await within(pubsub.subscribe(self.channel, self.ping_channel), self.timeout)
            self._last_echo = self.timer()
            beat = asyncio.get_running_loop().create_task(self._beat(), name="ftc-bus-ping")
            while not self._stopping:
                raise_if_cancelled()
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.interval / 2
                )
                if message is not None and message.get("type") == "message":
                    self._receive(message)
                if self.timer() - self._last_echo > self.lost_after:
                    raise _Silent("no ping came back")
                if beat.done() and not self._stopping:
                    raise _Silent("the ping task ended")
        finally:
            if beat is not None:
                await finish([beat])
            with contextlib.suppress(Exception):
                await within(pubsub.aclose(), self.timeout)

    async def _beat(self) -> None:
        while not self._stopping:
            raise_if_cancelled()
            with contextlib.suppress(Exception):
                # The send time, in our own clock, travels with the ping: when it comes
                # back, everything published before it has been delivered.
                await self._publish(self.ping_channel, "ping", self.timer())
                self.pings += 1
            await asyncio.sleep(self.interval)
