"""Announcements: a purge that could not be published is retried, bounded, never lost
silently, and a long outage collapses into one reset of every L1."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi_tiered_cache import lifecycle
from fastapi_tiered_cache.announcements import MAX_PENDING, RESET, Announcements

from .helpers import Origin, client_for, make_cache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Publisher:
    """Fails while ``down``; records what it sent."""

    def __init__(self) -> None:
        self.down = True
        self.tries = 0
        self.sent: list[tuple[str, Any]] = []

    async def __call__(self, kind: str, data: Any) -> None:
        self.tries += 1
        if self.down:
            raise ConnectionError("redis is down")
        self.sent.append((kind, data))


async def until(condition: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_messages_are_sent_at_once_when_the_bus_works() -> None:
    publisher = Publisher()
    publisher.down = False
    announcements = Announcements(publisher)
    await announcements.send("purge", [["x"], []])
    assert publisher.sent == [("purge", [["x"], []])] and not announcements.pending


async def test_failed_messages_are_retried_in_order_and_later_ones_wait_their_turn() -> None:
    publisher = Publisher()
    announcements = Announcements(publisher)
    await announcements.send("purge", [["a"], []])
    await announcements.send("gen", ["t", 2])  # queued behind, without a try of its own
    assert publisher.tries == 1 and len(announcements.pending) == 2
    publisher.down = False
    await until(lambda: not announcements.pending)
    assert publisher.sent == [("purge", [["a"], []]), ("gen", ["t", 2])]
    assert announcements.retried == 2
    await announcements.close()


async def test_a_message_is_given_up_once_its_copies_must_have_expired() -> None:
    clock = Clock()
    publisher = Publisher()
    announcements = Announcements(publisher, give_up_after=30.0, timer=clock)
    await announcements.send("purge", [["a"], []])
    await until(lambda: publisher.tries >= 3)  # retried while Redis is down
    clock.now = 30.0
    await until(lambda: not announcements.pending)
    assert announcements.abandoned == 1 and publisher.sent == []
    await announcements.close()


async def test_a_long_outage_collapses_into_one_reset() -> None:
    publisher = Publisher()
    announcements = Announcements(publisher)
    for n in range(MAX_PENDING + 50):
        await announcements.send("purge", [[f"p{n}"], []], now=False)
    assert [kind for kind, _, _ in announcements.pending] == [RESET]
    publisher.down = False
    await until(lambda: not announcements.pending)
    assert publisher.sent == [(RESET, None)]
    await announcements.close()


async def test_without_a_bus_there_is_nobody_to_tell() -> None:
    announcements = Announcements(None)
    await announcements.send("purge", [["a"], []])
    assert not announcements.pending


async def test_close_stops_the_retries() -> None:
    publisher = Publisher()
    announcements = Announcements(publisher)
    await announcements.send("purge", [["a"], []])
    task = announcements._task
    assert task is not None and not task.done()
    await announcements.close()
    assert task.done()


async def test_a_reset_from_another_process_drops_all_of_l1() -> None:
    cache = make_cache()
    async with client_for(Origin(), cache) as client:
        await client.get("/a")
        assert cache.store.l1 is not None and len(cache.store.l1) == 1
        sequence = cache.invalidator.sequence
        lifecycle.on_bus_message(cache, RESET, None)
        assert len(cache.store.l1) == 0
        assert cache.invalidator.reset_at > sequence  # fills begun before keep out of L1


# -- purges Redis did not complete ------------------------------------------------------


async def test_an_unfinished_purge_is_run_again_until_redis_completes_it() -> None:
    from fastapi_tiered_cache.unfinished import UnfinishedPurges

    calls: list[tuple[list[str], bool]] = []
    failures = {"left": 2}

    async def purge(names: list[str], soft: bool) -> None:
        calls.append((names, soft))
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("redis is down")

    unfinished = UnfinishedPurges(purge)
    unfinished.add(["x:_:a", "p:_:b"])
    unfinished.add(["t:_:c"], soft=True)
    unfinished.add(["x:_:a"])  # already waiting: once
    await until(lambda: not unfinished)
    assert calls[-2:] == [(["x:_:a", "p:_:b"], False), (["t:_:c"], True)]
    assert len(calls) == 4 and unfinished.finished == 2


async def test_too_many_unfinished_purges_become_one_purge_of_everything() -> None:
    from fastapi_tiered_cache.unfinished import MAX_NAMES, UnfinishedPurges

    purged: list[Any] = []

    async def purge(names: list[str], soft: bool) -> None:
        purged.append(names)

    async def purge_all() -> None:
        purged.append("everything")

    unfinished = UnfinishedPurges(purge, purge_all)
    unfinished.add(f"x:_:{n}" for n in range(MAX_NAMES + 1))
    assert unfinished.everything and not unfinished.pending
    await until(lambda: not unfinished)
    assert purged == ["everything"]


async def test_a_write_during_a_partition_is_not_undone_when_redis_answers_again(
    redis_url: str,
) -> None:
    """The entry Redis held while the write's purge could not reach it must not be read
    back, old, once Redis answers: the purge is finished first thing."""
    import redis.asyncio as aioredis

    from .support.tcp_proxy import TcpProxy

    state = {"v": 1}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            state["v"] += 1
        body = f"v{state['v']}".encode()
        await Origin(body=body)(scope, receive, send)

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with TcpProxy(port) as proxy:
        client = aioredis.Redis.from_url(proxy.url, socket_timeout=1, socket_connect_timeout=1)
        cache = make_cache(redis=client, redis_timeout=0.05, l1_max_entries=0)
        try:
            async with client_for(app, cache) as c:
                assert (await c.get("/doc")).content == b"v1"
                assert (await c.get("/doc")).headers["x-cache"] == "HIT"  # from Redis
                proxy.blackhole()
                assert (await c.put("/doc")).status_code == 200  # purge incomplete: no error
                assert cache.invalidator.unfinished  # the path and its parent
                proxy.passthrough()
                await until(lambda: not cache.invalidator.unfinished, timeout=10.0)
                # Until the breaker lets reads through again, and after: never v1.
                bodies = set()
                for _ in range(100):
                    response = await c.get("/doc")
                    bodies.add(response.content)
                    if response.headers["x-cache"] == "HIT":
                        break
                    await asyncio.sleep(0.1)
                assert response.headers["x-cache"] == "HIT"  # Redis serves again
                assert bodies == {b"v2"}
        finally:
            await cache.close()
            await client.aclose()


def test_under_trio_retries_wait_for_an_asyncio_loop_instead_of_raising() -> None:
    """Under trio (through anyio) there is no asyncio loop to retry in: a purge that failed
    there raised "no running event loop" out of the request. Now the work is kept, and the
    next asyncio loop that meets a failure retries it."""
    import anyio

    from fastapi_tiered_cache.unfinished import UnfinishedPurges

    publisher = Publisher()
    announcements = Announcements(publisher, give_up_after=60.0)
    purged: list[list[str]] = []

    async def purge(names: list[str], soft: bool) -> None:
        purged.append(names)

    unfinished = UnfinishedPurges(purge)

    async def under_trio() -> None:
        await announcements.send("purge", ["x:_:a"])
        unfinished.add(["x:_:a"])
        await announcements.close()
        await unfinished.close()

    anyio.run(under_trio, backend="trio")
    assert len(announcements.pending) == 1 and len(unfinished) == 1

    async def under_asyncio() -> None:
        publisher.down = False
        await announcements.send("purge", ["x:_:b"])  # queued behind the first, both sent
        unfinished.add(["x:_:b"])
        await until(lambda: not announcements.pending and not unfinished)

    asyncio.run(under_asyncio())
    assert publisher.sent == [("purge", ["x:_:a"]), ("purge", ["x:_:b"])]
    assert purged == [["x:_:a", "x:_:b"]]
