"""Field types of the settings and the rules: durations, header names, lists written as
CSV in the environment, dotted-path plug-ins, and the checks of single settings.

A check that concerns one value lives with its type here, so ``CacheSettings`` reads as
the list of options; checks across several settings stay on the model."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, ImportString
from pydantic_settings import NoDecode

__all__ = [
    "CacheableMethods",
    "CacheableStatuses",
    "CsvInts",
    "CsvList",
    "DottedPaths",
    "FloatSeconds",
    "HeaderNames",
    "IdentityHeaderNames",
    "KeyBuilderPlugin",
    "LowercaseNames",
    "Namespace",
    "OptionalHeaderName",
    "OrderedHeaderNames",
    "Plugin",
    "PublicUrl",
    "Seconds",
    "check_key_builder",
    "header_names",
    "parse_duration",
    "split_csv",
]

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")


def split_csv(value: Any) -> Any:
    """Accept ``a,b,c`` or a JSON list from the environment; pass other values through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def header_names(values: list[str]) -> list[str]:
    names = [value.strip().lower() for value in values]
    for name in names:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
    return sorted(set(names))


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """Seconds from ``30``, ``1.5``, ``"90"``, ``"500ms"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or
    a ``timedelta``, as cashews and Django users write them; other values pass through to
    the field's own validation (so an int field still refuses ``"1.5s"``)."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if not isinstance(value, str):
        return value
    text = value.strip().replace(" ", "")
    if not text or text.replace(".", "", 1).isdigit() or len(text) > 64:
        return text or value
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{value!r} is not a duration (examples: 30, 1.5, 500ms, 5m, 1h30m, 2d)")
    seconds = sum((float(number) * _UNITS[unit.lower()] for number, unit in parts), 0.0)
    return int(seconds) if seconds.is_integer() else seconds


Seconds = Annotated[int, BeforeValidator(parse_duration)]
FloatSeconds = Annotated[float, BeforeValidator(parse_duration)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(split_csv)]
CsvInts = Annotated[list[int], NoDecode, BeforeValidator(split_csv)]
Plugin = ImportString[Callable[..., Any]] | None


def check_key_builder(builder: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse at start-up a key builder that cannot be called as ``(info, vary, *, secret)``
    (it would fail on the first request instead)."""
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return builder
    try:
        signature.bind(None, (), secret=b"")
    except TypeError:
        name = f"{getattr(builder, '__module__', '?')}:{getattr(builder, '__qualname__', '?')}"
        takes = ", ".join(signature.parameters)
        raise ValueError(
            f"the key builder {name}({takes}) cannot be called as (info, vary, *, secret)"
        ) from None
    return builder


# -- checks of single settings -------------------------------------------------------------

_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")


def _check_namespace(value: str) -> str:
    if not _NAMESPACE.match(value):
        raise ValueError("use 1-32 letters, digits, '_', '.' or '-'")
    return value


def _check_methods(value: list[str]) -> list[str]:
    methods = sorted({m.strip().upper() for m in value})
    unsafe = set(methods) - {"GET", "HEAD"}
    if unsafe:
        raise ValueError(f"only GET and HEAD can be cached, not {', '.join(sorted(unsafe))}")
    return methods


def _check_statuses(value: list[int]) -> list[int]:
    for status in value:
        if status == 206 or not 200 <= status <= 599:
            raise ValueError(f"{status} is not a cacheable status")
    return sorted(set(value))


def _ordered_header_names(value: list[str]) -> list[str]:
    checked = header_names(value)  # validates; precedence keeps the given order
    return list(
        dict.fromkeys(
            name.strip().lower()
            for name in value
            if name.strip() in checked or name.strip().lower() in checked
        )
    )


def _identity_header_names(value: list[str]) -> list[str]:
    if not value:
        raise ValueError(
            "name at least one header (the default is authorization, proxy-authorization,"
            " x-api-key, x-auth-token): an empty list would make every credential header"
            " anonymous"
        )
    return header_names(value)


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.(\w+|<locals>))+")  # module.Qualname


def _dotted_paths(value: list[str]) -> list[str]:
    paths = sorted({path.strip() for path in value if path.strip()})
    for path in paths:
        if not _DOTTED.fullmatch(path):
            raise ValueError(
                f"{path!r} is not a dotted path (module.Class, or module.function for a"
                " function middleware)"
            )
    return paths


def _lowercase_names(value: list[str]) -> list[str]:
    return sorted({name.strip().lower() for name in value if name.strip()})


def _optional_header_name(value: str | None) -> str | None:
    return header_names([value])[0] if value else None


def _optional_key_builder(value: Callable[..., Any] | None) -> Callable[..., Any] | None:
    return None if value is None else check_key_builder(value)


def _public_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError("give a scheme and a host only, like http://api.example.com")
    return f"{parts.scheme}://{parts.netloc.lower()}"


Namespace = Annotated[str, AfterValidator(_check_namespace)]
CacheableMethods = Annotated[CsvList, AfterValidator(_check_methods)]
CacheableStatuses = Annotated[CsvInts, AfterValidator(_check_statuses)]
HeaderNames = Annotated[CsvList, AfterValidator(header_names)]  # sorted, deduplicated
OrderedHeaderNames = Annotated[CsvList, AfterValidator(_ordered_header_names)]  # by precedence
IdentityHeaderNames = Annotated[CsvList, AfterValidator(_identity_header_names)]  # never empty
LowercaseNames = Annotated[CsvList, AfterValidator(_lowercase_names)]  # sorted, deduplicated
DottedPaths = Annotated[CsvList, AfterValidator(_dotted_paths)]  # sorted, deduplicated
OptionalHeaderName = Annotated[str | None, AfterValidator(_optional_header_name)]
KeyBuilderPlugin = Annotated[Plugin, AfterValidator(_optional_key_builder)]
PublicUrl = Annotated[str | None, AfterValidator(_public_url)]  # scheme://host only
