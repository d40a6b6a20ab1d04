"""``RedisStore``: the shared L2, one round trip per operation, with a time budget.

A ``RedisError`` or an exceeded budget becomes ``StoreUnavailable`` here, at the boundary,
and nowhere else. A value that does not decode (corrupt, foreign, another format version)
is deleted and reported as a miss.

The budget is counted in time the event loop was *able to listen*, not in wall time. Under
a burst, hundreds of requests share one loop; Redis may answer in 200 µs and the reply sit
in the socket while the loop runs other callbacks for 100 ms. A plain ``wait_for`` then
times out, the request goes to the origin (more CPU, a slower loop) and the breaker opens
on a healthy Redis. So, while operations are in flight, a heartbeat timer (every tenth of
the budget, 2 to 10 ms) measures how late the loop runs it. A period in which it ran more
than one period late was stalled: the loop could not have handled an answer then, so that
time is not charged to the budget. An operation gives up when::

    wall time - stalled time >= timeout        -> StoreTimeout (the breaker counts it)
    wall time >= timeout * max_stretch         -> Overloaded (the breaker ignores it)

With an idle loop the heartbeat is on time and the budget is plain wall time; a hung Redis
on an idle loop times out after ``timeout``. A redis-py socket timeout that fires before
the budget is used up is ``Overloaded`` too, as is a full connection pool: neither says
anything about Redis. Each command runs in its own task, so a command slow to honour its
cancellation (redis-py can turn one into a retry) is abandoned after one more budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..codec import decode, encode
from ..entry import Record
from ..exceptions import DecodeError, Overloaded, StoreTimeout, StoreUnavailable
from ..metrics import Event
from .connect import build_client as connect  # standalone, cluster or sentinel

__all__ = ["RedisStore", "connect"]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")
Report = Callable[[Event, str], None]

# A lookup that, when the entry is absent, also tries to take the fleet lease on it: a
# miss costs one round trip before the origin, not three (GET, SET NX, GET again). A retry
# after a lost reply finds our own token: the lease is ours.
_GET_OR_LEASE = """
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 1} end
if redis.call('GET', KEYS[2]) == ARGV[1] then return {0, 1} end
return {0, 0}
"""
Command = tuple[str, tuple[Any, ...]]  # a client method name and its arguments

_MIN_BEAT = 0.002  # seconds; above the 1 ms rounding of epoll timeouts
_MAX_BEAT = 0.010  # seconds


class _LoopLag:
    """How long one event loop was too busy to run a timer, while anyone is interested.

    The heartbeat runs only while ``acquire()`` outnumbers ``release()``, so an idle
    process has no timer ticking and a closed loop has nothing pending.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float, slots: int | None) -> None:
        self.loop = loop
        self.period = period
        self.slots = asyncio.Semaphore(slots) if slots else None
        self._stalled = 0.0  # seconds, over completed heartbeat periods
        self._last = 0.0  # when the heartbeat last ran
        self._handle: asyncio.TimerHandle | None = None
        self._users = 0

    def acquire(self) -> None:
        self._users += 1
        if self._handle is None:
            self._last = self.loop.time()
            self._handle = self.loop.call_at(self._last + self.period, self._beat)

    def release(self) -> None:
        # The heartbeat stops itself at its next beat if nobody is left: cheaper than a
        # new timer for every operation of a mostly idle process.
        self._users -= 1

    def _beat(self) -> None:
        now = self.loop.time()
        if now - self._last > 2 * self.period:  # ran more than one period late
            self._stalled += now - self._last
        self._last = now
        if self._users <= 0 or self.loop.is_closed():
            self._handle = None
            return
        self._handle = self.loop.call_at(now + self.period, self._beat)

    def stalled(self) -> float:
        """Seconds the loop was stalled so far, counting the current period if overdue."""
        overdue = self.loop.time() - self._last
        return self._stalled + (overdue if overdue > 2 * self.period else 0.0)


class _Attempt:
    """What one operation got to: ``sent`` once it holds a slot and talks to Redis."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


class RedisStore:
    """A store on a ``redis.asyncio`` client (standalone, Sentinel or Cluster).

    - ``client``: the client; the store closes it on ``close()`` when ``owns_client``.
    - ``timeout``: seconds allowed per operation, counted while the event loop can listen.
    - ``max_stretch``: most wall time per operation, in budgets, when the loop is saturated.
    - ``max_in_flight``: most operations talking to Redis at once (the rest wait, within
      their budget, for a slot); keep it at or under the pool's ``max_connections``.
    - ``report``: called with ``(Event.REDIS_ERROR, "decode")`` for each undecodable value.

    Example::

        store = RedisStore(connect("redis://localhost:6379/0"), timeout=0.05, max_in_flight=90)
    """

    def __init__(
        self,
        client: Any,
        *,
        timeout: float = 0.05,
        owns_client: bool = True,
        max_stretch: float = 100.0,
        max_in_flight: int | None = None,
        report: Report | None = None,
    ) -> None:
        if timeout <= 0 or max_stretch < 1:
            raise ValueError("timeout must be positive and max_stretch at least 1")
        self.client = client
        self.timeout = timeout
        self.owns_client = owns_client
        self.max_stretch = max_stretch
        self.max_in_flight = max_in_flight
        self.report = report
        self.decode_errors = 0
        self._lag: _LoopLag | None = None
        self._get_or_lease: Any = None
        # Both keys of the script must live on one node: not so on a cluster.
        self.leases_with_lookups = not isinstance(client, RedisCluster) and hasattr(
            client, "register_script"
        )

    def _lag_for(self, loop: asyncio.AbstractEventLoop) -> _LoopLag:
        lag = self._lag
        if lag is None or lag.loop is not loop:
            period = min(max(self.timeout / 10, _MIN_BEAT), _MAX_BEAT)
            lag = self._lag = _LoopLag(loop, period, self.max_in_flight)
        return lag

    async def run(
        self, operation: Callable[[], Awaitable[T]], what: str, budgets: float = 1.0
    ) -> T:
        """Run ``operation()`` (any command or pipeline on ``client``) within ``budgets``
        budgets; the ``Runner`` every Redis command of the cache goes through."""
        return await self._run(operation, what, self.timeout * budgets)

    async def _run(
        self, operation: Callable[[], Awaitable[T]], what: str, timeout: float | None = None
    ) -> T:
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        lag = self._lag_for(loop)
        attempt = _Attempt()
        lag.acquire()
        task = loop.create_task(self._call(operation, lag, attempt))
        started, stalled = loop.time(), lag.stalled()
        woken = loop.create_future()

        def wake(_: object = None) -> None:  # the command ended, or a deadline to check
            if not woken.done():
                woken.set_result(None)

        def spent() -> float:  # budget used: time the loop could have handled an answer
            return loop.time() - started - (lag.stalled() - stalled)

        # A future, a done callback and a timer: what asyncio.wait does, without its sets,
        # copies and second future on every operation.
        task.add_done_callback(wake)
        try:
            while not task.done():
                left = timeout - spent()
                if left <= 0 or loop.time() - started >= timeout * self.max_stretch:
                    raise self._gave_up(what, attempt, left, timeout)
                limit = started + timeout * self.max_stretch - loop.time()
                deadline = loop.call_later(min(left, limit), wake)
                try:
                    await woken
                finally:
                    deadline.cancel()
                if not task.done():
                    woken = loop.create_future()
            return task.result()
        except MaxConnectionsError as exc:
            raise Overloaded(f"redis {what}: connection pool exhausted") from exc
        except (RedisTimeoutError, TimeoutError) as exc:
            if spent() < timeout:
                raise Overloaded(f"redis {what}: timed out while the event loop was busy") from exc
            raise StoreTimeout(f"redis {what}: {type(exc).__name__}: {exc}") from exc
        except (RedisError, OSError) as exc:
            if isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, TimeoutError):
                # BlockingConnectionPool: no connection came free in time.
                raise Overloaded(f"redis {what}: no pooled connection came free") from exc
            raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc
        finally:
            lag.release()
            if not task.done():
                task.cancel()
                try:
                    # As wait_for does: let the command see its cancellation (redis-py then
                    # drops the connection it was using), but never wait long for it.
                    await asyncio.wait((task,), timeout=self.timeout)
                finally:
                    task.add_done_callback(_consume)

    @staticmethod
    async def _call(operation: Callable[[], Awaitable[T]], lag: _LoopLag, attempt: _Attempt) -> T:
        if lag.slots is None:
            attempt.sent = True
            return await operation()
        async with lag.slots:
            attempt.sent = True
            return await operation()

    def _gave_up(
        self, what: str, attempt: _Attempt, left: float, timeout: float
    ) -> StoreUnavailable:
        if not attempt.sent:
            return Overloaded(f"redis {what}: no free slot within {timeout}s")
        if left > 0:
            return Overloaded(
                f"redis {what}: event loop too busy for {timeout * self.max_stretch:.3g}s"
            )
        return StoreTimeout(f"redis {what}: no answer within {timeout}s")

    async def get(self, key: str) -> Record | None:
        data = await self._run(lambda: self.client.get(key), "GET")
        return None if data is None else await self._decoded(key, data)

    async def get_or_lease(
        self, key: str, lease_key: str, token: str, lease_ms: int
    ) -> tuple[Record | None, bool]:
        """``get(key)``; when the entry is absent, also ``SET lease_key token NX PX
        lease_ms`` in the same round trip. Returns the record (or None) and whether the
        lease is ours. Only where ``leases_with_lookups`` (not on a cluster)."""
        if self._get_or_lease is None:
            self._get_or_lease = self.client.register_script(_GET_OR_LEASE)
        keys, args = [key, lease_key], [token, lease_ms]
        found, payload = await self._run(
            lambda: self._get_or_lease(keys=keys, args=args), "GET+lease"
        )
        if found:
            return await self._decoded(key, payload), False
        return None, bool(payload)

    async def _decoded(self, key: str, data: bytes) -> Record | None:
        try:
            return decode(key, data)
        except DecodeError as exc:
            self.decode_errors += 1
            if self.report is not None:
                self.report(Event.REDIS_ERROR, "decode")
            logger.warning("dropping undecodable entry: %s", exc, extra={"event": "decode_error"})
            await self.delete(key)
            return None

    async def set(self, key: str, record: Record, ttl: float) -> None:
        milliseconds = int(ttl * 1000)
        if milliseconds <= 0:
            return
        value = encode(key, record)
        await self._run(lambda: self.client.set(key, value, px=milliseconds), "SET")

    async def set_many(
        self, entries: Iterable[tuple[str, Record, float]], then: Iterable[Command] = ()
    ) -> None:
        """Store ``(key, record, ttl)`` entries, then run ``then`` (single-key commands such
        as index updates), in one pipeline: one round trip (per node on a cluster)."""
        commands: list[Command] = []
        for key, record, ttl in entries:
            milliseconds = int(ttl * 1000)
            if milliseconds > 0:
                value = encode(key, record)
                commands.append(("execute_command", ("SET", key, value, "PX", milliseconds)))
        commands.extend(then)
        if commands:
            await self._run(lambda: self.pipeline(commands), "SET pipeline", 2)

    async def pipeline(self, commands: list[Command]) -> list[Any]:
        """Run commands in one non-transactional pipeline (no budget of its own: pass it to
        ``run``). Commands are ``(name, args)``, ``name`` a method of the client."""
        pipe = self.client.pipeline(transaction=False)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return list(await pipe.execute())

    async def delete(self, key: str) -> None:
        await self._run(lambda: self.client.delete(key), "DEL")

    async def delete_many(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        if batch:
            await self._run(lambda: self._delete_each(batch), "DEL")

    async def _delete_each(self, batch: list[str]) -> None:
        # One DEL per key: a multi-key DEL is not cluster-safe across hash slots. Pipelined,
        # so a large purge takes one connection (per node), never the whole pool.
        if isinstance(self.client, (Redis, RedisCluster)):
            pipe = self.client.pipeline(transaction=False)
            for key in batch:
                pipe.delete(key)
            await pipe.execute()
        else:
            await asyncio.gather(*(self.client.delete(key) for key in batch))

    async def close(self) -> None:
        if self.owns_client:
            # Closing a broken connection must not fail the application's shutdown.
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
