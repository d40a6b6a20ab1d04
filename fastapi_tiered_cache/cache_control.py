"""Parse ``Cache-Control``, targeted fields, ``Age``, ``Vary`` and HTTP dates into values.

Parsing is deliberately forgiving in syntax and strict in meaning: directive names are
case-insensitive, whitespace and quoted arguments are accepted, and every ambiguity (a
malformed or duplicated ``max-age``, an unparsable ``Expires``) resolves to "stale", the
answer that can never serve something the origin did not allow (RFC 9111 §4.2.1, §5.2, §5.3).

Every parser here is bounded: a field longer than ``MAX_FIELD_LENGTH`` or a number with
thousands of digits is never handed to ``int()`` (which raises past 4,300 digits); it means
"ignore the field", or the most restrictive reading where ignoring could store what the
origin forbade. Targeted fields (RFC 9213) are Structured Field Dictionaries (RFC 9651),
parsed by ``http-sf``: one that fails to parse is ignored as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import http_sf

from .http_date import parse_http_date

__all__ = [
    "CacheControl",
    "normalize_vary_value",
    "parse_age",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_http_date",
    "parse_targeted",
    "parse_vary",
]

# RFC 9111 §1.2.2: a delta-seconds too large to represent is capped at 2^31.
MAX_DELTA_SECONDS = 2**31
# Real Cache-Control values are tens of bytes; past this a field is hostile or broken.
MAX_FIELD_LENGTH = 4096

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_FIELD_NAME = re.compile(rf"{_TOKEN}+", re.ASCII)
_PIECES = re.compile(rf'(?:[^,"]|{_QUOTED})+')
_DIRECTIVE = re.compile(rf"\s*({_TOKEN}+)\s*(?:=\s*({_QUOTED}|{_TOKEN}*))?\s*\Z")
# Honoured even inside a malformed fragment: ignoring them could store what must not be.
_RESTRICTIVE = re.compile(r"(?<![\w-])(no-store|private|no-cache)(?![\w-])", re.IGNORECASE)
_DELTA_FIELDS = frozenset(
    {"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh"}
)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of one ``Cache-Control`` field (request or response).

    Delta values are seconds; ``None`` means the directive is absent. A malformed or
    conflicting duplicate freshness value is reported as ``0`` so the response is stale.
    """

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    only_if_cached: bool = False
    must_understand: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    min_fresh: int | None = None


EMPTY = CacheControl()
# What an over-long field means: nothing may be stored or reused without the origin.
UNREADABLE = CacheControl(no_store=True, no_cache=True, max_age=0)


def parse_delta_seconds(value: str) -> int | None:
    """Return the non-negative integer in ``value`` (quotes allowed), or None if malformed.

    Values too large to represent are capped at 2^31 (RFC 9111 §1.2.2) without converting
    every digit.
    """
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if not value or not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0") or "0"
    if len(digits) > 10:
        return MAX_DELTA_SECONDS
    return min(int(digits), MAX_DELTA_SECONDS)


def parse_age(value: str | None) -> int | None:
    """The ``Age`` of a response, or None when absent or invalid (then it is ignored).

    Several values (``Age: 7200, 0`` or two field lines, joined) mean the first one
    (RFC 9111 §5.1). A non-numeric, negative or fractional value is ignored, and a huge
    one is capped at 2^31 seconds: stale.
    """
    if not value:
        return None
    first = value.partition(",")[0].strip(" \t")
    if not first.isascii() or not first.isdigit():
        return None
    return parse_delta_seconds(first)  # linear in the length, capped at 2^31


def _directives(header: str) -> dict[str, str | None]:
    """Split a field value into ``{lowercase name: raw argument}``; duplicates become ``"\\0"``."""
    found: dict[str, str | None] = {}
    for piece in _PIECES.findall(header):
        match = _DIRECTIVE.match(piece)
        if match is None:
            for name in _RESTRICTIVE.findall(piece):
                found.setdefault(name.lower(), None)
            continue
        name, arg = match.group(1).lower(), match.group(2)
        if name in found and found[name] != arg:
            found[name] = "\0"  # conflicting duplicate: resolved the safe way by the caller
        else:
            found[name] = arg
    return found


def _delta(found: dict[str, str | None], name: str) -> int | None:
    if name not in found:
        return None
    arg = found[name]
    if arg is None:
        return 0
    parsed = parse_delta_seconds(arg)
    if parsed is None:
        # A malformed freshness value means stale; a malformed stale window means none.
        return 0
    return parsed


def parse_cache_control(header: str | None) -> CacheControl:
    """Parse a ``Cache-Control`` value (several field lines joined with commas).

    A value longer than ``MAX_FIELD_LENGTH`` is not read: it forbids storing and reuse.
    """
    if not header:
        return EMPTY
    if len(header) > MAX_FIELD_LENGTH:
        return UNREADABLE
    found = _directives(header)
    if not found:
        return EMPTY
    return CacheControl(
        no_store="no-store" in found,
        # Qualified no-cache="field" and private="field" are treated as unqualified: stricter.
        no_cache="no-cache" in found,
        private="private" in found,
        public="public" in found,
        must_revalidate="must-revalidate" in found,
        proxy_revalidate="proxy-revalidate" in found,
        only_if_cached="only-if-cached" in found,
        must_understand="must-understand" in found,
        **{name.replace("-", "_"): _delta(found, name) for name in _DELTA_FIELDS},
    )


def parse_vary(header: str | None) -> tuple[str, ...] | None:
    """Return the sorted, lower-cased, de-duplicated field names of ``Vary``.

    ``None`` stands for ``Vary: *`` (never storable); an absent field gives ``()``. A
    member that is not a field name (``"Accept"``, ``Accept;``) names no header a request
    could carry, so it could never tell requests apart: it is as unstorable as ``*``.
    """
    if not header:
        return ()
    if len(header) > MAX_FIELD_LENGTH:
        return None  # unreadable: as unstorable as "*"
    names = {part.strip(" \t").lower() for part in header.split(",")}
    names.discard("")
    if "*" in names or not all(_FIELD_NAME.fullmatch(name) for name in names):
        return None
    return tuple(sorted(names))


# -- Targeted fields (RFC 9213) ------------------------------------------------------------

_FLAGS = ("no-store", "no-cache", "private", "must-revalidate", "proxy-revalidate")
_PERMISSIVE = ("public", "must-understand")


def parse_targeted(value: str | None) -> CacheControl | None:
    """Parse a targeted field such as ``CDN-Cache-Control`` (RFC 9213 §2.1).

    Returns None when the field is absent, empty, too long or not a valid Structured Field
    Dictionary (RFC 9651 §4.2.2): the caller then ignores it as a whole. Within a valid
    field, parameters are ignored; a restrictive directive (``no-store``, ``private``, ...)
    counts whatever its value; a permissive one (``public``, ``must-understand``) only as
    Boolean true; a freshness directive whose value is not a non-negative Integer is
    invalid freshness, so stale (RFC 9111 §4.2.1); an invalid stale window is ignored.
    """
    if not value or len(value) > MAX_FIELD_LENGTH or not value.strip(" \t"):
        return None
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (ValueError, TypeError, LookupError):  # StructuredFieldError is a ValueError
        return None
    if not isinstance(parsed, dict):  # pragma: no cover - a dictionary parse gives a dict
        return None
    members = {name: _bare(member) for name, member in parsed.items()}
    fields: dict[str, Any] = {name.replace("-", "_"): True for name in _FLAGS if name in members}
    fields.update(
        (name.replace("-", "_"), True) for name in _PERMISSIVE if members.get(name) is True
    )
    for name in ("max-age", "s-maxage"):
        if name in members:
            fields[name.replace("-", "_")] = _sf_delta(members[name], invalid=0)
    for name in ("stale-while-revalidate", "stale-if-error"):
        if name in members:
            fields[name.replace("-", "_")] = _sf_delta(members[name], invalid=None)
    return replace(EMPTY, **fields)


def _bare(member: object) -> object:
    """The bare value of a Dictionary member (parameters dropped; an inner list as is)."""
    if isinstance(member, tuple) and len(member) == 2 and isinstance(member[1], dict):
        return member[0]
    return member


def _sf_delta(value: object, *, invalid: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return invalid  # a String, Decimal, Token, Boolean or negative number
    return min(value, MAX_DELTA_SECONDS)


# -- Vary normalisation ----------------------------------------------------------------------

# Fields whose grammar is a list of case-insensitive tokens with optional weights: Accept-
# Encoding (RFC 9110 §12.5.3), Accept-Language (§12.5.4 and RFC 4647 §2.1) and
# Accept-Charset (§12.5.2). Only these are normalised: any other field may be read raw.
NORMALIZED_VARY_FIELDS = frozenset({"accept-encoding", "accept-language", "accept-charset"})
_CODING = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
_LANGUAGE_RANGE = re.compile(r"\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*", re.ASCII)
_WEIGHT = re.compile(r"[ \t]*;[ \t]*[qQ]=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)", re.ASCII)


def normalize_vary_value(name: str, value: str) -> str:
    """A canonical spelling of a request header's value for the cache key.

    For the fields in ``NORMALIZED_VARY_FIELDS`` only: field lines (already joined with
    commas) are split into members, optional whitespace and empty members dropped (RFC 9110
    §5.6.1), codings and language ranges lower-cased (they are case-insensitive), and the
    weight written as ``;q=`` with the shortest equal qvalue (none for the default,
    ``q=1``). Order and duplicates are kept:
    an application may break ties by position, so reordered lists are never merged. A value
    that does not match the grammar, and the value of any other field, is returned as is.
    """
    if name.lower() not in NORMALIZED_VARY_FIELDS or len(value) > MAX_FIELD_LENGTH:
        return value
    item = _LANGUAGE_RANGE if name.lower() == "accept-language" else _CODING
    members = []
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        token = item.match(member)
        if token is None:
            return value
        rest = member[token.end() :]
        weight = _WEIGHT.fullmatch(rest) if rest else None
        if rest and weight is None:
            return value
        canonical = token.group().lower()
        qvalue = _qvalue(weight.group(1)) if weight is not None else "1"
        if qvalue != "1":  # no weight means q=1 (RFC 9110 §12.4.2)
            canonical += ";q=" + qvalue
        members.append(canonical)
    return ", ".join(members)


def _qvalue(text: str) -> str:
    """The shortest spelling of a qvalue: ``1.000`` is ``1``, ``0.50`` is ``0.5``."""
    number = Decimal(text).normalize()
    return "0" if number == 0 else format(number, "f")
