"""The connection every hot command of a client shares (``stores/wire.py``), on a real
Redis: replies go to the callers that asked, in order, whatever the callers do meanwhile
(stop waiting, lose the connection, meet a stalled server); the handshake is redis-py's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fastapi_tiered_cache import CacheSettings, TieredCache, cached
from fastapi_tiered_cache.exceptions import StoreUnavailable
from fastapi_tiered_cache.stores import batching, direct, scripts, wire
from fastapi_tiered_cache.stores.connect import build_client
from fastapi_tiered_cache.stores.loops import running_client
from fastapi_tiered_cache.stores.redis import RedisStore

from ..support.redis_server import RedisServer


@pytest.fixture
async def client(redis_url: str) -> Any:
    client = build_client(redis_url)
    yield client
    await client.aclose()


async def _named(admin: aioredis.Redis, name: str) -> int:
    return sum(1 for entry in await admin.client_list() if entry.get("name") == name)


async def test_plain_clients_built_here_get_a_wire(redis_url: str) -> None:
    assert type(build_client(redis_url).connection_pool) is wire.WiredPool
    assert type(build_client("unix:///tmp/absent.sock").connection_pool) is wire.WiredPool
    # TLS keeps the pool (its transport differs by Python version), and so does a client
    # the application built.
    assert type(build_client("rediss://127.0.0.1:1/0").connection_pool) is not wire.WiredPool
    assert wire.wire_of(aioredis.Redis.from_url(redis_url)) is None


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(
    fresh_redis_server: RedisServer,
) -> None:
    """On a pool, 500 concurrent commands would take 100 connections (its bound) and fail
    past it; on the wire they are one pipeline on one socket."""
    client = build_client(fresh_redis_server.url)
    try:
        replies = await asyncio.gather(
            *(direct.send(client, "EVAL", "return ARGV[1]", 0, f"one {i}") for i in range(500)),
            *(
                direct.send_many(client, [("EVAL", "return ARGV[1]", 0, f"batch {i}")] * 2)
                for i in range(50)
            ),
        )
        assert replies[:500] == [f"one {i}".encode() for i in range(500)]
        assert replies[500:] == [[f"batch {i}".encode()] * 2 for i in range(50)]
        async with aioredis.Redis.from_url(fresh_redis_server.url) as admin:
            assert len(await admin.client_list()) == 2  # the wire, and this one
    finally:
        await client.aclose()


async def _middle_caller_leaves(server: RedisServer, client: Any) -> None:
    """Three lookups in line while Redis is stalled; the middle one's caller gives up.
    When Redis answers, its reply is read and dropped: the others get their own values,
    and so do the lookups after."""
    await client.mset({"user-a": b"A", "user-b": b"B", "user-c": b"C", "user-d": b"D"})
    assert await direct.send(client, "GET", "user-d") == b"D"  # the wire is open
    server.pause()
    try:
        first = asyncio.ensure_future(direct.send(client, "GET", "user-a"))
        middle = asyncio.ensure_future(direct.send(client, "GET", "user-b"))
        last = asyncio.ensure_future(direct.send(client, "GET", "user-c"))
        await asyncio.sleep(0.05)
        middle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await middle
    finally:
        server.resume()
    assert (await first, await last) == (b"A", b"C")
    assert [await direct.send(client, "GET", key) for key in ("user-d", "user-b")] == [
        b"D",
        b"B",
    ]


async def test_a_caller_that_stops_waiting_leaves_its_place_in_line(
    fresh_redis_server: RedisServer,
) -> None:
    client = build_client(fresh_redis_server.url)
    try:
        await _middle_caller_leaves(fresh_redis_server, client)
    finally:
        await client.aclose()


async def test_a_reply_after_its_budget_never_answers_another_key(
    fresh_redis_server: RedisServer,
) -> None:
    """As for a pooled connection (``test_direct``): lookups whose budget ran out while
    Redis stalled, then lookups of other users' keys on the same wire."""
    client = build_client(fresh_redis_server.url)
    store = RedisStore(client, timeout=0.1, owns_client=False)

    def get(key: str) -> Any:
        return store.run(lambda: batching.execute(client, ("get", (key,))), "GET")

    try:
        await client.mset({"user-a": b"A's entry", "user-b": b"B's entry", "user-c": b"C's"})
        assert await get("user-c") == b"C's"
        fresh_redis_server.pause()
        try:
            stalled = await asyncio.gather(get("user-a"), get("user-c"), return_exceptions=True)
        finally:
            fresh_redis_server.resume()
        assert all(isinstance(result, StoreUnavailable) for result in stalled), stalled
        assert await asyncio.gather(get("user-b"), get("user-c"), get("user-a")) == [
            b"B's entry",
            b"C's",
            b"A's entry",
        ]
    finally:
        await client.aclose()


async def test_a_server_that_stops_answering_is_given_up(
    fresh_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller gave up, and no reply came for ``STALL`` seconds: the socket is dropped,
    every caller still in line gets ``ConnectionError`` (no one waits forever, the line
    does not grow without end), and the next command opens a new connection."""
    monkeypatch.setattr(wire, "STALL", 0.2)
    client = build_client(fresh_redis_server.url)
    try:
        await client.set("k", b"v")
        before = await direct.send(client, "CLIENT", "ID")
        line = client.connection_pool.wire()
        fresh_redis_server.pause()
        try:
            patient = asyncio.create_task(line.send([("GET", "k")]))
            with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself from 3.11
                await asyncio.wait_for(line.send([("GET", "k")]), 0.05)
            with pytest.raises(RedisConnectionError, match=r"no reply from Redis in 0\.2 s"):
                await asyncio.wait_for(patient, 5)
            # Sent again through ``direct``: a new connection, whose handshake the stalled
            # server does not answer either: an error within the connect timeout.
            with pytest.raises(RedisTimeoutError, match="Timeout connecting"):
                await asyncio.wait_for(direct.send(client, "GET", "k"), 5)
        finally:
            fresh_redis_server.resume()
        assert await direct.send(client, "GET", "k") == b"v"
        assert await direct.send(client, "CLIENT", "ID") != before
    finally:
        await client.aclose()


async def test_a_connection_the_server_dropped_is_replaced(client: Any, redis_url: str) -> None:
    await client.set("k", b"v")
    first = await direct.send(client, "CLIENT", "ID")
    async with aioredis.Redis.from_url(redis_url) as admin:
        await admin.client_kill_filter(_id=first)
    assert await direct.send(client, "GET", "k") == b"v"  # tried once more, on a new one
    assert await direct.send(client, "CLIENT", "ID") != first


async def test_a_server_that_is_down_is_an_error_not_a_hang() -> None:
    client = build_client("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(direct.send(client, "GET", "k"), 5)
    finally:
        await client.aclose()


async def test_a_reply_nobody_asked_for_or_garbage_drops_the_socket(client: Any) -> None:
    await client.set("k", b"v")
    assert await direct.send(client, "GET", "k") == b"v"
    link = wire.wire_of(client)._link  # type: ignore[union-attr]
    assert link is not None
    link.data_received(b"+OK\r\n")  # nothing in line: the stream is out of step
    assert link.transport is None
    assert await direct.send(client, "GET", "k") == b"v"  # a new socket
    link = wire.wire_of(client)._link  # type: ignore[union-attr]
    pending = asyncio.create_task(direct.send(client, "EVAL", "return 1", 0))
    await asyncio.sleep(0)
    link.data_received(b"?garbage\r\n")  # unparseable: nothing after it can be trusted
    assert link.transport is None
    assert await pending == 1  # lost with the socket, then sent again on a new one
    assert await direct.send(client, "GET", "k") == b"v"
    with pytest.raises(RedisConnectionError):  # a dropped socket takes no more commands
        await link.send(link.pack([("GET", "k")]), 1)


async def test_a_pushed_notification_is_not_taken_for_a_reply(redis_url: str) -> None:
    client = build_client(redis_url)
    try:
        await client.set("k", b"v")
        assert await direct.send(client, "GET", "k") == b"v"
        link = wire.wire_of(client)._link  # type: ignore[union-attr]
        if wire._PUSH is None:
            pytest.fail("this hiredis has no PushNotification type")
        link.data_received(b">2\r\n$7\r\nmessage\r\n$2\r\nhi\r\n")  # RESP3 push, nothing in line
        assert link.transport is not None  # not a reply: the socket stays
        assert await direct.send(client, "GET", "k") == b"v"
    finally:
        await client.aclose()


async def test_the_handshake_is_redis_pys(fresh_redis_server: RedisServer) -> None:
    """A user and password, a database: the wire is on them, as the pool would be."""
    async with aioredis.Redis.from_url(fresh_redis_server.url) as admin:
        await admin.acl_setuser(
            "cache", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"]
        )
    url = f"redis://cache:s3cret@{fresh_redis_server.host}:{fresh_redis_server.port}/3"
    client = build_client(url)
    try:
        await client.set("k", b"in db 3")
        assert await direct.send(client, "GET", "k") == b"in db 3"
        assert await direct.send(client, "ACL", "WHOAMI") == b"cache"
        async with aioredis.Redis.from_url(fresh_redis_server.url) as admin:
            assert await admin.get("k") is None  # db 0
    finally:
        await client.aclose()


async def test_closing_the_client_closes_the_wire(redis_url: str) -> None:
    client = build_client(redis_url)
    name = "wire-closing"
    await direct.send(client, "CLIENT", "SETNAME", name)
    pool = client.connection_pool
    link = pool.wire()._link
    await client.aclose()
    assert link.transport is None and link.writer.transport.is_closing()
    async with aioredis.Redis.from_url(redis_url) as admin:
        for _ in range(100):
            if not await _named(admin, name):
                break
            await asyncio.sleep(0.01)
        assert await _named(admin, name) == 0


async def test_commands_are_written_byte_for_byte_as_redis_py_writes_them(client: Any) -> None:
    await direct.send(client, "GET", "k")
    link = wire.wire_of(client)._link  # type: ignore[union-attr]
    values = ["GET", "k\u00e9y", b"\x00\r\n", 0, -5, 2**70, 1796687145.79515, 1e-7, -0.0, 1e20]
    commands = [tuple(values), ("EVALSHA", "0" * 40, 1, "key", b"x" * 70_000)]
    packer = link.packer
    for batch in ([commands[0]], commands):
        packed = link.pack(batch)
        assert b"".join([packed] if isinstance(packed, bytes) else packed) == b"".join(
            packer.pack_commands(batch)
        )
    # What hiredis's packer refuses goes to redis-py's, which says what is wrong.
    with pytest.raises(DataError):
        link.pack([("GET", True)])


class Item(BaseModel):
    id: int
    name: str


try:
    import uvloop
except ImportError:  # wheels here for Python 3.11 only: tox's py311 installs it
    uvloop = None


@pytest.mark.skipif(uvloop is None, reason="uvloop is not installed (tox's py311 has it)")
def test_the_wire_on_uvloop(fresh_redis_server: RedisServer) -> None:
    """uvicorn runs on uvloop where it is installed: its transports take the wire's
    protocol as asyncio's do. Replies in order, a caller leaving its place, a dropped
    socket replaced, and a cache's L2 lookups, fills and hits over it."""

    async def scenario() -> None:
        client = build_client(fresh_redis_server.url)
        try:
            replies = await asyncio.gather(
                *(direct.send(client, "EVAL", "return ARGV[1]", 0, str(i)) for i in range(300))
            )
            assert replies == [str(i).encode() for i in range(300)]
            with pytest.raises(NoScriptError):
                await direct.send(client, "EVALSHA", "0" * 40, 0)
            await _middle_caller_leaves(fresh_redis_server, client)
            wire_id = await direct.send(client, "CLIENT", "ID")
            await client.client_kill_filter(_id=wire_id)
            assert await direct.send(client, "GET", "user-a") == b"A"
            link = wire.wire_of(client)._link  # type: ignore[union-attr]
        finally:
            await client.aclose()
        assert link.transport is None and link.writer.transport.is_closing()

        settings = CacheSettings(
            redis_url=fresh_redis_server.url, secret_key="k" * 32, l1_max_entries=0
        )
        cache = TieredCache(settings)
        calls: list[int] = []

        @cached(ttl=60, cache=cache)
        async def load(item_id: int) -> Item:
            calls.append(item_id)
            return Item(id=item_id, name=f"item {item_id}")

        try:
            assert await load(1) == Item(id=1, name="item 1")  # a miss: lookup, fill
            assert await asyncio.gather(*(load(i % 3) for i in range(30))) == [
                Item(id=i % 3, name=f"item {i % 3}") for i in range(30)
            ]
            assert await load(1) == Item(id=1, name="item 1")  # an L2 hit (L1 is off)
            assert sorted(calls) == [0, 1, 2]
        finally:
            await cache.close()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_start_up_opens_the_wire(redis_url: str) -> None:
    """So the first requests do not pay for its handshake."""
    cache = TieredCache(CacheSettings(redis_url=redis_url))
    try:
        assert await cache.warm_up()
        client = running_client(cache.store.l2.client)  # type: ignore[union-attr]
        link = wire.wire_of(client)._link  # type: ignore[union-attr]
        assert link is not None and link.transport is not None
    finally:
        await cache.close()


def test_a_unix_socket_client_gets_the_wire(tmp_path: Path) -> None:
    """``unix://`` URLs go on the wire too (``open_unix_connection``'s transport)."""
    socket_path = tmp_path / "redis.sock"
    with RedisServer(
        name="unix-redis", extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    ):

        async def scenario() -> None:
            client = build_client(f"unix://{socket_path}?db=2")
            try:
                await client.set("k", b"over the socket")
                assert await direct.send(client, "GET", "k") == b"over the socket"
                link = wire.wire_of(client)._link  # type: ignore[union-attr]
                assert link is not None and link.transport is not None
                info = await direct.send(client, "CLIENT", "INFO")
                assert b" db=2 " in info
            finally:
                await client.aclose()

        asyncio.run(scenario())


async def test_a_long_reply_still_arriving_is_not_a_stall(
    fresh_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stall is silence, not a slow reply: while bytes keep coming (a large reply ahead
    in line), a caller gone does not get the socket dropped; once they stop, it is."""
    monkeypatch.setattr(wire, "STALL", 0.3)
    client = build_client(fresh_redis_server.url)
    try:
        await client.set("k", b"v")
        line = client.connection_pool.wire()
        await line.send([("GET", "k")])
        link = line._link
        assert link is not None
        fresh_redis_server.pause()  # no real reply comes: the test feeds the socket's bytes
        try:
            first = asyncio.ensure_future(line.send([("GET", "k")]))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(line.send([("GET", "k")]), 0.05)
            link.data_received(b"$100\r\n")  # the first one's reply, arriving slowly
            for _ in range(8):
                await asyncio.sleep(0.1)
                link.data_received(b"x")
                assert link.transport is not None
            await asyncio.sleep(0.5)  # then silence
            assert link.transport is None
            with pytest.raises(RedisConnectionError, match="no reply from Redis"):
                await first
        finally:
            fresh_redis_server.resume()
        assert await direct.send(client, "GET", "k") == b"v"  # a new socket
    finally:
        await client.aclose()


async def test_purges_keep_off_the_wire(redis_url: str) -> None:
    """A purge's replies (an index's members) can be large: they go on pooled
    connections, and the request path's lookups never wait behind them on the wire."""
    cache = TieredCache(CacheSettings(redis_url=redis_url))
    try:
        for i in range(50):
            await cache.set(f"k{i}", i, ttl=60, tags=["many"])
        client = running_client(cache.store.l2.client)  # type: ignore[union-attr]
        link = wire.wire_of(client)._link  # type: ignore[union-attr]
        assert link is not None
        queued = link.queued
        await cache.invalidate_tags("many")
        assert link.queued == queued
        assert [await cache.get(f"k{i}") for i in range(50)] == [None] * 50
        assert link.queued > queued  # the lookups went on it
        # The switch itself, on the loop's own client (which would otherwise take the wire).
        commands = [("get", (f"k{i}",)) for i in range(3)]
        queued = link.queued
        assert await scripts.pipeline(client, commands, on_wire=False) == [None] * 3
        assert link.queued == queued
        assert await scripts.pipeline(client, commands) == [None] * 3
        assert link.queued == queued + 1
    finally:
        await cache.close()
