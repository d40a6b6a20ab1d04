"""The data API on one process: get / set / delete / get_or_set, scopes, purges, isolation.

L1 only or fakeredis; the same behaviours against a real redis-server, across processes
and under faults, are in test_data_redis.py and test_data_multiprocess.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import fakeredis
import pytest
from pydantic import BaseModel, ConfigDict

from fastapi_tiered_cache import ValueNotSerializable
from fastapi_tiered_cache.codec import decode, encode
from fastapi_tiered_cache.entry import DataEntry
from fastapi_tiered_cache.exceptions import DecodeError

from .helpers import FakeClock, healthy, make_cache, seen_within


class Product(BaseModel):
    id: int
    name: str
    tags: list[str] = []


class FrozenProduct(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    name: str


class Opaque:
    """A type msgpack cannot hold."""


async def test_set_then_get_round_trips_and_absent_keys_give_the_default() -> None:
    cache = make_cache()

    await cache.set("k", {"a": [1, 2], "b": None}, ttl=30)

    assert await cache.get("k") == {"a": [1, 2], "b": None}
    assert await cache.get("missing") is None
    assert await cache.get("missing", default="x") == "x"
    await cache.close()


async def test_values_expire_after_their_ttl_in_seconds_or_timedelta() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await cache.set("seconds", 1, ttl=10)
    await cache.set("delta", 2, ttl=dt.timedelta(seconds=20))
    await cache.set("fraction", 3, ttl=0.5)

    clock.advance(9.9)
    assert (await cache.get("seconds"), await cache.get("delta")) == (1, 2)
    assert await cache.get("fraction") is None
    clock.advance(0.2)
    assert await cache.get("seconds") is None
    assert await cache.get("delta") == 2
    clock.advance(10)
    assert await cache.get("delta") is None
    await cache.close()


async def test_ttl_zero_deletes_and_a_negative_ttl_is_refused() -> None:
    cache = make_cache()
    await cache.set("k", "v")

    await cache.set("k", "w", ttl=0)

    assert await cache.get("k") is None
    for bad in (-1, float("nan"), float("inf"), 1e12, dt.timedelta(days=-1), "5 parsecs", ""):
        with pytest.raises(ValueError, match="ttl"):
            await cache.set("k", "v", ttl=bad)
    await cache.close()


async def test_durations_are_written_as_in_the_settings() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    await cache.set("k", "v", ttl="15s500ms")
    clock.advance(15.4)
    assert await cache.get("k") == "v"
    clock.advance(0.2)
    assert await cache.get("k") is None
    await cache.close()


@pytest.mark.parametrize("key", [None, 5, b"k", ("a",)])
async def test_a_key_that_is_not_a_str_is_a_clear_type_error(key: Any) -> None:
    cache = make_cache()
    for call in (cache.get(key), cache.set(key, 1), cache.delete(key)):
        with pytest.raises(TypeError, match="a cache key is a str"):
            await call
    await cache.close()


async def test_the_default_ttl_applies_when_none_is_given() -> None:
    clock = FakeClock()
    cache = make_cache(clock, default_ttl=5)
    await cache.set("k", "v")

    clock.advance(4.9)
    assert await cache.get("k") == "v"
    clock.advance(0.2)
    assert await cache.get("k") is None
    await cache.close()


async def test_delete_removes_the_value() -> None:
    cache = make_cache()
    await cache.set("k", "v")

    await cache.delete("k")
    await cache.delete("never-set")

    assert await cache.get("k") is None
    await cache.close()


async def test_as_type_validates_into_the_type_and_plain_reads_give_plain_data() -> None:
    cache = make_cache()
    await cache.set("p", Product(id=1, name="Laptop", tags=["x"]))

    typed = await cache.get("p", as_type=Product)
    plain = await cache.get("p")

    assert typed == Product(id=1, name="Laptop", tags=["x"])
    assert plain == {"id": 1, "name": "Laptop", "tags": ["x"]}
    assert await cache.get("p", as_type=list[int], default="gone") == "gone"  # does not fit
    assert await cache.get("p") is None  # ...and was dropped as unreadable
    await cache.close()


async def test_an_unserialisable_value_fails_at_set_naming_its_type() -> None:
    cache = make_cache()

    with pytest.raises(ValueNotSerializable, match=r"tests\.test_data\.Opaque") as raised:
        await cache.set("k", {"nested": [Opaque()]})
    with pytest.raises(TypeError, match="int"):  # a TypeError too; integers over 64 bits
        await cache.set("k", 2**70)

    assert raised.value.type is Opaque
    assert await cache.get("k") is None
    await cache.close()


async def test_values_are_scoped_by_principal_and_tenant_only_when_named() -> None:
    cache = make_cache()
    await cache.set("me", "alice's", principal="alice")
    await cache.set("me", "acme's", tenant="acme")
    await cache.set("me", "everyone's")

    assert await cache.get("me", principal="alice") == "alice's"
    assert await cache.get("me", principal="bob") is None
    assert await cache.get("me", tenant="acme") == "acme's"
    assert await cache.get("me", tenant="globex") is None
    assert await cache.get("me") == "everyone's"
    await cache.close()


async def test_invalidate_tags_purges_data_entries() -> None:
    cache = make_cache()
    await cache.set("a", 1, tags=["t1"])
    await cache.set("b", 2, tags=["t1", "t2"])
    await cache.set("c", 3, tags=["t2"])
    await cache.set("d", 4)

    purged = await cache.invalidate_tags("t1")

    assert purged == 2
    assert [await cache.get(k) for k in "abcd"] == [None, None, 3, 4]
    await cache.close()


async def test_tags_are_per_tenant() -> None:
    cache = make_cache()
    await cache.set("a", 1, tags=["t"], tenant="acme")
    await cache.set("a", 2, tags=["t"])

    await cache.invalidate_tags("t", tenant="acme")

    assert await cache.get("a", tenant="acme") is None
    assert await cache.get("a") == 2
    await cache.close()


async def test_generation_purges_reach_data_entries() -> None:
    cache = make_cache()
    await cache.set("x", 1)
    await cache.set("x", 2, principal="alice")
    await cache.set("x", 3, principal="bob")

    await cache.invalidate_identity(principal="alice")
    assert [await cache.get("x"), await cache.get("x", principal="bob")] == [1, 3]
    assert await cache.get("x", principal="alice") is None
    await cache.invalidate_all()
    assert [await cache.get("x"), await cache.get("x", principal="bob")] == [None, None]
    await cache.close()


async def test_get_or_set_computes_once_for_concurrent_cold_calls() -> None:
    cache = make_cache()
    calls = 0
    release = asyncio.Event()

    async def factory() -> Product:
        nonlocal calls
        calls += 1
        await release.wait()
        return Product(id=7, name="Mouse")

    waiting = [asyncio.ensure_future(cache.get_or_set("p7", factory, ttl=30)) for _ in range(20)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiting)

    assert calls == 1
    assert all(result == Product(id=7, name="Mouse") for result in results)
    assert all(isinstance(result, Product) for result in results)  # the factory's type
    assert len({id(result) for result in results}) == 20  # each caller its own copy
    assert await cache.get_or_set("p7", factory) == Product(id=7, name="Mouse")
    assert calls == 1
    await cache.close()


async def test_get_or_set_without_a_type_gives_plain_data_on_misses_and_hits() -> None:
    cache = make_cache()

    first = await cache.get_or_set("k", lambda: _value(Product(id=1, name="n")))
    second = await cache.get_or_set("k", lambda: _value(Product(id=2, name="m")))

    assert first == second == {"id": 1, "name": "n", "tags": []}
    await cache.close()


async def _value(value: Any) -> Any:
    return value


async def test_get_or_set_refuses_a_sync_factory() -> None:
    cache = make_cache()

    with pytest.raises(TypeError, match="async"):
        await cache.get_or_set("k", lambda: 1)  # type: ignore[arg-type, return-value]
    await cache.close()


async def test_a_failing_factory_propagates_and_stores_nothing() -> None:
    cache = make_cache()

    async def broken() -> int:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        await cache.get_or_set("k", broken)
    assert await cache.get_or_set("k", lambda: _value(5)) == 5
    await cache.close()


async def test_stale_while_revalidate_serves_stale_and_refreshes_once() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    versions = iter(range(1, 100))
    calls = 0

    async def factory() -> int:
        nonlocal calls
        calls += 1
        return next(versions)

    assert await cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30) == 1
    clock.advance(15)
    stale = [
        await cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30) for _ in range(3)
    ]
    await _settled(cache)
    fresh = await cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30)

    assert stale == [1, 1, 1]
    assert (fresh, calls) == (2, 2)
    clock.advance(50)  # past both windows: computed while the caller waits
    assert await cache.get_or_set("k", factory, ttl=10, stale_while_revalidate=30) == 3
    await cache.close()


async def test_stale_if_error_serves_the_stale_value_when_the_factory_fails() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    failing = False

    async def factory() -> str:
        if failing:
            raise ConnectionError("upstream down")
        return "good"

    assert await cache.get_or_set("k", factory, ttl=10, stale_if_error=60) == "good"
    failing = True
    clock.advance(20)  # within L1's life of the entry (l1_max_ttl, 30 s)
    assert await cache.get_or_set("k", factory, ttl=10, stale_if_error=60) == "good"
    clock.advance(60)
    with pytest.raises(ConnectionError):
        await cache.get_or_set("k", factory, ttl=10, stale_if_error=60)
    assert await cache.get("k") is None  # stale values are never plain hits
    await cache.close()


async def test_early_refresh_recomputes_a_hot_entry_before_it_expires() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    calls = 0

    async def slow() -> int:
        nonlocal calls
        calls += 1
        clock.advance(5)  # the computation "takes" 5 s: XFetch weighs that
        return calls

    assert await cache.get_or_set("k", slow, ttl=60, early_refresh=1e9) == 1
    clock.advance(1)
    assert await cache.get_or_set("k", slow, ttl=60, early_refresh=1e9) == 1  # still served
    await _settled(cache)
    assert calls == 2
    assert await cache.get_or_set("k", slow, ttl=60, early_refresh=1e9) in (2, 3)
    await cache.close()


async def _settled(cache: Any) -> None:
    for _ in range(200):
        if not cache.refreshing:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("background refresh still running")


async def test_a_fill_that_raced_a_set_does_not_overwrite_it() -> None:
    cache = make_cache()
    release = asyncio.Event()

    async def old() -> str:
        await release.wait()
        return "old"

    fill = asyncio.ensure_future(cache.get_or_set("k", old))
    await asyncio.sleep(0.01)
    await cache.set("k", "new")
    release.set()

    assert await fill == "old"  # its caller gets what it computed...
    assert await cache.get("k") == "new"  # ...but the newer value stays
    await cache.close()


async def test_a_fill_that_raced_a_tag_purge_is_not_stored() -> None:
    cache = make_cache()
    release = asyncio.Event()

    async def old() -> str:
        await release.wait()
        return "old"

    fill = asyncio.ensure_future(cache.get_or_set("k", old, tags=["t"]))
    await asyncio.sleep(0.01)
    await cache.invalidate_tags("t")
    release.set()
    await fill

    assert await cache.get("k") is None
    await cache.close()


async def test_a_caller_mutating_its_result_never_changes_the_next_callers() -> None:
    cache = make_cache()
    await cache.set("p", Product(id=1, name="n", tags=["a"]))
    await cache.set("l", [[1], {"x": [2]}])

    first = await cache.get("p", as_type=Product)
    first.tags.append("mutated")
    first.name = "changed"
    listed = await cache.get("l")
    listed[0].append(99)
    listed[1]["x"].clear()

    assert await cache.get("p", as_type=Product) == Product(id=1, name="n", tags=["a"])
    assert await cache.get("l") == [[1], {"x": [2]}]
    await cache.close()


async def test_immutable_types_share_one_instance_and_mutable_ones_never_do() -> None:
    cache = make_cache()
    await cache.set("f", FrozenProduct(id=1, name="n"))
    await cache.set("p", Product(id=1, name="n"))

    frozen = [await cache.get("f", as_type=FrozenProduct) for _ in range(2)]
    mutable = [await cache.get("p", as_type=Product) for _ in range(2)]

    assert frozen[0] is frozen[1]
    assert mutable[0] is not mutable[1] and mutable[0] == mutable[1]
    await cache.close()


async def test_with_fakeredis_values_are_shared_through_l2() -> None:
    server = fakeredis.FakeServer()
    worker_a = make_cache(redis=fakeredis.aioredis.FakeRedis(server=server), redis_timeout=1.0)
    worker_b = make_cache(redis=fakeredis.aioredis.FakeRedis(server=server), redis_timeout=1.0)

    await worker_a.set("k", Product(id=3, name="Pen"), tags=["t"])
    await worker_b.get("warm-up")  # starts worker_b's bus: L1 copies made now may stay
    await healthy(worker_b)  # (when the bus comes up it drops L1: purges went unheard)
    from_l2 = await worker_b.get("k", as_type=Product)
    assert await worker_b.get("k") == {"id": 3, "name": "Pen", "tags": []}
    await worker_a.invalidate_tags("t")

    assert from_l2 == Product(id=3, name="Pen")
    assert worker_b.stats.l1_hits == 1  # the second read was worker_b's own L1 copy
    # The purge reaches worker_b's L1 when its bus message is handled: not within the
    # purge's own call (pub/sub is asynchronous, and when the listener runs is the event
    # loop's choice), but always within the coherence bound. L1 never expires here (the
    # fake clock stands still), so only the bus can drop the copy.
    await seen_within(worker_b, "k", None, bound=worker_b.settings.coherence_bound)
    await worker_a.close()
    await worker_b.close()


async def test_an_undecodable_l2_value_is_a_miss_and_is_deleted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = fakeredis.aioredis.FakeRedis()
    cache = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)
    await cache.set("k", "v")
    (key,) = await client.keys("ftc:g*:*:*:d*")
    entry = decode(key.decode(), await client.get(key))
    assert isinstance(entry, DataEntry)
    broken = DataEntry(
        status=200, headers=(), body=b"\xc1", stored_at=entry.stored_at, fresh_for=60
    )
    await client.set(key, encode(key.decode(), broken))

    with caplog.at_level(logging.WARNING, logger="fastapi_tiered_cache"):
        assert await cache.get("k", default="miss") == "miss"
    assert await client.exists(key) == 0
    assert "dropping cached value" in caplog.text
    await cache.close()


def test_data_entries_round_trip_through_the_codec_and_reject_malformed_fields() -> None:
    entry = DataEntry(
        status=200,
        headers=(),
        body=b"\x93\x01\x02\x03",
        stored_at=1.5,
        fresh_for=30.0,
        stale_for=60.0,
        stale_while_revalidate=60.0,
        stale_if_error=10.0,
        tags=("a", "b"),
        compute_seconds=0.25,
    )
    data = encode("key", entry)

    assert decode("key", data) == entry
    assert type(decode("key", data)) is DataEntry
    import msgpack

    fields = msgpack.unpackb(data)
    for index, bad in ((3, "text"), (4, "1"), (9, [1]), (10, None)):
        broken = list(fields)
        broken[index] = bad
        with pytest.raises(DecodeError):
            decode("key", msgpack.packb(broken, use_bin_type=True))
    with pytest.raises(DecodeError):
        decode("key", msgpack.packb(fields[:-1], use_bin_type=True))
