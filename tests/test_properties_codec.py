"""Property tests of the Redis codec: exact round-trips, and nothing but ``DecodeError`` out.

Strings are generated without lone surrogates: every string the cache stores comes from a
latin-1 decoded header, a route path or a key, none of which can hold one, and msgpack
cannot encode one.
"""

from __future__ import annotations

import pickle
from typing import Any
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_tiered_cache import codec
from fastapi_tiered_cache.codec import FORMAT_VERSION, decode, encode
from fastapi_tiered_cache.entry import CachedResponse, Record, VaryPointer
from fastapi_tiered_cache.exceptions import DecodeError

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
keys = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
numbers = st.floats(allow_nan=False)  # NaN round-trips too, but never compares equal

responses = st.builds(
    CachedResponse,
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=6).map(
        tuple
    ),
    body=st.binary(max_size=2000),
    stored_at=numbers,
    fresh_for=numbers,
    initial_age=numbers,
    etag=text,
    last_modified=st.one_of(st.none(), numbers),
    vary=st.lists(st.tuples(text, st.one_of(st.none(), text)), max_size=4).map(tuple),
    revalidate=st.booleans(),
    tags=st.lists(text, max_size=4).map(tuple),
    stale_for=numbers,
    stale_while_revalidate=numbers,
    stale_if_error=numbers,
    route=text,
)
pointers = st.builds(VaryPointer, names=st.lists(text, max_size=6).map(tuple))
records = st.one_of(responses, pointers)


def _same(decoded: Record, record: Record) -> None:
    assert type(decoded) is type(record)
    assert decoded == record
    assert decoded.size == record.size
    if isinstance(record, CachedResponse):
        assert isinstance(decoded, CachedResponse)
        assert decoded.served_etag == record.served_etag
        # every field exactly: floats as float64 (-0.0 and infinities too), types included
        assert repr(decoded) == repr(record)


@given(keys, records)
def test_round_trip(key: str, record: Record) -> None:
    data = encode(key, record)
    assert isinstance(data, bytes)
    _same(decode(key, data), record)


@given(keys, records)
def test_encoding_is_deterministic(key: str, record: Record) -> None:
    assert encode(key, record) == encode(key, record)


def _decodes_or_decode_error(key: str, data: bytes) -> Record | None:
    try:
        record = decode(key, data)
    except DecodeError:
        return None
    assert isinstance(record, (CachedResponse, VaryPointer))
    return record


@given(keys, st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(key: str, data: bytes) -> None:
    _decodes_or_decode_error(key, data)


# Anything msgpack can carry (ext types and timestamps too), to get past the unpacker.
msgpack_ints = st.integers(-(2**63), 2**64 - 1)
msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        msgpack_ints,
        st.floats(),
        text,
        st.binary(max_size=20),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(text, msgpack_ints, st.binary(max_size=4)), inner, max_size=3),
    ),
    max_leaves=20,
)


@st.composite
def near_envelopes(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid envelope with some parts replaced by arbitrary values, fields added or dropped."""
    key = draw(keys)
    value: list[Any] = msgpack.unpackb(encode(key, draw(records)), raw=False)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "drop", "append"]))
        if action == "replace":
            value[draw(st.integers(0, len(value) - 1))] = draw(msgpack_values)
        elif action == "drop" and len(value) > 1:
            value.pop(draw(st.integers(0, len(value) - 1)))
        else:
            value.append(draw(msgpack_values))
    return key, msgpack.packb(value, use_bin_type=draw(st.booleans()))


@settings(max_examples=300)
@given(near_envelopes())
def test_malformed_envelopes_raise_only_decode_error(case: tuple[str, bytes]) -> None:
    key, data = case
    _decodes_or_decode_error(key, data)


@given(keys, msgpack_values)
def test_arbitrary_msgpack_values_raise_only_decode_error(key: str, value: Any) -> None:
    _decodes_or_decode_error(key, msgpack.packb(value))


@given(keys, keys, records)
def test_a_value_read_under_another_key_is_rejected(a: str, b: str, record: Record) -> None:
    if a == b:
        b = a + "x"
    with pytest.raises(DecodeError):
        decode(b, encode(a, record))


@given(keys, records, msgpack_ints.filter(lambda v: v != FORMAT_VERSION))
def test_another_format_version_is_rejected(key: str, record: Record, version: int) -> None:
    value = msgpack.unpackb(encode(key, record), raw=False)
    value[0] = version
    with pytest.raises(DecodeError):
        decode(key, msgpack.packb(value, use_bin_type=True))


@given(keys, records)
def test_values_written_by_another_version_are_rejected(key: str, record: Record) -> None:
    with mock.patch.object(codec, "FORMAT_VERSION", FORMAT_VERSION + 1):
        data = encode(key, record)
    with pytest.raises(DecodeError):
        decode(key, data)


@pytest.mark.parametrize("version", [True, 1.0, "1", b"\x01", None, [1]])
def test_the_version_must_be_exactly_the_integer(version: object) -> None:
    """Only what this version writes decodes: ``true`` or ``1.0`` is not version ``1``."""
    value = msgpack.unpackb(encode("k", VaryPointer(("accept",))), raw=False)
    value[0] = version
    with pytest.raises(DecodeError):
        decode("k", msgpack.packb(value, use_bin_type=True))


def test_the_kind_must_be_exactly_the_integer() -> None:
    pointer = VaryPointer(("accept",))
    response = CachedResponse(200, (), b"x", 0.0, 1.0)
    for record, kind in ((pointer, True), (pointer, 1.0), (response, False), (response, 0.0)):
        value = msgpack.unpackb(encode("k", record), raw=False)
        value[1] = kind
        with pytest.raises(DecodeError):
            decode("k", msgpack.packb(value, use_bin_type=True))


@given(keys, records)
def test_every_strict_prefix_is_rejected(key: str, record: Record) -> None:
    encoded = encode(key, record)
    for cut in range(len(encoded)):
        with pytest.raises(DecodeError):
            decode(key, encoded[:cut])


@given(keys, records, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_rejected(key: str, record: Record, extra: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(key, encode(key, record) + extra)


def test_pickle_is_never_accepted() -> None:
    data = pickle.dumps(CachedResponse(status=200, headers=(), body=b"x", stored_at=0, fresh_for=1))
    with pytest.raises(DecodeError):
        decode("k", data)
