"""Values of the data API as msgpack, never pickle, and back as the type the caller asked for.

A value is first dumped to plain data (pydantic models and dataclasses to dicts, through
pydantic when the type is known), then packed. The types msgpack lacks travel as extension
types, so that a value read back without a type is still the same kind of thing:

    datetime / date / time / timedelta, Decimal, UUID, tuple, set, frozenset

(A datetime's time zone travels as its UTC offset: a ``ZoneInfo`` comes back as a fixed
offset, the same instant.)

Reading with a type validates the decoded data with pydantic's ``TypeAdapter`` (models,
``list[Model]``, dataclasses, nested): a stored value that no longer fits the type (the
model changed in a deploy) is a ``DecodeError``, which the caller treats as a miss.

Isolation: decoding builds new objects on every read, so a caller that mutates what it got
changes nothing for the next. Only types proven immutable (``is_immutable``) may share one
decoded instance between readers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .exceptions import DecodeError, ValueNotSerializable

__all__ = [
    "adapter_for",
    "dump",
    "is_immutable",
    "load",
    "pack",
    "pack_key",
    "return_type",
    "unpack",
]

_DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID, _TUPLE, _SET, _FROZENSET = range(1, 10)
_TYPED = 64  # keys only: a value with the qualified name of its type
_PLAIN = (str, int, float, bool, bytes, type(None))


def _default(obj: Any) -> Any:
    """What msgpack cannot pack by itself (it packs only exact built-in types here)."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, BaseModel):
        return _dump_model(obj)
    if isinstance(obj, tuple):
        return msgpack.ExtType(_TUPLE, pack(list(obj)))
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(_DATETIME, _moment(obj))
    if isinstance(obj, dt.date):
        return msgpack.ExtType(_DATE, obj.isoformat().encode())
    if isinstance(obj, dt.time):
        return msgpack.ExtType(_TIME, _moment(obj))
    if isinstance(obj, dt.timedelta):
        return msgpack.ExtType(_TIMEDELTA, pack([obj.days, obj.seconds, obj.microseconds]))
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_DECIMAL, str(obj).encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_UUID, obj.bytes)
    if isinstance(obj, frozenset):
        return msgpack.ExtType(_FROZENSET, pack(list(obj)))
    if isinstance(obj, set):
        return msgpack.ExtType(_SET, pack(list(obj)))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    base: type[Any]
    for base in (dict, list, str, bytes, int, float):  # subclasses: as their base type
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    try:  # what pydantic knows how to dump (paths, IP addresses, ...)
        return to_jsonable_python(obj)
    except PydanticSerializationError:
        raise ValueNotSerializable(obj) from None


def _moment(obj: dt.datetime | dt.time) -> bytes:
    """ISO 8601, read back by one ``fromisoformat``. An offset with microseconds (which
    ISO 8601 cannot say) or a ``fold`` of 1 travel as ``{naive}|{offset µs}|{fold}``. A
    named zone travels as its offset at that moment."""
    offset = obj.utcoffset()
    if not obj.fold and (offset is None or not offset.microseconds):
        return obj.isoformat().encode()
    micros = "" if offset is None else str(offset // dt.timedelta(microseconds=1))
    naive = obj.replace(tzinfo=None, fold=0).isoformat()
    return f"{naive}|{micros}|{obj.fold}".encode()


_ZONES: dict[bytes, dt.timezone] = {}


def _zone(micros: bytes) -> dt.timezone | None:
    if not micros:
        return None
    zone = _ZONES.get(micros)
    if zone is None:
        if len(_ZONES) > 1024:
            _ZONES.clear()
        zone = _ZONES[micros] = dt.timezone(dt.timedelta(microseconds=int(micros)))
    return zone


def _dump_model(model: BaseModel) -> dict[str, Any]:
    computed = set(type(model).model_computed_fields)
    dumped: dict[str, Any] = model.model_dump(
        mode="python", by_alias=True, round_trip=True, exclude=computed or None, warnings=False
    )
    return dumped


def pack(value: Any) -> bytes:
    """``value`` as msgpack; ``ValueNotSerializable`` (naming the type) when it cannot be."""
    try:
        return bytes(msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True))
    except ValueNotSerializable:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # integers beyond 64 bits
        raise ValueNotSerializable(value, str(exc)) from None


def pack_key(value: Any) -> bytes:
    """``value`` as the bytes of a cache key: as ``pack``, but every object that is not
    exactly a built-in type travels with the qualified name of its type, so values that
    pack alike but are not alike (``Colour.RED`` and ``1``, two models with the same
    fields, ``Path("a")`` and ``"a"``) never share a key, however deeply nested."""
    try:
        return bytes(
            msgpack.packb(value, default=_key_default, strict_types=True, use_bin_type=True)
        )
    except ValueNotSerializable:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueNotSerializable(value, str(exc)) from None


_TYPED_BY_CODE = (dt.datetime, dt.date, dt.time, dt.timedelta, Decimal, uuid.UUID)


def _key_default(obj: Any) -> Any:
    kind = type(obj)
    if kind is tuple:
        return msgpack.ExtType(_TUPLE, pack_key(list(obj)))
    if kind is set or kind is frozenset:  # in an order every process agrees on
        members = sorted(pack_key(member) for member in obj)
        return msgpack.ExtType(_SET if kind is set else _FROZENSET, pack_key(members))
    if kind in _TYPED_BY_CODE:
        return _default(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    return msgpack.ExtType(_TYPED, pack_key([name, _default(obj)]))


def dump(value: Any, adapter: TypeAdapter[Any] | None = None) -> bytes:
    """Pack ``value``, dumped through ``adapter`` (the declared type) when one is given."""
    if adapter is not None:
        try:
            value = adapter.dump_python(value, mode="python", by_alias=True, round_trip=True)
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise ValueNotSerializable(value, str(exc)) from None
    return pack(value)


# Decoded datetimes by their stored bytes: a datetime is immutable, and every hit of an
# entry decodes the same few again (a model's ``created``, ``updated``).
_MOMENTS: dict[bytes, dt.datetime] = {}


def _datetime(data: bytes) -> dt.datetime:
    moment = _MOMENTS.get(data)
    if moment is None:
        if b"|" not in data:
            moment = dt.datetime.fromisoformat(data.decode())
        else:
            text, offset, fold = data.split(b"|")
            moment = dt.datetime.fromisoformat(text.decode())
            moment = moment.replace(tzinfo=_zone(offset), fold=int(fold))
        if len(_MOMENTS) >= 4096:
            _MOMENTS.clear()
        _MOMENTS[data] = moment
    return moment


def _ext(code: int, data: bytes) -> Any:
    if code == _DATETIME:
        return _datetime(data)
    if code == _TUPLE:
        return tuple(unpack(data))
    if code == _DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _TIME:
        if b"|" not in data:
            return dt.time.fromisoformat(data.decode())
        text, offset, fold = data.split(b"|")
        return dt.time.fromisoformat(text.decode()).replace(tzinfo=_zone(offset), fold=int(fold))
    if code == _TIMEDELTA:
        days, seconds, micros = unpack(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _DECIMAL:
        return Decimal(data.decode())
    if code == _UUID:
        return uuid.UUID(bytes=data)
    if code == _SET:
        return set(unpack(data))
    if code == _FROZENSET:
        return frozenset(unpack(data))
    raise DecodeError(f"unknown extension type {code}")


def unpack(data: bytes) -> Any:
    """The plain value packed by ``pack`` (new objects on every call)."""
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext, strict_map_key=False)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack and the extension decoders raise various types
        raise DecodeError(f"not a stored value: {type(exc).__name__}") from None


def load(data: bytes, adapter: TypeAdapter[Any] | None) -> Any:
    """Decode ``data`` as ``adapter``'s type (plain data when None); ``DecodeError`` if it
    does not fit."""
    value = unpack(data)
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise DecodeError(
            f"stored value does not fit the type: {exc.error_count()} errors"
        ) from None


def return_type(fn: Callable[..., Any]) -> Any:
    """``fn``'s return annotation, resolved in its module (only it: a parameter annotated
    with a class local to a function is fine). ``NameError`` if it names something unknown."""
    annotation = inspect.get_annotations(fn)["return"]
    if isinstance(annotation, str):  # from __future__ import annotations
        annotation = eval(annotation, getattr(fn, "__globals__", {}))  # as get_type_hints does
    return type(None) if annotation is None else annotation


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter_for(tp: Any) -> TypeAdapter[Any] | None:
    """A (cached) ``TypeAdapter`` for ``tp``; None for ``Any`` (plain data)."""
    if tp is Any or tp is object:
        return None
    try:
        found = _ADAPTERS.get(tp)
    except TypeError:  # an unhashable annotation: build one each time
        return TypeAdapter(tp)
    if found is None:
        if len(_ADAPTERS) > 1024:
            _ADAPTERS.clear()
        found = _ADAPTERS[tp] = TypeAdapter(tp)
    return found


_IMMUTABLE_LEAVES = frozenset(
    {
        str,
        bytes,
        int,
        float,
        bool,
        complex,
        type(None),
        Decimal,
        uuid.UUID,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
    }
)


def is_immutable(tp: Any) -> bool:
    """Whether every value of ``tp`` is deeply immutable, so one instance may be shared.

    Frozen pydantic models and frozen dataclasses count only when every field is immutable
    too (a frozen model holding a list can still have its list changed) and the model keeps
    no extra or private attributes. Anything not recognised counts as mutable.
    """
    try:
        return _immutable(tp)
    except TypeError:  # an unhashable annotation
        return False


@lru_cache(maxsize=512)
def _immutable(tp: Any) -> bool:
    return _check(tp, frozenset())


def _check(tp: Any, seen: frozenset[Any]) -> bool:
    if tp in seen:  # a recursive type: immutable if the rest of it is
        return True
    seen = seen | {tp}
    if tp in _IMMUTABLE_LEAVES:
        return True
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return all(_check(type(member.value), seen) for member in tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _check(args[0], seen)
    if origin is typing.Literal:
        return all(type(arg) in _IMMUTABLE_LEAVES or isinstance(arg, enum.Enum) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return all(_check(arg, seen) for arg in args)
    if origin in (tuple, frozenset):
        return bool(args) and all(arg is Ellipsis or _check(arg, seen) for arg in args)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _frozen_model(tp, seen)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _frozen_dataclass(tp, seen)
    return False


def _frozen_model(model: type[BaseModel], seen: frozenset[Any]) -> bool:
    config = model.model_config
    if not config.get("frozen") or config.get("extra") == "allow":
        return False
    if model.__private_attributes__:
        return False
    return all(_check(field.annotation, seen) for field in model.model_fields.values())


def _frozen_dataclass(cls: type[Any], seen: frozenset[Any]) -> bool:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        return False
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: not proven immutable
        return False
    return all(_check(hints.get(f.name, Any), seen) for f in dataclasses.fields(cls))
