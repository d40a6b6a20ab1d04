"""``@cached``: keys from arguments, typed results, the per-call bypass, refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import fakeredis
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict

from fastapi_tiered_cache import (
    CachedFunction,
    TieredCache,
    ValueNotSerializable,
    cached,
    get_cache,
    install,
)

from .helpers import FakeClock, make_cache

install_module = importlib.import_module("fastapi_tiered_cache.install")


class Product(BaseModel):
    id: int
    name: str
    price: Decimal
    tags: list[str] = []


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    name: str


@dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime
    lines: list[Product] = field(default_factory=list)


class Calls:
    def __init__(self) -> None:
        self.args: list[tuple[Any, ...]] = []


@pytest.fixture
async def cache() -> Any:
    cache = make_cache()
    yield cache
    await cache.close()


async def test_equal_calls_share_one_entry_whatever_their_spelling(cache: TieredCache) -> None:
    calls = Calls()

    @cached(ttl=60, cache=cache)
    async def load(product_id: int, lang: str = "en", *rest: int, **options: str) -> str:
        calls.args.append((product_id, lang, rest, options))
        return f"{product_id}-{lang}-{rest}-{sorted(options.items())}"

    same = [
        await load(1),
        await load(product_id=1),
        await load(1, "en"),
        await load(1, lang="en"),
    ]
    with_options = [await load(1, a="x", b="y"), await load(1, b="y", a="x")]
    different = [await load(2), await load(1, "fr"), await load(1, "en", 5)]

    assert len(set(same)) == 1
    assert len({*same, *different}) == 4
    assert with_options[0] == with_options[1]
    assert len(calls.args) == 5  # 1, 1 with options, 2, fr, en + 5


async def test_arguments_of_different_types_never_share(cache: TieredCache) -> None:
    @cached(ttl=60, cache=cache)
    async def echo(value: Any) -> Any:
        return [type(value).__name__, value]

    results = [await echo(v) for v in (1, True, 1.0, "1", b"1", (1,), [1], None)]

    assert [name for name, _ in results] == [
        "int",
        "bool",
        "float",
        "str",
        "bytes",
        "tuple",
        "list",
        "NoneType",
    ]


async def test_results_come_back_as_the_annotated_type_from_l2(redis_cache: TieredCache) -> None:
    order = Order(
        id=uuid.UUID(int=7),
        placed=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
        lines=[Product(id=1, name="Laptop", price=Decimal("999.90"), tags=["a"])],
    )

    @cached(ttl=60, cache=redis_cache)
    async def load_order() -> Order:
        return order

    @cached(ttl=60, cache=redis_cache)
    async def load_products() -> list[Product]:
        return order.lines

    @cached(ttl=60, cache=redis_cache)
    async def load_mapping() -> dict[str, tuple[Decimal, dt.date]]:
        return {"a": (Decimal("1.10"), dt.date(2024, 1, 2))}

    computed = (await load_order(), await load_products(), await load_mapping())
    from_l2 = (await load_order(), await load_products(), await load_mapping())

    assert from_l2 == computed
    assert isinstance(from_l2[0], Order) and isinstance(from_l2[0].lines[0], Product)
    assert isinstance(from_l2[0].lines[0].price, Decimal)
    assert from_l2[2]["a"] == (Decimal("1.10"), dt.date(2024, 1, 2))
    assert redis_cache.stats.counters["hit", "l2"] == 3


@pytest.fixture
async def redis_cache() -> Any:
    """A cache whose every read goes to (fake) Redis: L1 off."""
    cache = make_cache(redis=fakeredis.aioredis.FakeRedis(), redis_timeout=1.0, l1_max_entries=0)
    yield cache
    await cache.close()


async def test_tags_are_templated_from_the_arguments(cache: TieredCache) -> None:
    runs = 0

    @cached(ttl=60, tags=["product:{product_id}", "all-products"], cache=cache)
    async def load(product_id: int) -> int:
        nonlocal runs
        runs += 1
        return product_id

    await load(1)
    await load(2)
    await cache.invalidate_tags("product:1")
    await load(1)
    await load(2)
    assert runs == 3
    await cache.invalidate_tags("all-products")
    await load(2)
    assert runs == 4


async def test_a_key_template_is_shared_with_get_and_set(cache: TieredCache) -> None:
    @cached(ttl=60, key="product:{product_id}", cache=cache)
    async def load(product_id: int) -> str:
        return f"computed {product_id}"

    await cache.set("product:2", "set by hand")

    assert await load(1) == "computed 1"
    assert await cache.get("product:1") == "computed 1"
    assert await load(2) == "set by hand"


async def test_refresh_bypasses_the_read_and_invalidate_drops_one_argument_set(
    cache: TieredCache,
) -> None:
    version = 0

    @cached(ttl=60, cache=cache)
    async def load(product_id: int) -> str:
        return f"{product_id}@{version}"

    assert await load(1) == "1@0"
    assert await load(2) == "2@0"
    version = 1
    assert await load(1) == "1@0"
    assert await load.refresh(1) == "1@1"
    assert await load(1) == "1@1"
    version = 2
    await load.invalidate(1)
    assert (await load(1), await load(2)) == ("1@2", "2@0")


async def test_one_computation_for_concurrent_calls_and_each_caller_its_own_copy(
    cache: TieredCache,
) -> None:
    runs = 0

    @cached(ttl=60, cache=cache)
    async def load(product_id: int) -> Product:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return Product(id=product_id, name="n", price=Decimal(1), tags=["a"])

    results = await asyncio.gather(*(load(5) for _ in range(10)))
    results[0].tags.append("mutated")
    results[1].name = "changed"
    again = await load(5)

    assert runs == 1
    assert len({id(r) for r in results}) == 10
    assert again == Product(id=5, name="n", price=Decimal(1), tags=["a"])


async def test_frozen_results_are_shared_not_copied(cache: TieredCache) -> None:
    @cached(ttl=60, cache=cache)
    async def load(item_id: int) -> Frozen:
        return Frozen(id=item_id, name="n")

    first = await load(1)
    assert await load(1) is await load(1)
    assert await load(1) == first


async def test_an_unserialisable_result_fails_naming_its_type(cache: TieredCache) -> None:
    class Session:
        pass

    @cached(ttl=60, cache=cache)
    async def load() -> Any:
        return Session()

    with pytest.raises(ValueNotSerializable, match="Session"):
        await load()


async def test_an_unkeyable_argument_runs_the_function_uncached_and_says_so(
    cache: TieredCache, caplog: pytest.LogCaptureFixture
) -> None:
    class Session:
        pass

    runs = 0

    @cached(ttl=60, cache=cache)
    async def plain(db: Session, product_id: int) -> int:
        nonlocal runs
        runs += 1
        return product_id

    @cached(ttl=60, ignore=["db"], cache=cache)
    async def ignoring(db: Session, product_id: int) -> int:
        nonlocal runs
        runs += 1
        return product_id

    with caplog.at_level(logging.WARNING, logger="fastapi_tiered_cache"):
        assert [await plain(Session(), 1) for _ in range(2)] == [1, 1]
    assert runs == 2
    assert "ignore=" in caplog.text
    assert [await ignoring(Session(), 1) for _ in range(2)] == [1, 1]
    assert runs == 3


async def test_scoped_results_are_per_principal_and_purged_per_identity(
    cache: TieredCache,
) -> None:
    runs: list[str] = []

    @cached(ttl=60, scoped="user", cache=cache)
    async def dashboard(user: str, page: int = 1) -> str:
        runs.append(user)
        return f"{user}:{page}"

    assert await dashboard("alice") == "alice:1"
    assert await dashboard("bob") == "bob:1"
    assert await dashboard("alice") == "alice:1"
    await cache.invalidate_identity(principal="alice")
    assert await dashboard("alice") == "alice:1"
    assert await dashboard("bob") == "bob:1"
    assert runs == ["alice", "bob", "alice"]
    with pytest.raises(TypeError, match="principal"):
        await dashboard(42)  # type: ignore[arg-type]


async def test_methods_bind_their_instance(cache: TieredCache) -> None:
    class Repository:
        def __init__(self) -> None:
            self.runs = 0

        @cached(ttl=60, ignore=["self"], cache=cache)
        async def find(self, item_id: int) -> int:
            self.runs += 1
            return item_id * 10

    repo = Repository()
    assert [await repo.find(1), await repo.find(1)] == [10, 10]
    assert repo.runs == 1
    await repo.find.invalidate(1)
    assert await repo.find.refresh(1) == 10
    assert repo.runs == 2


def test_a_sync_function_is_refused_when_decorated() -> None:
    def sync(product_id: int) -> int:
        return product_id

    with pytest.raises(TypeError, match="async def"):
        cached(ttl=60)(sync)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"ttl": dt.timedelta(seconds=-1)}, "ttl"),
        ({"tags": ["x:{nope}"]}, "nope"),
        ({"key": "k:{nope}"}, "nope"),
        ({"ignore": ["nope"]}, "nope"),
        ({"scoped": "nope"}, "nope"),
        ({"stale_if_error": -1}, "stale_if_error"),
        ({"early_refresh": float("inf")}, "early_refresh"),
        ({"ttl": 1e12}, "ttl"),
    ],
    ids=[
        "zero",
        "negative",
        "negative-timedelta",
        "tag",
        "key",
        "ignore",
        "scoped",
        "sie",
        "beta",
        "huge-ttl",
    ],
)
def test_bad_options_are_refused_when_decorating(options: dict[str, Any], match: str) -> None:
    async def load(product_id: int) -> int:
        return product_id

    with pytest.raises(ValueError, match=match):
        cached(**options)(load)


def test_a_missing_return_annotation_is_refused() -> None:
    async def load(product_id: int):  # type: ignore[no-untyped-def]
        return product_id

    with pytest.raises(TypeError, match="annotate the return type"):
        cached(ttl=60)(load)


def test_the_wrapper_keeps_the_function_name_and_is_a_cached_function() -> None:
    async def load_product(product_id: int) -> int:
        """Docs."""
        return product_id

    wrapped = cached(ttl=60)(load_product)

    assert isinstance(wrapped, CachedFunction)
    assert wrapped.__name__ == "load_product" and wrapped.__doc__ == "Docs."
    assert wrapped.__wrapped__ is load_product  # type: ignore[attr-defined]


async def test_redis_down_runs_the_function_and_returns_its_value() -> None:
    client = fakeredis.aioredis.FakeRedis(connected=False)  # every command fails
    cache = make_cache(redis=client, redis_timeout=0.05, l1_max_entries=0)
    runs = 0

    @cached(ttl=60, cache=cache)
    async def load(product_id: int) -> int:
        nonlocal runs
        runs += 1
        return product_id

    assert [await load(1), await load(1)] == [1, 1]
    assert runs == 2
    await cache.set("k", "v")
    assert await cache.get("k", default="default") == "default"
    await cache.delete("k")
    await cache.close()


# -- the process's cache ---------------------------------------------------------------


@pytest.fixture
def process_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean process cache, built from a clean environment."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("TIERED_CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TIERED_CACHE_SECRET_KEY", "process-cache-secret-0123456789")
    monkeypatch.setattr(install_module, "_process_cache", None)
    monkeypatch.setattr(install_module, "_process_installed", False)


@pytest.mark.usefixtures("process_cache")
async def test_get_cache_without_arguments_is_the_one_install_uses() -> None:
    import httpx

    before = get_cache()
    calls = 0

    @cached(ttl=60)  # no cache given: the process's, resolved at each call
    async def greeting(name: str) -> str:
        nonlocal calls
        calls += 1
        return f"hello {name}"

    app = FastAPI()
    installed = install(app)

    @app.get("/same")
    async def same(cache: TieredCache = Depends(get_cache)) -> dict[str, bool]:  # noqa: B008
        return {"same": cache is before, "text": await greeting("x") == "hello x"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = (await client.get("/same")).json()

    assert installed is before is get_cache()
    assert answer == {"same": True, "text": True}
    assert await greeting("x") == "hello x" and calls == 1
    second = install(FastAPI())  # a second app gets its own cache, which becomes the process's
    assert second is not before and get_cache() is second
    await before.close()
    await second.close()


@pytest.mark.usefixtures("process_cache")
async def test_install_with_other_settings_replaces_the_process_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    early = get_cache()
    monkeypatch.setenv("TIERED_CACHE_DEFAULT_TTL", "5")

    installed = install(FastAPI())

    assert installed is not early
    assert get_cache() is installed and installed.settings.default_ttl == 5
    await early.close()
    await installed.close()


def test_fake_clock_is_used_by_the_data_api() -> None:
    """Entries are stamped with the cache's clock (entries shared across processes)."""
    clock = FakeClock(1000.0)
    cache = make_cache(clock)

    async def run() -> None:
        await cache.set("k", 1, ttl=10)
        entry = cache.store.lookup_local(next(iter(cache.store.l1._fast)))  # type: ignore[union-attr]
        assert entry is not None and entry.stored_at == 1000.0
        await cache.close()

    asyncio.run(run())
