"""Stampede protection across the fleet: one process computes a key, the others wait.

``FleetLease``: a short Redis lease (``SET NX PX`` with a random token, renewed while held,
compare-and-delete on release) elects one computing process *per fleet*; the others wait
for a pub/sub wake-up, then read the entry from Redis. A crashed holder blocks others for
at most ``lease_ttl``. If Redis is unreachable, ``acquire`` returns a local lease: the
process computes with in-process coalescing only (``flights``).

The lease is usually taken by the lookup that found nothing, in the same round trip
(``RedisStore.lookup``), and released with the store (``release_command``, run as one
script with the fill by ``stores.batching.run_scripts``), so a miss costs no round trip of
its own for it. The wake-up subscription is ``lease_wakeups.WakeUps``. Nothing here
raises ``RedisError``, and every Redis command runs through a ``Runner``: the cache's
store, whose budget abandons a command slow to cancel and whose breaker counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster

from .exceptions import StoreUnavailable
from .lease_wakeups import WakeUps
from .stores import scripts
from .stores.base import Runner, TimeoutRunner
from .tasks import finish, within

__all__ = ["FleetLease", "Lease", "new_token"]

# Lease tokens only need to be unique across the fleet (they are never shown outside
# Redis): a random prefix per process and a counter, with no system call per token (16
# bytes from the kernel cost 1.2-1.6 us a miss on the benchmark machine, this 0.3). A
# forked child draws its own prefix, or it would repeat its parent's tokens.
_PREFIX = [secrets.token_hex(12)]
_COUNTER = itertools.count()


def _new_prefix() -> None:
    _PREFIX[0] = secrets.token_hex(12)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_new_prefix)


def new_token() -> str:
    """A lease token no other holder in the fleet has or will have."""
    return f"{_PREFIX[0]}{next(_COUNTER):x}"


T = TypeVar("T")

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
        self._release_script = client.register_script(_RELEASE)
        self._wait_script = client.register_script(_WAIT)
        self._always_wake = isinstance(client, RedisCluster)
        # Held leases by token, with when each is next due for renewal: one sweeper per
        # loop renews every lease due in one pipeline (a miss arms no timer of its own).
        self._held: dict[str, tuple[Lease, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.wakeups = WakeUps(
            client,
            self.channel,
            timeout=timeout,
            recheck=self._recheck,
            on_error=self._count_error,
            closed=lambda: self._closed,
        )

    def _lease_key(self, key: str) -> str:
        return f"{self.namespace}:lease:{key}"

    def _waited_key(self, key: str) -> str:
        # The lease key as a hash tag: the same slot as the lease wherever it lives.
        return f"{{{self._lease_key(key)}}}:waited"

    def lease_key(self, key: str) -> str:
        """The Redis key of the lease on ``key``."""
        return self._lease_key(key)

    def lease_request(self, key: str, token: str) -> tuple[str, str, int]:
        """What a lookup needs to take the lease on ``key`` with ``token`` on a miss."""
        return self._lease_key(key), token, self.lease_ms

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))

    new_token = staticmethod(new_token)

    def adopt(self, lease: Lease) -> Lease:
        """Hold a lease taken elsewhere (with a lookup, by ``RedisStore.lookup``):
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
        before the first renewal is due: holding a lease costs an entry in ``_held``, and
        one sweeper per loop, armed while any lease is held, renews those that are due."""
        loop = asyncio.get_running_loop()
        self._held[lease.token] = (lease, loop.time() + self.lease_ttl / 3)
        if self._sweeper is None:
            self._arm(loop, self.lease_ttl / 3)

    def _arm(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        # A context of its own: not the request's (whose L2 fault would skip renewals).
        self._sweeper = loop.call_later(delay, self._sweep, context=contextvars.Context())

    def _sweep(self) -> None:
        """Renew the held leases that are due (in a task: the renewal awaits Redis)."""
        self._sweeper = None
        if self._closed or not self._held:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = [lease for lease, at in self._held.values() if at <= now]
        if due and (self._renewing is None or self._renewing.done()):
            self._renewing = loop.create_task(self._renew(due))
        soonest = min(at for _, at in self._held.values())
        self._arm(loop, max(soonest - now, self.lease_ttl / 30))

    def _renewed(self, lease: Lease, alive: bool) -> None:
        if lease.token not in self._held:
            return  # released meanwhile
        if alive:
            when = asyncio.get_running_loop().time() + self.lease_ttl / 3
            self._held[lease.token] = (lease, when)
        else:  # expired or taken over: nothing left to keep alive
            del self._held[lease.token]

    async def release(self, lease: Lease) -> None:
        """Give the lease up (only if still ours), then wake this key's waiters fleet-wide.

        The work runs in its own task, so it completes (within ``2 * timeout``) even
        when the caller is cancelled, as a request whose client went away is.
        """
        self._held.pop(lease.token, None)
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
        self._held.pop(lease.token, None)
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
        self.wakeups.add(key, woken)
        try:
            # A wake-up published before our SUBSCRIBE is active would be lost (until the
            # re-check), so be subscribed before looking at the lease: acquire() started it.
            with contextlib.suppress(asyncio.TimeoutError):
                budget = max(0.0, min(self.timeout, deadline - loop.time()))
                await within(self.wakeups.subscribed.wait(), budget)
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
            self.wakeups.discard(key, woken)

    async def _still_held(self, key: str) -> Any:
        if self._always_wake:
            return await self.client.exists(self._lease_key(key))
        keys = [self._lease_key(key), self._waited_key(key)]
        return await self._wait_script(keys=keys, args=[self.lease_ms])

    async def close(self) -> None:
        """Stop listening and renewing; held leases expire within ``lease_ttl``. Returns
        within about a second whatever Redis does (see ``bus.finish``)."""
        self._closed = True
        self._bind()
        tasks: list[asyncio.Task[None]] = [*self._releases]
        if self._renewing is not None:
            tasks.append(self._renewing)
        if self.wakeups.listener is not None:
            tasks.append(self.wakeups.listener)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._held.clear()
        self.wakeups.cancel_all()
        await finish(tasks)

    async def _call(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await self.run(operation, what)
        except StoreUnavailable:
            self._count_error()
            raise

    def _count_error(self) -> None:
        self.errors += 1

    async def _renew(self, due: list[Lease]) -> None:
        """Renew every lease in ``due`` in one round trip (compare-and-set by token)."""
        ttl = max(1, int(self.lease_ttl * 1000))
        commands = [
            ("eval", (_RENEW, 1, self._lease_key(lease.key), lease.token, ttl)) for lease in due
        ]
        try:
            replies = await self._call(
                lambda: scripts.pipeline(self.client, commands), "lease renew"
            )
        except StoreUnavailable:
            return  # they may still be ours: the next sweep tries again
        for lease, alive in zip(due, replies, strict=True):
            self._renewed(lease, bool(alive))

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
            self._loop = loop
            self.wakeups.reset()
            self._held.clear()
            self._sweeper = self._renewing = None
            self._releases.clear()

    def _listen(self) -> None:
        self._bind()
        self.wakeups.listen()
