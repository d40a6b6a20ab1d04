"""Validators: deterministic ETags and conditional requests answered from a stored entry.

The generated ETag is a hash of the body alone, so every worker, and every restart,
gives the same one (unlike ``hash()``-based ETags, which differ per process). Comparison
for ``If-None-Match`` is the weak one (RFC 9110 §13.1.2); ``If-Modified-Since`` is
ignored when ``If-None-Match`` is present (§13.2.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping

from .cache_control import parse_http_date
from .entry import CachedResponse

__all__ = ["NOT_MODIFIED_HEADERS", "etag_matches", "is_not_modified", "make_etag"]

_ENTITY_TAG = re.compile(r'(?:[Ww]/)?"[^"]*"')

# The fields a 304 carries from the full response (RFC 9110 §15.4.5).
NOT_MODIFIED_HEADERS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)


def make_etag(body: bytes) -> bytes:
    """A strong ETag derived from the body only: ``"<22 base64url chars>"``."""
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return b'"' + base64.urlsafe_b64encode(digest).rstrip(b"=") + b'"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    if tag[:2] in ("W/", "w/"):
        tag = tag[2:].lstrip()
    return tag


def etag_matches(header: str, etag: bytes) -> bool:
    """Weak comparison of ``etag`` against an ``If-None-Match`` list (or ``*``)."""
    if not etag:
        return False
    if header.strip() == "*":
        return True
    wanted = _opaque(etag.decode("latin-1"))
    candidates = _ENTITY_TAG.findall(header) or header.split(",")
    return any(_opaque(candidate) == wanted for candidate in candidates if candidate.strip())


def is_not_modified(headers: Mapping[str, str], entry: CachedResponse) -> bool:
    """Whether the request's validators say the client already has ``entry``."""
    if "if-none-match" in headers:
        return etag_matches(headers["if-none-match"], entry.served_etag)
    if "if-modified-since" in headers and entry.last_modified is not None:
        since = parse_http_date(headers["if-modified-since"])
        return since is not None and entry.last_modified <= since
    return False


_BYTES_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*\Z", re.IGNORECASE)


def select_range(
    headers: Mapping[str, str], entry: CachedResponse
) -> tuple[int, int] | bool | None:
    """The byte range a ``Range`` request asks of a stored 200 (RFC 9110 §14).

    Returns ``(first, last)`` for one satisfiable range, ``False`` when unsatisfiable (416),
    and ``None`` to send the whole response (no Range, several ranges, an ``If-Range``
    that does not match, or anything malformed: ignoring Range is always allowed).
    """
    header = headers.get("range")
    if header is None or entry.status != 200:
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
        length = int(end)
        if length == 0:
            return False
        return max(0, size - length), size - 1
    first = int(start)
    last = min(int(end), size - 1) if end else size - 1
    if end and int(end) < first:
        return None
    if first >= size:
        return False
    return first, last


def _if_range_matches(value: str, entry: CachedResponse) -> bool:
    value = value.strip()
    if value.startswith('"'):  # strong comparison only (RFC 9110 §13.1.5)
        return bool(entry.served_etag) and value.encode("latin-1") == entry.served_etag
    if value.startswith("W/"):
        return False
    since = parse_http_date(value)
    return since is not None and entry.last_modified is not None and entry.last_modified <= since
