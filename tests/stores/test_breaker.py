"""The circuit breaker: its state machine alone, then guarding L2 inside ``TieredStore``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_tiered_cache.entry import CachedResponse
from fastapi_tiered_cache.exceptions import StoreUnavailable
from fastapi_tiered_cache.metrics import Event
from fastapi_tiered_cache.stores import MemoryStore, RedisStore, Tier, TieredStore
from fastapi_tiered_cache.stores.breaker import (
    BreakerState,
    CircuitBreaker,
    Overloaded,
    StoreTimeout,
)

from ..helpers import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def entry(body: bytes = b"body") -> CachedResponse:
    return CachedResponse(status=200, headers=(), body=body, stored_at=0.0, fresh_for=60.0)


def test_states_have_the_documented_values() -> None:
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]
    assert str(HALF_OPEN) == "half_open"


@pytest.mark.parametrize(
    ("steps", "state"),
    [
        ("ff", CLOSED),
        ("fff", OPEN),
        ("ffsff", CLOSED),  # a success resets the count: failures must be consecutive
        ("ffsfff", OPEN),
        ("fff+", HALF_OPEN),
        ("fff+s", CLOSED),
        ("fff+f", OPEN),
        ("fff+ff", OPEN),  # a late failure while open changes nothing
        ("fff+f+s", CLOSED),
        ("fffs", OPEN),  # a late answer to an operation let through before it opened
        ("fff+r", HALF_OPEN),  # released probe: still half-open, a new probe may go
        ("ffrrrrf", OPEN),  # releases are neither successes nor failures
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_transitions(steps: str, state: BreakerState) -> None:
    """f: failure, s: success, r: release, +: the cooldown passes (then a probe is let out)."""
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(threshold=3, cooldown=2.0, clock=clock)
    for step in steps:
        if step == "+":
            clock.advance(2.0)
            assert breaker.allow()
        else:
            {"f": breaker.failure, "s": breaker.success, "r": breaker.release}[step]()
    assert breaker.state is state


def test_open_refuses_until_the_cooldown_then_lets_exactly_one_probe_out() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(threshold=1, cooldown=5.0, clock=clock)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is OPEN and not breaker.allow()
    clock.advance(4.999)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow() and not breaker.allow()  # everyone else waits for its verdict
    breaker.release()  # the probe was cancelled: someone else may probe
    assert breaker.allow()
    assert not breaker.allow()
    breaker.success()
    assert breaker.state is CLOSED
    assert all(breaker.allow() for _ in range(10))


def test_a_probe_that_never_reports_does_not_wedge_the_breaker() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.advance(1.0)
    assert breaker.allow()
    clock.advance(0.5)
    assert not breaker.allow()
    clock.advance(0.5)  # a whole cooldown without a verdict: the probe is presumed lost
    assert breaker.allow()


def test_a_failed_probe_reopens_for_a_whole_cooldown() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.advance(3.0)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is OPEN
    clock.advance(0.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_transitions_are_logged_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    seen: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        threshold=2, cooldown=1.0, clock=clock, on_transition=lambda a, b: seen.append((a, b))
    )
    caplog.set_level(logging.DEBUG, logger="fastapi_tiered_cache")
    breaker.failure()
    breaker.failure()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.success()
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert breaker.transitions == {OPEN: 1, HALF_OPEN: 1, CLOSED: 1}
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "opened (2 consecutive failures)" in records[0][1]
    assert "closed" in records[2][1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"threshold": 0}, "threshold"), ({"cooldown": 0.0}, "cooldown")],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)


class Model:
    """The breaker as a table: what it must be after any sequence of events."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        self.state, self.failures, self.opened_at = CLOSED, 0, 0.0
        self.probe_since: float | None = None

    def at(self, now: float) -> BreakerState:
        if self.state is OPEN and now - self.opened_at >= self.cooldown:
            self.state, self.probe_since = HALF_OPEN, None
        return self.state

    def may_probe(self, now: float) -> bool:
        """No probe out, or the one out is presumed lost after a whole cooldown."""
        return self.probe_since is None or now - self.probe_since >= self.cooldown


@settings(max_examples=300, deadline=None)
@given(
    threshold=st.integers(1, 4),
    events=st.lists(
        st.sampled_from(["allow", "success", "failure", "release", "tick"]), max_size=60
    ),
)
def test_breaker_matches_its_model(threshold: int, events: list[str]) -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(threshold=threshold, cooldown=1.0, clock=clock)
    model = Model(threshold, 1.0)
    for event in events:
        state = model.at(clock.now)
        if event == "tick":
            clock.advance(0.6)
        elif event == "allow":
            expected = state is CLOSED or (state is HALF_OPEN and model.may_probe(clock.now))
            assert breaker.allow() is expected
            if state is HALF_OPEN and expected:
                model.probe_since = clock.now
        elif (event, state) in (("success", HALF_OPEN), ("failure", CLOSED)):
            model.failures = 0 if event == "success" else model.failures + 1
            if event == "success":
                model.state = CLOSED
            elif model.failures >= threshold:
                model.state, model.opened_at, model.failures = OPEN, clock.now, 0
            getattr(breaker, event)()
        elif event == "failure" and state is HALF_OPEN:
            model.state, model.opened_at, model.probe_since = OPEN, clock.now, None
            breaker.failure()
        elif event == "success" and state is CLOSED:
            model.failures = 0
            breaker.success()
        elif event == "release":
            model.probe_since = None if state is HALF_OPEN else model.probe_since
            breaker.release()
        else:  # an outcome reported while open is ignored
            getattr(breaker, event)()
        assert breaker.state is model.at(clock.now)
        assert breaker.transitions[OPEN] >= breaker.transitions[CLOSED]


# ------------------------------------------------------------------ inside TieredStore


class Scripted:
    """A ``Store`` whose L2 calls fail with a chosen exception, counting every call."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: StoreUnavailable | None = None
        self.data: dict[str, Any] = {}

    async def _call(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error

    async def get(self, key: str) -> Any:
        await self._call()
        return self.data.get(key)

    async def set(self, key: str, record: Any, ttl: float) -> None:
        await self._call()
        self.data[key] = record

    async def delete(self, key: str) -> None:
        await self.delete_many([key])

    async def delete_many(self, keys: Any) -> None:
        await self._call()
        for key in keys:
            self.data.pop(key, None)

    async def close(self) -> None:
        pass


def tiered(l2: Any, clock: FakeClock, **kwargs: Any) -> TieredStore:
    breaker = CircuitBreaker(threshold=3, cooldown=1.0, clock=clock)
    return TieredStore(MemoryStore(timer=clock), l2, clock=clock, breaker=breaker, **kwargs)


async def test_open_breaker_keeps_l2_out_of_the_request_path() -> None:
    clock = FakeClock(0.0)
    l2 = Scripted()
    events: list[tuple[Event, str]] = []
    store = tiered(l2, clock, report=lambda event, reason: events.append((event, reason)))
    await store.set("kept", entry(b"kept"), 60)
    l2.error = StoreTimeout("no answer")
    for i in range(3):
        assert await store.get(f"miss{i}") is None
    assert store.breaker.state is OPEN
    calls = l2.calls
    # Open: no L2 call at all; L1 keeps serving, writes go to L1 only.
    assert await store.get("kept") == (entry(b"kept"), Tier.L1)
    assert await store.get("absent") is None
    await store.set("new", entry(b"new"), 60)
    await store.delete("kept")
    assert l2.calls == calls
    assert await store.get("new") == (entry(b"new"), Tier.L1)
    assert store.short_circuits == 3
    assert events[:3] == [(Event.REDIS_TIMEOUT, "timeout")] * 3
    assert events[3:] == [(Event.REDIS_ERROR, "breaker_open")] * 3
    # After the cooldown one probe goes; L2 answers again: closed, and L2 is used.
    clock.advance(1.0)
    l2.error = None
    await store.set("after", entry(b"after"), 60)
    assert store.breaker.state is CLOSED
    assert "after" in l2.data
    assert store.breaker.transitions == {OPEN: 1, HALF_OPEN: 1, CLOSED: 1}


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (StoreTimeout("timeout"), True),
        (StoreUnavailable("connection refused"), True),
        (Overloaded("event loop busy"), False),
    ],
    ids=["timeout", "refused", "overloaded"],
)
async def test_what_the_breaker_counts(error: StoreUnavailable, counted: bool) -> None:
    clock = FakeClock(0.0)
    l2 = Scripted()
    l2.error = error
    store = tiered(l2, clock)
    for i in range(10):
        assert await store.get(f"k{i}") is None
    assert store.breaker.state is (OPEN if counted else CLOSED)
    assert l2.calls == store.faults == (3 if counted else 10)
    assert store.short_circuits == 10 - l2.calls


async def test_an_undecodable_value_is_an_answer_not_a_failure() -> None:
    clock = FakeClock(0.0)
    client = fakeredis.FakeAsyncRedis()
    events: list[tuple[Event, str]] = []
    remote = RedisStore(client, timeout=1.0, report=lambda e, r: events.append((e, r)))
    store = tiered(remote, clock)
    for i in range(5):
        await client.set(f"bad{i}", b"\x00garbage")
        assert await store.get(f"bad{i}") is None
        assert await client.exists(f"bad{i}") == 0
    assert store.breaker.state is CLOSED and store.faults == 0
    assert remote.decode_errors == 5
    assert events == [(Event.REDIS_ERROR, "decode")] * 5
    await client.aclose()


async def test_a_cancelled_probe_frees_the_half_open_slot() -> None:
    clock = FakeClock(0.0)
    gate = asyncio.Event()

    class Slow(Scripted):
        async def get(self, key: str) -> Any:
            self.calls += 1
            await gate.wait()
            return None

    l2 = Slow()
    store = tiered(l2, clock)
    for _ in range(3):
        store.breaker.failure()
    clock.advance(1.0)
    probe = asyncio.ensure_future(store.get("k"))
    await asyncio.sleep(0)
    assert l2.calls == 1
    assert await store.get("other") is None and l2.calls == 1  # only the probe is out
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    gate.set()
    assert await store.get("k") is None and l2.calls == 2  # the next request probes
    assert store.breaker.state is CLOSED


def counting_redis(fail: Callable[[], bool]) -> Any:
    """A fakeredis client whose GETs fail like a refused connection while ``fail()``."""
    import redis.asyncio as aioredis

    class Flaky(fakeredis.FakeAsyncRedis):
        calls = 0

        async def get(self, name: Any) -> Any:
            Flaky.calls += 1
            if fail():
                raise aioredis.ConnectionError("connection refused")
            return await super().get(name)

    return Flaky()


@settings(max_examples=40, deadline=None)
@given(outages=st.lists(st.booleans(), min_size=1, max_size=40))
async def test_random_outages_never_lose_an_l1_entry_nor_fail_a_call(outages: list[bool]) -> None:
    """Whatever L2 does, every call returns, L1 keeps what it has and L2 sees no call while open."""
    clock = FakeClock(0.0)
    state = {"down": False}
    client = counting_redis(lambda: state["down"])
    store = tiered(RedisStore(client, timeout=1.0), clock)
    await store.set("kept", entry(b"kept"), 3600)
    for i, down in enumerate(outages):
        state["down"] = down
        before = type(client).calls
        was_open = store.breaker.state is OPEN
        found = await store.get(f"k{i}")
        assert found is None
        if was_open:
            assert type(client).calls == before
        assert await store.get("kept") == (entry(b"kept"), Tier.L1)
        clock.advance(0.4)
    await client.aclose()
