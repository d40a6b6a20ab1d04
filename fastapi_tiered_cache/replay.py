"""Answering from a stored entry: the one place an entry becomes ASGI messages.

Every hit (L1 or L2, from the memo or the full path, fresh, stale, collapsed onto another
request's fetch, or just revalidated) is answered here, so every answer carries the same
``Age``, ``Cache-Status`` (RFC 9211) and ``X-Cache`` fields, and the same rules for ``304``,
``206``/``416`` and ``HEAD``. The memo keeps the header list of its last answer for a
mapping and reuses it while the whole-second ``Age``/``ttl`` stay the same, so a repeated
hit copies a list instead of building one.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import formatdate

from starlette.types import Message

from .cache_control import parse_cache_control
from .conditional import NOT_MODIFIED_HEADERS, is_not_modified, select_range
from .entry import CachedResponse
from .policy import outgoing_cache_control
from .settings import CacheSettings, RouteRule

__all__ = ["Answer", "Marks", "http_date", "ranged", "replay", "with_cache_control"]

Headers = list[tuple[bytes, bytes]]
Answer = tuple[Message, Message]


class Marks:
    """The ``Cache-Status`` and ``X-Cache`` fields of this cache, built from its settings."""

    __slots__ = ("hit_prefix", "name", "x_cache", "x_cache_hit")

    def __init__(self, settings: CacheSettings) -> None:
        self.name = settings.cache_status_name.encode("latin-1")
        self.x_cache = settings.x_cache_header
        self.hit_prefix = self.name + b"; hit; ttl="
        self.x_cache_hit: Headers = [(b"x-cache", b"HIT")] if self.x_cache else []

    def status(self, *params: str) -> bytes:
        return b"; ".join((self.name, *(param.encode("latin-1") for param in params)))

    def headers(self, x_cache: str, *params: str) -> Headers:
        headers = [(b"cache-status", self.status(*params))]
        if self.x_cache:
            headers.append((b"x-cache", x_cache.encode("latin-1")))
        return headers

    def hit(self, record: CachedResponse, age: int, ttl: int, tier: bytes) -> Headers:
        """The headers of a plain fresh hit (the memo's answer, and the full path's)."""
        headers = list(record.headers)
        headers.append((b"age", b"%d" % age))
        headers.append((b"cache-status", self.hit_prefix + b"%d; detail=%s" % (ttl, tier)))
        headers.extend(self.x_cache_hit)
        return headers


def replay(
    marks: Marks,
    record: CachedResponse,
    *,
    method: str,
    request_headers: Mapping[str, str],
    now: float,
    tier: str | None = None,
    rule: RouteRule | None = None,
    x_cache: str = "HIT",
    params: tuple[str, ...] = (),
) -> Answer:
    """The response to a request answered from ``record``: its status (or ``304`` for a
    matching validator, ``206``/``416`` for a range), headers and body (none for HEAD)."""
    age, ttl = int(record.age(now)), record.ttl(now)
    status_params = params or ("hit", f"ttl={max(0, int(ttl))}", f"detail={tier}")
    extra = [(b"age", str(age).encode()), *marks.headers(x_cache, *status_params)]
    if record.status == 200 and is_not_modified(request_headers, record):
        headers = [(k, v) for k, v in record.headers if k in NOT_MODIFIED_HEADERS]
        return _messages(304, headers + extra, b"")
    headers = list(record.headers)
    if rule is not None and rule.cache_control:
        headers = with_cache_control(headers, rule.cache_control, ttl, now)
    status, body = record.status, record.body
    if "range" in request_headers:
        status, body, headers = ranged(request_headers, record, headers)
    return _messages(status, headers + extra, b"" if method == "HEAD" else body)


def _messages(status: int, headers: Headers, body: bytes) -> Answer:
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


def ranged(
    request_headers: Mapping[str, str], record: CachedResponse, headers: Headers
) -> tuple[int, bytes, Headers]:
    """A 206 (or 416) from a stored full response, or the whole of it (RFC 9110 §14)."""
    selected = select_range(request_headers, record)
    if selected is None:
        return record.status, record.body, headers
    size = len(record.body)
    kept = [(k, v) for k, v in headers if k != b"content-length"]
    if selected is False:
        kept.append((b"content-range", f"bytes */{size}".encode()))
        return 416, b"", [*kept, (b"content-length", b"0")]
    assert not isinstance(selected, bool)
    first, last = selected
    kept.append((b"content-range", f"bytes {first}-{last}/{size}".encode()))
    kept.append((b"content-length", str(last - first + 1).encode()))
    return 206, record.body[first : last + 1], kept


def with_cache_control(headers: Headers, configured: str, ttl: float, now: float) -> Headers:
    """Replace the origin's Cache-Control by a rule's (never outliving the entry)."""
    origin = parse_cache_control(
        ", ".join(v.decode("latin-1") for k, v in headers if k == b"cache-control")
    )
    value = outgoing_cache_control(configured, origin, ttl)
    if value is None:
        return headers
    kept = [(k, v) for k, v in headers if k not in (b"cache-control", b"expires")]
    kept.append((b"cache-control", value.encode("latin-1")))
    max_age = parse_cache_control(value).max_age
    if max_age is not None:
        kept.append((b"expires", http_date(now + max_age)))
    return kept


def http_date(timestamp: float) -> bytes:
    return formatdate(timestamp, usegmt=True).encode("latin-1")
