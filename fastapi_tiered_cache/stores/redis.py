"""``RedisStore``: the shared L2, one round trip per operation, with a time budget.

A ``RedisError`` or an exceeded budget becomes ``StoreUnavailable`` here, at the boundary,
and nowhere else. A value that does not decode (corrupt, foreign, another format version)
is deleted and reported as a miss.

The budget is counted in time the event loop was *able to listen*, not in wall time. Under
a burst, hundreds of requests share one loop; Redis may answer in 200 µs and the reply sit
in the socket while the loop runs other callbacks for 100 ms. A plain ``wait_for`` then
times out, the request goes to the origin (more CPU, a slower loop) and the breaker opens
on a healthy Redis. So, while operations are in flight, a heartbeat (every tenth of the
budget, 2 to 10 ms; one per event loop, see ``budget.py``) measures how late the loop runs
it. A period in which it ran more than one period late was stalled: the loop could not have
handled an answer then, so that time is not charged to the budget. The same heartbeat
sweeps the operations in flight; one gives up when::

    wall time - stalled time >= timeout        -> StoreTimeout (the breaker counts it)
    wall time >= timeout * max_stretch         -> Overloaded (the breaker ignores it)

With an idle loop the heartbeat is on time and the budget is plain wall time; a hung Redis
on an idle loop times out after ``timeout`` (and at most one heartbeat period more). A
redis-py socket timeout that fires before the budget is used up is ``Overloaded`` too, as
is a full connection pool: neither says anything about Redis. A command runs in its
caller's task, with no timer or task of its own; when its budget runs out (or its caller is
cancelled) it is handed to a task of its own to see the cancellation, so a command slow to
honour it (redis-py can turn one into a retry) is abandoned after one more budget.
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
from .batching import execute
from .budget import Driven, Flight, Handover, LoopBudget, drive, still_cancelled, uncancel
from .connect import build_client as connect  # standalone, cluster or sentinel

__all__ = ["RedisStore", "connect"]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")
Report = Callable[[Event, str], None]

# A lookup that says the server's time (a fill's start, see markers.py) and, when the entry
# is absent and KEYS[2] is given, tries to take the fleet lease on it: a miss costs one
# round trip before the origin, lease and time included. A retry after a lost reply finds
# our own token: the lease is ours. Returns {found, value or lease won, time in us}.
_LOOKUP = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local value = redis.call('GET', KEYS[1])
if value then return {1, value, now} end
if #KEYS < 2 then return {0, 0, now} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 1, now} end
if redis.call('GET', KEYS[2]) == ARGV[1] then return {0, 1, now} end
return {0, 0, now}
"""

_MIN_BEAT = 0.002  # seconds; above the 1 ms rounding of epoll timeouts
_MAX_BEAT = 0.010  # seconds


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
        self._lag: LoopBudget | None = None
        # The lookup script's keys (entry, lease) must live on one node: not so on a
        # cluster, where the lookup is a plain GET (a fill there needs no server time).
        self.timed_lookups = isinstance(client, Redis)

    def _lag_for(self, loop: asyncio.AbstractEventLoop) -> LoopBudget:
        lag = self._lag
        if lag is None or lag.loop is not loop:
            period = min(max(self.timeout / 10, _MIN_BEAT), _MAX_BEAT)
            lag = self._lag = LoopBudget(loop, period, self.max_in_flight)
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
        task = asyncio.current_task(loop)
        if task is None:  # a bare coroutine driven by hand: nothing to cancel, so a task
            return await loop.create_task(self._run(operation, what, timeout))
        flight = lag.begin(task, timeout, timeout * self.max_stretch)
        try:
            return await Driven(self._call(operation, lag, flight), flight)
        except Handover as handover:
            raise await self._abandon(handover, flight, what) from None
        except MaxConnectionsError as exc:
            raise Overloaded(f"redis {what}: connection pool exhausted") from exc
        except (RedisTimeoutError, TimeoutError) as exc:
            if lag.spent(flight) < timeout:
                raise Overloaded(f"redis {what}: timed out while the event loop was busy") from exc
            raise StoreTimeout(f"redis {what}: {type(exc).__name__}: {exc}") from exc
        except (RedisError, OSError) as exc:
            if isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, TimeoutError):
                # BlockingConnectionPool: no connection came free in time.
                raise Overloaded(f"redis {what}: no pooled connection came free") from exc
            raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc
        except StoreUnavailable:
            raise
        except Exception as exc:  # a client bug, a foreign event loop: a miss, not a 500
            logger.warning(
                "redis %s failed unexpectedly: %s: %s",
                what,
                type(exc).__name__,
                exc,
                extra={"event": "l2_unexpected"},
            )
            raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc
        finally:
            lag.end(flight)

    async def _abandon(self, handover: Handover, flight: Flight, what: str) -> BaseException:
        """The heartbeat cancelled the operation: let the command see the cancellation in
        a task of its own, wait for it at most one more budget, and return what the caller
        must raise (its own cancellation, if it was cancelled meanwhile)."""
        lag = self._lag
        left = flight.timeout - (lag.spent(flight) if lag is not None else flight.timeout)
        loop = asyncio.get_running_loop()
        job = loop.create_task(drive(handover))
        job.add_done_callback(_consume)
        caught: BaseException | None = None
        until = loop.time() + self.timeout
        # As wait_for does: let the command see its cancellation (redis-py then drops the
        # connection it was using), but never wait long for it. A cancellation meanwhile
        # may be the client's own socket timeout, armed on this task and firing with ours:
        # it is withdrawn as the command ends, so whose it was is known only then.
        while not job.done() and loop.time() < until:
            try:
                await asyncio.wait((job,), timeout=until - loop.time())
            except asyncio.CancelledError as exc:
                caught = exc
        uncancel(flight)
        if still_cancelled(flight, caught):
            return caught or handover.error  # the caller was cancelled too: that goes on
        return self._gave_up(what, flight, left)

    @staticmethod
    async def _call(operation: Callable[[], Awaitable[T]], lag: LoopBudget, flight: Flight) -> T:
        if lag.slots is None:
            flight.sent = True
            return await operation()
        async with lag.slots:
            flight.sent = True
            return await operation()

    def _gave_up(self, what: str, flight: Flight, left: float) -> StoreUnavailable:
        timeout = flight.timeout
        if not flight.sent:
            return Overloaded(f"redis {what}: no free slot within {timeout}s")
        if left > 0:
            return Overloaded(
                f"redis {what}: event loop too busy for {timeout * self.max_stretch:.3g}s"
            )
        return StoreTimeout(f"redis {what}: no answer within {timeout}s")

    async def get(self, key: str) -> Record | None:
        data = await self._run(lambda: execute(self.client, ("get", (key,))), "GET")
        return None if data is None else await self._decoded(key, data)

    async def lookup(
        self, key: str, lease: tuple[str, str, int] | None = None
    ) -> tuple[Record | None, bool | None, int | None]:
        """``get(key)`` with the server's time (microseconds) and, when the entry is absent
        and ``lease = (lease key, token, ms)``, the answer of ``SET lease NX PX ms`` in the
        same round trip: ``(record, lease won or None if not asked, time or None)``. Where
        no script can do it (a cluster), a plain ``GET``: ``(record, None, None)``."""
        if not self.timed_lookups:
            return await self.get(key), None, None
        keys = (key,) if lease is None else (key, lease[0])
        args = () if lease is None else (lease[1], lease[2])
        found, payload, now = await self._run(
            lambda: execute(self.client, ("eval", (_LOOKUP, len(keys), *keys, *args))), "GET+time"
        )
        if found:
            return await self._decoded(key, payload), None, int(now)
        return None, None if lease is None else bool(payload), int(now)

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
        if self.owns_client and asyncio._get_running_loop() is not None:
            # Closing a broken connection must not fail the application's shutdown. (With a
            # ``PerLoopClient`` this closes the running loop's client; the others are
            # closed by their own loops.)
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await self.client.aclose()


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
