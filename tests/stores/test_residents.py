"""Keys seen in L2 a moment ago (``stores/residents.py``): their lookup is a plain GET, a
wrong guess costs one more round trip and never a wrong answer."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from fastapi_tiered_cache.stores.memory import MemoryStore
from fastapi_tiered_cache.stores.redis import RedisStore
from fastapi_tiered_cache.stores.residents import Residents
from fastapi_tiered_cache.stores.tiered import Tier, TieredStore

from .test_contract import entry


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_likely_in_l2_for_its_life_only() -> None:
    clock = Clock()
    residents = Residents(clock=clock)
    assert not residents.likely("k")
    residents.note("k", 10)
    assert residents.likely("k")
    clock.now += 10
    assert not residents.likely("k")
    residents.note("k", 0)  # no life left: nothing to remember
    assert len(residents) == 1 and not residents.likely("k")
    residents.note("k", 5)
    residents.forget("k")
    assert not residents.likely("k")


def test_at_most_max_keys_are_remembered_the_oldest_forgotten_first() -> None:
    residents = Residents(max_keys=3)
    for key in "abcd":
        residents.note(key, 60)
    assert len(residents) == 3
    assert not residents.likely("a")
    assert all(residents.likely(key) for key in "bcd")
    residents.note("b", 60)  # noted again: now the newest
    residents.note("e", 60)
    assert residents.likely("b") and not residents.likely("c")
    assert not Residents(max_keys=0).likely("a")


class Counting(aioredis.Connection):
    sent: list[str] = []

    def pack_command(self, *args: Any) -> Any:
        name = (args[0].decode() if isinstance(args[0], bytes) else str(args[0])).split()[0]
        if name.upper() not in ("HELLO", "CLIENT", "SELECT", "PING"):
            Counting.sent.append(name.upper())
        return super().pack_command(*args)


async def test_a_wrong_guess_falls_back_to_the_full_lookup_with_the_lease(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url, connection_class=Counting)
    tiered = TieredStore(None, RedisStore(client, timeout=1.0, owns_client=False))
    try:
        await tiered.find("other")  # the lookup script sent once in full
        await tiered.set_remote("k", entry(), 60)
        Counting.sent.clear()
        found = await tiered.find("k", ("lease:k", "token", 5_000))
        assert found.found == (entry(), Tier.L2) and found.lease is None
        assert Counting.sent == ["GET"]
        await client.delete("k")  # purged or evicted by another process
        Counting.sent.clear()
        missed = await tiered.find("k", ("lease:k", "token", 5_000))
        assert missed.found is None and missed.lease is True  # the lease taken after all
        assert missed.server_us is not None  # and the server's time, for the fill
        assert Counting.sent == ["GET", "EVALSHA"]
        Counting.sent.clear()
        await tiered.find("k", ("lease:k", "token", 5_000))  # no longer expected: script
        assert Counting.sent == ["EVALSHA"]
    finally:
        await client.aclose()


class Broken:
    """A client whose every command fails like a dead Redis."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise aioredis.ConnectionError("connection refused")

        return fail


async def test_a_failed_get_is_a_miss_without_a_second_try() -> None:
    tiered = TieredStore(MemoryStore(), RedisStore(Broken(), timeout=0.05, owns_client=False))
    tiered.residents.note("k", 60)
    assert (await tiered.find("k", ("lease:k", "token", 5_000))).found is None
    assert tiered.faults == 1  # one fault, not a GET and then the script
