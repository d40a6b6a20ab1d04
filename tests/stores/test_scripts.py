"""Scripts by SHA (``stores/scripts.py``): EVALSHA on the hot path, EVAL once where the
server lacks the script (first use, ``SCRIPT FLUSH``, a restart, a cluster node)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_tiered_cache import CacheSettings, TieredCache
from fastapi_tiered_cache.stores import batching, scripts

from ..helpers import make_cache

SECRET = "scripts-secret-key-0123456789abcdef"
ECHO = "return {KEYS[1], ARGV[1]}"


class Counting(aioredis.Connection):
    sent: list[str] = []

    def pack_command(self, *args: Any) -> Any:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        Counting.sent.append(name.split()[0].upper())
        return super().pack_command(*args)


async def test_scripts_go_by_text_on_first_use_then_by_sha_and_by_text_after_a_flush(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url, connection_class=Counting)
    commands = [
        ("eval", (ECHO, 1, "k", "a")),
        ("get", ("nothing",)),
        ("eval", (ECHO, 1, "j", "b")),
    ]
    replies = [[b"k", b"a"], None, [b"j", b"b"]]
    try:
        await client.script_flush()
        Counting.sent.clear()
        assert await scripts.pipeline(client, commands) == replies
        assert Counting.sent == ["EVAL", "GET", "EVAL"]  # in order, cached by the server
        Counting.sent.clear()
        assert await scripts.pipeline(client, commands) == replies
        assert Counting.sent == ["EVALSHA", "GET", "EVALSHA"]
        await client.script_flush()  # a restart, a failover, SCRIPT FLUSH
        Counting.sent.clear()
        assert await scripts.pipeline(client, commands) == replies
        assert Counting.sent == ["EVALSHA", "GET", "EVALSHA", "EVAL", "EVAL"]
        await client.script_flush()
        assert await scripts.evalsha(client, ECHO, ["k"], ["c"]) == [b"k", b"c"]
        Counting.sent.clear()
        assert await scripts.evalsha(client, ECHO, ["k"], ["d"]) == [b"k", b"d"]
        assert Counting.sent == ["EVALSHA"]
    finally:
        await client.aclose()


async def test_an_error_answered_by_a_command_is_raised(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.raises(aioredis.ResponseError, match="boom"):
            await scripts.pipeline(client, [("eval", ("return redis.error_reply('boom')", 0))])
    finally:
        await client.aclose()


async def test_fills_and_purges_work_after_script_flush(redis_url: str) -> None:
    """A restart or a flush between two requests costs one EVAL per script, no miss."""
    client = aioredis.Redis.from_url(redis_url)
    cache = make_cache(redis=client)
    try:
        await cache.set("a", 1, ttl=60, tags=["t"])
        await client.script_flush()
        await cache.set("b", 2, ttl=60, tags=["t"])
        assert await cache.get_or_set("c", _three, ttl=60) == 3
        await client.script_flush()
        cache.store.l1.clear()  # type: ignore[union-attr]
        assert (await cache.get("a"), await cache.get("b"), await cache.get("c")) == (1, 2, 3)
        await client.script_flush()
        assert await cache.invalidate_tags("t") == 2
        cache.store.l1.clear()  # type: ignore[union-attr]
        assert (await cache.get("a"), await cache.get("b")) == (None, None)
    finally:
        await cache.close()
        await client.aclose()


async def _three() -> int:
    return 3


async def test_every_cluster_node_learns_the_scripts_it_needs(cluster_urls: list[str]) -> None:
    settings = CacheSettings(
        redis_url=",".join(cluster_urls),
        redis_mode="cluster",
        secret_key=SECRET,
        redis_timeout=2.0,  # first connections to each node on a busy test machine
    )
    cache = TieredCache(settings)
    l1 = cache.store.l1
    assert l1 is not None
    try:
        assert await cache.warm_up()
        await _flush_every_node(cluster_urls)
        for i in range(12):  # keys, indexes and markers on every node
            await cache.get_or_set(f"k{i}", _value(i), ttl=60, tags=[f"tag{i}"])
        l1.clear()
        assert [await cache.get(f"k{i}") for i in range(12)] == list(range(12))
        await _flush_every_node(cluster_urls)
        for i in range(12):
            await cache.invalidate_tags(f"tag{i}")
        l1.clear()
        assert [await cache.get(f"k{i}") for i in range(12)] == [None] * 12
        assert cache.store.faults == 0
    finally:
        await cache.close()


async def _flush_every_node(urls: list[str]) -> None:
    for url in urls:
        node = aioredis.Redis.from_url(url)
        try:
            await node.script_flush()
        finally:
            await node.aclose()


def _value(i: int) -> Any:
    async def compute() -> int:
        return i

    return compute


async def test_scripts_of_one_round_trip_run_as_one_command(redis_url: str) -> None:
    """A fill and the lease release after it: one command, each script its own keys and
    arguments, replies as a pipeline would give them (nil included)."""
    client = aioredis.Redis.from_url(redis_url, connection_class=Counting)
    commands = [
        ("eval", ("redis.call('SET', KEYS[1], ARGV[1]) return {KEYS[1], ARGV[1]}", 1, "a", "x")),
        ("eval", ("return redis.call('GET', KEYS[1])", 1, "missing")),
        ("eval", ("return {#KEYS, #ARGV, redis.call('GET', KEYS[2])}", 2, "b", "a", "v", "w")),
    ]
    try:
        await client.delete("a", "missing")
        Counting.sent.clear()
        assert await batching.run_scripts(client, commands) == [[b"a", b"x"], None, [2, 2, b"x"]]
        assert await batching.run_scripts(client, commands[1:2]) == [None]
        assert Counting.sent in (["EVAL", "EVAL"], ["EVALSHA", "EVALSHA"], ["EVAL", "EVALSHA"])
        Counting.sent.clear()
        assert await batching.run_scripts(client, commands) == [[b"a", b"x"], None, [2, 2, b"x"]]
        assert Counting.sent == ["EVALSHA"]
    finally:
        await client.aclose()


async def test_combined_scripts_get_every_argument_byte_for_byte(redis_url: str) -> None:
    """The arguments travel packed in one (netstrings): each script still sees exactly
    what redis-py would have sent on its own, whatever the bytes (separators, digits,
    empty values, non-UTF-8, a large body)."""
    client = aioredis.Redis.from_url(redis_url)
    echo = "return ARGV"
    tricky: list[Any] = [b"", b"12:34", b":", b"\x00\xff\x80:9", "caf\u00e9", 0, -7, 1.5, 1e-7]
    tricky += [1796687145793832, 1796687145.79515, b"x" * 70_000]
    try:
        replies = await batching.run_scripts(
            client, [("eval", (echo, 0, *tricky)), ("eval", (echo, 1, "k", "only"))]
        )
    finally:
        await client.aclose()
    expected = [
        b"",
        b"12:34",
        b":",
        b"\x00\xff\x80:9",
        "caf\u00e9".encode(),
        b"0",
        b"-7",
        b"1.5",
        b"1e-07",
        b"1796687145793832",
        b"1796687145.79515",
        b"x" * 70_000,
    ]
    assert replies == [expected, [b"only"]]


def test_arguments_redis_py_would_refuse_are_refused() -> None:
    assert scripts.netstrings([b"a", "b", 3, 0.5]) == b"1:a1:b1:33:0.5"
    for bad in (True, None, object(), [1]):
        with pytest.raises(TypeError, match="script argument"):
            scripts.netstrings([bad])
