"""Fault injection: a real redis-server behind a fault-injecting proxy, or stopped, paused,
restarted, or holding corrupt values. Whatever Redis does, every request gets the origin's
answer within a bounded time, L1 keeps serving, the breaker opens under a sustained fault,
and caching through L2 resumes once Redis is back.

A second part checks the time budget under a saturated event loop: a burst must not be
mistaken for a Redis outage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgpack
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import FullJitterBackoff

from fastapi_tiered_cache import TieredCache
from fastapi_tiered_cache.codec import FORMAT_VERSION, decode
from fastapi_tiered_cache.entry import CachedResponse
from fastapi_tiered_cache.metrics import Event
from fastapi_tiered_cache.stores import MemoryStore, RedisStore, TieredStore
from fastapi_tiered_cache.stores.breaker import (
    BreakerState,
    CircuitBreaker,
    Overloaded,
    StoreTimeout,
)
from fastapi_tiered_cache.stores.connect import RETRIES

from .helpers import Origin, client_for, make_cache
from .support.redis_server import RedisServer
from .support.tcp_proxy import TcpProxy

BUDGET = 0.05  # seconds per Redis operation (TIERED_CACHE_REDIS_TIMEOUT)
SOCKET_TIMEOUT = 0.25  # seconds; redis-py's own timeouts, above the budget
THRESHOLD = 3  # consecutive failures that open the breaker
COOLDOWN = 0.2  # seconds the breaker stays open
# A request makes at most a handful of Redis operations, each bounded by the budget, plus the
# origin (instant here); one second is generous slack for a loaded CI machine.
MAX_REQUEST_SECONDS = 1.0
WARM = [f"/warm/{i}" for i in range(4)]


def path_origin() -> Origin:
    return Origin(body=lambda scope: scope["path"].encode())


def faulty_cache(port: int) -> tuple[TieredCache, aioredis.Redis]:
    client = aioredis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        # The retry policy connect() gives its clients. redis-py's default (10 retries, with
        # a backoff of up to 1 s) can hold a cancelled command for seconds; see the end.
        retry=Retry(FullJitterBackoff(cap=0.1, base=0.01), RETRIES),
    )
    cache = make_cache(
        redis=client,
        redis_timeout=BUDGET,
        breaker_threshold=THRESHOLD,
        breaker_cooldown=COOLDOWN,
    )
    # What the settings above ask for, set explicitly so the test does not depend on how
    # TieredCache wires them.
    cache.store.breaker = CircuitBreaker(THRESHOLD, COOLDOWN)
    # An app without the invalidation bus, whose L1 keeps serving through a fault (with
    # the bus, losing it drops L1: tests/test_invalidation.py covers that).
    cache.start_on_first_use = False
    return cache, client


@dataclass
class Rig:
    """One app (a counting origin behind the cache) whose L2 goes through ``proxy``."""

    server: RedisServer
    proxy: TcpProxy
    cache: TieredCache
    http: httpx.AsyncClient
    origin: Origin = field(default_factory=path_origin)
    slowest: float = 0.0

    @property
    def breaker(self) -> CircuitBreaker:
        return self.cache.store.breaker

    async def get(self, path: str) -> httpx.Response:
        """GET ``path``: always the origin's answer, never slower than the bound."""
        started = time.monotonic()
        response = await self.http.get(path)
        elapsed = time.monotonic() - started
        self.slowest = max(self.slowest, elapsed)
        assert response.status_code == 200, (path, response.status_code)
        assert response.content == path.encode(), (path, response.content)
        assert elapsed < MAX_REQUEST_SECONDS, f"{path} took {elapsed:.3f}s"
        return response

    def origin_calls_for(self, path: str) -> int:
        return sum(1 for scope in self.origin.scopes if scope["path"] == path)


@pytest.fixture
async def rig(fresh_redis_server: RedisServer) -> AsyncIterator[Rig]:
    async with TcpProxy(fresh_redis_server.port) as proxy:
        cache, client = faulty_cache(proxy.port)
        origin = path_origin()
        async with client_for(origin, cache) as http:
            yield Rig(fresh_redis_server, proxy, cache, http, origin)
        await cache.close()
        await client.aclose()


async def in_l2(server: RedisServer, path: str) -> bool:
    """Whether a fresh worker, talking to the server directly, finds ``path`` in L2."""
    client = aioredis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)
    reader = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)
    origin = path_origin()
    try:
        async with client_for(origin, reader) as http:
            response = await http.get(path)
    finally:
        await reader.close()
        await client.aclose()
    return response.headers["x-cache"] == "HIT"


async def cut_repeatedly(proxy: TcpProxy, stop: asyncio.Event) -> None:
    while not stop.is_set():
        proxy.cut()
        await asyncio.sleep(0.01)


Fault = Callable[[Rig], Awaitable[Callable[[], Awaitable[None]]]]


async def delay(rig: Rig) -> Callable[[], Awaitable[None]]:
    rig.proxy.delay(4 * BUDGET)  # each way: a round trip costs 8 budgets

    async def heal() -> None:
        rig.proxy.passthrough()

    return heal


async def blackhole(rig: Rig) -> Callable[[], Awaitable[None]]:
    rig.proxy.blackhole()

    async def heal() -> None:
        rig.proxy.passthrough()

    return heal


async def drop(rig: Rig) -> Callable[[], Awaitable[None]]:
    rig.proxy.drop(cut_existing=True)

    async def heal() -> None:
        rig.proxy.passthrough()

    return heal


async def cut_mid_traffic(rig: Rig) -> Callable[[], Awaitable[None]]:
    stop = asyncio.Event()
    cutter = asyncio.ensure_future(cut_repeatedly(rig.proxy, stop))

    async def heal() -> None:
        stop.set()
        await cutter

    return heal


async def server_stop(rig: Rig) -> Callable[[], Awaitable[None]]:
    await asyncio.to_thread(rig.server.stop)

    async def heal() -> None:
        await asyncio.to_thread(rig.server.start)

    return heal


async def server_paused(rig: Rig) -> Callable[[], Awaitable[None]]:
    rig.server.pause()  # SIGSTOP: connections stay open, nothing answers

    async def heal() -> None:
        rig.server.resume()

    return heal


FAULTS: dict[str, Fault] = {
    "delay": delay,
    "blackhole": blackhole,
    "drop": drop,
    "cut": cut_mid_traffic,
    "stop": server_stop,
    "paused": server_paused,
}
# Cutting every connection each 10 ms lets some commands through between cuts; a breaker
# that counts *consecutive* failures may rightly stay closed through it.
INTERMITTENT = {"cut"}


async def recover(rig: Rig, *, deadline: float = 10.0) -> None:
    """Send requests until the breaker has closed again (after at least one cooldown)."""
    started = time.monotonic()
    n = 0
    while rig.breaker.state is not BreakerState.CLOSED or rig.breaker.failures:
        assert time.monotonic() - started < deadline, f"still {rig.breaker.state}"
        await asyncio.sleep(COOLDOWN / 2)
        n += 1
        await rig.get(f"/probe/{n}")


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_every_request_is_answered_through_a_sustained_fault(rig: Rig, fault: str) -> None:
    for path in WARM:
        await rig.get(path)
    assert await in_l2(rig.server, WARM[0])

    heal = await FAULTS[fault](rig)
    try:
        for n in range(12):
            warm = await rig.get(WARM[n % len(WARM)])
            assert warm.headers["x-cache"] == "HIT"  # L1 keeps serving what it had
            await rig.get(f"/during/{n}")
        await asyncio.gather(*(rig.get(f"/burst/{n}") for n in range(8)))
        if fault not in INTERMITTENT:
            assert rig.breaker.transitions[BreakerState.OPEN] >= 1
            assert rig.cache.store.short_circuits > 0  # while open, L2 was not even asked
    finally:
        await heal()
    assert all(rig.origin_calls_for(path) == 1 for path in WARM)

    await recover(rig)
    # Every opening was followed by a closing (an intermittent fault may never open it).
    transitions = rig.breaker.transitions
    assert transitions[BreakerState.CLOSED] >= transitions[BreakerState.OPEN]
    if fault not in INTERMITTENT:
        assert rig.breaker.transitions[BreakerState.CLOSED] >= 1
    await rig.get("/after")
    assert await in_l2(rig.server, "/after")  # caching through L2 resumed
    assert rig.slowest < MAX_REQUEST_SECONDS


async def test_a_restart_mid_traffic_costs_nothing_but_misses(rig: Rig) -> None:
    for path in WARM:
        await rig.get(path)
    restart = asyncio.ensure_future(asyncio.to_thread(rig.server.restart))
    n = 0
    while not restart.done():
        n += 1
        await rig.get(f"/during/{n}")
        assert (await rig.get(WARM[n % len(WARM)])).headers["x-cache"] == "HIT"
    await restart
    await recover(rig)
    await rig.get("/after")
    assert await in_l2(rig.server, "/after")


async def test_a_flapping_redis_never_fails_a_request(rig: Rig) -> None:
    for n in range(40):
        if n % 10 == 0:
            rig.proxy.blackhole()
        elif n % 10 == 5:
            rig.proxy.passthrough()
        await rig.get(f"/flap/{n % 7}")
    rig.proxy.passthrough()
    await recover(rig)
    await rig.get("/after")
    assert await in_l2(rig.server, "/after")


# ------------------------------------------------------------------ corrupt values


def corrupt(raw: bytes, how: str, foreign: bytes) -> bytes:
    if how == "flipped":
        middle = len(raw) // 2
        return raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 8]) + raw[middle + 8 :]
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "future-version":
        value = msgpack.unpackb(raw)
        value[0] = FORMAT_VERSION + 1
        return bytes(msgpack.packb(value, use_bin_type=True))
    if how == "foreign-entry":
        return foreign  # a valid entry, but written for another key
    return b'{"not": "ours"}'  # another application's value under our key


@pytest.mark.parametrize(
    "how", ["flipped", "truncated", "future-version", "foreign-entry", "foreign-value"]
)
async def test_a_corrupt_value_is_a_miss_deleted_and_counted(redis_url: str, how: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    origin = path_origin()
    writer = make_cache(redis=client, redis_timeout=1.0)
    reader = make_cache(redis=client, redis_timeout=1.0)
    events: list[tuple[Event, str]] = []
    assert isinstance(reader.store.l2, RedisStore)
    reader.store.l2.report = lambda event, reason: events.append((event, reason))
    async with client_for(origin, writer) as w, client_for(origin, reader) as r:
        await w.get("/p")
        await w.get("/q")
        keys: dict[str, bytes] = {}
        for name in await client.keys("ftc:g*"):
            value = await client.get(name)
            assert isinstance(name, bytes) and isinstance(value, bytes)
            keys[name.decode()] = value
        key_p, key_q = writer_key(keys, "/p"), writer_key(keys, "/q")
        await client.set(key_p, corrupt(keys[key_p], how, keys[key_q]))

        response = await r.get("/p")
        assert (response.status_code, response.content) == (200, b"/p")
        assert response.headers["x-cache"] == "MISS"
        assert origin.calls == 3
        raw = await client.get(key_p)  # deleted, then stored afresh by this miss
        assert isinstance(raw, bytes)
        decoded = decode(key_p, raw)
        assert isinstance(decoded, CachedResponse) and decoded.body == b"/p"
        assert (await r.get("/q")).headers["x-cache"] == "HIT"  # others untouched
    assert reader.store.l2.decode_errors == 1
    assert events == [(Event.REDIS_ERROR, "decode")]
    assert reader.store.faults == 0
    assert reader.store.breaker.state is BreakerState.CLOSED  # an answer, not a failure
    await writer.close()
    await reader.close()
    await client.aclose()


def writer_key(keys: dict[str, bytes], path: str) -> str:
    """The key whose stored body is ``path``."""
    for key, raw in keys.items():
        record = decode(key, raw)
        if isinstance(record, CachedResponse) and record.body == path.encode():
            return key
    raise AssertionError(f"no entry for {path}")


# ------------------------------------------------------------------ a saturated event loop


def spin(seconds: float) -> None:
    """Burn CPU without yielding: what a request's own work does to the event loop."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def burst(store: TieredStore, n: int, cpu: float) -> list[bool]:
    async def one(i: int) -> bool:
        spin(cpu)
        found = await store.get(f"k{i}")
        spin(cpu)
        return found is not None

    return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize(
    ("max_stretch", "expect_hits"),
    [(1000.0, True), (1.0, False)],
    ids=["lag-is-not-charged", "control-without-stretch"],
)
async def test_a_burst_on_a_saturated_loop_is_not_a_redis_outage(
    redis_url: str, max_stretch: float, expect_hits: bool
) -> None:
    """500 concurrent GETs, each with CPU work around it, on one loop, with a 50 ms budget.

    Redis answers each in well under a millisecond, but the loop needs far longer than 50 ms
    to get back to any of them. With loop lag not charged to the budget (and the stretch
    limit far away) every GET is a hit and nothing counts as a failure. The control, whose
    wall-clock limit is the budget itself, shows the same burst would otherwise miss: its
    misses are Overloaded, so even then the breaker stays closed.
    """
    # 50 ms: the loop needs 500 ms to get back to the last GET, and a CI machine running
    # several suites at once may also take the process off the CPU for tens of ms.
    n, budget = 500, 0.05
    client = aioredis.Redis.from_url(redis_url, socket_timeout=30, max_connections=64)
    remote = RedisStore(client, timeout=budget, max_stretch=max_stretch, max_in_flight=64)
    events: list[tuple[Event, str]] = []
    store = TieredStore(
        None,
        remote,
        breaker=CircuitBreaker(threshold=5, cooldown=60.0),
        report=lambda event, reason: events.append((event, reason)),
    )
    record = CachedResponse(status=200, headers=(), body=b"x" * 200, stored_at=0, fresh_for=1)
    loader = RedisStore(client, timeout=10.0, owns_client=False, max_in_flight=64)
    await asyncio.gather(*(loader.set(f"k{i}", record, 600) for i in range(n)))

    try:
        hits = await burst(store, n, cpu=0.0005)
    finally:
        await store.close()  # and its client

    assert store.breaker.transitions[BreakerState.OPEN] == 0, set(events)
    assert (Event.REDIS_TIMEOUT, "timeout") not in events  # nothing charged to Redis
    if expect_hits:
        assert sum(hits) == n and store.faults == 0
    else:
        assert sum(hits) < n // 10
        assert set(events) == {(Event.REDIS_ERROR, "overloaded")}


async def test_a_hung_redis_still_times_out_within_the_budget_on_an_idle_loop() -> None:
    class Hanging:
        async def get(self, key: str) -> Any:
            await asyncio.sleep(3600)

    remote = RedisStore(Hanging(), timeout=BUDGET, owns_client=False)
    started = time.monotonic()
    with pytest.raises(StoreTimeout):
        await remote.get("k")
    elapsed = time.monotonic() - started
    assert BUDGET <= elapsed < BUDGET + 0.5


async def test_a_hung_redis_under_a_cpu_hog_gives_up_at_the_stretch_limit() -> None:
    """While the loop is stalled the budget is not spent; the wall-clock limit still holds."""

    class Hanging:
        async def get(self, key: str) -> Any:
            await asyncio.sleep(3600)

    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            spin(0.03)  # far longer than the heartbeat: every period is stalled
            await asyncio.sleep(0)

    remote = RedisStore(Hanging(), timeout=0.01, max_stretch=20.0, owns_client=False)
    hogger = asyncio.ensure_future(hog())
    started = time.monotonic()
    try:
        with pytest.raises(Overloaded):
            await remote.get("k")
    finally:
        stop.set()
        await hogger
    assert 0.2 <= time.monotonic() - started < 0.2 + 0.5


async def test_pool_exhaustion_is_overload_not_a_redis_failure(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, max_connections=2)
    store = TieredStore(
        MemoryStore(), RedisStore(client, timeout=1.0), breaker=CircuitBreaker(threshold=1)
    )

    # Hold both pooled connections with blocking reads on a list nobody pushes to.
    holders = [asyncio.ensure_future(client.blpop(["nothing"], timeout=1)) for _ in range(2)]
    await asyncio.sleep(0.1)
    assert await store.get("k") is None
    assert store.faults == 1 and store.breaker.state is BreakerState.CLOSED
    await asyncio.gather(*holders)
    await store.close()
    await client.aclose()


# ------------------------------------------------------------------ a client slow to cancel


class SlowToCancel(aioredis.Redis):
    """A real client that, once ``stalled``, hangs, and needs a second to give up when
    cancelled: what redis-py does when a cancellation lands in its connect-and-retry path
    (it becomes a connection error, then a backoff sleep; seen with the proxy's drop mode).
    """

    stalled = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not self.stalled:
            return await super().execute_command(*args, **options)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)
            raise aioredis.ConnectionError("gave up after the backoff") from None


async def test_the_store_bounds_an_operation_whose_client_is_slow_to_cancel(
    redis_url: str,
) -> None:
    client = SlowToCancel.from_url(redis_url)
    store = RedisStore(client, timeout=BUDGET)
    client.stalled = True
    started = time.monotonic()
    with pytest.raises(StoreTimeout):
        await store.get("k")
    assert time.monotonic() - started < 2 * BUDGET + 0.5  # the budget, then as long again
    client.stalled = False
    await asyncio.sleep(1.1)  # the abandoned command ends on its own, its error consumed
    await store.close()


async def test_a_request_is_bounded_when_the_client_is_slow_to_cancel(redis_url: str) -> None:
    client = SlowToCancel.from_url(redis_url)
    cache = make_cache(redis=client, redis_timeout=BUDGET)
    origin = path_origin()
    async with client_for(origin, cache) as http:
        await http.get("/warm")
        client.stalled = True
        started = time.monotonic()
        response = await http.get("/slow")
        elapsed = time.monotonic() - started
        client.stalled = False
    await cache.close()
    await client.aclose()
    assert (response.status_code, response.content) == (200, b"/slow")
    assert elapsed < MAX_REQUEST_SECONDS


class RetriedSet(aioredis.Redis):
    """A real client whose first SET lands but loses its reply, so the client's retry runs
    it again: what a connection cut between command and reply does under redis-py's retry."""

    lose_next_set_reply = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] == "SET" and self.lose_next_set_reply:
            self.lose_next_set_reply = False
            await super().execute_command(*args, **options)  # landed; the reply is lost
        return await super().execute_command(*args, **options)


async def test_a_lost_lease_reply_does_not_make_a_request_wait_on_itself(redis_url: str) -> None:
    client = RetriedSet.from_url(redis_url)
    cache = make_cache(redis=client, redis_timeout=BUDGET)
    origin = path_origin()
    async with client_for(origin, cache) as http:
        await http.get("/warm")
        client.lose_next_set_reply = True
        started = time.monotonic()
        response = await http.get("/lost-reply")
        elapsed = time.monotonic() - started
    await cache.close()
    await client.aclose()
    assert (response.status_code, response.content) == (200, b"/lost-reply")
    assert elapsed < MAX_REQUEST_SECONDS


@pytest.mark.parametrize("fault", ["delay", "blackhole"])
async def test_a_request_meets_one_redis_fault_at_most(rig: Rig, fault: str) -> None:
    """After one L2 operation of a request fails, the request asks Redis nothing more
    (no lease, no store, no index update): a hung Redis costs it one budget, not one per
    command. Here the breaker's threshold is never reached by one request."""
    await rig.get(WARM[0])  # scripts loaded, generation counters known
    if fault == "delay":
        rig.proxy.delay(4 * BUDGET)
    else:
        rig.proxy.blackhole()
    try:
        for n in range(THRESHOLD - 1):  # the breaker stays closed throughout
            before = rig.cache.store.faults
            await rig.get(f"/cold/{n}")
            assert rig.cache.store.faults - before == 1
            assert rig.breaker.state is BreakerState.CLOSED
    finally:
        rig.proxy.passthrough()


async def test_a_lease_waiter_goes_to_the_origin_when_the_breaker_opens(
    fresh_redis_server: RedisServer,
) -> None:
    """Process A holds the fleet lease of a key (its origin is slow); B waits for A's
    wake-up. Redis then stalls: no wake-up can reach B, and B's breaker opens. B goes to
    its origin at once, not at its next re-check of the lease (``lease_ttl / 2``, 2 s here)."""
    from fastapi_tiered_cache import CacheSettings

    settings = CacheSettings(
        redis_url=fresh_redis_server.url,
        lease_ttl=4.0,
        coalesce_wait=10.0,
        redis_timeout=0.05,
        breaker_threshold=3,
    )
    a, b = TieredCache(settings), TieredCache(settings)
    release_a = asyncio.Event()

    async def slow() -> str:
        await release_a.wait()
        return "from A"

    async def quick() -> str:
        return "from B"

    try:
        assert await a.warm_up() and await b.warm_up()
        holder = asyncio.create_task(a.get_or_set("key", slow, ttl=60))
        await asyncio.sleep(0.2)  # A holds the lease, its origin running
        waiter = asyncio.create_task(b.get_or_set("key", quick, ttl=60))
        await asyncio.sleep(0.2)  # B found the lease held and waits for A's wake-up
        assert not waiter.done()
        fresh_redis_server.pause()
        try:
            started = time.monotonic()
            for _ in range(3):  # B's other requests meet the stall: its breaker opens
                assert await b.get("other") is None
            assert b.store.breaker.state is BreakerState.OPEN
            assert await asyncio.wait_for(waiter, 1.0) == "from B"
            assert time.monotonic() - started < 1.0
        finally:
            fresh_redis_server.resume()
        release_a.set()
        assert await holder == "from A"
    finally:
        release_a.set()
        await a.close()
        await b.close()
