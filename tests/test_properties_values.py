"""Properties of the data API's value codec: every supported value round trips exactly.

Untyped, a value comes back equal *and of the same types* all the way down (tuples stay
tuples, sets stay sets, datetimes stay datetimes). Typed, a model or dataclass holding
those values validates back equal to what was stored. Decoding builds new objects every
time, so mutating one result never shows in the next.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fastapi_tiered_cache.values import adapter_for, dump, load, pack, unpack

from .helpers import make_cache

MAX_INT = 2**63 - 1
offsets = st.builds(
    dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))
)
hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-MAX_INT - 1, 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.uuids(),
    st.decimals(allow_nan=False),
    st.dates(),
    st.datetimes(timezones=st.none() | offsets),
    st.times(timezones=st.none() | offsets),
    st.timedeltas(),
)
values = st.recursive(
    hashable_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text() | st.integers(-MAX_INT, MAX_INT), children, max_size=4),
        st.frozensets(hashable_scalars, max_size=4),
        st.sets(hashable_scalars, max_size=4),
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type at every level."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()  # 1.0 and 1.00 are different values here
    if isinstance(a, float) and a == 0:
        return str(a) == str(b)  # -0.0 stays -0.0
    return bool(a == b)


@given(values)
def test_untyped_values_round_trip_with_their_types(value: Any) -> None:
    assert same(unpack(pack(value)), value)


@given(values)
def test_decoding_builds_new_objects_every_time(value: Any) -> None:
    data = pack([value])
    first, second = unpack(data), unpack(data)
    first.append("mutated")
    assert same(second, [value])


class Line(BaseModel):
    sku: str
    quantity: int
    price: Decimal


class Order(BaseModel):
    id: uuid.UUID
    placed: dt.datetime
    lines: list[Line]
    notes: dict[str, str]
    window: tuple[dt.date, dt.date]
    flags: frozenset[str]
    parent: Order | None = None


@dataclass
class Shipment:
    order: Order
    weight: float
    label: bytes


lines = st.builds(
    Line,
    sku=st.text(),
    quantity=st.integers(-MAX_INT, MAX_INT),
    price=st.decimals(allow_nan=False, allow_infinity=False),
)
orders = st.builds(
    Order,
    id=st.uuids(),
    placed=st.datetimes(timezones=st.none() | offsets),
    lines=st.lists(lines, max_size=3),
    notes=st.dictionaries(st.text(), st.text(), max_size=3),
    window=st.tuples(st.dates(), st.dates()),
    flags=st.frozensets(st.text(), max_size=3),
    parent=st.none()
    | st.builds(
        Order,
        id=st.uuids(),
        placed=st.datetimes(),
        lines=st.just([]),
        notes=st.just({}),
        window=st.tuples(st.dates(), st.dates()),
        flags=st.just(frozenset()),
    ),
)
shipments = st.builds(Shipment, order=orders, weight=st.floats(allow_nan=False), label=st.binary())


@given(orders)
def test_models_round_trip_through_their_type(order: Order) -> None:
    adapter = adapter_for(Order)
    assert load(dump(order, adapter), adapter) == order
    assert load(pack(order), adapter) == order  # stored untyped, read typed


@given(st.lists(shipments, max_size=3))
def test_lists_of_dataclasses_round_trip_through_their_type(batch: list[Shipment]) -> None:
    adapter = adapter_for(list[Shipment])
    assert load(dump(batch, adapter), adapter) == batch


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
async def test_values_round_trip_through_both_tiers(value: Any) -> None:
    client = fakeredis.aioredis.FakeRedis()
    cache = make_cache(redis=client, redis_timeout=1.0, l1_max_entries=0)
    try:
        await cache.set("k", value)
        assert same(await cache.get("k", default=KeyError), value)
    finally:
        await cache.close()
        await client.aclose()


def test_datetimes_keep_fold_and_offsets_finer_than_iso_8601() -> None:
    odd = dt.timezone(dt.timedelta(hours=1, microseconds=5))
    cases = [
        dt.datetime(2024, 11, 3, 1, 30, fold=1),
        dt.datetime(2024, 5, 1, 12, 0, 0, 7, tzinfo=odd),
        dt.time(1, 30, fold=1),
        dt.time(23, 59, 59, 999999, tzinfo=odd),
        dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
    ]
    for value in cases:
        back = unpack(pack(value))
        assert same(back, value) and back.fold == value.fold
        assert back.utcoffset() == value.utcoffset()
