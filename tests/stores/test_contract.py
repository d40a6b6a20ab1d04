"""One contract for every store: MemoryStore, RedisStore (fakeredis, real server), TieredStore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from fastapi_tiered_cache.entry import CachedResponse, VaryPointer
from fastapi_tiered_cache.stores import MemoryStore, RedisStore, Tier, TieredStore

from ..helpers import FakeClock


def entry(body: bytes = b"body", fresh_for: float = 60.0, stored_at: float = 0.0) -> CachedResponse:
    return CachedResponse(
        status=200,
        headers=((b"content-type", b"text/plain"),),
        body=body,
        stored_at=stored_at,
        fresh_for=fresh_for,
    )


@pytest.fixture(params=["memory", "fakeredis", "real-redis", "tiered-real"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
        return
    if kind == "fakeredis":
        client: Any = fakeredis.FakeAsyncRedis()
    else:
        url = request.getfixturevalue("redis_url")
        client = aioredis.Redis.from_url(url)
    remote = RedisStore(client, timeout=1.0)
    if kind == "tiered-real":
        tiered = TieredStore(MemoryStore(), remote)
        yield tiered
        await tiered.close()
    else:
        yield remote
        await remote.close()


async def get(store: Any, key: str) -> Any:
    found = await store.get(key)
    if isinstance(found, tuple):  # TieredStore answers (record, tier)
        return found[0]
    return found


async def test_set_then_get_round_trips(store: Any) -> None:
    record = entry(b"\x00\xffbinary")
    await store.set("k", record, 10)
    assert await get(store, "k") == record
    assert await get(store, "other") is None


async def test_vary_pointer_round_trips(store: Any) -> None:
    await store.set("p", VaryPointer(("accept",)), 10)
    assert await get(store, "p") == VaryPointer(("accept",))


async def test_delete_and_delete_many(store: Any) -> None:
    for key in ("a", "b", "c"):
        await store.set(key, entry(), 10)
    await store.delete("a")
    await store.delete_many(["b", "missing"])
    assert await get(store, "a") is None
    assert await get(store, "b") is None
    assert await get(store, "c") == entry()


async def test_overwrite_replaces(store: Any) -> None:
    await store.set("k", entry(b"one"), 10)
    await store.set("k", entry(b"two"), 10)
    assert (await get(store, "k")).body == b"two"


async def test_non_positive_ttl_stores_nothing(store: Any) -> None:
    await store.set("k", entry(), 0)
    assert await get(store, "k") is None


@pytest.mark.parametrize("kind", ["fakeredis", "real-redis"])
async def test_redis_entries_expire_by_themselves(
    kind: str, request: pytest.FixtureRequest
) -> None:
    client: Any = (
        fakeredis.FakeAsyncRedis()
        if kind == "fakeredis"
        else aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    )
    store = RedisStore(client, timeout=1.0)
    await store.set("k", entry(), 0.15)
    ttl_ms = await client.pttl("k")
    assert 0 < ttl_ms <= 150
    await asyncio.sleep(0.3)
    assert await store.get("k") is None
    await store.close()


@pytest.mark.parametrize(
    "value",
    [b"garbage", b"\x93\x01\x00\xa1k", b"", b"\x95\x02\x00\xa1k\xc0\xc0"],
    ids=["garbage", "short-envelope", "empty", "future-version"],
)
async def test_undecodable_values_are_a_miss_and_deleted(value: bytes, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, timeout=1.0)
    await client.set("k", value)
    assert await store.get("k") is None
    assert await client.exists("k") == 0
    assert store.decode_errors == 1
    await store.close()


async def test_value_written_under_another_key_is_rejected(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, timeout=1.0)
    await store.set("a", entry(), 10)
    await client.copy("a", "b")
    assert await store.get("b") is None
    assert await store.get("a") == entry()
    await store.close()


class Broken:
    """A client whose every command fails like a dead Redis."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise aioredis.ConnectionError("connection refused")

        return fail


class Hanging:
    """A client that never answers (a blackholed Redis)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def hang(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(3600)

        return hang


@pytest.mark.parametrize("client", [Broken(), Hanging()], ids=["refused", "blackholed"])
async def test_tiered_store_turns_l2_faults_into_misses_and_keeps_l1(client: Any) -> None:
    tiered = TieredStore(MemoryStore(), RedisStore(client, timeout=0.05, owns_client=False))
    await asyncio.wait_for(tiered.set("k", entry(), 10), 1)
    assert await asyncio.wait_for(tiered.get("k"), 1) == (entry(), Tier.L1)
    assert await asyncio.wait_for(tiered.get("missing"), 1) is None
    await tiered.delete("k")
    assert tiered.faults == 3


async def test_l2_hit_is_promoted_into_l1_for_its_remaining_life() -> None:
    clock = FakeClock(start=1000.0)
    l1 = MemoryStore(timer=clock)
    remote = RedisStore(fakeredis.FakeAsyncRedis(), timeout=1.0)
    writer = TieredStore(None, remote, clock=clock)
    reader = TieredStore(l1, remote, l1_max_ttl=100, clock=clock)
    await writer.set("k", entry(stored_at=1000.0, fresh_for=20.0), 20)
    clock.advance(5)
    assert await reader.get("k") == (entry(stored_at=1000.0, fresh_for=20.0), Tier.L2)
    assert await reader.get("k") == (entry(stored_at=1000.0, fresh_for=20.0), Tier.L1)
    clock.advance(16)  # 21 s after storing: past its life, L1 must not keep it
    assert l1.lookup("k") is None


async def test_l1_life_is_capped_by_l1_max_ttl() -> None:
    clock = FakeClock(start=0.0)
    tiered = TieredStore(MemoryStore(timer=clock), None, l1_max_ttl=3, clock=clock)
    await tiered.set("k", entry(stored_at=0.0, fresh_for=60.0), 60)
    clock.advance(2.9)
    assert tiered.lookup_local("k") is not None
    clock.advance(0.2)
    assert tiered.lookup_local("k") is None


def test_memory_store_is_bounded_by_entries_and_bytes() -> None:
    by_count = MemoryStore(max_entries=3, max_bytes=10**9)
    for i in range(10):
        by_count.put(f"k{i}", entry(), 60)
    assert len(by_count) == 3
    assert by_count.lookup("k9") is not None and by_count.lookup("k0") is None
    assert by_count.evictions == 7

    record = entry(b"x" * 1000)
    by_bytes = MemoryStore(max_entries=10**6, max_bytes=record.size * 4 + 10)
    for i in range(10):
        by_bytes.put(f"k{i}", record, 60)
    assert len(by_bytes) == 4
    assert by_bytes.current_bytes <= by_bytes.max_bytes

    too_big = MemoryStore(max_bytes=100)
    too_big.put("k", record, 60)
    assert too_big.lookup("k") is None
