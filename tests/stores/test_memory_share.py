"""L1 per-tenant share: one tenant's flood never pushes the others out of L1."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_tiered_cache.entry import CachedResponse
from fastapi_tiered_cache.stores import MemoryStore

from ..helpers import FakeClock

OVERHEAD = CachedResponse(status=200, headers=(), body=b"", stored_at=0, fresh_for=1).size


def entry(size: int) -> CachedResponse:
    """An entry weighing exactly ``size`` bytes in L1 (at least the fixed overhead)."""
    body = b"x" * max(0, size - OVERHEAD)
    return CachedResponse(status=200, headers=(), body=body, stored_at=0.0, fresh_for=60.0)


def key(tenant: str, n: int) -> str:
    return f"ftc:g1.0.0:{tenant}:pub:{n:040x}"


def tenant_of(key: str) -> str | None:
    return key.split(":")[2]


def share_store(
    entries: int = 100, max_bytes: int = 10**9, share: float = 0.5, clock: FakeClock | None = None
) -> MemoryStore:
    return MemoryStore(
        entries, max_bytes, timer=clock or FakeClock(0.0), tenant_share=share, tenant_of=tenant_of
    )


def held(store: MemoryStore, keys: list[str], tenant: str) -> tuple[int, int]:
    """``(entries, bytes)`` of ``tenant`` really in ``store``, by looking every key up."""
    records = [store.lookup(k) for k in keys if tenant_of(k) == tenant]
    found = [r for r in records if r is not None]
    return len(found), sum(r.size for r in found)


def test_a_flood_by_one_tenant_evicts_only_its_own_oldest_entries() -> None:
    store = share_store(entries=10, share=0.5)
    for n in range(5):
        store.put(key("b", n), entry(OVERHEAD), 60)
    for n in range(1000):
        store.put(key("a", n), entry(OVERHEAD), 60)
    assert all(store.lookup(key("b", n)) is not None for n in range(5))
    assert [n for n in range(1000) if store.lookup(key("a", n))] == list(range(995, 1000))
    assert store.tenant_usage("a") == (5, 5 * OVERHEAD)
    assert store.tenant_evictions == 995


def test_byte_share_is_enforced_with_the_tenants_own_entries() -> None:
    unit = 2 * OVERHEAD
    store = share_store(entries=1000, max_bytes=10 * unit, share=0.3)  # 3 units per tenant
    store.put(key("b", 0), entry(2 * unit), 60)
    for n in range(10):
        store.put(key("a", n), entry(unit), 60)
    assert store.tenant_usage("a") == (3, 3 * unit)
    assert store.lookup(key("b", 0)) is not None
    store.put(key("a", 99), entry(5 * unit // 2), 60)  # needs 3 of a's entries to go
    assert store.tenant_usage("a") == (1, 5 * unit // 2)
    store.put(key("a", 100), entry(3 * unit + 1), 60)  # larger than the whole share
    assert store.lookup(key("a", 100)) is None
    assert store.lookup(key("a", 99)) is not None


def test_the_default_tenant_and_unlabelled_keys_are_exempt() -> None:
    store = MemoryStore(
        10, 10**9, timer=FakeClock(0.0), tenant_share=0.2, tenant_of=lambda k: k.split(":")[0]
    )
    for n in range(10):
        store.put(f"_:{n}", entry(300), 60)
    assert len(store) == 10 and store.tenant_evictions == 0
    plain = MemoryStore(10, 10**9, timer=FakeClock(0.0), tenant_share=0.2)  # tenant_of: None
    for n in range(10):
        plain.put(f"t:{n}", entry(300), 60)
    assert len(plain) == 10


def test_the_hit_path_never_asks_for_the_tenant() -> None:
    calls = 0

    def counting(key: str) -> str | None:
        nonlocal calls
        calls += 1
        return tenant_of(key)

    store = MemoryStore(100, 10**9, timer=FakeClock(0.0), tenant_share=0.5, tenant_of=counting)
    store.put(key("a", 1), entry(300), 60)
    before = calls
    for _ in range(100):
        assert store.lookup(key("a", 1)) is not None
        assert store.lookup(key("a", 2)) is None
    assert calls == before


def test_overwrites_expiry_deletes_and_clear_keep_the_accounting_exact() -> None:
    clock = FakeClock(0.0)
    store = share_store(entries=4, share=0.5, clock=clock)
    small, large = OVERHEAD + 400, OVERHEAD + 500
    store.put(key("a", 1), entry(small), 60)
    store.put(key("a", 1), entry(large), 60)  # replaced, not added
    assert store.tenant_usage("a") == (1, large)
    store.put(key("a", 2), entry(small), 5)
    clock.advance(6)
    assert store.current_bytes == large  # the expired entry left L1 ...
    assert store.tenant_usage("a") == (1, large)  # ... and the tenant's account
    store.discard(key("a", 1))
    assert store.tenant_usage("a") == (0, 0)
    store.put(key("a", 3), entry(small), 60)
    store.clear()
    assert store.tenant_usage("a") == (0, 0) and len(store) == 0


@pytest.mark.parametrize("share", [0.0, 1.5, -1.0])
def test_share_must_be_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="tenant_share"):
        MemoryStore(tenant_share=share)


ops = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "_"]),  # tenant
        st.integers(0, 30),  # key number
        st.integers(OVERHEAD, 4 * OVERHEAD),  # entry size in bytes
        st.sampled_from(["put", "put", "put", "discard", "tick"]),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=ops,
    max_entries=st.integers(1, 20),
    max_bytes=st.integers(2 * OVERHEAD, 30 * OVERHEAD),
    share=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]),
)
def test_caps_always_hold_and_the_accounting_is_exact(
    ops: list[tuple[str, int, int, str]], max_entries: int, max_bytes: int, share: float
) -> None:
    clock = FakeClock(0.0)
    store = share_store(max_entries, max_bytes, share, clock)
    keys: list[str] = []
    for tenant, n, size, action in ops:
        k = key(tenant, n)
        if action == "put":
            store.put(k, entry(size), ttl=float(1 + n % 7))
            keys.append(k)
        elif action == "discard":
            store.discard(k)
        else:
            clock.advance(1.0)
        assert len(store) <= max_entries
        assert store.current_bytes <= max_bytes
        for name in ("a", "b", "c"):
            entries, used = held(store, sorted(set(keys)), name)
            assert entries <= int(share * max_entries) or share == 1.0
            assert used <= int(share * max_bytes) or share == 1.0
            if share < 1.0:
                assert store.tenant_usage(name) == (entries, used)


@settings(max_examples=200, deadline=None)
@given(
    others=st.lists(
        st.tuples(st.sampled_from(["b", "c", "_"]), st.integers(OVERHEAD, 3 * OVERHEAD))
    ),
    flood=st.lists(st.integers(OVERHEAD, 6 * OVERHEAD), min_size=1, max_size=200),
    share=st.sampled_from([0.1, 0.3, 0.5]),
)
def test_a_flood_never_evicts_entries_that_fit_beside_its_share(
    others: list[tuple[str, int]], flood: list[int], share: float
) -> None:
    """Entries of others that fit in what the flooder's share leaves free are never evicted."""
    max_entries, max_bytes = 50, 60 * OVERHEAD
    store = share_store(max_entries, max_bytes, share)
    room_entries = max_entries - int(share * max_entries)
    room_bytes = max_bytes - int(share * max_bytes)
    kept: dict[str, int] = {}  # key -> size
    for n, (tenant, size) in enumerate(others):
        if len(kept) + 1 > room_entries or sum(kept.values()) + size > room_bytes:
            break
        mine = [s for k, s in kept.items() if tenant_of(k) == tenant]
        if tenant != "_" and (
            len(mine) + 1 > int(share * max_entries) or sum(mine) + size > int(share * max_bytes)
        ):
            continue  # would not fit its own share: not what this property is about
        store.put(key(tenant, n), entry(size), 60)
        kept[key(tenant, n)] = size
    for n, size in enumerate(flood):
        store.put(key("a", 1000 + n), entry(size), 60)
        assert all(store.lookup(k) is not None for k in kept)


@settings(max_examples=200, deadline=None)
@given(
    ops=ops,
    max_entries=st.integers(1, 20),
    max_bytes=st.integers(2 * OVERHEAD, 30 * OVERHEAD),
    share=st.sampled_from([0.25, 1.0]),
)
def test_the_hit_path_lookup_agrees_with_the_cache_after_any_operations(
    ops: list[tuple[str, int, int, str]], max_entries: int, max_bytes: int, share: float
) -> None:
    """``lookup`` reads a plain dict beside the ``TLRUCache``: it must never serve an entry
    the cache has evicted, expired or deleted, nor miss one it holds."""
    clock = FakeClock(0.0)
    store = share_store(max_entries, max_bytes, share, clock)
    universe = sorted({key(tenant, n) for tenant, n, _, _ in ops})
    stored: dict[str, CachedResponse] = {}
    for tenant, n, size, action in ops:
        k = key(tenant, n)
        if action == "put":
            stored[k] = entry(size)
            store.put(k, stored[k], ttl=float(1 + n % 7))
        elif action == "discard":
            store.discard(k)
        else:
            clock.advance(1.0)
        for name in universe:
            slot = store._cache.get(name)  # the cache's own view (expiry included)
            expected = None if slot is None else slot[0]
            assert store.lookup(name) is expected
            assert expected is None or expected is stored[name]
