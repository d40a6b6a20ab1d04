"""Parse ``Cache-Control``, ``Vary`` and HTTP dates into plain values.

Parsing is deliberately forgiving in syntax and strict in meaning: directive names are
case-insensitive, whitespace and quoted arguments are accepted, and every ambiguity (a
malformed or duplicated ``max-age``, an unparsable ``Expires``) resolves to "stale", the
answer that can never serve something the origin did not allow (RFC 9111 §4.2.1, §5.2, §5.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "CacheControl",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_http_date",
    "parse_vary",
]

# RFC 9111 §1.2.2: a delta-seconds too large to represent is capped at 2^31.
MAX_DELTA_SECONDS = 2**31

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PIECES = re.compile(rf'(?:[^,"]|{_QUOTED})+')
_DIRECTIVE = re.compile(rf"\s*({_TOKEN}+)\s*(?:=\s*({_QUOTED}|{_TOKEN}*))?\s*\Z")
# Honoured even inside a malformed fragment: ignoring them could store what must not be.
_RESTRICTIVE = re.compile(r"(?<![\w-])(no-store|private|no-cache)(?![\w-])", re.IGNORECASE)
_DELTA_FIELDS = frozenset(
    {"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh", "max-stale"}
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
    no_transform: bool = False
    immutable: bool = False
    only_if_cached: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    min_fresh: int | None = None
    max_stale: int | None = None  # request only; MAX_DELTA_SECONDS when given without a value


EMPTY = CacheControl()


def parse_delta_seconds(value: str) -> int | None:
    """Return the non-negative integer in ``value`` (quotes allowed), or None if malformed."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if not value or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), MAX_DELTA_SECONDS)


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
        return MAX_DELTA_SECONDS if name == "max-stale" else 0
    parsed = parse_delta_seconds(arg)
    if parsed is None:
        # A malformed freshness value means stale; a malformed stale window means none.
        return 0
    return parsed


def parse_cache_control(header: str | None) -> CacheControl:
    """Parse a ``Cache-Control`` value (several field lines joined with commas)."""
    if not header:
        return EMPTY
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
        no_transform="no-transform" in found,
        immutable="immutable" in found,
        only_if_cached="only-if-cached" in found,
        **{name.replace("-", "_"): _delta(found, name) for name in _DELTA_FIELDS},
    )


def parse_vary(header: str | None) -> tuple[str, ...] | None:
    """Return the sorted, lower-cased, de-duplicated field names of ``Vary``.

    ``None`` stands for ``Vary: *`` (never storable); an absent field gives ``()``.
    """
    if not header:
        return ()
    names = {part.strip().lower() for part in header.split(",")}
    names.discard("")
    if "*" in names:
        return None
    return tuple(sorted(names))


def parse_http_date(value: str | None) -> float | None:
    """Return an HTTP-date as a Unix timestamp, or None when absent or invalid (RFC 9110 §5.6.7)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # asctime and "-0000" dates are GMT
    return parsed.timestamp()
