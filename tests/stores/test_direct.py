"""Commands sent on a pooled connection without redis-py's per-command machinery
(``stores/direct.py``), on a real Redis: the replies are redis-py's, a connection whose
reply was not read never serves another command, a stale connection is replaced."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from fastapi_tiered_cache.exceptions import StoreUnavailable
from fastapi_tiered_cache.stores import batching, direct, wire
from fastapi_tiered_cache.stores.connect import build_client
from fastapi_tiered_cache.stores.redis import RedisStore

from ..support.redis_server import RedisServer


@pytest.fixture
async def client(redis_url: str) -> aioredis.Redis:
    # One connection: whatever one command leaves on it, the next one gets.
    client = aioredis.Redis.from_url(redis_url, max_connections=1)
    yield client
    await client.aclose()


@pytest.fixture(params=["pool", "wire"])
async def either(request: pytest.FixtureRequest, redis_url: str) -> Any:
    """A one-connection pooled client, then a client on the wire (``stores/wire.py``)."""
    if request.param == "pool":
        client = aioredis.Redis.from_url(redis_url, max_connections=1)
    else:
        client = build_client(redis_url)
        assert wire.wire_of(client) is not None
    yield client
    await client.aclose()


async def test_replies_are_what_redis_py_gives(either: Any) -> None:
    client = either
    assert direct.usable(client)
    await client.set("k", b"\x00value")
    script = "return {KEYS[1], ARGV[1], redis.call('GET', KEYS[1]), 7}"
    sha = await client.script_load(script)
    assert await direct.send(client, "GET", "k") == await client.get("k") == b"\x00value"
    assert await direct.send(client, "GET", "absent") is None
    assert await direct.send(client, "EVALSHA", sha, 1, "k", "a") == await client.evalsha(
        sha, 1, "k", "a"
    )
    with pytest.raises(NoScriptError):
        await direct.send(client, "EVALSHA", "0" * 40, 0)
    await client.rpush("list", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await direct.send(client, "GET", "list")


async def test_an_error_reply_keeps_the_connection(client: aioredis.Redis) -> None:
    before = await direct.send(client, "CLIENT", "ID")
    with pytest.raises(ResponseError):
        await direct.send(client, "EVALSHA", "0" * 40, 0)
    assert await direct.send(client, "CLIENT", "ID") == before


async def test_a_command_cancelled_before_its_reply_never_hands_it_to_the_next(
    client: aioredis.Redis,
) -> None:
    """The reply of a command whose caller stopped waiting (its budget, a disconnect)
    would otherwise be read by the next command on that connection: another key's value."""
    await client.set("mine", b"my value")
    blocked = asyncio.create_task(direct.send(client, "BLPOP", "queue", 0))
    await asyncio.sleep(0.05)  # sent, waiting for its reply
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await client.rpush("queue", "someone else's reply")
    assert await direct.send(client, "GET", "mine") == b"my value"
    assert await client.lrange("queue", 0, -1) == [b"someone else's reply"]  # never popped


async def test_a_connection_the_server_dropped_is_replaced(client: aioredis.Redis) -> None:
    await client.set("k", b"v")
    first = await direct.send(client, "CLIENT", "ID")
    async with aioredis.Redis(**_address(client)) as admin:
        await admin.client_kill_filter(_id=first)
    assert await direct.send(client, "GET", "k") == b"v"
    assert await direct.send(client, "CLIENT", "ID") != first


class _LosesGetReplies(aioredis.Connection):
    """A connection lost while a ``GET``'s reply was awaited (``lose`` times, -1: always)."""

    lose = 0
    lost = 0

    async def send_command(self, *args: object, **kwargs: object) -> None:
        self.last = args[0]
        await super().send_command(*args, **kwargs)

    async def read_response(self, *args: object, **kwargs: object) -> object:
        if getattr(self, "last", None) == "GET" and _LosesGetReplies.lose:
            _LosesGetReplies.lose -= 1
            _LosesGetReplies.lost += 1
            await self.disconnect(nowait=True)
            raise RedisConnectionError("lost")
        return await super().read_response(*args, **kwargs)


async def test_a_connection_lost_in_flight_is_tried_once_more(redis_url: str) -> None:
    flaky = aioredis.Redis.from_url(redis_url, connection_class=_LosesGetReplies)
    try:
        await flaky.set("k", b"v")
        _LosesGetReplies.lose = 1
        assert await direct.send(flaky, "GET", "k") == b"v"
        assert _LosesGetReplies.lost == 1
        _LosesGetReplies.lose = -1  # every reply lost: the error, after one more try
        with pytest.raises(RedisConnectionError):
            await direct.send(flaky, "GET", "k")
        assert _LosesGetReplies.lost == 3
    finally:
        _LosesGetReplies.lose = 0
        await flaky.aclose()


def _address(client: aioredis.Redis) -> dict[str, object]:
    kwargs = client.connection_pool.connection_kwargs
    return {"host": kwargs["host"], "port": kwargs["port"]}


def test_only_plain_pooled_clients_go_direct(redis_url: str) -> None:
    assert direct.usable(build_client(redis_url))
    assert not direct.usable(aioredis.Redis.from_url(redis_url, single_connection_client=True))
    assert not direct.usable(object())


async def test_a_batch_answers_each_command_in_order(either: Any) -> None:
    client = either
    await client.set("a", b"1")
    await client.rpush("list", "x")
    sha = await client.script_load("return {KEYS[1], ARGV[1]}")
    replies = await direct.send_many(
        client,
        [
            ("GET", "a"),
            ("GET", "list"),  # an error reply, in its place
            ("EVALSHA", sha, 1, "k", "v"),
            ("EVALSHA", "0" * 40, 0),
            ("GET", "absent"),
        ],
    )
    assert replies[0] == b"1" and replies[2] == [b"k", b"v"] and replies[4] is None
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    assert isinstance(replies[3], NoScriptError)
    assert await direct.send(client, "GET", "a") == b"1"  # the connection is in step


async def test_a_batch_cancelled_before_its_replies_leaves_none_behind(
    client: aioredis.Redis,
) -> None:
    await client.set("mine", b"my value")
    blocked = asyncio.create_task(
        direct.send_many(client, [("GET", "mine"), ("BLPOP", "queue", 0), ("GET", "mine")])
    )
    await asyncio.sleep(0.05)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await client.rpush("queue", "someone else's reply")
    assert await direct.send_many(client, [("GET", "mine")]) == [b"my value"]
    assert await client.lrange("queue", 0, -1) == [b"someone else's reply"]


async def test_a_reply_that_comes_after_its_budget_never_answers_another_key(
    fresh_redis_server: RedisServer,
) -> None:
    """Redis stalls (SIGSTOP) with a lookup of one user's key on the wire, and its budget
    runs out. When Redis answers again, that reply goes to a connection the cache has
    dropped: the next lookups, on the same one-connection pool, get their own values."""
    client = aioredis.Redis.from_url(fresh_redis_server.url, max_connections=1)
    store = RedisStore(client, timeout=0.1, owns_client=False)

    def get(key: str) -> Any:
        return store.run(lambda: batching.execute(client, ("get", (key,))), "GET")

    try:
        await client.mset({"user-a": b"A's entry", "user-b": b"B's entry", "user-c": b"C's"})
        assert await get("user-c") == b"C's"  # connected
        fresh_redis_server.pause()
        try:
            stalled = await asyncio.gather(get("user-a"), return_exceptions=True)
        finally:
            fresh_redis_server.resume()
        assert all(isinstance(result, StoreUnavailable) for result in stalled), stalled
        assert await get("user-b") == b"B's entry"
        assert await get("user-c") == b"C's"
    finally:
        await client.aclose()
