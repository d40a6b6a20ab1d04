"""Encode entries for Redis: msgpack arrays in a versioned envelope, never pickle.

Envelope: ``[FORMAT_VERSION, kind, key, *fields]``. The key is stored inside the value so
that a value found under the wrong key (a foreign writer, a collision, a bug) is detected
and treated as a miss. Any value that is not exactly what this version writes raises
``DecodeError``; the caller deletes it. Bumping ``FORMAT_VERSION`` invalidates old entries
after a deploy without a purge.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .entry import CachedResponse, DataEntry, Record, VaryPointer
from .exceptions import DecodeError

__all__ = ["FORMAT_VERSION", "decode", "encode"]

FORMAT_VERSION = 1
_RESPONSE = 0
_POINTER = 1
# A value of the data API: payload, stored_at, fresh_for, stale_for, swr, sie, tags and
# the seconds it took to compute.
_DATA = 2


def encode(key: str, record: Record) -> bytes:
    """Serialise a record stored under ``key``."""
    if isinstance(record, VaryPointer):
        return bytes(msgpack.packb([FORMAT_VERSION, _POINTER, key, list(record.names)]))
    if isinstance(record, DataEntry):
        return _encode_data(key, record)
    return bytes(
        msgpack.packb(
            [
                FORMAT_VERSION,
                _RESPONSE,
                key,
                record.status,
                [[name, value] for name, value in record.headers],
                record.body,
                record.stored_at,
                record.fresh_for,
                record.initial_age,
                record.etag,
                record.last_modified,
                [[name, value] for name, value in record.vary],
                record.revalidate,
                list(record.tags),
                record.stale_for,
                record.stale_while_revalidate,
                record.stale_if_error,
                record.route,
            ],
            use_bin_type=True,
        )
    )


def _encode_data(key: str, entry: DataEntry) -> bytes:
    fields = [
        FORMAT_VERSION,
        _DATA,
        key,
        entry.body,
        entry.stored_at,
        entry.fresh_for,
        entry.stale_for,
        entry.stale_while_revalidate,
        entry.stale_if_error,
        list(entry.tags),
        entry.compute_seconds,
    ]
    return bytes(msgpack.packb(fields, use_bin_type=True))


def _data(fields: list[Any]) -> DataEntry:
    if len(fields) != 8:
        raise _malformed("data field count")
    body, stored_at, fresh_for, stale_for, swr, sie, tags, compute = fields
    if type(body) is not bytes:
        raise _malformed("data payload")
    for number in (stored_at, fresh_for, stale_for, swr, sie, compute):
        if type(number) not in _NUMBERS:
            raise _malformed("number")
    if type(tags) is not list or any(type(tag) is not str for tag in tags):
        raise _malformed("tags")
    return DataEntry(
        status=200,
        headers=(),
        body=body,
        stored_at=float(stored_at),
        fresh_for=float(fresh_for),
        stale_for=float(stale_for),
        stale_while_revalidate=float(swr),
        stale_if_error=float(sie),
        tags=tuple(tags),
        compute_seconds=float(compute),
    )


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise _malformed(what)


def _malformed(what: str) -> DecodeError:
    return DecodeError(f"malformed entry: {what}")


# Checks are written out inline below (no helper call per field or pair): decoding is on
# the path of every L2 hit.
_NUMBERS = (int, float)  # exact types: a bool is not a number here


def _headers(raw: Any) -> tuple[tuple[bytes, bytes], ...]:
    if type(raw) is not list:
        raise _malformed("headers")
    pairs = []
    for pair in raw:
        if type(pair) is not list or len(pair) != 2:
            raise _malformed("header pair")
        name, value = pair
        if type(name) is not bytes or type(value) is not bytes:
            raise _malformed("header type")
        pairs.append((name, value))
    return tuple(pairs)


def _vary(raw: Any) -> tuple[tuple[str, str | None], ...]:
    if type(raw) is not list:
        raise _malformed("vary")
    pairs = []
    for pair in raw:
        if type(pair) is not list or len(pair) != 2:
            raise _malformed("vary pair")
        name, value = pair
        if type(name) is not str or (value is not None and type(value) is not str):
            raise _malformed("vary type")
        pairs.append((name, value))
    return tuple(pairs)


def _response(fields: list[Any]) -> CachedResponse:
    if len(fields) != 15:
        raise _malformed("field count")
    (
        status,
        headers,
        body,
        stored_at,
        fresh_for,
        initial_age,
        etag,
        lm,
        vary,
        reval,
        tags,
        stale_for,
        swr,
        sie,
        route,
    ) = fields
    for number in (stored_at, fresh_for, initial_age, stale_for, swr, sie):
        if type(number) not in _NUMBERS:
            raise _malformed("number")
    if type(route) is not str:
        raise _malformed("route")
    if type(status) is not int or not 100 <= status <= 599:
        raise _malformed("status")
    if type(body) is not bytes:
        raise _malformed("body")
    if type(etag) is not str:
        raise _malformed("etag")
    if lm is not None and type(lm) not in _NUMBERS:
        raise _malformed("last-modified")
    if type(reval) is not bool:
        raise _malformed("revalidate")
    if type(tags) is not list or any(type(tag) is not str for tag in tags):
        raise _malformed("tags")
    return CachedResponse(
        status=status,
        headers=_headers(headers),
        body=body,
        stored_at=float(stored_at),
        fresh_for=float(fresh_for),
        initial_age=float(initial_age),
        etag=etag,
        last_modified=None if lm is None else float(lm),
        vary=_vary(vary),
        revalidate=reval,
        tags=tuple(tags),
        stale_for=float(stale_for),
        stale_while_revalidate=float(swr),
        stale_if_error=float(sie),
        route=route,
    )


def decode(key: str, data: bytes) -> Record:
    """Deserialise a value read under ``key``; raise ``DecodeError`` for anything else."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=1 << 30)
    except Exception as exc:  # msgpack raises a handful of unrelated types
        raise DecodeError(f"not a msgpack value: {type(exc).__name__}") from None
    _check(isinstance(value, list) and len(value) >= 3, "envelope")
    version, kind, stored_key = value[0], value[1], value[2]
    if type(version) is not int or version != FORMAT_VERSION:
        raise DecodeError(f"format version {version!r}, expected {FORMAT_VERSION}")
    _check(stored_key == key, "key mismatch")
    _check(type(kind) is int, "kind")
    if kind == _POINTER:
        _check(len(value) == 4 and isinstance(value[3], list), "pointer")
        _check(all(isinstance(name, str) for name in value[3]), "pointer names")
        return VaryPointer(names=tuple(value[3]))
    if kind == _DATA:
        return _data(value[3:])
    _check(kind == _RESPONSE, "kind")
    return _response(value[3:])
