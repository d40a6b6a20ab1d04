"""Background tasks always stop when their event loop shuts down.

The regression: on Python 3.11, the invalidation bus subscribed with ``asyncio.wait_for``.
When a test client's per-request event loop shut down just as the SUBSCRIBE answered,
``wait_for`` returned the answer and dropped the cancellation; the bus then listened for
ever, and the loop's shutdown (``asyncio.Runner.close``) waited on it for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import Any

import pytest

from fastapi_tiered_cache import CacheSettings, TieredCache
from fastapi_tiered_cache.bus import InvalidationBus
from fastapi_tiered_cache.leases import FleetLease
from fastapi_tiered_cache.tasks import finish, raise_if_cancelled, within

needs_cancel_counts = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10 does not count cancellations"
)


async def test_within_keeps_a_cancel_that_arrives_as_the_operation_ends() -> None:
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(within(answer, 5))
    await asyncio.sleep(0)  # the task now waits for the answer
    answer.set_result(1)
    task.cancel()  # in the same turn of the loop: both are ready at once
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_within_times_out() -> None:
    with pytest.raises(asyncio.TimeoutError):
        await within(asyncio.sleep(5), 0.01)


@needs_cancel_counts
async def test_a_loop_whose_client_swallows_the_cancel_still_ends() -> None:
    turns = 0

    async def loop_with_a_bad_client() -> None:
        nonlocal turns
        while True:
            raise_if_cancelled()
            turns += 1
            # What a client that converts or drops the cancellation does:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    task = asyncio.ensure_future(loop_with_a_bad_client())
    await asyncio.sleep(0.03)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done == {task} and task.cancelled()
    assert turns >= 1


async def test_finish_abandons_a_task_that_never_ends() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await finish([task], timeout=0.2)
    assert loop.time() - started < 1.0
    release.set()
    task.cancel()


class _PubSub:
    """A subscription whose SUBSCRIBE answers when the test says, and whose reads drop
    cancellations (as a client's own timeout handling may)."""

    def __init__(self, answer: asyncio.Future[None]) -> None:
        self.answer = answer
        self.subscribing = asyncio.Event()

    async def subscribe(self, *channels: str) -> None:
        self.subscribing.set()
        await self.answer

    async def get_message(self, **options: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(options.get("timeout", 0.05))
        return

    async def aclose(self) -> None:
        return None


class _Client:
    def __init__(self, pubsub: _PubSub) -> None:
        self._pubsub = pubsub
        self.published = 0

    def register_script(self, script: str) -> object:
        return object()

    async def initialize(self) -> None:
        return

    def pubsub(self) -> _PubSub:
        return self._pubsub

    async def publish(self, channel: str, payload: bytes) -> int:
        self.published += 1
        return 0


def _bus(client: _Client) -> InvalidationBus:
    def ignore(*args: Any) -> None:
        return None

    return InvalidationBus(
        client, "tasks", on_message=ignore, on_lost=ignore, on_restored=ignore, interval=0.05
    )


async def test_the_bus_ends_when_cancelled_as_its_subscribe_answers() -> None:
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pubsub = _PubSub(answer)
    bus = _bus(_Client(pubsub))
    bus.start()
    await asyncio.wait_for(pubsub.subscribing.wait(), 2)
    task = bus._task
    assert task is not None
    answer.set_result(None)
    task.cancel()  # the loop shuts down as the SUBSCRIBE answers
    # Well before the bus would notice on its own that no ping comes back (1 s).
    done, _ = await asyncio.wait({task}, timeout=0.5)
    assert done == {task}, "the bus kept running after its task was cancelled"
    assert task.cancelled()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "ftc-bus-ping"]


@needs_cancel_counts
async def test_the_bus_ends_when_its_client_drops_the_cancel() -> None:
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    answer.set_result(None)
    pubsub = _PubSub(answer)
    bus = _bus(_Client(pubsub))
    bus.start()
    await asyncio.sleep(0.1)  # listening: reads drop every cancellation
    task = bus._task
    assert task is not None and not task.done()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    assert done == {task} and task.cancelled()


@needs_cancel_counts
async def test_the_lease_subscription_ends_when_its_client_drops_the_cancel() -> None:
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    answer.set_result(None)
    fleet = FleetLease(_Client(_PubSub(answer)), namespace="tasks")
    fleet._listen()
    await asyncio.sleep(0.1)  # subscribed: reads drop every cancellation
    task = fleet.wakeups.listener
    assert task is not None and not task.done()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    assert done == {task} and task.cancelled()


def test_event_loops_with_a_lazily_started_bus_shut_down(redis_url: str) -> None:
    """Real Redis: a loop that starts the bus and ends at once, again and again (as a test
    client does per request), always shuts down."""

    cache = TieredCache(CacheSettings(redis_url=redis_url, secret_key="k" * 40, namespace="tasks"))

    async def one_request(pause: float) -> None:
        cache.ensure_started()
        await asyncio.sleep(pause)

    def run_all() -> None:
        for turn in range(40):
            asyncio.run(one_request((turn % 8) * 0.0005))

    runner = threading.Thread(target=run_all, daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "an event loop's shutdown hung on the cache's tasks"
