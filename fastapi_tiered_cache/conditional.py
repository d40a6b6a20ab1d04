"""Validators: deterministic ETags and conditional requests answered from a stored entry.

The generated ETag is a hash of the body alone, so every worker, and every restart,
gives the same one (unlike ``hash()``-based ETags, which differ per process). Comparison
for ``If-None-Match`` is the weak one (RFC 9110 §13.1.2); ``If-Modified-Since`` is
ignored when ``If-None-Match`` is present (§13.2.2).

Every request field read here is bounded: an over-long ``If-None-Match`` matches nothing,
an over-long or absurd ``Range`` is ignored, and dates go through the strict HTTP-date
parser. Each of those answers with the whole stored response, which is always allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .cache_control import MAX_FIELD_LENGTH
from .entry import CachedResponse, make_etag
from .http_date import parse_http_date

__all__ = ["NOT_MODIFIED_HEADERS", "etag_matches", "is_not_modified", "make_etag"]

_ENTITY_TAG = re.compile(r'(?:[Ww]/)?"[^"]*"')

# The fields a 304 carries from the full response (RFC 9110 §15.4.5).
NOT_MODIFIED_HEADERS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)


def _opaque(tag: str) -> str:
    tag = tag.strip()
    if tag[:2] in ("W/", "w/"):
        tag = tag[2:].lstrip()
    return tag


def etag_matches(header: str, etag: bytes) -> bool:
    """Weak comparison of ``etag`` against an ``If-None-Match`` list (or ``*``)."""
    if not etag or len(header) > MAX_FIELD_LENGTH:
        return False
    if header.strip() == "*":
        return True
    wanted = _opaque(etag.decode("latin-1"))
    candidates = _ENTITY_TAG.findall(header) or header.split(",")
    return any(_opaque(candidate) == wanted for candidate in candidates if candidate.strip())


def is_not_modified(
    headers: Mapping[str, str], entry: CachedResponse, now: float | None = None
) -> bool:
    """Whether the request's validators say the client already has ``entry``.

    ``If-Modified-Since`` is compared with the stored ``Last-Modified``, or the stored
    ``Date`` when there is none (RFC 9110 §13.1.3, RFC 9111 §4.3.2). ``now`` (default: when
    the entry was stored) only resolves two-digit years of RFC 850 dates.
    """
    if "if-none-match" in headers:
        return etag_matches(headers["if-none-match"], entry.served_etag)
    if "if-modified-since" not in headers:
        return False
    reference = entry.stored_at if now is None else now
    modified = modified_at(entry, reference)
    if modified is None:
        return False
    since = parse_http_date(headers["if-modified-since"], now=reference)
    return since is not None and modified <= since


def modified_at(entry: CachedResponse, now: float) -> float | None:
    """When the stored representation last changed, at the latest: its ``Last-Modified``,
    else its ``Date`` (RFC 9111 §4.3.2); None when it has neither."""
    if entry.last_modified is not None:
        return entry.last_modified
    for name, value in entry.headers:
        if name == b"date":
            return parse_http_date(value.decode("latin-1"), now=now)
    return None


_BYTES_RANGE = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*\Z", re.I)
# Positions are capped here: every body is far smaller, and int() of thousands of digits
# raises (Python's integer string conversion limit).
_MAX_POSITION_DIGITS = 15
_MAX_RANGE_LENGTH = 256


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return 10**_MAX_POSITION_DIGITS if len(digits) > _MAX_POSITION_DIGITS else int(digits)


def select_range(
    headers: Mapping[str, str], entry: CachedResponse
) -> tuple[int, int] | bool | None:
    """The byte range a ``Range`` request asks of a stored 200 (RFC 9110 §14).

    Returns ``(first, last)`` for one satisfiable range, ``False`` when unsatisfiable (416),
    and ``None`` to send the whole response (no Range, several ranges, an ``If-Range``
    that does not match, or anything malformed: ignoring Range is always allowed).
    """
    header = headers.get("range")
    if header is None or entry.status != 200 or len(header) > _MAX_RANGE_LENGTH:
        return None
    if "if-range" in headers and not _if_range_matches(headers["if-range"], entry):
        return None
    match = _BYTES_RANGE.match(header)
    if match is None:
        return None
    start, end = match.groups()
    size = len(entry.body)
    if start == "" and end == "":
        return None
    if start == "":  # a suffix: the last N bytes
        length = _position(end)
        if length == 0:
            return False
        return max(0, size - length), size - 1
    first = _position(start)
    last = min(_position(end), size - 1) if end else size - 1
    if end and _position(end) < first:
        return None
    if first >= size:
        return False
    return first, last


def _if_range_matches(value: str, entry: CachedResponse) -> bool:
    if len(value) > MAX_FIELD_LENGTH:
        return False
    value = value.strip()
    if value.startswith('"'):  # strong comparison only (RFC 9110 §13.1.5)
        return bool(entry.served_etag) and value.encode("latin-1") == entry.served_etag
    if value.startswith("W/"):
        return False
    since = parse_http_date(value, now=entry.stored_at)
    # Exactly (RFC 9110 §13.1.5): a later date is the validator of another representation.
    return since is not None and entry.last_modified is not None and entry.last_modified == since
