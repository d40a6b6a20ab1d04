"""Commands of one loop turn sent as one pipeline (``stores/batching.py``), on a real Redis:
each caller keeps its own reply, error, budget and breaker count; a lone command on an
idle client goes out at once, as a plain command."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fastapi_tiered_cache.exceptions import StoreUnavailable
from fastapi_tiered_cache.stores import batching
from fastapi_tiered_cache.stores.memory import MemoryStore
from fastapi_tiered_cache.stores.redis import RedisStore
from fastapi_tiered_cache.stores.tiered import TieredStore

from ..helpers import Origin, client_for, make_cache
from ..support.redis_server import RedisServer

ECHO = "return {KEYS[1], ARGV[1]}"


class Counting(aioredis.Connection):
    """Counts what goes on the wire: one entry per write, the commands it carried."""

    writes: list[list[str]] = []
    nested = False

    def pack_command(self, *args: Any) -> Any:
        setup = _name(args[0]) in ("HELLO", "CLIENT", "SELECT", "PING")  # a new connection's
        if not (setup or Counting.nested):
            Counting.writes.append([_name(args[0])])
        return super().pack_command(*args)

    def pack_commands(self, commands: Any) -> Any:
        Counting.writes.append([_name(args[0]) for args in commands])
        Counting.nested = True  # packed one by one: not separate writes
        try:
            return super().pack_commands(commands)
        finally:
            Counting.nested = False


def _name(word: Any) -> str:
    return (word.decode() if isinstance(word, bytes) else str(word)).split()[0].upper()


@pytest.fixture
async def client(redis_url: str) -> Any:
    Counting.writes = []
    client = aioredis.Redis.from_url(redis_url, connection_class=Counting)
    yield client
    await client.aclose()


async def test_a_lone_command_goes_out_at_once_as_a_plain_command(client: Any) -> None:
    await client.set("k", b"v")
    Counting.writes.clear()
    for _ in range(3):
        assert await batching.execute(client, ("get", ("k",))) == b"v"
    assert Counting.writes == [["GET"], ["GET"], ["GET"]]


async def test_commands_of_one_turn_share_one_pipeline_and_each_gets_its_reply(
    client: Any,
) -> None:
    for i in range(20):
        await client.set(f"k{i}", f"v{i}")
    await client.script_load(ECHO)
    Counting.writes.clear()
    gets = [batching.execute(client, ("get", (f"k{i}",))) for i in range(20)]
    evals = [batching.execute(client, ("eval", (ECHO, 1, f"s{i}", i))) for i in range(5)]
    replies = await asyncio.gather(*gets, *evals)
    assert replies[:20] == [f"v{i}".encode() for i in range(20)]
    assert replies[20:] == [[f"s{i}".encode(), str(i).encode()] for i in range(5)]
    # The first goes alone (nothing was in flight), the rest of the turn in one write.
    assert len(Counting.writes) == 2, Counting.writes
    assert Counting.writes[0] == ["GET"]
    assert len(Counting.writes[1]) == 24


async def test_an_error_in_a_batch_is_only_its_callers(client: Any) -> None:
    await client.rpush("list", "x")
    await client.set("k", b"v")
    calls = [
        batching.execute(client, ("get", ("k",))),
        batching.execute(client, ("get", ("k",))),
        batching.execute(client, ("get", ("list",))),  # WRONGTYPE
        batching.execute(client, ("get", ("k",))),
    ]
    replies = await asyncio.gather(*calls, return_exceptions=True)
    assert replies[0] == replies[1] == replies[3] == b"v"
    assert isinstance(replies[2], ResponseError)
    assert "WRONGTYPE" in str(replies[2])


async def test_scripts_in_a_batch_survive_a_script_flush(client: Any) -> None:
    calls = [batching.execute(client, ("eval", (ECHO, 1, f"k{i}", i))) for i in range(6)]
    assert len(await asyncio.gather(*calls)) == 6  # sent by text once, then by SHA
    await client.script_flush()  # a restart, a failover
    calls = [batching.execute(client, ("eval", (ECHO, 1, f"k{i}", i))) for i in range(6)]
    assert await asyncio.gather(*calls) == [[f"k{i}".encode(), str(i).encode()] for i in range(6)]


async def test_followers_send_their_own_when_the_leader_is_cancelled(client: Any) -> None:
    await client.set("k", b"v")
    tasks = [asyncio.ensure_future(batching.execute(client, ("get", ("k",)))) for _ in range(4)]
    await asyncio.sleep(0)  # 0 went alone, 1 leads a batch, 2 and 3 joined it
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert done[0] == done[2] == done[3] == b"v"


async def test_followers_that_stop_waiting_leave_the_others_answered(client: Any) -> None:
    await client.set("k", b"v")
    tasks = [asyncio.ensure_future(batching.execute(client, ("get", ("k",)))) for _ in range(5)]
    await asyncio.sleep(0)
    tasks[3].cancel()  # a follower: its caller went away
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert [done[i] for i in (0, 1, 2, 4)] == [b"v"] * 4


async def test_a_cluster_client_is_never_batched() -> None:
    class NotRedis:
        calls = 0

        async def get(self, key: str) -> bytes:
            NotRedis.calls += 1
            return key.encode()

    client = NotRedis()
    replies = await asyncio.gather(*(batching.execute(client, ("get", (k,))) for k in "abc"))
    assert replies == [b"a", b"b", b"c"] and NotRedis.calls == 3


async def test_batched_lookups_keep_their_own_budget_and_breaker_count(
    fresh_redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(fresh_redis_server.url)
    store = RedisStore(client, timeout=0.1, owns_client=False)
    tiered = TieredStore(MemoryStore(), store)
    try:
        await store.lookup("warm")  # connected, the script cached
        fresh_redis_server.pause()  # SIGSTOP: the connections stay open, nothing answers
        began = time.monotonic()
        found = await asyncio.gather(*(tiered.find(f"k{i}") for i in range(10)))
        elapsed = time.monotonic() - began
        assert all(lookup.found is None for lookup in found)
        assert tiered.faults == 10  # every caller counted its own fault
        assert elapsed < 2.0  # each gave up on its own budget (plus the abandon's)
    finally:
        fresh_redis_server.resume()
    assert (await tiered.find("k0")).found is None  # answered again once Redis is back
    await client.aclose()


async def test_a_lost_connection_fails_every_caller_of_the_batch(
    fresh_redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(fresh_redis_server.url)
    store = RedisStore(client, timeout=0.5, owns_client=False)
    try:
        await store.lookup("warm")
        fresh_redis_server.kill()
        results = await asyncio.gather(
            *(store.lookup(f"k{i}") for i in range(8)), return_exceptions=True
        )
        assert all(isinstance(result, StoreUnavailable) for result in results), results
    finally:
        await client.aclose()


async def test_concurrent_misses_through_the_middleware_share_pipelines(
    redis_url: str,
) -> None:
    Counting.writes = []
    client = aioredis.Redis.from_url(redis_url, connection_class=Counting)
    origin = Origin(body=lambda scope: scope["path"].encode())
    cache = make_cache(redis=client, redis_timeout=1.0)
    async with client_for(origin, cache) as http:
        await http.get("/warm")  # connections open, scripts sent once
        Counting.writes.clear()
        responses = await asyncio.gather(*(http.get(f"/item/{i}") for i in range(24)))
        again = await asyncio.gather(*(http.get(f"/item/{i}") for i in range(24)))
    await client.aclose()
    assert [r.text for r in responses] == [f"/item/{i}" for i in range(24)]
    assert [r.text for r in again] == [f"/item/{i}" for i in range(24)]
    assert all("hit" in r.headers["cache-status"] for r in again)
    assert origin.calls == 25  # each item once (and /warm)
    batched = [write for write in Counting.writes if len(write) > 1]
    assert batched, Counting.writes  # lookups and stores of concurrent misses went together
    sent = sum(len(write) for write in Counting.writes)
    assert len(Counting.writes) < sent / 2, Counting.writes


async def test_each_caller_of_a_failed_batch_gets_its_own_error(
    fresh_redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(fresh_redis_server.url)
    try:
        await client.get("warm")  # a pooled connection, now to a dead server
        fresh_redis_server.kill()
        errors = await asyncio.gather(
            *(batching.execute(client, ("get", (f"k{i}",))) for i in range(6)),
            return_exceptions=True,
        )
    finally:
        await client.aclose()
    assert all(isinstance(error, aioredis.ConnectionError) for error in errors), errors
    assert len({id(error) for error in errors}) == len(errors)  # none shared between tasks
