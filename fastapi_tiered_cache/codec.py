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

from .entry import CachedResponse, Record, VaryPointer
from .exceptions import DecodeError

__all__ = ["FORMAT_VERSION", "decode", "encode"]

FORMAT_VERSION = 1
_RESPONSE = 0
_POINTER = 1


def encode(key: str, record: Record) -> bytes:
    """Serialise a record stored under ``key``."""
    if isinstance(record, VaryPointer):
        return bytes(msgpack.packb([FORMAT_VERSION, _POINTER, key, list(record.names)]))
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


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise DecodeError(f"malformed entry: {what}")


def _headers(raw: Any) -> tuple[tuple[bytes, bytes], ...]:
    _check(isinstance(raw, list), "headers")
    pairs = []
    for pair in raw:
        _check(isinstance(pair, list) and len(pair) == 2, "header pair")
        name, value = pair
        _check(isinstance(name, bytes) and isinstance(value, bytes), "header type")
        pairs.append((name, value))
    return tuple(pairs)


def _vary(raw: Any) -> tuple[tuple[str, str | None], ...]:
    _check(isinstance(raw, list), "vary")
    pairs = []
    for pair in raw:
        _check(isinstance(pair, list) and len(pair) == 2, "vary pair")
        name, value = pair
        _check(isinstance(name, str) and (value is None or isinstance(value, str)), "vary type")
        pairs.append((name, value))
    return tuple(pairs)


def _number(value: Any) -> float:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), "number")
    return float(value)


def _response(fields: list[Any]) -> CachedResponse:
    _check(len(fields) == 15, "field count")
    status, headers, body, stored_at, fresh_for, initial_age, etag, lm, vary, reval, tags = fields[
        :11
    ]
    stale_for, swr, sie = (_number(value) for value in fields[11:14])
    route = fields[14]
    _check(isinstance(route, str), "route")
    _check(isinstance(status, int) and 100 <= status <= 599, "status")
    _check(isinstance(body, bytes), "body")
    _check(isinstance(etag, str), "etag")
    _check(lm is None or isinstance(lm, (int, float)), "last-modified")
    _check(isinstance(reval, bool), "revalidate")
    _check(isinstance(tags, list) and all(isinstance(t, str) for t in tags), "tags")
    return CachedResponse(
        status=status,
        headers=_headers(headers),
        body=body,
        stored_at=_number(stored_at),
        fresh_for=_number(fresh_for),
        initial_age=_number(initial_age),
        etag=etag,
        last_modified=None if lm is None else float(lm),
        vary=_vary(vary),
        revalidate=reval,
        tags=tuple(tags),
        stale_for=stale_for,
        stale_while_revalidate=swr,
        stale_if_error=sie,
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
    _check(kind == _RESPONSE, "kind")
    return _response(value[3:])
