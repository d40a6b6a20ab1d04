"""Stampede protection: in-process single flight, the fleet lease (real Redis), hit-for-miss."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tiered_cache.flights import HitForMiss, LeaderFailed, SingleFlight
from fastapi_tiered_cache.leases import FleetLease, Lease, new_token
from fastapi_tiered_cache.policy import should_refresh_early

from .helpers import FakeClock
from .support.redis_server import RedisServer
from .support.tcp_proxy import TcpProxy

MakeFleet = Callable[..., FleetLease]


async def _settle() -> None:
    """Let every ready task run up to its next suspension point."""
    for _ in range(5):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- SingleFlight


async def test_two_hundred_concurrent_runs_call_compute_once() -> None:
    flight: SingleFlight[dict[str, int]] = SingleFlight()
    gate = asyncio.Event()
    calls = 0

    async def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return {"value": 42}

    tasks = [asyncio.create_task(flight.run("k", compute)) for _ in range(200)]
    await _settle()
    assert len(flight) == 1
    gate.set()
    outcomes = await asyncio.gather(*tasks)
    assert calls == 1
    assert sum(leader for _, leader in outcomes) == 1
    first = outcomes[0][0]
    assert all(result is first for result, _ in outcomes)  # the very same object
    assert len(flight) == 0


async def test_distinct_keys_run_independently() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate_a = asyncio.Event()

    async def slow_a() -> str:
        await gate_a.wait()
        return "a"

    async def fast_b() -> str:
        return "b"

    task_a = asyncio.create_task(flight.run("a", slow_a))
    await _settle()
    assert await flight.run("b", fast_b) == ("b", True)  # not queued behind "a"
    gate_a.set()
    assert await task_a == ("a", True)
    assert len(flight) == 0


async def test_a_finished_flight_is_not_a_cache() -> None:
    flight: SingleFlight[int] = SingleFlight()
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await flight.run("k", compute) == (1, True)
    assert await flight.run("k", compute) == (2, True)


async def _leader_and_waiters(
    flight: SingleFlight[str], compute: Callable[[], Awaitable[str]], waiters: int = 10
) -> tuple[asyncio.Task[tuple[str, bool]], list[asyncio.Task[tuple[str, bool]]]]:
    leader = asyncio.create_task(flight.run("k", compute))
    await _settle()
    followers = [asyncio.create_task(flight.run("k", compute)) for _ in range(waiters)]
    await _settle()
    return leader, followers


async def test_leader_error_stays_with_the_leader() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate = asyncio.Event()

    async def failing() -> str:
        await gate.wait()
        raise ValueError("origin exploded")

    leader, followers = await _leader_and_waiters(flight, failing)
    gate.set()
    with pytest.raises(ValueError, match="origin exploded"):
        await leader
    results = await asyncio.gather(*followers, return_exceptions=True)
    assert all(isinstance(r, LeaderFailed) and r.reason == "error" for r in results)
    assert len(flight) == 0


async def test_cancelled_leader_releases_its_waiters() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    leader, followers = await _leader_and_waiters(flight, hangs)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    results = await asyncio.wait_for(asyncio.gather(*followers, return_exceptions=True), 1.0)
    assert all(isinstance(r, LeaderFailed) and r.reason == "cancelled" for r in results)
    assert len(flight) == 0

    async def works() -> str:
        return "again"

    assert await flight.run("k", works) == ("again", True)  # a new leader is elected


async def test_cancelled_waiter_disturbs_nobody() -> None:
    flight: SingleFlight[str] = SingleFlight()
    gate = asyncio.Event()

    async def compute() -> str:
        await gate.wait()
        return "done"

    leader, followers = await _leader_and_waiters(flight, compute, waiters=3)
    followers[0].cancel()
    await _settle()
    gate.set()
    assert await leader == ("done", True)
    with pytest.raises(asyncio.CancelledError):
        await followers[0]
    assert [await f for f in followers[1:]] == [("done", False)] * 2


async def test_waiter_gives_up_after_wait() -> None:
    flight: SingleFlight[str] = SingleFlight(wait=0.05)
    gate = asyncio.Event()

    async def compute() -> str:
        await gate.wait()
        return "late"

    leader, followers = await _leader_and_waiters(flight, compute, waiters=1)
    with pytest.raises(LeaderFailed) as failed:
        await followers[0]
    assert failed.value.reason == "timeout"
    gate.set()
    assert await leader == ("late", True)
    assert len(flight) == 0


# --------------------------------------------------------------------------- FleetLease


@pytest.fixture
async def fleets(redis_url: str) -> AsyncIterator[MakeFleet]:
    """Builds FleetLeases, each on its own client (one per simulated process)."""
    async with _Fleets(redis_url) as make:
        yield make


class _Fleets:
    """Makes FleetLeases on clients of their own; closes them all on exit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[tuple[FleetLease, aioredis.Redis]] = []

    def __call__(self, **options: Any) -> FleetLease:
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=1.0)
        defaults: dict[str, Any] = {"namespace": "t", "lease_ttl": 5.0, "wait": 5.0, "timeout": 1.0}
        fleet = FleetLease(client, **{**defaults, **options})
        self.made.append((fleet, client))
        return fleet

    async def __aenter__(self) -> MakeFleet:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for fleet, client in self.made:
            await fleet.close()
            await client.aclose()


async def _admin(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True)


async def test_one_process_of_four_computes_and_wakes_the_rest(
    fleets: MakeFleet, redis_url: str
) -> None:
    processes = [fleets() for _ in range(4)]
    leases = await asyncio.gather(*(p.acquire("k") for p in processes))
    holders = [(p, lease) for p, lease in zip(processes, leases, strict=True) if lease is not None]
    assert len(holders) == 1
    holder, lease = holders[0]
    assert lease is not None
    assert lease.fleet
    admin = await _admin(redis_url)
    assert await admin.get("t:lease:k") == lease.token
    assert 0 < await admin.pttl("t:lease:k") <= 5000

    waiters = [p for p in processes if p is not holder]
    started = time.monotonic()
    waiting = [asyncio.create_task(p.wait_for("k")) for p in waiters]
    await asyncio.sleep(0.2)
    await holder.release(lease)
    woken = await asyncio.gather(*waiting)
    elapsed = time.monotonic() - started
    assert woken == [True, True, True]
    # Woken by the wake-up: the timeout (5 s) and the re-check (2.5 s) are far later.
    assert elapsed < 1.5
    assert await admin.exists("t:lease:k") == 0
    assert sum(p.errors for p in processes) == 0
    await admin.aclose()


async def test_one_subscription_per_process(fleets: MakeFleet, redis_url: str) -> None:
    holder, other = fleets(), fleets()
    lease = await holder.acquire("k")
    assert lease is not None
    waiting = [asyncio.create_task(other.wait_for("k")) for _ in range(50)]
    await asyncio.sleep(0.2)
    admin = await _admin(redis_url)
    assert await admin.pubsub_numsub("t:lease-wake") == [("t:lease-wake", 2)]
    await holder.release(lease)
    assert all(await asyncio.gather(*waiting))
    await admin.aclose()


async def test_a_wake_up_is_for_its_key_only(fleets: MakeFleet) -> None:
    holder, other = fleets(), fleets()
    lease_a, lease_b = await holder.acquire("a"), await holder.acquire("b")
    assert lease_a is not None
    assert lease_b is not None
    wait_a = asyncio.create_task(other.wait_for("a"))
    wait_b = asyncio.create_task(other.wait_for("b", timeout=0.5))
    await asyncio.sleep(0.1)
    await holder.release(lease_a)
    assert await wait_a is True
    assert await wait_b is False  # "b" is still held
    await holder.release(lease_b)


async def test_a_release_nobody_waited_on_wakes_nobody(fleets: MakeFleet, redis_url: str) -> None:
    """Most misses are waited on by no one: their release must not message every process
    of the fleet. Once a waiter has marked the lease, the release wakes it."""
    holder, other = fleets(), fleets()
    listener = aioredis.Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe("t:lease-wake")
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation

    async def wake_ups() -> list[bytes]:
        found = []
        while (message := await pubsub.get_message(timeout=0.3)) is not None:
            found.append(message["data"])
        return found

    for n in range(5):
        lease = await holder.acquire(f"quiet-{n}")
        assert lease is not None
        await holder.release(lease)
    assert await wake_ups() == []

    lease = await holder.acquire("busy")
    assert lease is not None
    waiting = asyncio.create_task(other.wait_for("busy"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await holder.release(lease)
    assert await waiting is True
    assert time.monotonic() - started < 1.0  # the wake-up, not the re-check (2.5 s)
    assert await wake_ups() == [b"busy"]
    await pubsub.aclose()
    await listener.aclose()


async def test_wait_for_a_free_key_returns_at_once(fleets: MakeFleet) -> None:
    started = time.monotonic()
    assert await fleets().wait_for("nobody-holds-this") is True
    assert time.monotonic() - started < 1.0


async def test_wait_for_times_out_while_the_lease_is_held(fleets: MakeFleet) -> None:
    holder, other = fleets(), fleets()
    lease = await holder.acquire("k")
    assert lease is not None
    started = time.monotonic()
    assert await other.wait_for("k", timeout=0.3) is False
    assert 0.25 < time.monotonic() - started < 2.0
    await holder.release(lease)


async def test_a_crashed_owner_blocks_others_for_at_most_lease_ttl(fleets: MakeFleet) -> None:
    owner, other = fleets(lease_ttl=0.5), fleets(lease_ttl=0.5)
    assert await owner.acquire("k") is not None
    await owner.close()  # crash: no release, no more renewals
    assert await other.acquire("k") is None
    started = time.monotonic()
    assert await other.wait_for("k") is True  # noticed by the periodic re-check
    assert time.monotonic() - started < 1.5
    assert await other.acquire("k") is not None


async def test_renewal_keeps_a_held_lease_alive(fleets: MakeFleet, redis_url: str) -> None:
    # Renewed every third of its life: a lifetime of 1 s leaves a loaded machine 0.6 s of
    # slack per renewal (0.3 s left only 0.2 s, and a busy CI lost the lease).
    holder, other = fleets(lease_ttl=1.0), fleets(lease_ttl=1.0)
    lease = await holder.acquire("k")
    assert lease is not None
    deadline = time.monotonic() + 1.6  # past its first life: only renewals kept it
    while time.monotonic() < deadline:
        assert await other.acquire("k") is None
        await asyncio.sleep(0.1)
    await holder.release(lease)
    taken = await other.acquire("k")
    assert taken is not None
    assert taken.fleet
    await other.release(taken)


async def test_every_held_lease_is_renewed_by_one_sweeper_in_one_round_trip(
    fleets: MakeFleet, redis_url: str
) -> None:
    """Holding a lease arms no timer of its own: one sweeper per loop renews every lease
    due, in one pipeline."""
    holder, other = fleets(lease_ttl=1.0), fleets(lease_ttl=1.0)
    renewals: list[str] = []
    run = holder.run

    async def counted(operation: Any, what: str, budgets: float = 1.0) -> Any:
        if what == "lease renew":
            renewals.append(what)
        return await run(operation, what, budgets)

    holder.run = counted
    leases = [await holder.acquire(f"k{i}") for i in range(30)]
    assert all(lease is not None for lease in leases)
    assert holder._sweeper is not None  # one timer for all thirty
    await asyncio.sleep(1.6)  # past their first life: only renewals kept them
    assert all([await other.acquire(f"k{i}") is None for i in range(30)])
    # One round trip per sweep, not one per lease: each of the thirty was renewed (the
    # other fleet could take none), in fewer round trips than there are leases. How
    # many sweeps it took depends on how far apart a loaded machine spread the acquires.
    assert 1 <= len(renewals) < len(leases)
    for lease in leases:
        assert lease is not None
        await holder.release(lease)
    assert not holder._held


async def test_only_the_owner_can_release(fleets: MakeFleet, redis_url: str) -> None:
    first, second = fleets(), fleets()
    admin = await _admin(redis_url)
    old = await first.acquire("k")
    assert old is not None
    await admin.delete("t:lease:k")  # as if it expired while its owner was stalled
    new = await second.acquire("k")
    assert new is not None
    await first.release(old)  # a stale token
    await first.release(Lease("k", "forged-token"))
    assert await admin.get("t:lease:k") == new.token
    await second.release(new)
    await second.release(new)  # twice is harmless
    assert await admin.exists("t:lease:k") == 0
    await admin.aclose()


async def test_a_stale_owner_cannot_renew_a_newer_lease(fleets: MakeFleet, redis_url: str) -> None:
    first, second = fleets(lease_ttl=0.3), fleets(lease_ttl=0.3)
    admin = await _admin(redis_url)
    assert await first.acquire("k") is not None  # and keeps renewing its token
    await admin.delete("t:lease:k")
    assert await second.acquire("k") is not None
    await second.close()  # the new owner crashes
    await asyncio.sleep(0.6)
    assert await admin.exists("t:lease:k") == 0  # the first owner did not keep it alive
    await admin.aclose()


async def test_release_completes_when_the_caller_is_cancelled(fleets: MakeFleet) -> None:
    holder, other = fleets(), fleets()
    lease = await holder.acquire("k")
    assert lease is not None
    waiting = asyncio.create_task(other.wait_for("k"))
    await asyncio.sleep(0.1)
    releasing = asyncio.create_task(holder.release(lease))
    await asyncio.sleep(0)  # the release job has started
    releasing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await releasing
    assert await asyncio.wait_for(waiting, 1.5) is True


async def test_close_sends_waiters_to_the_origin(fleets: MakeFleet) -> None:
    holder, other = fleets(), fleets()
    lease = await holder.acquire("k")
    assert lease is not None
    waiting = asyncio.create_task(other.wait_for("k"))
    await asyncio.sleep(0.1)
    await other.close()
    assert await waiting is False
    closed = await other.acquire("k")
    assert closed is not None
    assert not closed.fleet
    assert await other.wait_for("k") is False
    await holder.release(lease)


def test_invalid_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="lease_ttl"):
        FleetLease(aioredis.Redis(), namespace="t", lease_ttl=0)


# --------------------------------------------------------------------------- Redis faults


async def test_redis_down_falls_back_to_a_local_lease(fresh_redis_server: RedisServer) -> None:
    async with _Fleets(fresh_redis_server.url) as make:
        fleet = make(timeout=0.2)
        warm = await fleet.acquire("k")
        assert warm is not None
        assert warm.fleet
        await fleet.release(warm)
        fresh_redis_server.stop()
        started = time.monotonic()
        lease = await fleet.acquire("k")
        assert lease is not None
        assert not lease.fleet
        assert await fleet.wait_for("other") is False
        await fleet.release(lease)  # no Redis involved
        assert time.monotonic() - started < 1.5  # two budgets of 0.2 s, plus slack
        assert fleet.errors >= 2


async def test_a_hung_redis_costs_one_budget(fresh_redis_server: RedisServer) -> None:
    async with _Fleets(fresh_redis_server.url) as make:
        fleet = make(timeout=0.2)
        assert await fleet.wait_for("k") is True  # connected and subscribed
        fresh_redis_server.pause()
        try:
            started = time.monotonic()
            lease = await fleet.acquire("k")
            assert lease is not None
            assert not lease.fleet
            assert time.monotonic() - started < 1.0
        finally:
            fresh_redis_server.resume()


async def test_wake_ups_resume_after_a_redis_restart(fresh_redis_server: RedisServer) -> None:
    url = fresh_redis_server.url
    async with _Fleets(url) as make:
        holder, other = make(lease_ttl=1.0), make(lease_ttl=1.0)
        assert await other.wait_for("k") is True  # subscribed
        fresh_redis_server.stop()
        assert await other.wait_for("k") is False
        fresh_redis_server.start()
        admin = await _admin(url)
        for _ in range(100):  # the listener re-subscribes after its back-off (0.5 s)
            if await admin.pubsub_numsub("t:lease-wake") == [("t:lease-wake", 1)]:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the wake-up subscription did not come back")
        await admin.aclose()
        lease = await holder.acquire("k")
        assert lease is not None
        assert lease.fleet
        waiting = asyncio.create_task(other.wait_for("k"))
        await asyncio.sleep(0.1)
        await holder.release(lease)
        assert await asyncio.wait_for(waiting, 1.0) is True


async def test_a_lease_whose_reply_was_lost_just_expires(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    admin = await _admin(redis_url)
    async with TcpProxy(port) as proxy, _Fleets(proxy.url) as make:
        fleet = make(timeout=0.2, lease_ttl=0.6)
        assert await fleet.wait_for("warm-up") is True  # connected and subscribed
        proxy.delay(0.15)  # the SET lands after 0.15 s, its reply comes after 0.3 s
        lease = await fleet.acquire("k")
        assert lease is not None
        assert not lease.fleet
        await fleet.release(lease)
        await asyncio.sleep(0.1)
        assert await admin.get("t:lease:k") == lease.token  # it did land, unrenewed
        await asyncio.sleep(0.8)
        assert await admin.exists("t:lease:k") == 0
        proxy.passthrough()
    await admin.aclose()


class _NoPubSub(aioredis.Redis):
    def pubsub(self, **kwargs: Any) -> Any:
        raise NotImplementedError("no pub/sub here")


async def test_without_pub_sub_waiters_still_wake_by_re_check(
    fleets: MakeFleet, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    holder = fleets(lease_ttl=0.6)
    client = _NoPubSub.from_url(redis_url)
    other = FleetLease(client, namespace="t", lease_ttl=0.6, timeout=1.0)
    try:
        lease = await holder.acquire("k")
        assert lease is not None
        waiting = asyncio.create_task(other.wait_for("k"))
        await asyncio.sleep(0.1)
        await holder.release(lease)
        assert await asyncio.wait_for(waiting, 2.0) is True  # within a re-check (0.3 s)
        assert other.errors >= 1
        assert "lease wake-up subscription failed" in caplog.text
    finally:
        await other.close()
        await client.aclose()


async def test_fleet_lease_on_a_redis_cluster(cluster_urls: list[str]) -> None:
    clients = [aioredis.RedisCluster.from_url(url) for url in cluster_urls[:2]]
    holder, other = (FleetLease(c, namespace="t", timeout=1.0) for c in clients)
    try:
        lease = await holder.acquire("k")
        assert lease is not None
        assert lease.fleet
        assert await other.acquire("k") is None
        waiting = asyncio.create_task(other.wait_for("k"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await holder.release(lease)
        assert await waiting is True
        assert time.monotonic() - started < 1.0  # the wake-up crossed nodes
        assert holder.errors == other.errors == 0
    finally:
        for fleet in (holder, other):
            await fleet.close()
        for client in clients:
            await client.aclose()


def test_a_fleet_lease_outlives_an_event_loop(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    fleet = FleetLease(client, namespace="t", timeout=1.0)
    flight: SingleFlight[int] = SingleFlight()

    async def one_loop() -> None:
        lease = await fleet.acquire("k")
        assert lease is not None
        assert lease.fleet
        await fleet.release(lease)
        assert await fleet.wait_for("k") is True

        async def compute() -> int:
            return 1

        assert await flight.run("k", compute) == (1, True)
        await client.aclose()  # its connections belong to this loop

    asyncio.run(one_loop())
    asyncio.run(one_loop())
    asyncio.run(fleet.close())


# --------------------------------------------------------------------------- HitForMiss


def test_hit_for_miss_expires_with_the_injected_timer() -> None:
    clock = FakeClock(start=0.0)
    marks = HitForMiss(ttl=5.0, timer=clock)
    marks.remember("k")
    assert "k" in marks
    assert "other" not in marks
    clock.advance(4.9)
    assert "k" in marks
    clock.advance(0.2)
    assert "k" not in marks
    assert len(marks) == 0


def test_hit_for_miss_is_bounded_and_can_forget() -> None:
    clock = FakeClock(start=0.0)
    marks = HitForMiss(ttl=5.0, maxsize=2, timer=clock)
    for key in ("a", "b", "c"):
        marks.remember(key)
    assert len(marks) == 2
    assert "c" in marks
    marks.forget("c")
    marks.forget("never-remembered")
    assert "c" not in marks


def test_hit_for_miss_off_at_zero_ttl() -> None:
    marks = HitForMiss(ttl=0)
    marks.remember("k")
    assert "k" not in marks


# --------------------------------------------------------------------------- XFetch


@pytest.mark.parametrize(
    ("age", "rand", "expected"),
    [
        (9.0, 0.0, False),  # u = 1: no head start, refresh only at expiry
        (10.0, 0.0, True),
        (0.0, 0.5, False),  # u = 0.5: a head start of ln 2 = 0.69 s
        (9.5, 0.5, True),
        (8.0, 1 - math.exp(-2) + 1e-6, True),  # 2 s left, gap just over 2 s
        (8.0, 1 - math.exp(-2) - 1e-6, False),  # gap just under 2 s
    ],
    ids=["no-head-start", "expired", "far", "near", "head-start-covers", "head-start-short"],
)
def test_should_refresh_early_table(age: float, rand: float, expected: bool) -> None:
    assert should_refresh_early(age, 10.0, delta=1.0, beta=1.0, rand=lambda: rand) is expected


@given(
    age=st.floats(0, 100),
    later=st.floats(0, 100),
    ttl=st.floats(0.1, 100),
    delta=st.floats(0, 10),
    beta=st.floats(0, 5),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_should_refresh_early_only_gets_likelier_with_age(
    age: float, later: float, ttl: float, delta: float, beta: float, draw: float
) -> None:
    if should_refresh_early(age, ttl, delta, beta, rand=lambda: draw):
        assert should_refresh_early(age + later, ttl, delta, beta, rand=lambda: draw)
    if age >= ttl:
        assert should_refresh_early(age, ttl, delta, beta, rand=lambda: draw)


def test_tokens_are_unique_in_a_process_and_after_a_fork() -> None:
    """Tokens come from a counter, not the kernel: a forked worker must not repeat its
    parent's (a shared token would let one release the other's lease)."""
    ours = [new_token() for _ in range(1000)]
    assert len(set(ours)) == 1000
    assert FleetLease.new_token() not in ours
    if sys.platform == "win32":  # pragma: no cover
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, " ".join(new_token() for _ in range(1000)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parents_next = [new_token() for _ in range(1000)]
    assert len(theirs) == 1000
    assert not set(theirs) & (set(ours) | set(parents_next))
