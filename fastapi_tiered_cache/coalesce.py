"""Stampede protection: one origin call per key, in the process and across the fleet.

When a popular entry expires, every request for it misses at once. Varnish answers this
with *request coalescing*: the first miss fetches, later ones wait on a "waiting list"
and are served the object it stored; a response that turns out uncacheable leaves a
*hit-for-miss* marker so the next requests skip the wait. This module is that mechanism,
in three independent pieces that the middleware composes:

- ``SingleFlight``: concurrent misses *in this process* share one call (Go's
  ``singleflight``). Waiters never inherit the leader's error: if it fails or is cancelled
  they get ``LeaderFailed`` and go to the origin themselves.
- ``FleetLease``: a short Redis lease (``SET NX PX`` with a random token, renewed while held,
  compare-and-delete on release) elects one computing process *per fleet*; the others wait
  for a pub/sub wake-up, then read the entry from Redis. A crashed holder blocks others for
  at most ``lease_ttl``. If Redis is unreachable, ``acquire`` returns a local lease: the
  process computes with in-process coalescing only.
- ``HitForMiss``: keys recently found uncacheable, so their requests do not queue up.

``should_refresh_early`` is the XFetch test for refreshing an entry before it expires.
Nothing here raises ``RedisError``, and every Redis command runs through a ``Runner``: the
cache's store, whose budget abandons a command slow to cancel and whose breaker counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from cachetools import TTLCache
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from .exceptions import CacheError, StoreUnavailable
from .stores.base import Runner, TimeoutRunner, within

__all__ = [
    "FleetLease",
    "HitForMiss",
    "LeaderFailed",
    "Lease",
    "SingleFlight",
    "should_refresh_early",
]

logger = logging.getLogger("fastapi_tiered_cache")
T = TypeVar("T")
FailureReason = Literal["error", "cancelled", "timeout"]

# Compare-and-set by token, so a holder whose lease expired can never touch a newer one.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# Compare-and-delete, then wake the waiters (even if the lease had expired: they may still
# be parked on it), in one round trip. A waiter marks the lease (KEYS[2]) before it parks,
# so the wake-up is published only when someone waits: a miss nobody waited on costs the
# fleet no message. Where the mark cannot share the lease's node (a cluster), ARGV[4] = 1
# publishes always.
_RELEASE = """
local released = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
  released = redis.call('del', KEYS[1])
end
if ARGV[4] == '1' or redis.call('del', KEYS[2]) == 1 then
  redis.call('publish', ARGV[2], ARGV[3])
end
return released
"""
# A waiter: mark the lease as waited on, then say whether it is still held.
_WAIT = """
redis.call('set', KEYS[2], '1', 'PX', ARGV[1])
return redis.call('exists', KEYS[1])
"""


class LeaderFailed(CacheError):
    """The call this request waited on produced nothing to share; go to the origin.

    ``reason`` (also a metrics label): ``error`` (the leader's call raised), ``cancelled``
    (its client went away; calling ``run`` again re-elects a leader) or ``timeout``.
    """

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(f"the coalesced call did not complete: {reason}")
        self.reason: FailureReason = reason


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: FailureReason


class SingleFlight(Generic[T]):
    """Concurrent ``run`` calls for one key in this process share one ``compute``.

    - ``wait``: most seconds a waiter waits for the leader (``None``: as long as it runs).

    Example::

        flight: SingleFlight[CachedResponse | None] = SingleFlight()
        try:
            entry, leader = await flight.run(key, fetch)
        except LeaderFailed:
            entry, leader = await fetch(), True
    """

    def __init__(self, wait: float | None = None) -> None:
        self.wait = wait
        self._flights: dict[str, asyncio.Future[T | _Failure]] = {}

    def __len__(self) -> int:
        """Keys with a call in flight."""
        return len(self._flights)

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``(result, True)`` for the leader, ``(the leader's result, False)`` for waiters.

        The leader's own exception or cancellation propagates to the leader only; its
        waiters get ``LeaderFailed``.
        """
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        if flight is not None and flight.get_loop() is loop:  # another loop's died with it
            return await self._follow(flight), False
        flight = loop.create_future()
        self._flights[key] = flight
        try:
            result = await compute()
        except asyncio.CancelledError:
            self._land(key, flight, _Failure("cancelled"))
            raise
        except BaseException:
            self._land(key, flight, _Failure("error"))
            raise
        self._land(key, flight, result)
        return result, True

    async def _follow(self, flight: asyncio.Future[T | _Failure]) -> T:
        # asyncio.wait never cancels the flight, so a waiter's disconnect touches nobody else.
        done, _ = await asyncio.wait({flight}, timeout=self.wait)
        if not done:
            raise LeaderFailed("timeout")
        outcome = flight.result()
        if isinstance(outcome, _Failure):
            raise LeaderFailed(outcome.reason)
        return outcome

    def _land(self, key: str, flight: asyncio.Future[T | _Failure], outcome: T | _Failure) -> None:
        # Synchronous on purpose: it must complete even in a task being cancelled.
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.done():
            flight.set_result(outcome)


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to compute ``key``. ``fleet`` is False when Redis could not be asked:
    the holder then coordinates with nobody outside its process."""

    key: str
    token: str
    fleet: bool = True


class FleetLease:
    """Elects one process of the fleet to compute a key; the others wait for its wake-up.

    - ``client``: a ``redis.asyncio`` client (standalone, Sentinel or Cluster); it stays
      the caller's to close.
    - ``namespace``: prefix of the keys ``{namespace}:lease:{key}``.
    - ``lease_ttl``: seconds a lease lives unless renewed (every third of it while held).
    - ``wait``: default seconds ``wait_for`` waits.
    - ``timeout``: seconds allowed per Redis command (when no ``run`` is given).
    - ``run``: the ``Runner`` of every command (the cache passes its store's); a plain
      ``TimeoutRunner(timeout)`` when omitted.
    - ``channel``: wake-up channel, ``{namespace}:lease-wake`` by default. One channel for
      every key keeps one subscription per process, and works on Redis Cluster.

    Example::

        lease = await fleet.acquire(key)
        if lease is None:
            if await fleet.wait_for(key):
                entry = await store.get(key)  # the holder stored it before releasing
        else:
            try:
                ...  # call the origin, store the entry
            finally:
                await fleet.release(lease)
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str,
        lease_ttl: float = 3.0,
        wait: float = 5.0,
        timeout: float = 0.05,
        channel: str | None = None,
        run: Runner | None = None,
    ) -> None:
        if lease_ttl <= 0 or timeout <= 0 or wait < 0:
            raise ValueError("lease_ttl and timeout must be > 0, and wait >= 0")
        self.client = client
        self.namespace = namespace
        self.lease_ttl = lease_ttl
        self.wait = wait
        self.timeout = timeout
        self.run: Runner = run if run is not None else TimeoutRunner(timeout)
        self.channel = channel or f"{namespace}:lease-wake"
        self.errors = 0  # Redis commands that failed or ran out of time
        self._recheck = lease_ttl / 2  # seconds between safety checks of a waited-on lease
        self._renew_script = client.register_script(_RENEW)
        self._release_script = client.register_script(_RELEASE)
        self._wait_script = client.register_script(_WAIT)
        self._always_wake = isinstance(client, RedisCluster)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        # Per held lease: the timer of its first renewal, then the task renewing it.
        self._renewals: dict[str, asyncio.TimerHandle | asyncio.Task[None]] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _lease_key(self, key: str) -> str:
        return f"{self.namespace}:lease:{key}"

    def _waited_key(self, key: str) -> str:
        # The lease key as a hash tag: the same slot as the lease wherever it lives.
        return f"{{{self._lease_key(key)}}}:waited"

    def lease_key(self, key: str) -> str:
        """The Redis key of the lease on ``key``."""
        return self._lease_key(key)

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def adopt(self, lease: Lease) -> Lease:
        """Hold a lease taken elsewhere (with a lookup, by ``RedisStore.get_or_lease``):
        renew it while held, and listen for wake-ups like ``acquire`` does."""
        if self._closed:
            return Lease(lease.key, lease.token, fleet=False)
        self._listen()
        self._renew_while_held(lease)
        return lease

    async def acquire(self, key: str) -> Lease | None:
        """A lease on ``key``, or None while another process holds one."""
        token = self.new_token()
        if self._closed:
            return Lease(key, token, fleet=False)
        self._listen()  # subscribe early: this process may soon wait on someone
        ttl = max(1, int(self.lease_ttl * 1000))
        try:
            won = await self._call(
                lambda: self.client.set(self._lease_key(key), token, nx=True, px=ttl), "lease SET"
            )
        except StoreUnavailable:
            # The SET may have landed with its reply lost: that lease just expires unrenewed.
            return Lease(key, token, fleet=False)
        if not won:
            # A client retry after a lost reply finds our own first SET: that lease is ours.
            try:
                holder = await self._call(
                    lambda: self.client.get(self._lease_key(key)), "lease GET"
                )
            except StoreUnavailable:
                return Lease(key, token, fleet=False)
            if (
                holder is None
                or (holder.decode() if isinstance(holder, bytes) else holder) != token
            ):
                return None
        lease = Lease(key, token)
        self._renew_while_held(lease)
        return lease

    def _renew_while_held(self, lease: Lease) -> None:
        """Renew ``lease`` every ``lease_ttl / 3`` until released. Most computations end
        before the first renewal is due, so until then it is a timer, not a task."""
        token = lease.token
        loop = asyncio.get_running_loop()

        def start() -> None:
            if self._renewals.get(token) is not timer or self._closed:
                return
            task = loop.create_task(self._renew(lease))
            self._renewals[token] = task

            def done(_: object) -> None:
                if self._renewals.get(token) is task:
                    del self._renewals[token]

            task.add_done_callback(done)

        # A context of its own: not the request's (whose L2 fault would skip renewals).
        timer = loop.call_later(self.lease_ttl / 3, start, context=contextvars.Context())
        self._renewals[token] = timer

    async def release(self, lease: Lease) -> None:
        """Give the lease up (only if still ours), then wake this key's waiters fleet-wide.

        The work runs in its own task, so it completes (within ``2 * timeout``) even
        when the caller is cancelled, as a request whose client went away is.
        """
        renewal = self._renewals.pop(lease.token, None)
        if renewal is not None:
            renewal.cancel()
        if not lease.fleet or self._closed:
            return
        job = asyncio.ensure_future(self._give_up(lease))
        self._releases.add(job)
        job.add_done_callback(self._releases.discard)
        await asyncio.shield(job)

    def release_command(self, lease: Lease) -> tuple[str, tuple[Any, ...]] | None:
        """The release of ``lease`` as one command of a pipeline (the store's, after the
        entry's ``SET``, so a woken waiter finds the entry), its renewal stopped. None where
        that cannot be done (a cluster: the pipeline's commands run on several nodes in no
        set order): then call ``release``."""
        if not lease.fleet or self._closed or self._always_wake:
            return None
        renewal = self._renewals.pop(lease.token, None)
        if renewal is not None:
            renewal.cancel()
        keys = (self._lease_key(lease.key), self._waited_key(lease.key))
        return ("eval", (_RELEASE, 2, *keys, lease.token, self.channel, lease.key, "0"))

    async def wait_for(self, key: str, timeout: float | None = None) -> bool:
        """Wait until the lease on ``key`` is released or gone (an owner that died).

        True: look in the store again. False: ``timeout`` (default ``wait``) ran out or
        Redis could not be asked; go to the origin.
        """
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.wait if timeout is None else timeout)
        self._listen()
        woken: asyncio.Future[None] = loop.create_future()
        self._waiters.setdefault(key, set()).add(woken)
        try:
            # A wake-up published before our SUBSCRIBE is active would be lost (until the
            # re-check), so be subscribed before looking at the lease: acquire() started it.
            with contextlib.suppress(asyncio.TimeoutError):
                budget = max(0.0, min(self.timeout, deadline - loop.time()))
                await within(self._subscribed.wait(), budget)
            while True:
                try:
                    held = await self._call(lambda: self._still_held(key), "lease EXISTS")
                except StoreUnavailable:
                    return False
                if not held:
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                # The re-check, every lease_ttl / 2, only covers lost wake-ups and dead owners.
                await asyncio.wait({woken}, timeout=min(remaining, self._recheck))
                if woken.done():
                    return not woken.cancelled()
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[key]

    async def _still_held(self, key: str) -> Any:
        if self._always_wake:
            return await self.client.exists(self._lease_key(key))
        keys = [self._lease_key(key), self._waited_key(key)]
        return await self._wait_script(keys=keys, args=[self.lease_ms])

    async def close(self) -> None:
        """Stop listening and renewing; held leases expire within ``lease_ttl``."""
        self._closed = True
        self._bind()
        renewing = [r for r in self._renewals.values() if isinstance(r, asyncio.Task)]
        tasks: list[asyncio.Task[None]] = [*renewing, *self._releases]
        if self._listener is not None:
            tasks.append(self._listener)
            self._listener.cancel()
        for renewal in self._renewals.values():
            renewal.cancel()
        for waiters in self._waiters.values():
            for woken in waiters:
                woken.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _call(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await self.run(operation, what)
        except StoreUnavailable:
            self.errors += 1
            raise

    async def _subscribe_call(self, operation: Awaitable[T], budget: float) -> T:
        # The subscription's own connection, outside the request path: a plain deadline.
        try:
            return await within(operation, budget)
        except (asyncio.TimeoutError, RedisError, OSError) as exc:
            self.errors += 1
            raise StoreUnavailable(f"lease: {type(exc).__name__}: {exc}") from exc

    async def _renew(self, lease: Lease) -> None:
        """Renew now, then every ``lease_ttl / 3``, while the lease is held."""
        ttl = max(1, int(self.lease_ttl * 1000))
        keys, args = [self._lease_key(lease.key)], [lease.token, ttl]
        while True:
            if lease.token not in self._renewals or self._closed:
                return  # released, even if the cancellation was swallowed
            try:
                alive = await self._call(
                    lambda: self._renew_script(keys=keys, args=args), "lease renew"
                )
            except StoreUnavailable:
                alive = True  # the lease may still be ours: try again on the next tick
            if not alive:
                return  # expired or taken over: nothing left to keep alive
            await asyncio.sleep(self.lease_ttl / 3)

    async def _give_up(self, lease: Lease) -> None:
        with contextlib.suppress(StoreUnavailable):
            keys = [self._lease_key(lease.key)]
            if not self._always_wake:
                keys.append(self._waited_key(lease.key))
            args = [lease.token, self.channel, lease.key, "1" if self._always_wake else "0"]
            await self._call(lambda: self._release_script(keys=keys, args=args), "lease release")

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Used from a new event loop (a test client's, say): the old loop's listener,
            # renewals and waiters died with it.
            self._loop, self._listener, self._subscribed = loop, None, asyncio.Event()
            self._waiters.clear()
            self._renewals.clear()
            self._releases.clear()

    def _listen(self) -> None:
        self._bind()
        if self._listener is None and not self._closed:
            self._listener = asyncio.ensure_future(self._subscription())

    async def _subscription(self) -> None:
        """The process's one pub/sub connection; re-made after any failure."""
        # On Python 3.10 a cancel() can be swallowed (see within), so the closed flag,
        # not cancel() alone, ends these loops.
        while not self._closed:
            pubsub: Any = None
            budget = max(self.timeout, self._recheck)
            try:
                # A Cluster client routes SUBSCRIBE by slot, so needs its slot map first.
                await self._subscribe_call(self.client.initialize(), budget)
                pubsub = self.client.pubsub()
                await self._subscribe_call(pubsub.subscribe(self.channel), budget)
                while not self._closed:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message)
            except (StoreUnavailable, RedisError, OSError, asyncio.TimeoutError):
                _raise_if_cancelling()
                self.errors += 1
            except Exception:  # e.g. a client without pub/sub: never let the listener die
                _raise_if_cancelling()
                self.errors += 1
                logger.warning("lease wake-up subscription failed", exc_info=True)
            finally:
                self._subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                        await within(pubsub.aclose(), self.timeout)
            if not self._closed:
                # Waiters fall back to their periodic re-check until we are back.
                await asyncio.sleep(self._recheck)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            self._subscribed.set()
        elif message["type"] == "message":
            data = message["data"]
            key = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
            for woken in self._waiters.pop(key, ()):
                if not woken.done():
                    woken.set_result(None)


def _raise_if_cancelling() -> None:
    """Some clients turn our cancellation into their own error: honour the cancel anyway."""
    task = asyncio.current_task()
    if task is not None and getattr(task, "cancelling", lambda: 0)():
        raise asyncio.CancelledError


class HitForMiss:
    """Keys whose response was uncacheable, remembered for ``ttl`` seconds (Varnish's
    hit-for-miss object): their requests go straight to the origin instead of queueing
    behind a call whose result they could not use.

    - ``ttl``: seconds a key is remembered; 0 turns the map off.
    - ``maxsize``: most keys remembered (the oldest go first).
    - ``timer``: a monotonic clock in seconds (injected by tests).
    """

    def __init__(
        self, ttl: float, maxsize: int = 10_000, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._keys: TTLCache[str, bool] = TTLCache(maxsize=max(maxsize, 1), ttl=ttl, timer=timer)

    def __contains__(self, key: object) -> bool:
        return self.ttl > 0 and key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def remember(self, key: str) -> None:
        if self.ttl > 0:
            self._keys[key] = True

    def forget(self, key: str) -> None:
        """Drop ``key``, for example once its response was cacheable again."""
        self._keys.pop(key, None)


def should_refresh_early(
    age: float,
    ttl: float,
    delta: float,
    beta: float = 1.0,
    rand: Callable[[], float] = random.random,
) -> bool:
    """The XFetch test: refresh now, before expiry, with a chance rising as expiry nears.

    True when ``age - delta * beta * ln(u) >= ttl``, ``u`` uniform in (0, 1], with ``delta``
    the seconds the last computation took and ``beta`` > 1 favouring earlier refreshes.
    See Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
    Prevention", VLDB 2015, which shows this spreads refreshes optimally.
    """
    u = 1.0 - rand()  # random() is in [0, 1); ln needs (0, 1]
    return age - delta * beta * math.log(u) >= ttl
