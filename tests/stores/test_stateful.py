"""Stateful property test of ``TieredStore``: L1 (``MemoryStore``) over L2 (``RedisStore``).

Hypothesis drives two workers (two ``TieredStore`` objects, each with its own L1, sharing
one fakeredis L2) through random sequences of set / get / delete, time passing, L2 failing
and recovering, a worker's L1 being dropped (a restart), and foreign writes to L2 (a
corrupt value, or a value copied from another key). A fake clock drives the record
clocks, the L1 expiry timer and the circuit breaker; L2's own expiry is moved in step
(each PTTL is stretched after the write and cut by the time that passes), so no tier
depends on real time.

Versions are numbered; each record carries its key and number. The model keeps every
version ever written and, for each, what the store has promised about it. A ``get`` must:

1. never raise (a failing L2 is a miss);
2. only answer a version written *for that key* (never another key's, never garbage);
3. never answer a response past its own lifetime (``stored_at + fresh_for + stale_for``);
   a ``VaryPointer`` promoted from L2 gets ``l1_max_ttl`` in L1 whatever is left of its
   life in L2, so a pointer may outlive its TTL by at most ``L1_MAX_TTL`` (the documented
   bound);
4. read your writes: once a worker's own later set/delete of the key reached L2, it never
   answers an older version again;
5. cross-worker bound: once *any* later set/delete (or a foreign write) of the key reached
   L2, no worker answers an older version more than ``L1_MAX_TTL`` seconds later;
6. a version whose write never reached L2 is only ever answered by the worker that wrote it;
7. and, so that the above cannot pass by answering nothing: a worker that set a version
   answers exactly it while it must still be in its L1 (not expired, not evicted, not
   dropped); and when L2 is up, its breaker closed, and L2 must hold a version, the answer
   is not a miss.

Rules 2-7 are also checked after every step on what each worker's L1 would answer
(``lookup_local``, the middleware's fast path), and L2 is checked to hold exactly the last
version whose write reached it.

Whether a write reached L2 is observed (by reading L2 directly after it), not assumed from
whether L2 was "up": the circuit breaker may skip writes to a healthy L2.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import redis.exceptions
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastapi_tiered_cache.codec import decode, encode
from fastapi_tiered_cache.entry import CachedResponse, Record, VaryPointer
from fastapi_tiered_cache.exceptions import DecodeError
from fastapi_tiered_cache.stores import MemoryStore, RedisStore, Tier, TieredStore
from fastapi_tiered_cache.stores.breaker import BreakerState, CircuitBreaker

KEYS = ("ftc:k0", "ftc:k1", "ftc:k2")
WORKERS = (0, 1)
L1_MAX_TTL = 8.0
L1_MAX_ENTRIES = 2  # fewer than the keys: L1 evicts
START = 1_000_000.0
SCALE = 1000  # real PTTL milliseconds per model millisecond (see _slow_down_l2_expiry)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class FlakyRedis:
    """A client proxy whose commands raise ``error`` while it is set (as a broken link does)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.error: type[Exception] | None = None

    def _check(self, command: str) -> None:
        if self.error is not None:
            raise self.error(f"injected failure of {command}")

    async def get(self, key: str) -> Any:
        self._check("GET")
        return await self.client.get(key)

    async def set(self, key: str, value: bytes, **options: Any) -> Any:
        self._check("SET")
        return await self.client.set(key, value, **options)

    async def delete(self, *keys: str) -> Any:
        self._check("DEL")
        return await self.client.delete(*keys)

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class Version:
    """One write, and what the store has promised about it since."""

    number: int
    key: str
    record: Record
    writer: int
    written_at: float
    expires_at: float
    reached_l2: bool = False
    superseded_for: set[int] = field(default_factory=set)  # (4): by that worker's own write
    gone_from_l2_at: float | None = None  # (5): when a later write replaced it in L2

    def refusal(self, worker: int, now: float) -> str | None:
        """Why ``worker`` may not be answered this version now, or None if it may."""
        slack = L1_MAX_TTL if isinstance(self.record, VaryPointer) else 0.0
        if now >= self.expires_at + slack:
            return f"expired at {self.expires_at} (+{slack}), now {now}"
        if worker in self.superseded_for:
            return "the worker itself replaced or deleted it in L2 since"
        if self.gone_from_l2_at is not None and now >= self.gone_from_l2_at + L1_MAX_TTL:
            return f"replaced in L2 at {self.gone_from_l2_at}, more than l1_max_ttl ago"
        if not self.reached_l2 and worker != self.writer:
            return "it never reached L2, and another worker wrote it"
        return None


def make_record(key: str, number: int, kind: str, now: float, ttl: int) -> Record:
    if kind == "pointer":
        return VaryPointer(names=(f"{key}#{number}",))
    fresh = ttl // 2
    return CachedResponse(
        status=200,
        headers=((b"content-type", b"text/plain"),),
        body=f"{key}#{number}".encode(),
        stored_at=now,
        fresh_for=float(fresh),
        stale_for=float(ttl - fresh),  # remaining life at write time == ttl
    )


def _decodes(key: str, value: bytes) -> bool:
    try:
        decode(key, value)
    except DecodeError:
        return False
    return True


def tag_of(record: Record) -> str:
    if isinstance(record, VaryPointer):
        return record.names[0]
    return record.body.decode()


class TieredStoreMachine(RuleBasedStateMachine):
    """Two workers over one fakeredis; L2 failures come from the fake server going down."""

    USE_PROXY = False

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.server = fakeredis.FakeServer()
        self.raw: Any = self.run(self._client())  # created inside the loop that uses it
        self.inspector: Any = self.run(self._client())  # reads L2 behind the stores' backs
        self.proxy = FlakyRedis(self.raw) if self.USE_PROXY else None
        client = self.proxy if self.proxy is not None else self.raw
        self.stores = [
            TieredStore(
                MemoryStore(L1_MAX_ENTRIES, 1 << 20, timer=self.clock),
                RedisStore(client, timeout=5.0, owns_client=False),
                l1_max_ttl=L1_MAX_TTL,
                clock=self.clock,
                breaker=CircuitBreaker(threshold=2, cooldown=4.0, clock=self.clock),
            )
            for _ in WORKERS
        ]
        self.versions: dict[str, Version] = {}
        self.numbers = 0
        self.down = False
        # (7) liveness: what each worker's L1 must hold: key -> (version, until, evictions)
        self.must_hold: list[dict[str, tuple[Version, float, int]]] = [{} for _ in WORKERS]
        # (7) liveness: the version L2 must hold for a key, if any
        self.in_l2: dict[str, Version] = {}

    async def _client(self) -> Any:
        return fakeredis.FakeAsyncRedis(server=self.server)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.server.connected = True
            for store in self.stores:
                self.run(store.close())
            self.run(self.raw.aclose())
            self.run(self.inspector.aclose())
            self.run(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    # -- observing L2 directly -----------------------------------------------------------

    def _peek(self, coroutine_factory: Any) -> Any:
        """Run an inspector command even while the fake server is "down"."""
        was = self.server.connected
        self.server.connected = True
        try:
            return self.run(coroutine_factory())
        finally:
            self.server.connected = was

    def _l2_holds(self, key: str, record: Record) -> bool:
        raw = self._peek(lambda: self.inspector.get(key))
        if raw is None:
            return False
        try:
            return decode(key, raw) == record
        except DecodeError:
            return False

    def _slow_down_l2_expiry(self, key: str, ttl: int) -> None:
        """Check the TTL RedisStore set, then make L2 expiry follow the fake clock only.

        fakeredis expires keys in real time: a slow test machine could otherwise expire a
        key the model still expects. From here on one model second is ``SCALE`` real seconds
        of PTTL, and ``advance_time`` cuts PTTLs by as much.
        """

        async def rescale() -> None:
            left = await self.inspector.pttl(key)
            assert 0 < left <= ttl * 1000, f"SET {key} with a {ttl} s TTL left PTTL {left}"
            await self.inspector.pexpire(key, left * SCALE)

        self._peek(rescale)

    def _l2_lacks(self, key: str) -> bool:
        return not self._peek(lambda: self.inspector.exists(key))

    def _replaced_in_l2(self, key: str, by_worker: int | None) -> None:
        for version in self.versions.values():
            if version.key != key:
                continue
            if by_worker is not None:
                version.superseded_for.add(by_worker)
            if version.gone_from_l2_at is None:
                version.gone_from_l2_at = self.clock.now

    # -- rules -----------------------------------------------------------------------------

    @rule(
        worker=st.sampled_from(WORKERS),
        key=st.sampled_from(KEYS),
        kind=st.sampled_from(["response", "response", "pointer"]),
        ttl=st.integers(1, 30),
    )
    def set(self, worker: int, key: str, kind: str, ttl: int) -> None:
        self.numbers += 1
        now = self.clock.now
        record = make_record(key, self.numbers, kind, now, ttl)
        version = Version(self.numbers, key, record, worker, now, now + ttl)
        store = self.stores[worker]
        assert store.l1 is not None
        evictions = store.l1.evictions
        self.run(store.set(key, record, float(ttl)))
        version.reached_l2 = self._l2_holds(key, record)
        if version.reached_l2:
            self._slow_down_l2_expiry(key, ttl)
            self._replaced_in_l2(key, worker)
            self.in_l2[key] = version
        # else L2 kept what it had (it may answer that again); this worker's L1 did not
        self.versions[tag_of(record)] = version
        if store.l1.evictions == evictions:
            until = now + min(ttl, L1_MAX_TTL)
            self.must_hold[worker][key] = (version, until, store.l1.evictions)
        else:
            self.must_hold[worker].pop(key, None)

    @rule(worker=st.sampled_from(WORKERS), keys=st.lists(st.sampled_from(KEYS), max_size=3))
    def delete(self, worker: int, keys: list[str]) -> None:
        store = self.stores[worker]
        if len(keys) == 1:
            self.run(store.delete(keys[0]))
        else:
            self.run(store.delete_many(keys))
        for key in keys:
            self.must_hold[worker].pop(key, None)
            if self._l2_lacks(key):
                self._replaced_in_l2(key, worker)
                self.in_l2.pop(key, None)

    @rule(worker=st.sampled_from(WORKERS), key=st.sampled_from(KEYS))
    def get(self, worker: int, key: str) -> None:
        self._get(worker, key)

    @rule(key=st.sampled_from(KEYS), order=st.permutations(WORKERS))
    def get_everywhere(self, key: str, order: list[int]) -> None:
        """Every worker reads the key (a read-heavy load: many promotions from L2)."""
        for worker in order:
            self._get(worker, key)

    def _get(self, worker: int, key: str) -> None:
        store = self.stores[worker]
        now = self.clock.now
        breaker_closed = store.breaker.state is BreakerState.CLOSED
        held = self._held(worker, key)
        found = self.run(store.get(key))  # (1): any exception fails the test
        l2_version = self.in_l2.get(key)
        l2_must_answer = (
            not self.down
            and breaker_closed
            and l2_version is not None
            and now < l2_version.expires_at
        )
        if currently_in_test_context():
            event(f"get: {'miss' if found is None else found[1]}")
        if found is None:
            assert held is None, f"miss, but worker {worker} must hold {held}"
            assert not l2_must_answer, f"miss, but L2 holds {l2_version} and is up"
            return
        record, tier = found
        assert isinstance(tier, Tier)
        assert isinstance(record, (CachedResponse, VaryPointer))
        tag = tag_of(record)
        version = self.versions.get(tag)
        assert version is not None, f"answered {record!r}, which nobody wrote"
        assert version.key == key, f"asked for {key}, answered {tag} (another key's value)"
        assert record == version.record, (record, version.record)
        refusal = version.refusal(worker, now)
        assert refusal is None, f"worker {worker} answered {tag} from {tier}: {refusal}"
        if held is not None:
            assert version is held, f"worker {worker} must answer {held.number}"
            assert tier is Tier.L1
        if tier is Tier.L2:
            # promoted: this worker's L1 now holds it (for what is left of it, capped)
            self.must_hold[worker].pop(key, None)

    @rule(seconds=st.sampled_from([1, 2, 3, 5, 8, 13]))
    def advance_time(self, seconds: int) -> None:
        self.clock.now += seconds

        async def age_l2() -> None:
            # L2 expiry in step with the fake clock (never later than the model's).
            for name in await self.inspector.keys("*"):
                left = await self.inspector.pttl(name)
                if left < 0:
                    continue  # no expiry (a foreign write)
                left -= seconds * 1000 * SCALE
                if left <= 0:
                    await self.inspector.delete(name)
                else:
                    await self.inspector.pexpire(name, left)

        self._peek(age_l2)

    @precondition(lambda self: not self.down)
    @rule(
        error=st.sampled_from(
            [
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
                ConnectionResetError,
            ]
        )
    )
    def l2_fails(self, error: type[Exception]) -> None:
        self.down = True
        if self.proxy is not None:
            self.proxy.error = error
        else:
            self.server.connected = False  # the fake client raises ConnectionError

    @precondition(lambda self: self.down)
    @rule()
    def l2_recovers(self) -> None:
        self.down = False
        self.server.connected = True
        if self.proxy is not None:
            self.proxy.error = None

    @rule(worker=st.sampled_from(WORKERS))
    def l1_cleared(self, worker: int) -> None:
        """The worker restarts (or another worker, with an empty L1, takes the request)."""
        store = self.stores[worker]
        assert store.l1 is not None
        store.l1.clear()
        self.must_hold[worker].clear()

    @rule(key=st.sampled_from(KEYS), source=st.sampled_from((*KEYS, "garbage")))
    def foreign_write(self, key: str, source: str) -> None:
        """Someone else writes L2: garbage, or the value of another key (a collision)."""

        async def write() -> None:
            if source == "garbage":
                value = b"\x93\x01\x00not-an-entry"
            else:
                value = await self.inspector.get(source) if source != key else None
                if value is None or _decodes(key, value):  # never a valid entry for key
                    other = "someone-else" if source == key else source
                    value = encode(other, make_record(other, 0, "response", self.clock.now, 60))
            await self.inspector.set(key, value)

        self._peek(write)
        self._replaced_in_l2(key, None)
        self.in_l2.pop(key, None)

    @invariant()
    def l1_is_bounded(self) -> None:
        for store in self.stores:
            assert store.l1 is not None
            assert len(store.l1) <= L1_MAX_ENTRIES

    @invariant()
    def what_l1_would_answer_is_allowed(self) -> None:
        """After every step, the fast path (``lookup_local``) of every worker obeys 2-7."""
        now = self.clock.now
        for worker, store in zip(WORKERS, self.stores, strict=True):
            assert store.l1 is not None
            for key in KEYS:
                record = store.lookup_local(key)
                held = self._held(worker, key)
                if record is None:
                    assert held is None, f"worker {worker} lost {held} from L1"
                    continue
                version = self.versions.get(tag_of(record))
                assert version is not None, f"L1 holds {record!r}, which nobody wrote"
                assert version.key == key, f"L1 of worker {worker} holds {tag_of(record)} at {key}"
                refusal = version.refusal(worker, now)
                assert refusal is None, f"L1 of worker {worker} holds {version.number}: {refusal}"
                if held is not None:
                    assert version is held, f"worker {worker} must hold {held.number}"

    @invariant()
    def l2_holds_what_reached_it(self) -> None:
        """L2 holds, per key, the last version whose write reached it (until it expires)."""
        now = self.clock.now
        for key in KEYS:
            raw = self._peek(lambda key=key: self.inspector.get(key))
            expected = self.in_l2.get(key)
            if expected is not None and now < expected.expires_at:
                assert raw is not None, f"L2 lost {expected}"
            if raw is None or not _decodes(key, raw):
                continue  # absent, or a foreign value (the next read deletes it)
            version = self.versions.get(tag_of(decode(key, raw)))
            assert version is not None
            assert version is expected, f"L2 holds {version.number} at {key}, not {expected}"
            assert now < version.expires_at, f"L2 holds {version.number} past its TTL"

    def _held(self, worker: int, key: str) -> Version | None:
        """The version a worker's L1 must hold for a key now, if it must hold one."""
        held = self.must_hold[worker].get(key)
        store = self.stores[worker]
        assert store.l1 is not None
        if held is None or self.clock.now >= held[1] or store.l1.evictions != held[2]:
            return None
        return held[0]


class ProxiedTieredStoreMachine(TieredStoreMachine):
    """The same, with L2 failures injected per command: connection, timeout, reset errors."""

    USE_PROXY = True


STATEFUL = settings(max_examples=100, stateful_step_count=50, deadline=None)

TestTieredStore = TieredStoreMachine.TestCase
TestTieredStore.settings = STATEFUL
TestTieredStoreWithFailingClient = ProxiedTieredStoreMachine.TestCase
TestTieredStoreWithFailingClient.settings = STATEFUL


# The two bounds of rule 3, on their own (the machine finds them only by chance).


async def _two_workers(clock: Clock) -> tuple[Any, TieredStore, TieredStore]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    l2 = RedisStore(client, timeout=5.0, owns_client=False)
    writer, reader = (
        TieredStore(MemoryStore(timer=clock), l2, l1_max_ttl=L1_MAX_TTL, clock=clock)
        for _ in WORKERS
    )
    return client, writer, reader


async def test_a_late_promotion_leaves_l1_when_the_entry_expires() -> None:
    clock = Clock()
    client, writer, reader = await _two_workers(clock)
    record = make_record(KEYS[0], 1, "response", clock.now, 20)
    await writer.set(KEYS[0], record, 20)
    clock.now += 15
    assert await reader.get(KEYS[0]) == (record, Tier.L2)  # 5 s of life left
    clock.now += 4
    assert reader.lookup_local(KEYS[0]) == record
    clock.now += 1
    assert reader.lookup_local(KEYS[0]) is None  # its life is over: gone from L1 too
    await client.aclose()


async def test_a_promoted_pointer_outlives_its_ttl_by_at_most_l1_max_ttl() -> None:
    clock = Clock()
    client, writer, reader = await _two_workers(clock)
    written_at = clock.now
    pointer = make_record(KEYS[0], 1, "pointer", clock.now, 2)
    await writer.set(KEYS[0], pointer, 2)
    assert writer.lookup_local(KEYS[0]) == pointer
    clock.now += 1
    assert await reader.get(KEYS[0]) == (pointer, Tier.L2)
    clock.now = written_at + 2
    assert writer.lookup_local(KEYS[0]) is None  # set with its TTL: gone on time
    clock.now = written_at + 2 + L1_MAX_TTL
    assert reader.lookup_local(KEYS[0]) is None  # promoted: gone within the bound
    await client.aclose()
