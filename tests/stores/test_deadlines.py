"""The budget of ``RedisStore`` operations without a timer or a task per operation
(``stores/budget.py``): one heartbeat per loop sweeps the deadlines, a cancelled command is
finished in a task of its own, and the caller's own cancellations stay its own."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

from fastapi_tiered_cache.exceptions import StoreTimeout, StoreUnavailable
from fastapi_tiered_cache.stores import RedisStore

BUDGET = 0.05  # seconds


class Instant:
    """A client that answers at once (after one trip through the loop)."""

    async def get(self, key: str) -> Any:
        await asyncio.sleep(0)
        return None


class Hanging:
    """A client that never answers, and needs ``linger`` seconds to honour a cancellation."""

    def __init__(self, linger: float = 0.0) -> None:
        self.linger = linger
        self.ended = asyncio.Event()

    async def get(self, key: str) -> Any:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(self.linger)
            raise
        finally:
            self.ended.set()


async def test_an_operation_arms_no_timer_and_creates_no_task() -> None:
    loop = asyncio.get_running_loop()
    store = RedisStore(Instant(), timeout=BUDGET, owns_client=False)
    timers: list[float] = []
    tasks: list[Any] = []
    call_at, call_later = loop.call_at, loop.call_later
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        tasks.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.call_at = lambda when, *a, **k: timers.append(when) or call_at(when, *a, **k)  # type: ignore[method-assign]
    loop.call_later = lambda delay, *a, **k: timers.append(delay) or call_later(delay, *a, **k)  # type: ignore[method-assign]
    loop.set_task_factory(factory)
    try:
        for _ in range(200):
            assert await store.get("k") is None
    finally:
        loop.set_task_factory(previous)
        del loop.call_at, loop.call_later
    assert tasks == []
    assert len(timers) <= 2  # the heartbeat, armed once (twice if a beat fell in between)


async def test_a_hung_command_is_cancelled_by_the_heartbeat_within_a_period() -> None:
    client = Hanging()
    store = RedisStore(client, timeout=BUDGET, owns_client=False)
    started = time.monotonic()
    with pytest.raises(StoreTimeout):
        await store.get("k")
    assert BUDGET <= time.monotonic() - started < BUDGET + 0.1
    assert client.ended.is_set()  # the command saw its cancellation
    if sys.version_info >= (3, 11):
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # ours was withdrawn
    await asyncio.sleep(0.01)  # the caller's task is not cancelled again later


async def test_a_caller_cancelled_is_released_within_its_budget_however_slow_the_client() -> None:
    client = Hanging(linger=1.0)
    store = RedisStore(client, timeout=0.2, owns_client=False)
    caller = asyncio.ensure_future(store.get("k"))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    caller.cancel()
    # Python 3.10 counts no cancellations, so there the caller's one that the command is
    # slow to honour ends as the budget's miss, never as a wait on the client.
    expected = (asyncio.CancelledError,) if sys.version_info >= (3, 11) else (BaseException,)
    with pytest.raises(expected):
        await caller
    # Its budget, then one more for the abandoned command at most: not the client's second.
    assert time.monotonic() - started < 2 * 0.2 + 0.2
    await asyncio.wait_for(client.ended.wait(), 2.0)  # it ended on its own, in the background


async def test_a_timeout_around_the_operation_still_works() -> None:
    """The heartbeat's cancellation and an ``asyncio.timeout`` of the caller's do not mix."""
    client = Hanging()
    store = RedisStore(client, timeout=10.0, owns_client=False)
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):  # distinct before 3.11
        await asyncio.wait_for(store.get("k"), 0.05)
    with pytest.raises(StoreTimeout):  # and the store's own budget after that
        await RedisStore(Hanging(), timeout=BUDGET, owns_client=False).get("k")


async def test_concurrent_operations_each_keep_their_own_deadline() -> None:
    fast = RedisStore(Instant(), timeout=BUDGET, owns_client=False)
    slow = RedisStore(Hanging(), timeout=BUDGET, owns_client=False)
    results = await asyncio.gather(
        *(fast.get(f"k{i}") for i in range(20)),
        *(slow.get(f"s{i}") for i in range(20)),
        return_exceptions=True,
    )
    assert results[:20] == [None] * 20
    assert all(isinstance(r, StoreTimeout) for r in results[20:])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
async def test_a_socket_timeout_firing_with_the_budget_is_not_taken_for_a_cancellation() -> None:
    """redis-py arms ``asyncio.timeout`` on the caller's task for its socket timeout; when
    it fires together with the heartbeat, the request still gets a miss, never a cancel."""

    class SocketTimeout:
        async def get(self, key: str) -> Any:
            async with asyncio.timeout(BUDGET):
                await asyncio.sleep(3600)

    store = RedisStore(SocketTimeout(), timeout=BUDGET, owns_client=False)
    for _ in range(20):
        with pytest.raises(StoreUnavailable):
            await store.get("k")
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.05)  # and nothing cancels the caller afterwards
